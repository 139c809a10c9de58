"""Layers: thin Modules that hold parameters and call :mod:`npseg.functional`.

Arguments, defaults, parameter shapes and default initialisation follow ``torch.nn``:
conv and linear weights ``kaiming_uniform_(a=sqrt(5))`` (that is U(-1/sqrt(fan_in),
1/sqrt(fan_in))), biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), BatchNorm gamma 1 and beta 0. Every
layer with parameters takes ``dtype`` (default float32) and ``device`` (default "cpu").
"""

from __future__ import annotations

import math

import numpy as np

from npseg import functional as F
from npseg.autograd import to_device
from npseg.nn import init
from npseg.nn.module import Module, Parameter
from npseg.ops._checks import check_choice, check_int, check_number, pair

__all__ = ["Identity", "Conv2d", "ConvTranspose2d", "Linear", "BatchNorm2d", "MaxPool2d",
           "MaxUnpool2d", "AvgPool2d", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Dropout",
           "Upsample", "Flatten", "CrossEntropyLoss", "BCEWithLogitsLoss", "SmoothL1Loss"]


def _empty(shape, dtype, device) -> Parameter:
    """A zero Parameter on ``device`` (the layer's ``reset_parameters`` then fills it)."""
    device = device or "cpu"
    return Parameter(to_device(np.zeros(shape, dtype=dtype), device), device=device)


def _float_dtype(dtype):
    dtype = np.dtype(dtype or np.float32)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


class Identity(Module):
    """Returns its input (any constructor arguments are ignored, as in PyTorch)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


# ----------------------------------------------------------------------------- conv / linear
class _ConvNd(Module):
    def _init_parameters(self, fan_in_shape):
        # kaiming_uniform_(a=sqrt(5)) gives bound = 1/sqrt(fan_in); the bias uses the same fan_in
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = fan_in_shape[1] * int(np.prod(fan_in_shape[2:]))
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def reset_parameters(self):
        self._init_parameters(self.weight.shape)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if getattr(self, "output_padding", (0, 0)) != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


def _check_groups(in_channels, out_channels, groups):
    check_int(in_channels, "in_channels", 1)
    check_int(out_channels, "out_channels", 1)
    check_int(groups, "groups", 1)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                         f"divisible by groups ({groups})")


class Conv2d(_ConvNd):
    """2-D convolution; weight (out_channels, in_channels/groups, kH, kW).

    ``padding``: int, pair, "valid" (0) or "same" (stride 1, output size = input size; only
    where the padding is symmetric, i.e. dilation * (k - 1) even).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        _check_groups(in_channels, out_channels, groups)
        check_choice(padding_mode, "padding_mode", ("zeros",))
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.dilation = pair(dilation, "dilation", 1)
        if padding == "valid":
            padding = 0
        elif padding == "same":
            if self.stride != (1, 1):
                raise ValueError("padding='same' needs stride 1")
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            if any(t % 2 for t in totals):
                raise ValueError("padding='same' needs dilation * (kernel_size - 1) even")
            padding = (totals[0] // 2, totals[1] // 2)
        self.padding = pair(padding, "padding", 0)
        dtype = _float_dtype(dtype)
        self.weight = _empty((out_channels, in_channels // groups) + self.kernel_size, dtype,
                             device)
        self.bias = _empty((out_channels,), dtype, device) if bias else None
        self.reset_parameters()

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution; weight (in_channels, out_channels/groups, kH, kW).

    Output size per axis: ``(H - 1) * stride - 2 * padding + dilation * (k - 1) +
    output_padding + 1``; ``forward(x, output_size=(H_out, W_out))`` picks ``output_padding``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None):
        super().__init__()
        _check_groups(in_channels, out_channels, groups)
        check_choice(padding_mode, "padding_mode", ("zeros",))
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        self.output_padding = pair(output_padding, "output_padding", 0)
        self.dilation = pair(dilation, "dilation", 1)
        dtype = _float_dtype(dtype)
        self.weight = _empty((in_channels, out_channels // groups) + self.kernel_size, dtype,
                             device)
        self.bias = _empty((out_channels,), dtype, device) if bias else None
        self.reset_parameters()

    def _output_padding(self, x, output_size):
        if output_size is None:
            return self.output_padding
        size = tuple(int(s) for s in tuple(output_size)[-2:])
        result = []
        for axis, want in enumerate(size):
            smallest = ((x.shape[2 + axis] - 1) * self.stride[axis] - 2 * self.padding[axis]
                        + self.dilation[axis] * (self.kernel_size[axis] - 1) + 1)
            extra = want - smallest
            if not 0 <= extra < max(self.stride[axis], self.dilation[axis]):
                raise ValueError(f"output_size {size} is not reachable from input {x.shape}: "
                                 f"axis {axis} allows {smallest} to "
                                 f"{smallest + max(self.stride[axis], self.dilation[axis]) - 1}")
            result.append(extra)
        return tuple(result)

    def forward(self, x, output_size=None):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  self._output_padding(x, output_size), self.groups,
                                  self.dilation)


class Linear(Module):
    """y = x W^T + b; weight (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = check_int(in_features, "in_features", 0)
        self.out_features = check_int(out_features, "out_features", 0)
        dtype = _float_dtype(dtype)
        self.weight = _empty((out_features, in_features), dtype, device)
        self.bias = _empty((out_features,), dtype, device) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


# ----------------------------------------------------------------------------- normalisation
class BatchNorm2d(Module):
    """Batch normalisation over the channels of (N, C, H, W).

    Training uses the batch statistics and updates ``running_mean``/``running_var`` (buffers)
    with ``momentum`` (``None``: a cumulative average over ``num_batches_tracked`` batches);
    evaluation uses the running statistics. ``affine``: learnable ``weight`` (gamma, init 1) and
    ``bias`` (beta, init 0). ``track_running_stats=False``: batch statistics always.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None):
        super().__init__()
        self.num_features = check_int(num_features, "num_features", 1)
        self.eps = check_number(eps, "eps", low=0, low_open=True)
        self.momentum = None if momentum is None else check_number(momentum, "momentum", 0, 1)
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        dtype = _float_dtype(dtype)
        if self.affine:
            self.weight = _empty((num_features,), dtype, device)
            self.bias = _empty((num_features,), dtype, device)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))
            if device not in (None, "cpu"):
                for b in self.buffers():
                    b.data, b.device = to_device(b.data, device), device
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, x):
        return self._forward(x, F.batch_norm)

    def forward_relu(self, x):
        """``relu(self(x))`` as one fused op (:func:`npseg.functional.batch_norm_relu`): the
        same numbers and the same update of the running statistics. ``nn.Sequential`` calls it
        for a BatchNorm2d followed by a ReLU."""
        return self._forward(x, F.batch_norm_relu)

    def _forward(self, x, batch_norm):
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d expects 4-D input (N, C, H, W), got shape {x.shape}")
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked.item())
        use_batch_stats = self.training or self.running_mean is None
        update = not self.training or self.track_running_stats
        return batch_norm(x, self.running_mean if update else None,
                          self.running_var if update else None, self.weight, self.bias,
                          use_batch_stats, momentum, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


# ----------------------------------------------------------------------------- pooling
class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.return_indices, self.ceil_mode = dilation, return_indices, ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode, self.return_indices)

    def extra_repr(self) -> str:
        stride = self.kernel_size if self.stride is None else self.stride
        return (f"kernel_size={self.kernel_size}, stride={stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxUnpool2d(Module):
    """Inverse of max pooling: ``forward(x, indices, output_size=None)``."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x, indices, output_size=None):
        return F.max_unpool2d(x, indices, self.kernel_size, self.stride, self.padding,
                              output_size)

    def extra_repr(self) -> str:
        stride = self.kernel_size if self.stride is None else self.stride
        return f"kernel_size={self.kernel_size}, stride={stride}, padding={self.padding}"


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        if divisor_override is not None:
            raise ValueError("divisor_override is not supported")
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)

    def extra_repr(self) -> str:
        stride = self.kernel_size if self.stride is None else self.stride
        return f"kernel_size={self.kernel_size}, stride={stride}, padding={self.padding}"


# ----------------------------------------------------------------------------- activations
class ReLU(Module):
    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        return F.relu(x)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Dropout(Module):
    """Zeroes each element with probability ``p`` in training (scaling the rest by 1/(1-p));
    the identity in evaluation."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        self.p = check_number(p, "p", 0, 1)
        self.inplace = inplace

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Upsample(Module):
    """Resize by ``size`` or ``scale_factor`` ("nearest" or "bilinear")."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None):
        super().__init__()
        self.size, self.scale_factor = size, scale_factor
        self.mode, self.align_corners = mode, align_corners

    def forward(self, x):
        return F.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners)

    def extra_repr(self) -> str:
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}"


class Flatten(Module):
    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


# ----------------------------------------------------------------------------- losses
class CrossEntropyLoss(Module):
    """``forward(input, target, pixel_weight=None)``; ``weight`` is a per-class buffer."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__()
        self.register_buffer("weight", weight)
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, input, target, pixel_weight=None):
        return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, pixel_weight=pixel_weight)


class BCEWithLogitsLoss(Module):
    def __init__(self, weight=None, reduction="mean"):
        super().__init__()
        self.register_buffer("weight", weight)
        self.reduction = reduction

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight,
                                                  reduction=self.reduction)


class SmoothL1Loss(Module):
    def __init__(self, reduction="mean", beta=1.0):
        super().__init__()
        self.reduction, self.beta = reduction, beta

    def forward(self, input, target):
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)
