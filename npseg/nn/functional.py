"""``npseg.nn.functional``: the same functions as :mod:`npseg.functional` (PyTorch's spelling,
``import npseg.nn.functional as F``)."""

from npseg.functional import *  # noqa: F401,F403
from npseg.functional import __all__  # noqa: F401
