"""npseg.train: the training loop, its configuration and tasks, and overlay pictures."""

from .config import PRESETS, TrainConfig
from .loop import load_trained, train

__all__ = ["TrainConfig", "PRESETS", "train", "load_trained"]
