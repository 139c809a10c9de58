"""Dropout on the device: the very functions of :mod:`npseg.ops.dropout`.

They are array-module agnostic: on the GPU pass the device generator
(``npseg_gpu.random.default_rng(seed)``, a CuPy generator), whose ``rng.random(x.shape)``
draws the uniforms on the device; the mask and the products are CuPy elementwise code.
"""

from npseg.ops.dropout import dropout_backward, dropout_forward

__all__ = ["dropout_forward", "dropout_backward"]
