"""Feature Pyramid Network (Lin et al.): a top-down path that gives every level strong semantics.

The backbone's stage outputs C2..C5 (strides 4, 8, 16, 32) become P2..P5, all with the same
number of channels ``out_channels`` (256)::

    L_k = lateral_k(C_k)                       1x1 conv: C_k's channels -> out_channels
    T_5 = L_5
    T_k = L_k + upsample_2x(T_{k+1})           nearest neighbour, k = 4, 3, 2
    P_k = output_k(T_k)                        3x3 conv (padding 1), removes upsampling aliasing
    P_6 = max_pool(P_5, kernel 1, stride 2)    subsampling: the RPN's extra coarse level

The top-down map is upsampled by 2 with nearest neighbour. When a backbone map had an odd size
(an image side that is not a multiple of 32) the doubled map is one pixel larger or smaller
than the lateral one; it is then resized to the lateral's size (nearest, ``size=``), which for a
one-pixel difference is the same as cropping or repeating the last row/column.

P6 is used by the RPN only (anchors of size 512 in Detectron2); the RoI heads pool from P2..P5.
"""

from __future__ import annotations

from collections import OrderedDict

from npseg import functional as F
from npseg import nn

__all__ = ["FPN"]


class FPN(nn.Module):
    """FPN over backbone maps ``{"C2": ..., "C5": ...}`` -> ``{"P2": ..., "P6": ...}``.

    Args:
        in_channels_list: channels of C2..C5 (e.g. ``ResNet(...).out_channels``).
        out_channels: channels of every P level (256).
        in_names: the backbone keys, finest first (default ``C2..C5``); the outputs are named
            ``P<k>`` after them, plus one extra coarser level when ``extra_level``.
        extra_level: add P6 = max_pool2d(P5, kernel_size=1, stride=2).

    Initialisation as Detectron2 (``c2_xavier_fill``): ``kaiming_uniform_(a=1)``, biases 0.
    """

    def __init__(self, in_channels_list, out_channels: int = 256, in_names=None,
                 extra_level: bool = True):
        super().__init__()
        in_channels_list = list(in_channels_list)
        if not in_channels_list:
            raise ValueError("in_channels_list must name at least one backbone level")
        self.in_names = list(in_names) if in_names is not None else \
            [f"C{k + 2}" for k in range(len(in_channels_list))]
        if len(self.in_names) != len(in_channels_list):
            raise ValueError(f"in_names must have one name per level ({len(in_channels_list)}), "
                             f"got {self.in_names!r}")
        self.out_names = ["P" + name[1:] for name in self.in_names]
        if extra_level:
            self.out_names.append(f"P{int(self.in_names[-1][1:]) + 1}")
        self.out_channels = int(out_channels)
        self.extra_level = bool(extra_level)
        self.lateral = nn.ModuleList([nn.Conv2d(c, out_channels, 1) for c in in_channels_list])
        self.output = nn.ModuleList([nn.Conv2d(out_channels, out_channels, 3, padding=1)
                                     for _ in in_channels_list])
        for conv in list(self.lateral) + list(self.output):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def forward(self, features) -> "OrderedDict":
        """``features``: a dict with the ``in_names`` keys (or a list, finest first)."""
        if isinstance(features, dict):
            missing = [n for n in self.in_names if n not in features]
            if missing:
                raise ValueError(f"features lack {', '.join(missing)}; got keys "
                                 f"{', '.join(map(str, features))}")
            maps = [features[n] for n in self.in_names]
        else:
            maps = list(features)
            if len(maps) != len(self.in_names):
                raise ValueError(f"expected {len(self.in_names)} feature maps, got {len(maps)}")
        top = self.lateral[-1](maps[-1])
        outputs = [self.output[-1](top)]
        for k in range(len(maps) - 2, -1, -1):            # coarse to fine
            lateral = self.lateral[k](maps[k])
            size = lateral.shape[-2:]
            if tuple(2 * s for s in top.shape[-2:]) == tuple(size):
                up = F.interpolate(top, scale_factor=2, mode="nearest")
            else:                                          # odd sizes: match the lateral map
                up = F.interpolate(top, size=size, mode="nearest")
            top = lateral + up
            outputs.insert(0, self.output[k](top))
        if self.extra_level:
            outputs.append(F.max_pool2d(outputs[-1], kernel_size=1, stride=2))
        return OrderedDict(zip(self.out_names, outputs))

    @property
    def strides(self) -> list:
        """The stride of each output level (``2**k`` for ``P<k>``)."""
        return [2 ** int(name[1:]) for name in self.out_names]

    def extra_repr(self) -> str:
        return f"levels={self.out_names}, out_channels={self.out_channels}"
