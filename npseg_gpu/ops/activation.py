"""Activations on the device: the very functions of :mod:`npseg.ops.activation`.

Those are written for any array module (``xp = array_module(x)``), so on CuPy arrays they run as
CuPy elementwise code; one piece of code serves both devices.
"""

from npseg.ops.activation import (leaky_relu_backward, leaky_relu_forward, relu_backward,
                                  relu_forward, sigmoid_backward, sigmoid_forward,
                                  tanh_backward, tanh_forward)

__all__ = [
    "relu_forward", "relu_backward",
    "leaky_relu_forward", "leaky_relu_backward",
    "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward",
]
