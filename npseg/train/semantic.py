"""The semantic-segmentation task: data, loss, evaluation and prediction pictures.

A *task* tells the generic loop (:mod:`npseg.train.loop`) what one training step computes and how
a model is scored; the loop owns epochs, checkpoints, resume and the progress bar.
"""

from __future__ import annotations

import os

import numpy as np

from npseg import functional as F
from npseg.autograd import Tensor, no_grad, to_device
from npseg.data.folder import FolderDataset
from npseg.data.shapes import ShapesDataset
from npseg.data.transforms import Compose, RandomHorizontalFlip, RandomScaleCrop
from npseg.metrics.semantic import SegmentationMetric

from .task import Task
from .visualize import colorize, overlay, side_by_side, to_uint8_image

__all__ = ["SemanticTask", "build_datasets", "IGNORE_INDEX"]

IGNORE_INDEX = 255


def build_datasets(config, split: str | None = None):
    """``(train, val, train_transform)`` for ``config.data`` (``"shapes"`` or a folder path).

    With ``split`` given, only that split is built and returned as ``(dataset, None, None)``.
    """
    if config.data == "shapes":
        sizes = {"train": config.train_size, "val": config.val_size, "test": config.val_size}
        make = lambda s: ShapesDataset(s, size=sizes[s], image_size=config.image_size,  # noqa: E731
                                       seed=config.seed)
        transform = RandomHorizontalFlip(0.5)
    else:
        if not os.path.isdir(config.data):
            raise ValueError(f"--data must be 'shapes' or an existing folder, got {config.data!r} "
                             f"(no such folder)")
        make = lambda s: FolderDataset(config.data, split=s, num_classes=config.num_classes,  # noqa: E731
                                       ignore_index=IGNORE_INDEX)
        transform = Compose([RandomHorizontalFlip(0.5),
                             RandomScaleCrop((0.5, 2.0), config.image_size, ignore_index=IGNORE_INDEX)])
    if split is not None:
        return make(split), None, None
    return make("train"), make("val"), transform


def _center_crop_array(a, height: int, width: int):
    top, left = (a.shape[-2] - height) // 2, (a.shape[-1] - width) // 2
    return a[..., top:top + height, left:left + width]


class SemanticTask(Task):
    """Per-pixel cross entropy (ignoring label 255); scored by validation mIoU."""

    kind = "semantic"
    score_name = "miou"

    def forward(self, model, images: np.ndarray):
        """Class scores of the size of ``images``. A model whose output is smaller than its input
        (the paper's valid U-Net) gets the image mirror-padded to the size it needs, and its
        output is center-cropped back: the paper's overlap-tile strategy."""
        height, width = images.shape[2], images.shape[3]
        if hasattr(model, "input_size_for") and getattr(model, "padding", "same") == "valid":
            need_h, need_w = model.input_size_for(height), model.input_size_for(width)
            ph, pw = need_h - height, need_w - width
            images = np.pad(images, ((0, 0), (0, 0), (ph // 2, ph - ph // 2),
                                     (pw // 2, pw - pw // 2)), mode="reflect")
        logits = model(Tensor(to_device(np.ascontiguousarray(images), self.device), device=self.device))
        if logits.shape[2:] != (height, width):
            top, left = (logits.shape[2] - height) // 2, (logits.shape[3] - width) // 2
            logits = logits[:, :, top:top + height, left:left + width]
        return logits

    def _cross_entropy(self, logits, labels):
        return F.cross_entropy(logits, to_device(labels, self.device), ignore_index=IGNORE_INDEX)

    def loss(self, model, batch):
        """``(loss Tensor, {name: float})`` of one batch."""
        loss = self._cross_entropy(self.forward(model, batch["images"]), batch["labels"])
        return loss, {"loss": float(loss.data)}

    def predict(self, model, images: np.ndarray) -> np.ndarray:
        """(N, H, W) int64 predicted classes, on the host."""
        with no_grad():
            logits = self.forward(model, images)
        xp_pred = logits.data.argmax(axis=1)
        return np.asarray(xp_pred.get() if hasattr(xp_pred, "get") else xp_pred, dtype=np.int64)

    def evaluate(self, model, loader) -> dict:
        """``miou``, ``pixel_accuracy``, ``per_class_iou`` and the mean ``val_loss`` over a loader."""
        was_training = model.training
        model.eval()
        metric = SegmentationMetric(self.num_classes, ignore_index=IGNORE_INDEX)
        losses = []
        try:
            for batch in loader.iter_epoch(0):
                with no_grad():
                    logits = self.forward(model, batch["images"])
                    losses.append(float(self._cross_entropy(logits, batch["labels"]).data))
                pred = logits.data.argmax(axis=1)
                metric.update(np.asarray(pred.get() if hasattr(pred, "get") else pred), batch["labels"])
        finally:
            model.train(was_training)
        result = metric.compute()
        result["val_loss"] = float(np.mean(losses)) if losses else float("nan")
        return {k: result[k] for k in ("miou", "pixel_accuracy", "per_class_iou", "val_loss")}

    def write_predictions(self, model, dataset, out_dir: str, count: int) -> list:
        """``image | truth | prediction`` overlays of the first ``count`` samples as PNG."""
        os.makedirs(out_dir, exist_ok=True)
        was_training = model.training
        model.eval()
        paths = []
        try:
            for i in range(min(count, len(dataset))):
                sample = dataset[i]
                pred = self.predict(model, sample["image"][None].astype(np.float32))[0]
                panels = [to_uint8_image(sample["image"]), overlay(sample["image"], sample["label"]),
                          overlay(sample["image"], pred)]
                path = os.path.join(out_dir, f"{i:03d}.png")
                side_by_side(panels).save(path)
                paths.append(path)
        finally:
            model.train(was_training)
        return paths

    def render(self, model, image: np.ndarray):
        """A PIL picture of the prediction for one (3, H, W) image: image | overlay | mask."""
        pred = self.predict(model, image[None].astype(np.float32))[0]
        return side_by_side([to_uint8_image(image), overlay(image, pred), colorize(pred)])
