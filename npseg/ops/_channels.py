"""Per-channel operands laid out for NumPy's fast loops.

Adding or multiplying a per-channel vector to (N, C, L) data, ``x + v[:, None]``, hands NumPy's
inner loop (along L) a stride-0 operand, which takes a slower loop: 1.5-2x slower than the same
operation with an operand of contiguous rows, measured on the U-Net preset's layers (NumPy 2).
:func:`spread` builds those rows; broadcast over N, they cost 1/N of the data they act on.
"""

from __future__ import annotations

import numpy as np

__all__ = ["spread"]


def spread(v, length):
    """The (c,) vector ``v`` as a (c, length) array whose row k repeats v[k]."""
    return np.repeat(v, length).reshape(len(v), length)
