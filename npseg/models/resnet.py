"""ResNet-18/34 (basic blocks) and ResNet-50/101 (bottleneck blocks), returning C2..C5.

The seeds describe the two bottleneck blocks of ResNet-50/101:

* the **identity block**: 1x1 -> 3x3 -> 1x1 convolutions (each with batch norm), the input added
  unchanged, then ReLU — used when the shapes of input and output agree;
* the **conv block**: the same, but the shortcut is a 1x1 convolution (with stride) + batch norm,
  the *projection shortcut* — used at the first block of each stage, where the stride or the
  number of channels changes.

``y = relu(F(x) + shortcut(x))``: the ReLU comes after the add.

Stem: 7x7/2 conv, BN, ReLU, 3x3/2 max pool (stride 4 in all). Stages ``layer1``..``layer4`` give
C2..C5 at strides 4, 8, 16, 32.
"""

from __future__ import annotations

from npseg import functional as F
from npseg import nn

from .vgg import scaled

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "RESNET_DEPTHS"]


def _conv_bn(c_in, c_out, kernel, stride=1, padding=0):
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
                         nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); a 1x1 projection shortcut where the shape changes."""

    expansion = 1

    def __init__(self, c_in: int, channels: int, stride: int = 1):
        super().__init__()
        c_out = channels * self.expansion
        self.conv1 = _conv_bn(c_in, channels, 3, stride, 1)
        self.conv2 = _conv_bn(channels, c_out, 3, 1, 1)
        self.shortcut = (_conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out
                         else nn.Identity())

    def forward(self, x):
        y = F.relu(self.conv1(x))
        y = self.conv2(y)
        return F.relu(y + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 (reduce) -> 3x3 (stride) -> 1x1 (expand x4): the identity block when the shortcut is
    the identity, the conv block when it is a 1x1 projection."""

    expansion = 4

    def __init__(self, c_in: int, channels: int, stride: int = 1):
        super().__init__()
        c_out = channels * self.expansion
        self.conv1 = _conv_bn(c_in, channels, 1)
        self.conv2 = _conv_bn(channels, channels, 3, stride, 1)
        self.conv3 = _conv_bn(channels, c_out, 1)
        self.shortcut = (_conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out
                         else nn.Identity())

    def forward(self, x):
        y = F.relu(self.conv1(x))
        y = F.relu(self.conv2(y))
        y = self.conv3(y)
        return F.relu(y + self.shortcut(x))


#: depth -> (block, blocks per stage)
RESNET_DEPTHS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """ResNet feature extractor returning ``{"C2": ..., "C3": ..., "C4": ..., "C5": ...}``.

    Args:
        depth: 18, 34, 50 or 101.
        width: channel multiplier on the stage widths 64/128/256/512 (bottleneck outputs x4).
        blocks: blocks per stage, overriding the depth's (e.g. ``(1, 1, 1, 1)`` for a tiny net).
    """

    def __init__(self, depth: int = 50, in_channels: int = 3, width: float = 1.0, blocks=None):
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"depth must be one of {sorted(RESNET_DEPTHS)}, got {depth!r}")
        block, default_blocks = RESNET_DEPTHS[depth]
        blocks = tuple(default_blocks if blocks is None else blocks)
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be 4 positive counts (one per stage), got {blocks!r}")
        stem = scaled(64, width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(stem), nn.ReLU(),
                                  nn.MaxPool2d(3, stride=2, padding=1))
        self.layers = nn.ModuleList()
        self.out_channels = []
        c_in = stem
        for s, n_blocks in enumerate(blocks):
            channels = scaled(64 * 2 ** s, width)
            stage = []
            for b in range(n_blocks):
                stride = 2 if (b == 0 and s > 0) else 1
                stage.append(block(c_in, channels, stride))
                c_in = channels * block.expansion
            self.layers.append(nn.Sequential(*stage))
            self.out_channels.append(c_in)

    def forward(self, x):
        x = self.stem(x)
        features = {}
        for s, layer in enumerate(self.layers):
            x = layer(x)
            features[f"C{s + 2}"] = x
        return features
