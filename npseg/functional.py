"""Tensor-level ops: what models call. Arguments and defaults follow ``torch.nn.functional``.

Each differentiable op here is three lines of plumbing around an op pair of ``npseg.ops``:

    ops = _ops(x)                                        # npseg.ops, or npseg_gpu.ops on "cuda"
    out, cache = ops.relu_forward(x.data)                # arrays in, arrays out
    return record(out, (x,), lambda d: ops.relu_backward(d, cache))   # remember the backward

Structural ops (concat, pad, center_crop, ...) are plain array glue through the array module of
the data (NumPy or CuPy), with their backward written inline. Arguments that are not
differentiable (integer targets, pooling indices, RoIs, class weights) may be plain arrays or
Tensors; differentiable ones are Tensors (a plain array is wrapped as a constant).
"""

from __future__ import annotations

import math

import numpy as np

from npseg import random as _random
from npseg._device import ops_for
from npseg.autograd import Tensor, record
from npseg.ops._checks import check_choice, check_int, check_number, pair

__all__ = [
    # layers
    "conv2d", "conv_transpose2d", "linear", "max_pool2d", "max_unpool2d", "avg_pool2d",
    "batch_norm", "batch_norm_relu", "relu", "leaky_relu", "sigmoid", "tanh", "dropout",
    "interpolate",
    "softmax", "log_softmax",
    # losses
    "cross_entropy", "binary_cross_entropy_with_logits", "smooth_l1_loss",
    # detection
    "roi_align", "roi_pool",
    # structure
    "add", "sub", "mul", "div", "neg", "concat", "cat", "stack", "center_crop", "pad",
    "reshape", "flatten", "permute", "transpose", "sum", "mean", "exp", "log",
]


# ----------------------------------------------------------------------------- plumbing
def _tensor(x, name: str = "input") -> Tensor:
    if isinstance(x, Tensor):
        return x
    if hasattr(x, "dtype") and hasattr(x, "shape"):
        return Tensor(x)
    raise TypeError(f"{name} must be an npseg Tensor or an array, got {type(x).__name__}")


def _device(*tensors) -> str:
    """The one device of the given tensors (``None`` entries skipped)."""
    devices = {t.device for t in tensors if isinstance(t, Tensor)}
    if len(devices) > 1:
        raise ValueError(f"tensors are on different devices: {sorted(devices)}")
    return devices.pop() if devices else "cpu"


def _ops(*tensors):
    return ops_for(_device(*tensors))


def _data(x):
    """The array behind a Tensor, or ``x`` itself (arrays, None)."""
    return x.data if isinstance(x, Tensor) else x


# ----------------------------------------------------------------------------- layers
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """2-D cross-correlation: ``input`` (N, C_in, H, W), ``weight`` (C_out, C_in/groups, kH, kW)."""
    x, w = _tensor(input), _tensor(weight, "weight")
    b = None if bias is None else _tensor(bias, "bias")
    ops = _ops(x, w, b)
    out, cache = ops.conv2d_forward(x.data, w.data, _data(b), stride=stride, padding=padding,
                                    dilation=dilation, groups=groups)
    # x often needs no gradient (a network's input): then its half of the backward is skipped
    return record(out, (x, w, b),
                  lambda d: ops.conv2d_backward(d, cache, need_dx=x.requires_grad))


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1) -> Tensor:
    """Transposed convolution: ``weight`` (C_in, C_out/groups, kH, kW); torch's argument order."""
    x, w = _tensor(input), _tensor(weight, "weight")
    b = None if bias is None else _tensor(bias, "bias")
    ops = _ops(x, w, b)
    out, cache = ops.conv_transpose2d_forward(x.data, w.data, _data(b), stride=stride,
                                              padding=padding, output_padding=output_padding,
                                              dilation=dilation, groups=groups)
    return record(out, (x, w, b), lambda d: ops.conv_transpose2d_backward(d, cache))


def linear(input, weight, bias=None) -> Tensor:
    """y = x w^T + b over the last axis: ``input`` (..., in), ``weight`` (out, in)."""
    x, w = _tensor(input), _tensor(weight, "weight")
    b = None if bias is None else _tensor(bias, "bias")
    ops = _ops(x, w, b)
    if x.ndim < 1:
        raise ValueError(f"input must have at least 1 dimension, got shape {x.shape}")
    lead = x.shape[:-1]
    out, cache = ops.linear_forward(x.data.reshape(-1, x.shape[-1]), w.data, _data(b))
    x_shape = x.shape

    def backward(d):
        dx, dw, db = ops.linear_backward(d.reshape(-1, d.shape[-1]), cache)
        return dx.reshape(x_shape), dw, db

    return record(out.reshape(lead + (out.shape[-1],)), (x, w, b), backward)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max pooling; with ``return_indices`` returns ``(y, indices)``, indices a plain int array
    (flat within each input H*W plane) for :func:`max_unpool2d`."""
    x = _tensor(input)
    ops = _ops(x)
    (y, indices), cache = ops.max_pool2d_forward(x.data, kernel_size, stride=stride,
                                                 padding=padding, dilation=dilation,
                                                 ceil_mode=ceil_mode)
    out = record(y, (x,), lambda d: ops.max_pool2d_backward(d, cache))
    return (out, indices) if return_indices else out


def _unpool_default_size(in_size, kernel_size, stride, padding):
    kernel = pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None else pair(stride, "stride", 1)
    padding = pair(padding, "padding", 0)
    return tuple((n - 1) * s - 2 * p + k for n, s, p, k in zip(in_size, stride, padding, kernel))


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None) -> Tensor:
    """Put each value back at its max position (``indices`` from ``max_pool2d``), zeros elsewhere.

    Output size: ``output_size`` ((H, W), or a full shape whose last two entries are used), else
    ``(H_in - 1) * stride - 2 * padding + kernel_size`` per axis, as in PyTorch.
    """
    x = _tensor(input)
    ops = _ops(x)
    if output_size is None:
        size = _unpool_default_size(x.shape[-2:], kernel_size, stride, padding)
    else:
        size = tuple(int(s) for s in tuple(output_size)[-2:])
    out, cache = ops.max_unpool2d_forward(x.data, _data(indices), size)
    return record(out, (x,), lambda d: ops.max_unpool2d_backward(d, cache))


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True) -> Tensor:
    x = _tensor(input)
    ops = _ops(x)
    out, cache = ops.avg_pool2d_forward(x.data, kernel_size, stride=stride, padding=padding,
                                        ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    return record(out, (x,), lambda d: ops.avg_pool2d_backward(d, cache))


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5) -> Tensor:
    """Batch normalisation over axis 1 (torch's argument order).

    ``running_mean``/``running_var`` (Tensors or arrays) are updated in place when training;
    they may be ``None`` only when training (batch statistics, nothing kept). ``weight``/``bias``
    default to 1 and 0.
    """
    return _batch_norm("batch_norm", input, running_mean, running_var, weight, bias, training,
                       momentum, eps)


def batch_norm_relu(input, running_mean, running_var, weight=None, bias=None, training=False,
                    momentum=0.1, eps=1e-5) -> Tensor:
    """``relu(batch_norm(...))`` as one op (``ops.batch_norm_relu_forward``): the same numbers,
    fewer passes over memory. Arguments as :func:`batch_norm`."""
    return _batch_norm("batch_norm_relu", input, running_mean, running_var, weight, bias,
                       training, momentum, eps)


def _batch_norm(name, input, running_mean, running_var, weight, bias, training, momentum, eps):
    x = _tensor(input)
    gamma = None if weight is None else _tensor(weight, "weight")
    beta = None if bias is None else _tensor(bias, "bias")
    ops = _ops(x, gamma, beta)
    xp, c = x.xp, (x.shape[1] if x.ndim >= 2 else 0)
    if running_mean is None or running_var is None:
        if not training:
            raise ValueError("running_mean and running_var are needed when training=False")
        mean_arr, var_arr = xp.zeros(c, dtype=x.dtype), xp.ones(c, dtype=x.dtype)  # scratch
    else:
        mean_arr, var_arr = _data(running_mean), _data(running_var)
    g = gamma.data if gamma is not None else xp.ones(c, dtype=x.dtype)
    b = beta.data if beta is not None else xp.zeros(c, dtype=x.dtype)
    out, cache = getattr(ops, f"{name}_forward")(x.data, g, b, mean_arr, var_arr, training,
                                                 momentum=momentum, eps=eps)
    backward = getattr(ops, f"{name}_backward")
    return record(out, (x, gamma, beta), lambda d: backward(d, cache))


def _activation(name, x, *args):
    x = _tensor(x)
    ops = _ops(x)
    out, cache = getattr(ops, f"{name}_forward")(x.data, *args)
    backward = getattr(ops, f"{name}_backward")
    return record(out, (x,), lambda d: backward(d, cache))


def relu(input, inplace: bool = False) -> Tensor:
    """max(x, 0). ``inplace`` is accepted for PyTorch compatibility; the result is always new."""
    return _activation("relu", input)


def leaky_relu(input, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    return _activation("leaky_relu", input, negative_slope)


def sigmoid(input) -> Tensor:
    return _activation("sigmoid", input)


def tanh(input) -> Tensor:
    return _activation("tanh", input)


def dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False,
            generator=None) -> Tensor:
    """Inverted dropout; the mask is drawn from ``generator`` or ``npseg.random.generator(device)``."""
    x = _tensor(input)
    ops = _ops(x)
    rng = generator if generator is not None else _random.generator(x.device)
    out, cache = ops.dropout_forward(x.data, p, training, rng)
    return record(out, (x,), lambda d: ops.dropout_backward(d, cache))


def interpolate(input, size=None, scale_factor=None, mode: str = "nearest",
                align_corners=None) -> Tensor:
    """Resize the last two axes to ``size`` or ``floor(H * scale_factor)``.

    Modes "nearest" and "bilinear". With ``scale_factor`` the output size is computed first and
    the sampling uses the ratio of sizes (PyTorch's ``recompute_scale_factor=True``); for integer
    factors this equals PyTorch's default.
    """
    x = _tensor(input)
    check_choice(mode, "mode", ("nearest", "bilinear"))
    if mode == "nearest" and align_corners is not None:
        raise ValueError("align_corners can only be set with mode='bilinear'")
    if (size is None) == (scale_factor is None):
        raise ValueError("give exactly one of size and scale_factor")
    if x.ndim != 4:
        raise ValueError(f"input must be 4-D (N, C, H, W), got shape {x.shape}")
    if size is None:
        if isinstance(scale_factor, (tuple, list)):
            sh, sw = (check_number(s, "scale_factor", low=0, low_open=True) for s in scale_factor)
        else:
            sh = sw = check_number(scale_factor, "scale_factor", low=0, low_open=True)
        size = (int(math.floor(x.shape[2] * sh)), int(math.floor(x.shape[3] * sw)))
    ops = _ops(x)
    out, cache = ops.interpolate_forward(x.data, size, mode=mode,
                                         align_corners=bool(align_corners))
    return record(out, (x,), lambda d: ops.interpolate_backward(d, cache))


def softmax(input, dim: int) -> Tensor:
    """exp(x - max) / sum exp(x - max) along ``dim``; dx = y * (d - sum(d * y))."""
    x = _tensor(input)
    xp = x.xp
    e = xp.exp(x.data - x.data.max(axis=dim, keepdims=True))
    y = e / e.sum(axis=dim, keepdims=True)
    return record(y, (x,), lambda d: (y * (d - (d * y).sum(axis=dim, keepdims=True)),))


def log_softmax(input, dim: int) -> Tensor:
    """x - logsumexp(x) along ``dim``; dx = d - softmax(x) * sum(d)."""
    x = _tensor(input)
    xp = x.xp
    shifted = x.data - x.data.max(axis=dim, keepdims=True)
    y = shifted - xp.log(xp.exp(shifted).sum(axis=dim, keepdims=True))
    return record(y, (x,), lambda d: (d - xp.exp(y) * d.sum(axis=dim, keepdims=True),))


# ----------------------------------------------------------------------------- losses
def cross_entropy(input, target, weight=None, *, ignore_index: int = -100,
                  reduction: str = "mean", pixel_weight=None) -> Tensor:
    """Softmax cross entropy over axis 1; ``target`` integer classes; ``pixel_weight`` is a
    per-element weight of ``target``'s shape (U-Net's weight map; not in PyTorch).

    The arguments after ``weight`` are keyword-only: PyTorch's positional order has the
    deprecated ``size_average``/``reduce`` in between, which npseg does not take."""
    x = _tensor(input)
    ops = _ops(x)
    out, cache = ops.cross_entropy_forward(x.data, _data(target), weight=_data(weight),
                                           ignore_index=ignore_index, reduction=reduction,
                                           pixel_weight=_data(pixel_weight))
    return record(out, (x,), lambda d: ops.cross_entropy_backward(d, cache))


def binary_cross_entropy_with_logits(input, target, weight=None, *,
                                     reduction: str = "mean") -> Tensor:
    """Sigmoid + binary cross entropy; ``target`` is a constant of ``input``'s shape.
    ``reduction`` is keyword-only (see :func:`cross_entropy`)."""
    x = _tensor(input)
    ops = _ops(x)
    out, cache = ops.binary_cross_entropy_with_logits_forward(x.data, _data(target),
                                                              weight=_data(weight),
                                                              reduction=reduction)
    return record(out, (x,),
                  lambda d: ops.binary_cross_entropy_with_logits_backward(d, cache))


def smooth_l1_loss(input, target, *, reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """Smooth L1 of ``input - target`` (``target`` a constant); keyword-only options."""
    x = _tensor(input)
    ops = _ops(x)
    out, cache = ops.smooth_l1_loss_forward(x.data, _data(target), beta=beta, reduction=reduction)
    return record(out, (x,), lambda d: ops.smooth_l1_loss_backward(d, cache))


# ----------------------------------------------------------------------------- detection
def _rois(boxes, x: Tensor):
    """``(K, 5)`` rois ``(batch_index, x1, y1, x2, y2)`` from a (K, 5) array or a list of (L, 4)
    boxes per image (torchvision's two forms)."""
    xp = x.xp
    if isinstance(boxes, (list, tuple)):
        parts = []
        for i, b in enumerate(boxes):
            b = xp.asarray(_data(b), dtype=x.dtype)
            if b.ndim != 2 or b.shape[1] != 4:
                raise ValueError(f"boxes[{i}] must be (L, 4), got shape {tuple(b.shape)}")
            parts.append(xp.concatenate([xp.full((b.shape[0], 1), i, dtype=x.dtype), b], axis=1))
        return xp.concatenate(parts, axis=0) if parts else xp.zeros((0, 5), dtype=x.dtype)
    return _data(boxes)


def roi_align(input, boxes, output_size, spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False) -> Tensor:
    """RoIAlign (torchvision); gradients flow to ``input`` only."""
    x = _tensor(input)
    ops = _ops(x)
    out, cache = ops.roi_align_forward(x.data, _rois(boxes, x), output_size,
                                       spatial_scale=spatial_scale,
                                       sampling_ratio=sampling_ratio, aligned=aligned)
    return record(out, (x,), lambda d: ops.roi_align_backward(d, cache))


def roi_pool(input, boxes, output_size, spatial_scale: float = 1.0) -> Tensor:
    """RoIPool (torchvision); gradients flow to ``input`` only."""
    x = _tensor(input)
    ops = _ops(x)
    out, cache = ops.roi_pool_forward(x.data, _rois(boxes, x), output_size,
                                      spatial_scale=spatial_scale)
    return record(out, (x,), lambda d: ops.roi_pool_backward(d, cache))


# ----------------------------------------------------------------------------- structure
def add(input, other) -> Tensor:
    return _tensor(input) + other


def sub(input, other) -> Tensor:
    return _tensor(input) - other


def mul(input, other) -> Tensor:
    return _tensor(input) * other


def div(input, other) -> Tensor:
    return _tensor(input) / other


def neg(input) -> Tensor:
    return -_tensor(input)


def _axis(dim, axis, default=0):
    if dim is not None and axis is not None and dim != axis:
        raise ValueError("give dim or axis, not both")
    return default if dim is None and axis is None else (dim if dim is not None else axis)


def concat(tensors, dim: int | None = None, *, axis: int | None = None) -> Tensor:
    """Join tensors along ``dim`` (``axis`` is an alias); the gradient is split back."""
    tensors = [_tensor(t, f"tensors[{i}]") for i, t in enumerate(tensors)]
    if not tensors:
        raise ValueError("concat needs at least one tensor")
    dim = _axis(dim, axis)
    device = _device(*tensors)
    xp = tensors[0].xp
    ndim = tensors[0].ndim
    dim = check_int(dim, "dim") % max(ndim, 1)
    for i, t in enumerate(tensors):
        if t.ndim != ndim or t.shape[:dim] + t.shape[dim + 1:] != \
                tensors[0].shape[:dim] + tensors[0].shape[dim + 1:]:
            raise ValueError(f"concat: tensors[{i}] has shape {t.shape}, which does not match "
                             f"{tensors[0].shape} outside axis {dim}")
    bounds = np.cumsum([t.shape[dim] for t in tensors])[:-1].tolist()
    out = xp.concatenate([t.data for t in tensors], axis=dim)
    return record(out, tensors, lambda d: tuple(xp.split(d, bounds, axis=dim)), device=device)


cat = concat


def stack(tensors, dim: int = 0) -> Tensor:
    """Join same-shaped tensors along a new axis ``dim``."""
    tensors = [_tensor(t, f"tensors[{i}]") for i, t in enumerate(tensors)]
    if not tensors:
        raise ValueError("stack needs at least one tensor")
    device = _device(*tensors)
    xp = tensors[0].xp
    dim = check_int(dim, "dim") % (tensors[0].ndim + 1)
    out = xp.stack([t.data for t in tensors], axis=dim)
    n = len(tensors)
    return record(out, tensors,
                  lambda d: tuple(xp.take(d, i, axis=dim) for i in range(n)), device=device)


def center_crop(input, size) -> Tensor:
    """The central ``(h, w)`` window of the last two axes (U-Net crops a skip before concat).

    The window starts at ``((H - h) // 2, (W - w) // 2)``: with an odd margin the extra row or
    column is cut at the bottom/right. ``size`` is an int or ``(h, w)``; a size larger than the
    input is an error.
    """
    x = _tensor(input)
    h, w = pair(size, "size", 0)
    if x.ndim < 2:
        raise ValueError(f"input must have at least 2 dimensions, got shape {x.shape}")
    H, W = x.shape[-2:]
    if h > H or w > W:
        raise ValueError(f"size must fit inside the input's {(H, W)}, got {(h, w)}")
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top:top + h, left:left + w]


def pad(input, pad, mode: str = "constant", value: float = 0.0) -> Tensor:
    """Constant padding, torch's order: ``(left, right)`` pads the last axis, ``(left, right,
    top, bottom)`` the last two, and so on. Pads must be >= 0."""
    x = _tensor(input)
    check_choice(mode, "mode", ("constant",))
    value = check_number(value, "value")
    if not isinstance(pad, (tuple, list)) or len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad must be a tuple of 2 * k ints (k <= input.ndim), got {pad!r}")
    pad = [check_int(p, "pad", minimum=0) for p in pad]
    widths = [(0, 0)] * x.ndim
    for k in range(len(pad) // 2):
        widths[x.ndim - 1 - k] = (pad[2 * k], pad[2 * k + 1])
    xp = x.xp
    out = xp.pad(x.data, widths, mode="constant", constant_values=value)
    inner = tuple(slice(lo, n + lo) for (lo, _), n in zip(widths, x.shape))
    return record(out, (x,), lambda d: (d[inner],))


def reshape(input, shape) -> Tensor:
    return _tensor(input).reshape(shape)


def flatten(input, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    return _tensor(input).flatten(start_dim, end_dim)


def permute(input, dims) -> Tensor:
    return _tensor(input).permute(dims)


def transpose(input, dim0: int, dim1: int) -> Tensor:
    return _tensor(input).transpose(dim0, dim1)


def sum(input, dim=None, keepdim: bool = False) -> Tensor:  # noqa: A001 (torch's name)
    return _tensor(input).sum(dim, keepdim)


def mean(input, dim=None, keepdim: bool = False) -> Tensor:
    return _tensor(input).mean(dim, keepdim)


def exp(input) -> Tensor:
    return _tensor(input).exp()


def log(input) -> Tensor:
    return _tensor(input).log()

