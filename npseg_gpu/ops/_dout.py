"""The upstream-gradient check every backward pass makes (the NumPy ops' message)."""

from __future__ import annotations

from npseg.ops._checks import check_float_array, check_shape


def check_dout(dout, shape, dtype, name: str = "dout"):
    """``dout`` is a float array with the forward output's ``shape`` and ``dtype``."""
    check_float_array(dout, name)
    check_shape(dout, name, shape)
    if dout.dtype != dtype:
        raise TypeError(f"{name} must have the dtype of the forward's output ({dtype}), "
                        f"got {dout.dtype}")
