"""The base of the training tasks: semantic segmentation and instance segmentation."""

from __future__ import annotations

__all__ = ["Task"]


class Task:
    """What the training loop (:mod:`npseg.train.loop`) asks of a kind of model.

    Subclasses set ``kind`` (stored in checkpoints) and ``score_name`` (the validation metric
    that picks ``best.npz``) and define ``loss(model, batch) -> (total, logs)``,
    ``evaluate(model, loader) -> dict``, ``write_predictions(model, dataset, out_dir, count)``
    and, for ``npseg predict``, ``render(model, image)``. The class count and names, and the
    device the batches go to, are kept here.
    """

    kind: str
    score_name: str

    def __init__(self, num_classes: int, class_names=None, device: str = "cpu"):
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.device = device
