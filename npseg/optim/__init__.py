"""npseg.optim: optimizers (SGD, Adam, AdamW) and learning-rate schedulers, PyTorch's rules."""

from npseg.optim import lr_scheduler
from npseg.optim.adam import Adam, AdamW
from npseg.optim.optimizer import Optimizer
from npseg.optim.sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]
