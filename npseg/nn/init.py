"""Weight initialisation, in place, as ``torch.nn.init`` (plus ``bilinear_`` from FCN).

Each function fills a Parameter/Tensor (or a NumPy array) in place and returns it. Random ones
draw on the host from ``generator`` (default ``npseg.random.generator()``) in float64, then cast
to the tensor's dtype and copy to its device: the same seed gives the same weights on any device.

Fans of a weight of shape (out, in, *kernel): ``fan_in = in * prod(kernel)``,
``fan_out = out * prod(kernel)`` (for a transposed conv, whose weight is (in, out, ...), PyTorch
applies the same formula to the stored shape, and so does this module).
"""

from __future__ import annotations

import math

import numpy as np

from npseg import random as _random
from npseg.autograd import Tensor, to_device

__all__ = ["calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_",
           "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_",
           "bilinear_", "bilinear_kernel"]


def _shape(tensor):
    return tuple(tensor.shape)


def _write(tensor, values: np.ndarray):
    """Store host ``values`` into ``tensor`` (Tensor or array) in place; returns ``tensor``."""
    if isinstance(tensor, Tensor):
        tensor.data = to_device(np.asarray(values, dtype=tensor.dtype), tensor.device)
    else:
        tensor[...] = values
    return tensor


def _rng(generator):
    return generator if generator is not None else _random.generator()


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The gain that keeps activations' variance through ``nonlinearity`` (PyTorch's table)."""
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                        "conv_transpose2d", "conv_transpose3d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def _fans(shape) -> tuple[int, int]:
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a tensor with at least 2 dims, got {shape}")
    receptive = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def uniform_(tensor, a: float = 0.0, b: float = 1.0, generator=None):
    """Fill with U(a, b)."""
    return _write(tensor, _rng(generator).uniform(a, b, size=_shape(tensor)))


def normal_(tensor, mean: float = 0.0, std: float = 1.0, generator=None):
    """Fill with N(mean, std^2)."""
    return _write(tensor, _rng(generator).normal(mean, std, size=_shape(tensor)))


def constant_(tensor, val: float):
    return _write(tensor, np.full(_shape(tensor), val))


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def _kaiming_std(shape, a, mode, nonlinearity):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(shape)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor, a: float = 0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", generator=None):
    """U(-bound, bound) with bound = gain * sqrt(3 / fan) (He et al.)."""
    bound = math.sqrt(3.0) * _kaiming_std(_shape(tensor), a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a: float = 0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", generator=None):
    """N(0, std^2) with std = gain / sqrt(fan) (He et al.)."""
    return normal_(tensor, 0.0, _kaiming_std(_shape(tensor), a, mode, nonlinearity), generator)


def xavier_uniform_(tensor, gain: float = 1.0, generator=None):
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio)."""
    fan_in, fan_out = _fans(_shape(tensor))
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain: float = 1.0, generator=None):
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(_shape(tensor))
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def bilinear_kernel(kh: int, kw: int | None = None) -> np.ndarray:
    """The (kh, kw) kernel with which a stride-f transposed conv does bilinear upsampling.

    Per axis of size k: f = ceil(k / 2), centre c = f - 1 (k odd) or f - 0.5 (k even), and
    ``w[i] = 1 - |i - c| / f``; the 2-D kernel is the outer product (FCN's upsampling init).
    """
    kw = kh if kw is None else kw

    def line(k):
        f = (k + 1) // 2
        c = f - 1 if k % 2 == 1 else f - 0.5
        return 1 - np.abs(np.arange(k) - c) / f

    return np.outer(line(kh), line(kw))


def bilinear_(tensor):
    """Fill a transposed-conv weight (C_in, C_out/groups, kH, kW) so the layer upsamples each
    channel bilinearly: channel i -> i gets :func:`bilinear_kernel`, every other pair 0 (with a
    depthwise weight of shape (C, 1, kH, kW) every channel gets the kernel)."""
    shape = _shape(tensor)
    if len(shape) != 4:
        raise ValueError(f"bilinear_ needs a 4-D weight (C_in, C_out, kH, kW), got {shape}")
    c_in, c_out, kh, kw = shape
    values = np.zeros(shape)
    kernel = bilinear_kernel(kh, kw)
    if c_out == 1:
        values[:, 0] = kernel
    else:
        n = min(c_in, c_out)
        values[np.arange(n), np.arange(n)] = kernel
    return _write(tensor, values)
