"""SegNet (Badrinarayanan, Kendall & Cipolla): an encoder-decoder that upsamples with the
encoder's max-pooling indices.

Encoder: VGG16's conv stages (3x3 conv + batch norm + ReLU), each closed by a 2x2 max pool that
also returns *where* each maximum was. Decoder: mirrored stages, each opened by a max-unpool that
puts every value back at the position its encoder pool took it from (zeros elsewhere), followed
by convs that densify the sparse map. No learned upsampling and no skip features are stored:
only the indices. A final 3x3 conv gives the class scores.
"""

from __future__ import annotations

from npseg import nn

from .vgg import VGG16_STAGES, scaled

__all__ = ["SegNet"]


def _conv_bn_relu(c_in, c_out):
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class SegNet(nn.Module):
    """SegNet; forward returns (N, classes, H, W) for any H, W divisible by nothing in particular
    (the unpool restores each pre-pool size, odd ones included).

    Args:
        num_classes: number of classes, background included.
        width: channel multiplier (1.0: VGG16's 64..512).
        depth: number of encoder/decoder stages (5 in the paper).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, depth: int = 5):
        super().__init__()
        if not isinstance(depth, int) or not 1 <= depth <= len(VGG16_STAGES):
            raise ValueError(f"depth must be an int in [1, {len(VGG16_STAGES)}], got {depth!r}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        stages = [(n, scaled(c, width)) for n, c in VGG16_STAGES[:depth]]
        self.encoder = nn.ModuleList()
        c_in = in_channels
        for n_convs, c in stages:
            layers = []
            for _ in range(n_convs):
                layers += _conv_bn_relu(c_in, c)
                c_in = c
            self.encoder.append(nn.Sequential(*layers))
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, stride=2)
        self.decoder = nn.ModuleList()
        for s in reversed(range(depth)):
            n_convs, c = stages[s]
            c_next = stages[s - 1][1] if s > 0 else stages[0][1]
            layers = []
            for k in range(n_convs):
                layers += _conv_bn_relu(c, c_next if k == n_convs - 1 else c)
            self.decoder.append(nn.Sequential(*layers))
        self.classifier = nn.Conv2d(stages[0][1], num_classes, 3, padding=1)

    def forward(self, x):
        pooled = []  # (indices, size before the pool) per stage
        for stage in self.encoder:
            x = stage(x)
            size = (x.shape[2], x.shape[3])
            x, indices = self.pool(x)
            pooled.append((indices, size))
        for stage, (indices, size) in zip(self.decoder, reversed(pooled)):
            x = stage(self.unpool(x, indices, output_size=size))
        return self.classifier(x)
