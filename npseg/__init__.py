"""npseg: segmentation networks from scratch in NumPy, with hand-written backward passes."""

__version__ = "0.1.0"
