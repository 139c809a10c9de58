"""FCN-32s / FCN-16s / FCN-8s (Long, Shelhamer & Darrell), on VGG16 or ResNet.

The classifier's fully connected layers become convolutions: ``fc6`` a 7x7 conv, ``fc7`` and
``score_fr`` 1x1 convs, so the net takes any input size and gives a coarse score map at stride
32. Transposed convolutions initialised to bilinear interpolation upsample it; the skip
architectures fuse finer scores by summation:

* 32s: ``score_fr`` upsampled 32x.
* 16s: ``score_fr`` upsampled 2x + ``score_pool4`` (1x1 conv on pool4), then upsampled 16x.
* 8s:  the 16s fusion upsampled 2x + ``score_pool3`` (1x1 conv on pool3), then upsampled 8x.

Two layouts, both returning the input's size for any input size:

* ``paper=True`` (VGG16 only): the paper's net. conv1_1 pads by 100 so every input survives the
  pools and the unpadded 7x7 ``fc6``; the upsampling convs have no padding, and the fused maps are
  cropped at the paper's offsets (score_pool4 at 5, score_pool3 at 9; the final map at 19 for
  32s, 27 for 16s, 31 for 8s).
* ``paper=False`` (the default): every conv keeps its size ("same" padding, ``fc6`` pads by 3),
  the pools round up, and an upsampling conv of factor f has kernel 2f, stride f, padding f/2.
  Input pixel i of a stride-s map then lands at the centre of the s pixels it covers, so every
  crop is at offset 0 (top-left). Far cheaper: no 100-pixel border to convolve.
"""

from __future__ import annotations

from npseg import nn

from .resnet import ResNet
from .vgg import VGG16, scaled

__all__ = ["FCN", "FCN_VARIANTS", "PAPER_CROPS"]

FCN_VARIANTS = ("32s", "16s", "8s")

#: the paper's crop offsets (VGG16, conv1_1 padding 100, unpadded upsampling convs)
PAPER_CROPS = {"32s": {"out": 19}, "16s": {"pool4": 5, "out": 27},
               "8s": {"pool4": 5, "pool3": 9, "out": 31}}


def _crop(x, offset: int, height: int, width: int):
    """``x[:, :, offset:offset + height, offset:offset + width]`` (the paper's crop layer)."""
    return x[:, :, offset:offset + height, offset:offset + width]


class FCN(nn.Module):
    """Fully convolutional network for semantic segmentation; forward returns (N, classes, H, W).

    Args:
        num_classes: number of classes, background included.
        variant: ``"32s"``, ``"16s"`` or ``"8s"``.
        backbone: ``"vgg16"`` or ``"resnet"`` (C3/C4/C5 play pool3/pool4/pool5).
        width: channel multiplier of the backbone (and of the head, unless ``head_channels``).
        head_channels: channels of fc6/fc7 (4096 * width by default).
        dropout: dropout after fc6 and fc7 (the paper's 0.5).
        paper: the paper's padding-100 layout (VGG16 only); see the module docstring.
        batch_norm: VGG16 with batch norm after every conv (trains faster from scratch).
        resnet_depth, resnet_blocks: the ResNet backbone's depth and blocks per stage.
    """

    def __init__(self, num_classes: int, variant: str = "8s", backbone: str = "vgg16",
                 width: float = 1.0, head_channels: int | None = None, dropout: float = 0.5,
                 paper: bool = False, batch_norm: bool = False, in_channels: int = 3,
                 resnet_depth: int = 50, resnet_blocks=None):
        super().__init__()
        if variant not in FCN_VARIANTS:
            raise ValueError(f"variant must be one of {FCN_VARIANTS}, got {variant!r}")
        if backbone not in ("vgg16", "resnet"):
            raise ValueError(f"backbone must be 'vgg16' or 'resnet', got {backbone!r}")
        if paper and backbone != "vgg16":
            raise ValueError("paper=True is the paper's VGG16 layout; use backbone='vgg16'")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.variant, self.paper = variant, paper
        if backbone == "vgg16":
            self.backbone = VGG16(in_channels, width, batch_norm=batch_norm,
                                  first_padding=100 if paper else 1, ceil_mode=True)
            c3, c4, c5 = self.backbone.out_channels[2:]
        else:
            self.backbone = ResNet(resnet_depth, in_channels, width, resnet_blocks)
            c3, c4, c5 = self.backbone.out_channels[1:]
        head = head_channels or scaled(4096, width)
        self.head = nn.Sequential(
            nn.Conv2d(c5, head, 7, padding=0 if paper else 3), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv2d(head, head, 1), nn.ReLU(), nn.Dropout(dropout))
        self.score_fr = nn.Conv2d(head, num_classes, 1)
        # Score layers start at zero (the paper: random init gives nothing better).
        scores = [self.score_fr]
        if variant in ("16s", "8s"):
            self.score_pool4 = nn.Conv2d(c4, num_classes, 1)
            self.upscore2 = self._upsampler(num_classes, 2)
            scores.append(self.score_pool4)
        if variant == "8s":
            self.score_pool3 = nn.Conv2d(c3, num_classes, 1)
            self.upscore_pool4 = self._upsampler(num_classes, 2)
            scores.append(self.score_pool3)
        self.upscore_final = self._upsampler(num_classes, {"32s": 32, "16s": 16, "8s": 8}[variant])
        for conv in scores:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def _upsampler(self, channels: int, factor: int):
        """Transposed conv of kernel 2f and stride f, initialised to bilinear interpolation."""
        conv = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor,
                                  padding=0 if self.paper else factor // 2, bias=False)
        nn.init.bilinear_(conv.weight)
        return conv

    def _offset(self, name: str) -> int:
        return PAPER_CROPS[self.variant][name] if self.paper else 0

    def forward(self, x):
        height, width = x.shape[2], x.shape[3]
        features = self.backbone(x)
        pool3, pool4, pool5 = features["C3"], features["C4"], features["C5"]
        score = self.score_fr(self.head(pool5))
        if self.variant in ("16s", "8s"):
            up = self.upscore2(score)  # stride 16
            skip = self.score_pool4(pool4)
            if not self.paper:  # same layout: both are ceil(H/16); crop the upsampled map to it
                up = _crop(up, 0, skip.shape[2], skip.shape[3])
            score = up + _crop(skip, self._offset("pool4"), up.shape[2], up.shape[3])
        if self.variant == "8s":
            up = self.upscore_pool4(score)  # stride 8
            skip = self.score_pool3(pool3)
            if not self.paper:
                up = _crop(up, 0, skip.shape[2], skip.shape[3])
            score = up + _crop(skip, self._offset("pool3"), up.shape[2], up.shape[3])
        out = self.upscore_final(score)
        return _crop(out, self._offset("out"), height, width)
