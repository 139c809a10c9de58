"""From RPN outputs to region proposals (Detectron2's ``find_top_rpn_proposals``).

For every image of the batch:

1. on every FPN level keep the ``pre_nms_topk`` anchors with the highest objectness logit
   (2000 in training, 1000 at test time; all of them if the level has fewer);
2. decode their deltas against their anchors (weights ``(1, 1, 1, 1)``, ``dw, dh`` clamped to
   ``log(1000/16)``);
3. drop boxes or scores that are not finite, clip the boxes to the image
   (``0 <= x <= width``, ``0 <= y <= height``) and drop boxes whose width or height is not
   ``> min_size`` (Detectron2's ``nonempty``: with ``min_size = 0`` only empty boxes go);
4. NMS at ``nms_thresh = 0.7`` within each level (``batched_nms`` with the level as the group);
5. keep the ``post_nms_topk`` best of all levels together (1000 in training and test).

Scores are the objectness **logits** (Detectron2): ``sigmoid`` is monotonic, so the ranking is
the same as with probabilities, and logits do not saturate to ties at 1.0 in float32.

Steps 1-2 run vectorized over the whole batch; steps 3-5 loop over the images, whose numbers of
surviving boxes differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from npseg._device import array_module, ops_for_array
from npseg.ops._checks import check_bool, check_float_array, check_int, check_number

from .box_coder import BoxCoder, check_boxes

__all__ = [
    "ProposalConfig",
    "generate_proposals",
    "flatten_rpn_outputs",
    "clip_boxes_to_image",
    "nonempty_boxes",
]


@dataclass(frozen=True)
class ProposalConfig:
    """Sizes and thresholds of proposal selection (Detectron2 / torchvision FPN defaults)."""

    pre_nms_topk_train: int = 2000
    pre_nms_topk_test: int = 1000
    post_nms_topk_train: int = 1000
    post_nms_topk_test: int = 1000
    nms_thresh: float = 0.7
    min_size: float = 0.0

    def __post_init__(self):
        for name in ("pre_nms_topk_train", "pre_nms_topk_test", "post_nms_topk_train",
                     "post_nms_topk_test"):
            check_int(getattr(self, name), name, minimum=0)
        check_number(self.nms_thresh, "nms_thresh", low=0.0, high=1.0)
        check_number(self.min_size, "min_size", low=0.0)

    def pre_nms_topk(self, training: bool) -> int:
        return self.pre_nms_topk_train if training else self.pre_nms_topk_test

    def post_nms_topk(self, training: bool) -> int:
        return self.post_nms_topk_train if training else self.post_nms_topk_test


def flatten_rpn_outputs(objectness, deltas):
    """RPN head maps of one level -> per-anchor arrays in the anchors' ``(y, x, anchor)`` order.

    ``objectness (N, A, H, W) -> (N, H*W*A)``; ``deltas (N, A*4, H, W) -> (N, H*W*A, 4)``
    (channel ``a * 4 + c`` is coordinate ``c`` of anchor ``a``).
    """
    check_float_array(objectness, "objectness", ndim=4, layout="N, A, H, W")
    check_float_array(deltas, "deltas", ndim=4, layout="N, A*4, H, W")
    n, a, h, w = objectness.shape
    if tuple(deltas.shape) != (n, a * 4, h, w):
        raise ValueError(f"deltas must have shape {(n, a * 4, h, w)} to match objectness "
                         f"{tuple(objectness.shape)}, got {tuple(deltas.shape)}")
    scores = objectness.transpose(0, 2, 3, 1).reshape(n, h * w * a)
    boxes = deltas.reshape(n, a, 4, h, w).transpose(0, 3, 4, 1, 2).reshape(n, h * w * a, 4)
    return scores, boxes


def clip_boxes_to_image(boxes, image_size):
    """Clamp ``(K, 4)`` boxes into ``image_size = (h, w)``: ``0 <= x <= w``, ``0 <= y <= h``."""
    height, width = image_size
    xp = array_module(boxes)
    upper = xp.asarray([width, height, width, height], dtype=boxes.dtype)
    return xp.minimum(xp.maximum(boxes, 0), upper)


def nonempty_boxes(boxes, min_size: float = 0.0):
    """Boolean ``(K,)``: width ``> min_size`` and height ``> min_size``."""
    return ((boxes[:, 2] - boxes[:, 0]) > min_size) & ((boxes[:, 3] - boxes[:, 1]) > min_size)


def _top_k(xp, scores, k: int):
    """Indices ``(N, k)`` of the ``k`` largest entries of every row, in decreasing order."""
    if k == 0:
        return xp.zeros((scores.shape[0], 0), dtype=xp.int64)
    if k < scores.shape[1]:
        part = xp.argpartition(-scores, k - 1, axis=1)[:, :k]                 # unordered top k
        order = xp.argsort(-xp.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        return xp.take_along_axis(part, order, axis=1)
    return xp.argsort(-scores, axis=1, kind="stable")


def _check_image_sizes(image_sizes, batch: int):
    if not isinstance(image_sizes, (tuple, list)) or len(image_sizes) != batch:
        raise ValueError(f"image_sizes must be a list of {batch} (height, width) pairs, "
                         f"got {image_sizes!r}")
    out = []
    for i, size in enumerate(image_sizes):
        if not isinstance(size, (tuple, list)) or len(size) != 2:
            raise ValueError(f"image_sizes[{i}] must be a (height, width) pair, got {size!r}")
        out.append((check_number(size[0], f"image_sizes[{i}]", low=0.0, low_open=True),
                    check_number(size[1], f"image_sizes[{i}]", low=0.0, low_open=True)))
    return out


def generate_proposals(objectness, deltas, anchors, image_sizes, training: bool = False,
                       config: ProposalConfig = ProposalConfig()):
    """Proposals for every image of the batch.

    ``objectness``: one ``(N, H_l*W_l*A_l)`` logit array per level; ``deltas``: one
    ``(N, H_l*W_l*A_l, 4)`` array per level; ``anchors``: one ``(H_l*W_l*A_l, 4)`` array per
    level (shared by the images); ``image_sizes``: ``N`` pairs ``(height, width)``.
    Returns a list of ``N`` pairs ``(boxes (R_i, 4), scores (R_i,))``, sorted by decreasing
    score, ``R_i <= post_nms_topk``.
    """
    check_bool(training, "training")
    if not isinstance(config, ProposalConfig):
        raise TypeError(f"config must be a ProposalConfig, got {type(config).__name__}")
    if not isinstance(objectness, (tuple, list)) or not objectness:
        raise ValueError("objectness must be a non-empty list of (N, H*W*A) arrays, one per level")
    levels = len(objectness)
    for name, value in (("deltas", deltas), ("anchors", anchors)):
        if not isinstance(value, (tuple, list)) or len(value) != levels:
            raise ValueError(f"{name} must be a list with one array per level ({levels}), "
                             f"got {type(value).__name__} of length "
                             f"{len(value) if isinstance(value, (tuple, list)) else '-'}")
    batch = None
    for lvl in range(levels):
        s = check_float_array(objectness[lvl], f"objectness[{lvl}]", ndim=2, layout="N, H*W*A")
        d = check_float_array(deltas[lvl], f"deltas[{lvl}]", ndim=3, layout="N, H*W*A, 4")
        a = check_boxes(anchors[lvl], f"anchors[{lvl}]")
        batch = s.shape[0] if batch is None else batch
        if s.shape[0] != batch:
            raise ValueError(f"objectness[{lvl}] must have {batch} images like objectness[0], "
                             f"got shape {tuple(s.shape)}")
        if tuple(d.shape) != (batch, s.shape[1], 4):
            raise ValueError(f"deltas[{lvl}] must have shape {(batch, s.shape[1], 4)}, "
                             f"got {tuple(d.shape)}")
        if tuple(a.shape) != (s.shape[1], 4):
            raise ValueError(f"anchors[{lvl}] must have shape {(s.shape[1], 4)}, "
                             f"got {tuple(a.shape)}")
        if d.dtype != s.dtype or a.dtype != s.dtype:
            raise TypeError(f"objectness, deltas and anchors of level {lvl} must share one dtype, "
                            f"got {s.dtype}, {d.dtype}, {a.dtype}")
    sizes = _check_image_sizes(image_sizes, batch)

    xp = array_module(objectness[0])
    ops = ops_for_array(objectness[0])
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    pre_k, post_k = config.pre_nms_topk(training), config.post_nms_topk(training)

    # 1-2: top-k per level for the whole batch at once, then decode only those.
    level_boxes, level_scores, level_ids, level_valid = [], [], [], []
    for lvl in range(levels):
        scores, level_deltas, level_anchors = objectness[lvl], deltas[lvl], anchors[lvl]
        k = min(pre_k, scores.shape[1])
        idx = _top_k(xp, scores, k)                                             # (N, k)
        top_scores = xp.take_along_axis(scores, idx, axis=1)                    # (N, k)
        top_deltas = xp.take_along_axis(level_deltas, idx[:, :, None], axis=1)  # (N, k, 4)
        top_anchors = level_anchors[idx]                                        # (N, k, 4)
        finite = xp.isfinite(top_deltas)
        valid = finite.all(axis=2) & xp.isfinite(top_scores)                   # (N, k)
        safe_deltas = xp.where(finite, top_deltas, 0).astype(top_deltas.dtype)  # dropped later
        decoded = coder.decode(safe_deltas.reshape(-1, 4), top_anchors.reshape(-1, 4))
        level_boxes.append(decoded.reshape(batch, k, 4))
        level_scores.append(top_scores)
        level_ids.append(xp.full((batch, k), lvl, dtype=xp.int64))
        level_valid.append(valid)
    boxes_all = xp.concatenate(level_boxes, axis=1)      # (N, sum k, 4)
    scores_all = xp.concatenate(level_scores, axis=1)    # (N, sum k)
    ids_all = xp.concatenate(level_ids, axis=1)          # (N, sum k)
    valid_all = xp.concatenate(level_valid, axis=1) & xp.isfinite(boxes_all).all(axis=2)

    # 3-5: per image (the survivors differ in number).
    results = []
    for i in range(batch):
        valid = valid_all[i]
        boxes, scores, ids = boxes_all[i][valid], scores_all[i][valid], ids_all[i][valid]
        boxes = clip_boxes_to_image(boxes, sizes[i])
        keep = nonempty_boxes(boxes, config.min_size)
        boxes, scores, ids = boxes[keep], scores[keep], ids[keep]
        keep = ops.batched_nms(boxes, scores, ids, config.nms_thresh)[:post_k]
        results.append((boxes[keep], scores[keep]))
    return results
