"""U-Net (Ronneberger, Fischer & Brox), in the paper's form and in the same-padding form.

Contracting path: at each level two 3x3 convs + ReLU, then a 2x2 max pool that halves the size
while the next level doubles the channels (64, 128, 256, 512, 1024 times ``width``). Expanding
path: a 2x2 transposed conv ("up-conv") doubles the size and halves the channels, the skip
feature map of the same level is concatenated, then two 3x3 convs. A final 1x1 conv gives the
class scores.

* ``padding="valid"`` (the paper): unpadded convs lose 2 pixels each, so the skip map is larger
  than the up-sampled map and is **center-cropped** before the concat; the output is smaller than
  the input (572 -> 388). Sizes must stay even before every pool: :meth:`UNet.output_size` and
  :meth:`UNet.input_size_for` give the valid sizes (the paper tiles a large image with a
  mirrored border: ``npseg train`` mirror-pads each image to ``input_size_for`` its label size).
* ``padding="same"``: padded convs keep the size; pools round up and the up-sampled map is
  cropped to the skip's size (top-left: with rounded-up pools the extra row is at the end), so
  the output has the input's size for any input size.

Train with ``cross_entropy(..., pixel_weight=w)`` for the paper's weighted loss.
"""

from __future__ import annotations

from npseg import functional as F
from npseg import nn

from .vgg import scaled

__all__ = ["UNet"]


class _DoubleConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, padding: int, batch_norm: bool):
        layers = []
        for c in (c_in, c_out):
            layers.append(nn.Conv2d(c, c_out, 3, padding=padding, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU())
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net; forward returns (N, classes, H_out, W_out).

    Args:
        num_classes: number of classes, background included.
        padding: ``"same"`` (output size = input size) or ``"valid"`` (the paper).
        depth: number of pooling steps (4 in the paper).
        width: channel multiplier (1.0: 64 .. 1024).
        batch_norm: batch norm after every 3x3 conv (not in the paper; trains faster).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, padding: str = "same",
                 depth: int = 4, width: float = 1.0, batch_norm: bool = False):
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive int, got {depth!r}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.padding, self.depth = padding, depth
        pad = 1 if padding == "same" else 0
        channels = [scaled(64 * 2 ** level, width) for level in range(depth + 1)]
        self.down = nn.ModuleList()
        c_in = in_channels
        for c in channels:
            self.down.append(_DoubleConv(c_in, c, pad, batch_norm))
            c_in = c
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=padding == "same")
        self.upconv = nn.ModuleList()
        self.up = nn.ModuleList()
        for level in reversed(range(depth)):
            self.upconv.append(nn.ConvTranspose2d(channels[level + 1], channels[level], 2, stride=2))
            self.up.append(_DoubleConv(2 * channels[level], channels[level], pad, batch_norm))
        self.classifier = nn.Conv2d(channels[0], num_classes, 1)

    # --- sizes of the valid form -------------------------------------------------------------
    def output_size(self, size: int) -> int:
        """Output side length for an input side length; ValueError when it is not valid."""
        if self.padding == "same":
            return size
        s = size
        for level in range(self.depth):
            s -= 4
            if s <= 0 or s % 2:
                raise ValueError(
                    f"input size {size} is not valid for the valid U-Net (depth {self.depth}): "
                    f"the map before pool {level + 1} has odd or no size {s}; "
                    f"e.g. {self.input_size_for(max(1, size - 184))} works")
            s //= 2
        s -= 4
        for _ in range(self.depth):
            s = 2 * s - 4
        if s <= 0:
            raise ValueError(f"input size {size} is too small for the valid U-Net")
        return s

    def input_size_for(self, output_size: int) -> int:
        """Smallest valid input side whose output is at least ``output_size`` (572 -> 388)."""
        if self.padding == "same":
            return output_size
        # invert the decoder (s -> 2s - 4) and the bottom, then the encoder (s -> 2s + 4)
        s = output_size
        for _ in range(self.depth):
            s = -(-(s + 4) // 2)
        s += 4
        for _ in range(self.depth):
            s = 2 * s + 4
        return s

    def forward(self, x):
        if self.padding == "valid":
            self.output_size(x.shape[2]), self.output_size(x.shape[3])  # clear size errors
        skips = []
        for level, block in enumerate(self.down):
            x = block(x)
            if level < self.depth:
                skips.append(x)
                x = self.pool(x)
        for upconv, block, skip in zip(self.upconv, self.up, reversed(skips)):
            x = upconv(x)
            if self.padding == "valid":
                skip = F.center_crop(skip, (x.shape[2], x.shape[3]))
            else:
                x = x[:, :, :skip.shape[2], :skip.shape[3]]
            x = block(F.concat([skip, x], 1))
        return self.classifier(x)
