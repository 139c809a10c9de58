"""The RoI heads of Mask R-CNN: multi-level RoIAlign, the box head and the mask head.

**Multi-level RoIAlign** (:func:`multilevel_roi_align`). Each RoI is pooled from one FPN level,
``k = floor(4 + log2(sqrt(w h) / 224))`` clamped to P2..P5 (``npseg.detection.assign_levels``),
with ``roi_align(aligned=True)`` at that level's scale ``1 / 2**k``. RoIAlign runs once per
level on the RoIs of that level; the pieces are concatenated and put back in RoI order by a
permutation, so the result is differentiable w.r.t. every level's feature map.

**Box head**: RoIAlign 7x7 -> flatten -> FC (1024) + ReLU -> FC (1024) + ReLU -> two linear
predictors: class logits ``(R, num_classes + 1)`` (column 0 the background) and class-specific
deltas ``(R, 4 num_classes)`` (class ``k`` in columns ``4 (k - 1) .. 4 k - 1``; no background
slot, as Detectron2), coded with weights ``(10, 10, 5, 5)``.

**Mask head**: RoIAlign 14x14 -> four 3x3 conv (256) + ReLU -> 2x2 stride-2 transposed conv +
ReLU -> 1x1 conv: one ``28 x 28`` mask logit map per class. Each class has its own sigmoid: the
mask of class ``k`` does not compete with the other classes (no softmax over classes).

**Training** (per image, ``npseg.detection.build_roi_targets_for_image``): the ground-truth boxes
are appended to the proposals, proposals are matched at IoU 0.5, 512 are sampled with at most
25 % foreground. Over the ``S`` sampled RoIs of the batch and their ``S+`` foreground ones::

    loss_cls  = sum_{r in S} CE(class_logits_r, label_r) / |S|
    loss_box  = sum_{r in S+} smooth_l1(deltas_r[label_r] - target_r; beta) / |S|
    loss_mask = mean over r in S+ and the 28x28 pixels of BCE(mask_logits_r[label_r], target_r)

where ``deltas_r[label_r]`` and ``mask_logits_r[label_r]`` are the outputs of the ground-truth
class only, and the mask target is the matched instance mask cropped to the RoI and resized to
28 x 28 (``npseg.detection.mask_targets``). Without foreground RoIs the mask loss is
``0 * sum(mask_logits)`` (0, with zero gradients).

**Inference** (per image): softmax class probabilities, boxes decoded per class and clipped to
the image, (box, class) pairs with probability ``> 0.05`` kept, empty boxes dropped, NMS 0.5 per
class, the 100 best kept; then the mask head on those boxes, the predicted class's channel,
sigmoid, pasted into the image and thresholded at 0.5.
"""

from __future__ import annotations

import numpy as np

from npseg import functional as F
from npseg import nn
from npseg._device import array_module, ops_for_array
from npseg.autograd import Tensor, record
from npseg.detection import (BoxCoder, RoITargetConfig, assign_levels,
                             build_roi_targets_for_image, clip_boxes_to_image, mask_targets,
                             nonempty_boxes, paste_masks_in_image)

__all__ = ["BoxHead", "MaskHead", "RoIHeads", "multilevel_roi_align", "take_rows",
           "boxes_to_rois"]


# ----------------------------------------------------------------------------- pooling
def take_rows(x: Tensor, index) -> Tensor:
    """``x[index]`` along axis 0 for an index array **without repeats** (a permutation or a
    subset): the gradient is scattered back by plain assignment instead of ``np.add.at``."""
    shape, xp = x.shape, x.xp

    def backward(d):
        g = xp.zeros(shape, dtype=d.dtype)
        g[index] = d
        return (g,)

    return record(x.data[index], (x,), backward)


def boxes_to_rois(boxes_per_image, dtype, xp=np):
    """A list of ``(R_i, 4)`` boxes -> ``(sum R_i, 5)`` rois ``(batch_index, x1, y1, x2, y2)``."""
    parts = [xp.concatenate([xp.full((b.shape[0], 1), i, dtype=dtype), b.astype(dtype)], axis=1)
             for i, b in enumerate(boxes_per_image)]
    return xp.concatenate(parts, axis=0) if parts else xp.zeros((0, 5), dtype=dtype)


def multilevel_roi_align(features, rois, output_size, k_min: int = 2,
                         sampling_ratio: int = 0, canonical_size: float = 224.0,
                         canonical_level: int = 4) -> Tensor:
    """RoIAlign of every RoI on its FPN level, differentiable w.r.t. the feature maps.

    ``features``: Tensors P``k_min``, P``k_min+1``, ... (finest first, level ``k`` at stride
    ``2**k``); ``rois``: ``(R, 5)`` array ``(batch_index, x1, y1, x2, y2)`` in image pixels.
    Returns ``(R, C, out_h, out_w)`` in RoI order (``aligned=True``).
    """
    k_max = k_min + len(features) - 1
    xp = array_module(rois)
    if rois.shape[0] == 0:
        return F.roi_align(features[0], rois, output_size, 1.0 / 2 ** k_min, sampling_ratio,
                           aligned=True)
    levels = assign_levels(rois[:, 1:], k_min, k_max, canonical_size, canonical_level)
    pieces, order = [], []
    for offset, feature in enumerate(features):
        idx = xp.nonzero(levels == k_min + offset)[0]
        if idx.size == 0:
            continue
        pieces.append(F.roi_align(feature, rois[idx], output_size, 1.0 / 2 ** (k_min + offset),
                                  sampling_ratio, aligned=True))
        order.append(idx)
    pooled = pieces[0] if len(pieces) == 1 else F.concat(pieces, dim=0)
    order = xp.concatenate(order)
    if bool((order == xp.arange(order.size)).all()):
        return pooled
    return take_rows(pooled, xp.argsort(order))       # row j of the result is RoI j


# ----------------------------------------------------------------------------- heads
class BoxHead(nn.Module):
    """Flatten -> FC + ReLU -> FC + ReLU -> (class logits, class-specific deltas).

    ``forward(x)`` with ``x (R, C, r, r)`` returns ``(R, num_classes + 1)`` logits and
    ``(R, 4 num_classes)`` deltas. FC layers: ``kaiming_uniform_(a=1)`` (Detectron2's
    ``c2_xavier_fill``); class predictor normal(0.01), box predictor normal(0.001); biases 0.
    """

    def __init__(self, in_channels: int, resolution: int, num_classes: int, fc_dim: int = 1024):
        super().__init__()
        self.num_classes = int(num_classes)
        self.fc1 = nn.Linear(in_channels * resolution * resolution, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        self.cls_score = nn.Linear(fc_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(fc_dim, 4 * num_classes)
        for fc in (self.fc1, self.fc2):
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x):
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.cls_score(x), self.bbox_pred(x)


class MaskHead(nn.Module):
    """``num_conv`` x (3x3 conv + ReLU) -> 2x2/2 transposed conv + ReLU -> 1x1 conv per class.

    ``forward(x)`` with ``x (R, C, m, m)`` returns mask logits ``(R, num_classes, 2m, 2m)``.
    Convs: ``kaiming_normal_(mode="fan_out")`` (Detectron2), predictor normal(0.001); biases 0.
    """

    def __init__(self, in_channels: int, num_classes: int, conv_dim: int = 256,
                 num_conv: int = 4):
        super().__init__()
        self.num_classes = int(num_classes)
        convs, c = [], in_channels
        for _ in range(num_conv):
            convs.append(nn.Conv2d(c, conv_dim, 3, padding=1))
            c = conv_dim
        self.convs = nn.ModuleList(convs)
        self.deconv = nn.ConvTranspose2d(c, conv_dim, 2, stride=2)
        self.predictor = nn.Conv2d(conv_dim, num_classes, 1)
        for layer in list(self.convs) + [self.deconv]:
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x):
        for conv in self.convs:
            x = F.relu(conv(x))
        x = F.relu(self.deconv(x))
        return self.predictor(x)


def _select_class(x: Tensor, classes) -> Tensor:
    """``x[r, classes[r]]`` for every row ``r`` (``x`` is ``(R, K, ...)``): the output of one
    class per RoI, differentiable (each element is picked at most once)."""
    xp = x.xp
    rows = xp.arange(x.shape[0])
    shape = x.shape

    def backward(d):
        g = xp.zeros(shape, dtype=d.dtype)
        g[rows, classes] = d
        return (g,)

    return record(x.data[rows, classes], (x,), backward)


# ----------------------------------------------------------------------------- RoI heads
class RoIHeads(nn.Module):
    """Box and mask heads over the FPN levels P2..P5, with their training losses and the
    inference post-processing (module docstring).

    ``forward(features, proposals, image_size, targets=None, rng=None)``:

    * ``features``: Tensors P2..P5; ``proposals``: a list of ``(R_i, 4)`` arrays per image;
    * ``targets`` (training): per-image dicts with ``boxes (G, 4)`` (features' dtype, clipped
      to the image), ``labels (G,)`` int64 in ``1..num_classes`` and ``masks (G, H, W)``.

    Returns ``(detections, losses)``: in training ``(None, {"loss_cls", "loss_box",
    "loss_mask"})``, else a list of per-image dicts (``boxes``, ``labels``, ``scores``,
    ``masks``) and ``{}``.
    """

    def __init__(self, in_channels: int, num_classes: int, config):
        super().__init__()
        self.config = config
        self.num_classes = int(num_classes)
        self.box_head = BoxHead(in_channels, config.box_pooler_resolution, num_classes,
                                config.box_fc_dim)
        self.mask_head = MaskHead(in_channels, num_classes, config.mask_conv_dim,
                                  config.mask_num_conv)
        self.box_coder = BoxCoder(tuple(config.box_reg_weights))
        self.target_config = RoITargetConfig(
            batch_size_per_image=config.roi_batch_size_per_image,
            positive_fraction=config.roi_positive_fraction,
            fg_iou_threshold=config.roi_iou_threshold,
            bg_iou_threshold=config.roi_iou_threshold,
            bbox_reg_weights=tuple(config.box_reg_weights),
            append_gt_boxes=True)

    def pool(self, features, rois, output_size):
        cfg = self.config
        return multilevel_roi_align(features, rois, output_size, 2, cfg.pooler_sampling_ratio,
                                    cfg.pooler_canonical_size, cfg.pooler_canonical_level)

    def forward(self, features, proposals, image_size, targets=None, rng=None):
        features = list(features)
        if self.training:
            if targets is None:
                raise ValueError("the RoI heads need targets in training mode")
            return None, self.losses(features, proposals, targets, rng)
        return self.inference(features, proposals, image_size), {}

    # --- training ---------------------------------------------------------------------------
    def losses(self, features, proposals, targets, rng):
        cfg = self.config
        dtype = features[0].dtype
        xp = features[0].xp
        sampled = [build_roi_targets_for_image(p.astype(dtype, copy=False), t["boxes"],
                                               t["labels"], rng, self.target_config)
                   for p, t in zip(proposals, targets)]
        rois = boxes_to_rois([s.proposals for s in sampled], dtype, xp)
        labels = xp.concatenate([s.labels for s in sampled])
        regression = xp.concatenate([s.regression_targets for s in sampled])
        count = max(int(labels.size), 1)

        class_logits, deltas = self.box_head(self.pool(features, rois,
                                                       cfg.box_pooler_resolution))
        loss_cls = F.cross_entropy(class_logits, labels, reduction="sum") * (1.0 / count)

        fg = xp.nonzero(labels > 0)[0]
        fg_labels = labels[fg]
        fg_deltas = _select_class(take_rows(deltas, fg).reshape(fg.size, self.num_classes, 4),
                                  fg_labels - 1)                                   # (F, 4)
        loss_box = F.smooth_l1_loss(fg_deltas, regression[fg], reduction="sum",
                                    beta=cfg.box_smooth_l1_beta) * (1.0 / count)

        # mask head on the foreground RoIs only; targets from each image's instance masks
        mask_logits = self.mask_head(self.pool(features, rois[fg], cfg.mask_size // 2))
        if fg.size == 0:
            loss_mask = mask_logits.sum() * 0.0
        else:
            mask_targets_all = []
            for s, t in zip(sampled, targets):
                n_fg = s.num_foreground
                mask_targets_all.append(mask_targets(t["masks"], s.proposals[:n_fg],
                                                     s.matched_gt[:n_fg], cfg.mask_size))
            picked = _select_class(mask_logits, fg_labels - 1)                     # (F, M, M)
            loss_mask = F.binary_cross_entropy_with_logits(
                picked, xp.concatenate(mask_targets_all).astype(dtype, copy=False))
        return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_mask": loss_mask}

    # --- inference --------------------------------------------------------------------------
    def inference(self, features, proposals, image_size):
        cfg = self.config
        dtype = features[0].dtype
        xp = features[0].xp
        rois = boxes_to_rois([p.astype(dtype, copy=False) for p in proposals], dtype, xp)
        class_logits, deltas = self.box_head(self.pool(features, rois,
                                                       cfg.box_pooler_resolution))
        probs = F.softmax(class_logits, dim=1).data
        deltas = deltas.data
        counts = [p.shape[0] for p in proposals]
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)

        results = []
        for i in range(len(proposals)):
            lo, hi = starts[i], starts[i + 1]
            results.append(self._detect_one(probs[lo:hi], deltas[lo:hi], rois[lo:hi, 1:],
                                            image_size))
        # mask head on the final boxes of all images at once
        final_rois = boxes_to_rois([r["boxes"] for r in results], dtype, xp)
        final_labels = xp.concatenate([r["labels"] for r in results])
        mask_logits = self.mask_head(self.pool(features, final_rois, cfg.mask_size // 2))
        soft = F.sigmoid(_select_class(mask_logits, final_labels - 1)).data       # (D, M, M)
        start = 0
        for r in results:
            n = r["boxes"].shape[0]
            r["masks"] = paste_masks_in_image(soft[start:start + n], r["boxes"], image_size,
                                              threshold=cfg.mask_threshold)
            start += n
        return results

    def _detect_one(self, probs, deltas, proposals, image_size):
        """Boxes, labels, scores of one image from its proposals' class probabilities."""
        cfg = self.config
        xp = array_module(probs)
        num_classes = self.num_classes
        finite = xp.isfinite(deltas).all(axis=1) & xp.isfinite(probs).all(axis=1)
        deltas = xp.where(finite[:, None], deltas, 0).astype(deltas.dtype, copy=False)
        boxes = self.box_coder.decode(deltas, proposals).reshape(-1, num_classes, 4)
        boxes = clip_boxes_to_image(boxes.reshape(-1, 4), image_size)            # (R*K, 4)
        scores = xp.where(finite[:, None], probs[:, 1:], 0).reshape(-1)          # (R*K,)
        labels = xp.broadcast_to(xp.arange(1, num_classes + 1, dtype=xp.int64),
                                 (probs.shape[0], num_classes)).reshape(-1)
        keep = (scores > cfg.score_threshold) & nonempty_boxes(boxes)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = ops_for_array(boxes).batched_nms(boxes, scores, labels, cfg.nms_threshold)
        keep = keep[:cfg.detections_per_image]
        return {"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]}
