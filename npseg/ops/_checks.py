"""Argument checks shared by every op.

One place turns bad input into a clear ``TypeError``/``ValueError`` that names the argument,
what was expected and what came, instead of a silent broadcast or an ``IndexError`` from deep
inside an op. The checks only read ``.dtype``, ``.shape`` and ``.ndim``, so ``npseg_gpu`` uses
the same functions on CuPy arrays.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from npseg._device import array_module

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _is_int(value) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool)


def pair(value, name: str, minimum: int | None = None) -> tuple[int, int]:
    """``3`` or ``(3, 5)`` -> ``(3, 3)`` / ``(3, 5)``; checks every entry is an int >= ``minimum``."""
    if _is_int(value):
        result = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        result = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or an (h, w) pair of ints, got {value!r}")
    if minimum is not None and min(result) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return result


def check_int(value, name: str, minimum: int | None = None) -> int:
    """An int (not a bool) >= ``minimum``."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_number(value, name: str, low=None, high=None, low_open=False, high_open=False) -> float:
    """A finite real number inside ``[low, high]`` (ends open where asked)."""
    if not isinstance(value, (numbers.Real, np.floating, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def check_choice(value, name: str, choices) -> str:
    """One of ``choices`` (e.g. a reduction or an interpolation mode)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def _is_array(x) -> bool:
    return hasattr(x, "dtype") and hasattr(x, "shape") and hasattr(x, "ndim")


def check_float_array(x, name: str, ndim: int | None = None, layout: str | None = None):
    """A float32/float64 array, of ``ndim`` dimensions when given (``layout`` names them)."""
    if not _is_array(x):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        what = f"{ndim}-D ({layout})" if layout else f"{ndim}-D"
        raise ValueError(f"{name} must be {what}, got shape {tuple(x.shape)}")
    return x


def check_int_array(x, name: str, shape: tuple | None = None):
    """An integer array, of exactly ``shape`` when given."""
    if not _is_array(x):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    if x.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got {x.dtype}")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    return x


def check_same_dtype(reference, reference_name: str, **others):
    """Every array in ``others`` (None allowed) has the dtype of ``reference``."""
    for name, arr in others.items():
        if arr is None:
            continue
        check_float_array(arr, name)
        if arr.dtype != reference.dtype:
            raise TypeError(
                f"{name} must have the dtype of {reference_name} ({reference.dtype}), got {arr.dtype}"
            )


def check_shape(x, name: str, shape: tuple):
    """``x.shape == shape`` exactly (no broadcasting)."""
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    return x


def check_dout(dout, shape: tuple, dtype):
    """``dout``, the upstream gradient of a backward, has the forward output's shape and dtype."""
    check_float_array(dout, "dout")
    check_shape(dout, "dout", shape)
    if dout.dtype != dtype:
        raise TypeError(f"dout must have the dtype of the forward's output ({dtype}), got {dout.dtype}")
    return dout


def check_finite(x, name: str):
    """No NaN or inf in ``x`` (boxes, RoIs, targets)."""
    xp = array_module(x)
    if x.size and not bool(xp.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf")
    return x


def check_reduction(reduction) -> str:
    return check_choice(reduction, "reduction", ("mean", "sum", "none"))


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int,
                     ceil_mode: bool = False) -> int:
    """Output length of a sliding window (PyTorch's rule, ``ceil_mode`` included).

    out = floor((size + 2p - d(k - 1) - 1) / s) + 1, or ceil(...) + 1 with ``ceil_mode``;
    with ``ceil_mode`` the last window must start inside the input or its left padding, and a
    (dilated) kernel slightly longer than the padded input, -s < span < 0, still gets one window
    (it runs past the padded border).
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if ceil_mode and -stride < span < 0:
        return 1
    if span < 0:
        return 0
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + padding:
            out -= 1
    else:
        out = span // stride + 1
    return out
