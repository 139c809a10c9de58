"""Evaluation of instance segmentation models (Mask R-CNN) with COCO-style AP.

:func:`evaluate_instances` runs a model in inference mode over a data set whose samples carry
instance annotations (``masks``, ``boxes``, ``labels``; e.g. ``ShapesDataset``), converts the
detections to COCO results and scores them with :func:`npseg.metrics.evaluate_detections`
against the data set's ground truth (``npseg.data.shapes_to_coco``), for boxes and for masks.

The training loop itself sums the model's losses (:data:`instance_loss_names`)::

    losses = model(Tensor(batch["images"]), batch["instances"])
    total = sum(losses.values())
    total.backward()
"""

from __future__ import annotations

import numpy as np

from npseg.autograd import Tensor, no_grad, to_device
from npseg.data.coco import shapes_to_coco
from npseg.data.loader import DataLoader
from npseg.metrics.coco_eval import evaluate_detections, to_coco_results
from npseg.models.maskrcnn_config import LOSS_NAMES

from .task import Task

__all__ = ["evaluate_instances", "predict_instances", "instance_loss_names", "InstanceTask",
           "build_instance_run", "build_instance_datasets"]

#: the loss keys a Mask R-CNN returns in training mode (their sum is the objective)
instance_loss_names = LOSS_NAMES


def _model_device(model) -> str:
    for p in model.parameters():
        return p.device
    return "cpu"


def _model_dtype(model):
    for p in model.parameters():
        return p.dtype
    return np.dtype(np.float32)


def predict_instances(model, images) -> list:
    """Detections of ``model`` (put in eval mode for the call) on ``images (N, 3, H, W)``, as
    host NumPy arrays: a list of dicts ``boxes``, ``labels``, ``scores``, ``masks``."""
    was_training = model.training
    model.eval()
    try:
        device = _model_device(model)
        x = Tensor(to_device(np.asarray(images, dtype=_model_dtype(model)), device),
                   device=device)
        with no_grad():
            out = model(x)
    finally:
        model.train(was_training)
    return [{k: np.asarray(to_device(v, "cpu")) for k, v in det.items()} for det in out]


def evaluate_instances(model, dataset, batch_size: int = 4, max_dets: int = 100,
                       indices=None) -> dict:
    """COCO box and mask AP of ``model`` on ``dataset`` (or its ``indices``).

    Returns ``bbox_AP``, ``bbox_AP50``, ``bbox_AP75``, ``segm_AP``, ``segm_AP50``,
    ``segm_AP75`` (floats in [0, 1]; -1 where undefined, e.g. no ground truth) and
    ``num_images``, ``num_detections``. The model's train/eval mode is restored afterwards.
    """
    if indices is not None:
        subset = _Subset(dataset, [int(i) for i in indices])
    else:
        subset = dataset
    gt = shapes_to_coco(subset)
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False)
    results = []
    num_detections = 0
    for batch in loader:
        predictions = predict_instances(model, batch["images"])
        ids = [int(i) if i is not None else int(j)
               for i, j in zip(batch["image_ids"], batch["indices"])]
        num_detections += sum(len(p["scores"]) for p in predictions)
        results.extend(to_coco_results(predictions, image_ids=ids))
    bbox = evaluate_detections(gt, results, "bbox", max_dets=max_dets)
    # segm: the area of a result comes from its mask (drop the box, as detectron2 does)
    segm_results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    segm = evaluate_detections(gt, segm_results, "segm", max_dets=max_dets)
    out = {}
    for prefix, metrics in (("bbox", bbox), ("segm", segm)):
        for key in ("AP", "AP50", "AP75"):
            out[f"{prefix}_{key}"] = float(metrics[key])
    out["num_images"] = len(subset)
    out["num_detections"] = int(num_detections)
    return out


class _Subset:
    """The samples ``indices`` of ``dataset``, keeping their ``image_id``s."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, indices
        self.class_names = getattr(dataset, "class_names")
        self.split = getattr(dataset, "split", "data")

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        sample = self.dataset[self.indices[i]]
        sample.setdefault("image_id", self.indices[i])
        return sample


# --------------------------------------------------------------------------- the training task

def build_instance_datasets(config, split: str | None = None):
    """Shapes data with instances for Mask R-CNN: ``(train, val, transform)``, or
    ``(dataset, None, None)`` for one ``split``."""
    from npseg.data.shapes import ShapesDataset
    from npseg.data.transforms import RandomHorizontalFlip

    if config.data != "shapes":
        raise ValueError(f"maskrcnn trains on --data shapes only for now, got {config.data!r}")
    sizes = {"train": config.train_size, "val": config.val_size, "test": config.val_size}
    make = lambda s: ShapesDataset(s, size=sizes[s], image_size=config.image_size,  # noqa: E731
                                   seed=config.seed)
    if split is not None:
        return make(split)
    return make("train"), make("val"), RandomHorizontalFlip(0.5)


def build_instance_run(config):
    """``(model, task, train, val, transform)`` for ``npseg train maskrcnn``.

    ``config.model_config["config"]`` is a preset name or a full :class:`MaskRCNNConfig` dict;
    it is replaced by the full dict, so a checkpoint rebuilds the same model even if a preset
    changes later.
    """
    from npseg.models import build_model

    train_set, val_set, transform = build_instance_datasets(config)
    model = build_model("maskrcnn", train_set.num_classes - 1, **config.model_config)
    config.model_config = dict(config.model_config, config=model.config.to_dict())
    task = InstanceTask(train_set.num_classes, train_set.class_names, config.device)
    return model, task, train_set, val_set, transform


class InstanceTask(Task):
    """The sum of Mask R-CNN's five losses; scored by validation mask AP50 (COCO-style)."""

    kind = "instance"
    score_name = "segm_AP50"

    def loss(self, model, batch):
        images = Tensor(to_device(batch["images"], self.device), device=self.device)
        losses = model(images, batch["instances"])
        total = sum(losses.values())
        logs = {name: float(value.data) for name, value in losses.items()}
        logs["loss"] = float(total.data)
        return total, logs

    def evaluate(self, model, loader) -> dict:
        return evaluate_instances(model, loader.dataset, batch_size=loader.batch_size)

    def evaluate_dataset(self, model, dataset) -> dict:
        return evaluate_instances(model, dataset)

    def write_predictions(self, model, dataset, out_dir: str, count: int) -> list:
        """``truth | prediction`` pictures (boxes, labels, scores, coloured masks) as PNG."""
        import os

        from .visualize import draw_instances, side_by_side

        os.makedirs(out_dir, exist_ok=True)
        paths = []
        for i in range(min(count, len(dataset))):
            sample = dataset[i]
            det = predict_instances(model, sample["image"][None])[0]
            truth = draw_instances(sample["image"], sample["boxes"], sample["labels"],
                                   masks=sample["masks"], class_names=self.class_names)
            pred = draw_instances(sample["image"], det["boxes"], det["labels"], det["scores"],
                                  det["masks"], class_names=self.class_names)
            path = os.path.join(out_dir, f"{i:03d}.png")
            side_by_side([np.asarray(truth), np.asarray(pred)]).save(path)
            paths.append(path)
        return paths

    def render(self, model, image):
        from .visualize import draw_instances

        det = predict_instances(model, image[None].astype(np.float32))[0]
        return draw_instances(image, det["boxes"], det["labels"], det["scores"], det["masks"],
                              class_names=self.class_names)
