"""FCN's upsampling, explained: a transposed convolution is a convolution over a zero-inserted
input, and with a bilinear kernel it is bilinear interpolation.

    python examples/transposed_convolution.py [--out figures/]

1. Zero insertion: put (stride - 1) zeros between the input pixels, pad the border by
   dilation * (k - 1) - padding, and convolve with the kernel flipped in both axes (and its
   in/out channels swapped). The result equals ``conv_transpose2d``.
2. The transpose of the convolution matrix: ``conv_transpose2d`` is the adjoint of ``conv2d``,
   <conv2d(x, w), y> = <x, conv_transpose2d(y, w)>.
3. The bilinear kernel (FCN's initialisation of its upsampling layers): a transposed conv with
   kernel 2f, stride f and that kernel upsamples an image f times.

Writes PNG figures of each step to --out.
"""

import argparse
import os

import numpy as np
from PIL import Image

from npseg import ops
from npseg.nn.init import bilinear_kernel
from npseg.train.visualize import side_by_side

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--out", default="figures")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)
rng = np.random.default_rng(0)

# 1. zero insertion + ordinary convolution == transposed convolution
stride, padding, k = 2, 1, 4
x = rng.standard_normal((1, 2, 5, 5))
w = rng.standard_normal((2, 3, k, k))  # (C_in, C_out, kH, kW), as conv_transpose2d wants
expected, _ = ops.conv_transpose2d_forward(x, w, stride=stride, padding=padding)

n, c, h, wd = x.shape
spread = np.zeros((n, c, (h - 1) * stride + 1, (wd - 1) * stride + 1))
spread[:, :, ::stride, ::stride] = x  # (stride - 1) zeros between pixels
border = k - 1 - padding
flipped = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # flip the kernel, swap in/out channels
by_hand, _ = ops.conv2d_forward(spread, np.ascontiguousarray(flipped), padding=border)
print("zero insertion + conv2d == conv_transpose2d:", np.allclose(by_hand, expected),
      f"(max difference {np.abs(by_hand - expected).max():.2e})")

# 2. the adjoint: conv2d with the same array w (read as (C_out=2, C_in=3, k, k)) maps the
#    upsampled space back, and <conv2d(y, w), x> = <y, conv_transpose2d(x, w)>
y = rng.standard_normal(expected.shape)
z, _ = ops.conv2d_forward(y, w, stride=stride, padding=padding)
lhs, rhs = np.sum(z * x), np.sum(y * expected)
print("<conv2d(y), x> == <y, conv_transpose2d(x)>:", np.isclose(lhs, rhs), f"({lhs:.6f} vs {rhs:.6f})")

# 3. the bilinear kernel upsamples: kernel 2f, stride f, padding f/2
factor = 4
kernel = bilinear_kernel(2 * factor)
image = np.zeros((1, 1, 8, 8))
image[0, 0, 2:6, 3:5] = 1.0
image[0, 0, 1, 1] = 0.5
weight = kernel[None, None]
up, _ = ops.conv_transpose2d_forward(image, weight, stride=factor, padding=factor // 2)
print(f"bilinear kernel {kernel.shape}: 8x8 -> {up.shape[2]}x{up.shape[3]}")


def gray(a, scale=8):
    a = (a - a.min()) / max(a.max() - a.min(), 1e-12)
    g = (a * 255).astype(np.uint8)
    g = np.kron(g, np.ones((scale, scale), dtype=np.uint8))
    return np.repeat(g[..., None], 3, axis=2)


side_by_side([gray(x[0, 0], 16), gray(spread[0, 0], 16), gray(expected[0, 0], 8)]).save(
    os.path.join(args.out, "zero_insertion.png"))
Image.fromarray(gray(kernel, 16)).save(os.path.join(args.out, "bilinear_kernel.png"))
side_by_side([gray(image[0, 0], 16), gray(up[0, 0], 4)]).save(os.path.join(args.out, "bilinear_upsampling.png"))
print(f"figures in {args.out}/: zero_insertion.png (input | zero-inserted | output), "
      f"bilinear_kernel.png, bilinear_upsampling.png")
