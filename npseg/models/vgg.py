"""VGG16, the backbone of the FCN paper, with a width multiplier so small versions train on a CPU.

Five stages of 3x3 convolutions (2, 2, 3, 3, 3 of them, 64/128/256/512/512 channels times
``width``), each closed by a 2x2 max pool of stride 2. The stage outputs after each pool are the
feature maps ``C1``..``C5`` at strides 2, 4, 8, 16, 32 (FCN calls C3, C4, C5 ``pool3``, ``pool4``,
``pool5``).
"""

from __future__ import annotations

from npseg import nn

__all__ = ["VGG16", "VGG16_STAGES"]

#: (number of 3x3 convs, channels at width 1) per stage
VGG16_STAGES = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1: how every model applies its width multiplier."""
    return max(1, int(round(channels * width)))


class VGG16(nn.Module):
    """VGG16 feature extractor returning ``{"C1": ..., ..., "C5": ...}``.

    Args:
        in_channels: image channels (3).
        width: channel multiplier (1.0 is the paper's 64..512; 0.125 gives 8..64).
        batch_norm: a BatchNorm2d after every conv (VGG16-BN); the paper has none.
        first_padding: padding of the very first conv. The FCN paper uses 100 so that any input
            size survives the five pools and the 7x7 ``fc6`` (then crops the output back);
            1 keeps every stage "same" size.
        ceil_mode: the pools round up (FCN's Caffe pools do), so a stage of size n gives
            ceil(n / 2) and no row of an odd-sized map is dropped.
    """

    def __init__(self, in_channels: int = 3, width: float = 1.0, batch_norm: bool = False,
                 first_padding: int = 1, ceil_mode: bool = True, stages=VGG16_STAGES):
        super().__init__()
        self.stages = nn.ModuleList()
        self.out_channels = []
        c_in = in_channels
        for s, (n_convs, channels) in enumerate(stages):
            c_out = scaled(channels, width)
            layers = []
            for k in range(n_convs):
                padding = first_padding if (s == 0 and k == 0) else 1
                layers.append(nn.Conv2d(c_in, c_out, 3, padding=padding, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(c_out))
                layers.append(nn.ReLU())
                c_in = c_out
            layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=ceil_mode))
            self.stages.append(nn.Sequential(*layers))
            self.out_channels.append(c_out)

    def forward(self, x):
        features = {}
        for s, stage in enumerate(self.stages):
            x = stage(x)
            features[f"C{s + 1}"] = x
        return features
