"""npseg: segmentation networks from scratch in NumPy, with hand-written backward passes.

Layers, bottom to top: ``npseg.ops`` (op pairs on arrays), ``npseg.autograd`` (Tensor),
``npseg.functional``, ``npseg.nn``, ``npseg.detection``, ``npseg.models``; around them
``npseg.data``, ``npseg.metrics``, ``npseg.optim``, ``npseg.train`` and the ``npseg`` command.
"""

from npseg.autograd import Tensor, no_grad
from npseg.ops._threads import get_num_threads, set_num_threads
from npseg.random import manual_seed

__version__ = "0.1.0"
__all__ = ["Tensor", "no_grad", "manual_seed", "get_num_threads", "set_num_threads",
           "__version__"]
