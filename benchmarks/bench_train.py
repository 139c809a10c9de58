"""A training step (forward, backward, Adam step) of the CPU presets of U-Net, FCN-8s and SegNet,
npseg against the same network written in PyTorch, in one process with the same thread count.

    python benchmarks/bench_train.py [--threads 2] [--repeat 5] [--batch-size 16] [--image-size 64]

The PyTorch twins are built layer for layer like npseg's models (same widths, batch norm,
ceil-mode pools, crops); the script checks that both have the same number of parameters.
"""

from __future__ import annotations

import argparse
import os
import sys


def _args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--only", default="")
    return parser.parse_args()


ARGS = _args()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NPSEG_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)

import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import npseg  # noqa: E402
from npseg import functional as F  # noqa: E402
from npseg import optim  # noqa: E402
from npseg.models import build_model  # noqa: E402
from npseg.train.config import PRESETS  # noqa: E402

try:
    import torch
    import torch.nn as tnn
    import torch.nn.functional as tF

    torch.set_num_threads(ARGS.threads)
except ImportError:  # the table shows "-" for torch
    torch = None


def _median_time(step, repeat):
    step()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# ----------------------------------------------------------------------------- PyTorch twins

def _torch_models():
    def conv_bn_relu(c_in, c_out, padding=1, bias=False):
        return [tnn.Conv2d(c_in, c_out, 3, padding=padding, bias=bias), tnn.BatchNorm2d(c_out),
                tnn.ReLU()]

    class UNet(tnn.Module):
        def __init__(self, classes, width, depth=4):
            super().__init__()
            ch = [max(1, round(64 * 2 ** i * width)) for i in range(depth + 1)]
            self.down = tnn.ModuleList()
            c = 3
            for co in ch:
                self.down.append(tnn.Sequential(*conv_bn_relu(c, co), *conv_bn_relu(co, co)))
                c = co
            self.pool = tnn.MaxPool2d(2, 2, ceil_mode=True)
            self.upconv = tnn.ModuleList(tnn.ConvTranspose2d(ch[i + 1], ch[i], 2, 2)
                                         for i in reversed(range(depth)))
            self.up = tnn.ModuleList(tnn.Sequential(*conv_bn_relu(2 * ch[i], ch[i]),
                                                    *conv_bn_relu(ch[i], ch[i]))
                                     for i in reversed(range(depth)))
            self.classifier = tnn.Conv2d(ch[0], classes, 1)
            self.depth = depth

        def forward(self, x):
            skips = []
            for i, block in enumerate(self.down):
                x = block(x)
                if i < self.depth:
                    skips.append(x)
                    x = self.pool(x)
            for upconv, block, skip in zip(self.upconv, self.up, reversed(skips)):
                x = upconv(x)[:, :, :skip.shape[2], :skip.shape[3]]
                x = block(torch.cat([skip, x], 1))
            return self.classifier(x)

    class FCN8s(tnn.Module):
        def __init__(self, classes, width, head, dropout):
            super().__init__()
            stages, c = [], 3
            for n, co in ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)):
                co = max(1, round(co * width))
                layers = []
                for _ in range(n):
                    layers += conv_bn_relu(c, co)
                    c = co
                layers.append(tnn.MaxPool2d(2, 2, ceil_mode=True))
                stages.append(tnn.Sequential(*layers))
            self.stages = tnn.ModuleList(stages)
            c3, c4, c5 = [max(1, round(v * width)) for v in (256, 512, 512)]
            self.head = tnn.Sequential(tnn.Conv2d(c5, head, 7, padding=3), tnn.ReLU(),
                                       tnn.Dropout(dropout), tnn.Conv2d(head, head, 1), tnn.ReLU(),
                                       tnn.Dropout(dropout))
            self.score_fr = tnn.Conv2d(head, classes, 1)
            self.score_pool4 = tnn.Conv2d(c4, classes, 1)
            self.score_pool3 = tnn.Conv2d(c3, classes, 1)
            self.upscore2 = tnn.ConvTranspose2d(classes, classes, 4, 2, 1, bias=False)
            self.upscore_pool4 = tnn.ConvTranspose2d(classes, classes, 4, 2, 1, bias=False)
            self.upscore8 = tnn.ConvTranspose2d(classes, classes, 16, 8, 4, bias=False)

        def forward(self, x):
            h, w = x.shape[2:]
            feats = []
            for stage in self.stages:
                x = stage(x)
                feats.append(x)
            score = self.score_fr(self.head(feats[4]))
            skip = self.score_pool4(feats[3])
            score = self.upscore2(score)[:, :, :skip.shape[2], :skip.shape[3]] + skip
            skip = self.score_pool3(feats[2])
            score = self.upscore_pool4(score)[:, :, :skip.shape[2], :skip.shape[3]] + skip
            return self.upscore8(score)[:, :, :h, :w]

    class SegNet(tnn.Module):
        def __init__(self, classes, width, depth):
            super().__init__()
            stages = [(n, max(1, round(c * width))) for n, c in
                      ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))[:depth]]
            self.enc, c = tnn.ModuleList(), 3
            for n, co in stages:
                layers = []
                for _ in range(n):
                    layers += conv_bn_relu(c, co)
                    c = co
                self.enc.append(tnn.Sequential(*layers))
            self.dec = tnn.ModuleList()
            for s in reversed(range(depth)):
                n, co = stages[s]
                nxt = stages[s - 1][1] if s > 0 else stages[0][1]
                layers = []
                for k in range(n):
                    layers += conv_bn_relu(co, nxt if k == n - 1 else co)
                self.dec.append(tnn.Sequential(*layers))
            self.classifier = tnn.Conv2d(stages[0][1], classes, 3, padding=1)

        def forward(self, x):
            pooled = []
            for stage in self.enc:
                x = stage(x)
                size = x.shape[2:]
                x, idx = tF.max_pool2d(x, 2, 2, return_indices=True)
                pooled.append((idx, size))
            for stage, (idx, size) in zip(self.dec, reversed(pooled)):
                x = stage(tF.max_unpool2d(x, idx, 2, 2, output_size=size))
            return self.classifier(x)

    return {"unet": lambda c, cfg: UNet(c, cfg["width"]),
            "fcn8s": lambda c, cfg: FCN8s(c, cfg["width"], cfg["head_channels"], cfg["dropout"]),
            "segnet": lambda c, cfg: SegNet(c, cfg["width"], cfg["depth"])}


def main():
    classes, size, batch = 4, ARGS.image_size, ARGS.batch_size
    rng = np.random.default_rng(0)
    images = rng.random((batch, 3, size, size), dtype=np.float32)
    labels = rng.integers(0, classes, (batch, size, size))
    twins = _torch_models() if torch is not None else {}
    print(f"training step (forward + backward + Adam), batch {batch} of {size}x{size}, "
          f"float32, {ARGS.threads} threads")
    print(f"{'model':<8} {'params':>9} {'npseg ms':>9} {'torch ms':>9} {'ratio':>6}")
    for name in ("unet", "fcn8s", "segnet"):
        if ARGS.only and ARGS.only not in name:
            continue
        cfg = PRESETS[name]["model_config"]
        npseg.manual_seed(0)
        model = build_model(name, classes, **cfg)
        opt = optim.Adam(model.parameters(), lr=1e-3)
        x = npseg.Tensor(images)

        def step():
            loss = F.cross_entropy(model(x), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()

        ours = _median_time(step, ARGS.repeat)
        n_params = sum(p.data.size for p in model.parameters())
        theirs = None
        if name in twins:
            net = twins[name](classes, cfg)
            if sum(p.numel() for p in net.parameters()) != n_params:
                raise SystemExit(f"{name}: the torch twin has a different number of parameters")
            topt = torch.optim.Adam(net.parameters(), lr=1e-3)
            tx, ty = torch.from_numpy(images), torch.from_numpy(labels)

            def tstep():
                loss = tF.cross_entropy(net(tx), ty)
                topt.zero_grad()
                loss.backward()
                topt.step()

            theirs = _median_time(tstep, ARGS.repeat)
        t_ms = f"{theirs * 1e3:9.1f}" if theirs else f"{'-':>9}"
        ratio = f"{ours / theirs:6.2f}" if theirs else f"{'-':>6}"
        print(f"{name:<8} {n_params:>9} {ours * 1e3:9.1f} {t_ms} {ratio}")


if __name__ == "__main__":
    main()
