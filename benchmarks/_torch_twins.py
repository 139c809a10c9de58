"""PyTorch twins of npseg's semantic-segmentation models, for the benchmarks that time a training
step against PyTorch (``bench_train.py`` on the CPU, ``bench_gpu.py`` on the GPU)."""


def torch_twin(torch, name, classes, config):
    """npseg's model ``name`` (its ``build_model`` config) rebuilt layer for layer in torch: the
    same widths, batch norm, ceil-mode pools and crops, its own weights (for timing); None for a
    model without a twin here."""
    nn, tf = torch.nn, torch.nn.functional

    def ch(c, width):
        return max(1, int(round(c * width)))

    def conv_block(c_in, c_out, n, bn):
        layers = []
        for k in range(n):
            layers += [nn.Conv2d(c_in if k == 0 else c_out, c_out, 3, padding=1, bias=not bn)]
            layers += ([nn.BatchNorm2d(c_out)] if bn else []) + [nn.ReLU()]
        return nn.Sequential(*layers)

    if name == "unet":
        depth, width, bn = config.get("depth", 4), config["width"], config.get("batch_norm")
        chans = [ch(64 * 2 ** level, width) for level in range(depth + 1)]

        class UNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.down = nn.ModuleList(conv_block(c_in, c, 2, bn)
                                          for c_in, c in zip([3] + chans[:-1], chans))
                self.upconv = nn.ModuleList(nn.ConvTranspose2d(chans[lv + 1], chans[lv], 2, 2)
                                            for lv in reversed(range(depth)))
                self.up = nn.ModuleList(conv_block(2 * chans[lv], chans[lv], 2, bn)
                                        for lv in reversed(range(depth)))
                self.classifier = nn.Conv2d(chans[0], classes, 1)

            def forward(self, x):
                skips = []
                for level, block in enumerate(self.down):
                    x = block(x)
                    if level < depth:
                        skips.append(x)
                        x = tf.max_pool2d(x, 2, 2, ceil_mode=True)
                for upconv, block, skip in zip(self.upconv, self.up, reversed(skips)):
                    x = upconv(x)[:, :, :skip.shape[2], :skip.shape[3]]
                    x = block(torch.cat([skip, x], 1))
                return self.classifier(x)
        return UNet()

    if name == "fcn8s":
        width, bn, head = config["width"], config.get("batch_norm"), config["head_channels"]
        stages = [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]

        def up(factor):
            return nn.ConvTranspose2d(classes, classes, 2 * factor, factor, factor // 2,
                                      bias=False)

        class FCN8s(nn.Module):
            def __init__(self):
                super().__init__()
                c_in, self.stages = 3, nn.ModuleList()
                for n, c in stages:
                    self.stages.append(conv_block(c_in, ch(c, width), n, bn))
                    c_in = ch(c, width)
                p = config.get("dropout", 0.5)
                self.head = nn.Sequential(nn.Conv2d(c_in, head, 7, padding=3), nn.ReLU(),
                                          nn.Dropout(p), nn.Conv2d(head, head, 1), nn.ReLU(),
                                          nn.Dropout(p))
                self.score_fr = nn.Conv2d(head, classes, 1)
                self.score_pool4 = nn.Conv2d(ch(512, width), classes, 1)
                self.score_pool3 = nn.Conv2d(ch(256, width), classes, 1)
                self.up2, self.up_pool4, self.up_final = up(2), up(2), up(8)

            def forward(self, x):
                h, w = x.shape[2:]
                pools = []
                for stage in self.stages:
                    x = tf.max_pool2d(stage(x), 2, 2, ceil_mode=True)
                    pools.append(x)
                score = self.score_fr(self.head(pools[4]))
                for upsample, skip in ((self.up2, self.score_pool4(pools[3])),
                                       (self.up_pool4, self.score_pool3(pools[2]))):
                    score = upsample(score)[:, :, :skip.shape[2], :skip.shape[3]] + skip
                return self.up_final(score)[:, :, :h, :w]
        return FCN8s()

    if name == "segnet":
        width, depth = config["width"], config.get("depth", 5)
        stages = [(n, ch(c, width)) for n, c in [(2, 64), (2, 128), (3, 256), (3, 512),
                                                  (3, 512)][:depth]]

        def cbr(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                    nn.ReLU()]

        class SegNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder, self.decoder, c_in = nn.ModuleList(), nn.ModuleList(), 3
                for n, c in stages:
                    self.encoder.append(nn.Sequential(*[m for k in range(n)
                                                        for m in cbr(c_in if k == 0 else c, c)]))
                    c_in = c
                for s in reversed(range(depth)):
                    n, c = stages[s]
                    c_next = stages[max(s - 1, 0)][1]
                    self.decoder.append(nn.Sequential(*[
                        m for k in range(n) for m in cbr(c, c_next if k == n - 1 else c)]))
                self.classifier = nn.Conv2d(stages[0][1], classes, 3, padding=1)

            def forward(self, x):
                pooled = []
                for stage in self.encoder:
                    x = stage(x)
                    size = x.shape[2:]
                    x, indices = tf.max_pool2d(x, 2, 2, return_indices=True)
                    pooled.append((indices, size))
                for stage, (indices, size) in zip(self.decoder, reversed(pooled)):
                    x = stage(tf.max_unpool2d(x, indices, 2, 2, output_size=size))
                return self.classifier(x)
        return SegNet()
    return None
