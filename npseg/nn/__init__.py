"""npseg.nn: Module, Parameter, containers, layers and losses, with PyTorch's names.

``npseg.nn.init`` initialises weights; ``npseg.nn.functional`` is :mod:`npseg.functional`.
"""

from npseg.nn import functional, init
from npseg.nn.layers import *  # noqa: F401,F403
from npseg.nn.layers import __all__ as _layers
from npseg.nn.module import Module, ModuleDict, ModuleList, Parameter, Sequential

__all__ = ["Module", "Parameter", "Sequential", "ModuleList", "ModuleDict", "init",
           "functional"] + list(_layers)
