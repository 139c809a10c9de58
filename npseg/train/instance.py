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

__all__ = ["evaluate_instances", "predict_instances", "instance_loss_names"]

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
