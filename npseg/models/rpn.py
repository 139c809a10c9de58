"""Region Proposal Network: objectness and box deltas for every anchor of every FPN level.

**Head** (shared by all levels): a 3x3 conv + ReLU ("sliding window"), then two 1x1 convs —
``A`` objectness logits and ``4 A`` box deltas per location, ``A`` anchors per location (three
aspect ratios of one size per level). Initialised as Detectron2: normal(std 0.01), biases 0.

**Training targets** (per image; all levels' anchors together, in the anchors' ``(y, x, a)``
order that ``flatten_rpn_outputs`` gives the head's maps):

* match anchors to ground truth by IoU: ``>= 0.7`` positive, ``< 0.3`` negative, in between
  ignored, and every ground truth's best anchors positive too (``allow_low_quality_matches``);
* sample 256 anchors, at most half positive (``BalancedPositiveNegativeSampler``);
* regression targets of the positives: ``encode(gt, anchor)`` with weights ``(1, 1, 1, 1)``.

**Losses** over the sampled anchors ``S`` of the whole batch (``|S| = 256 * images`` when every
image has enough anchors)::

    loss_rpn_objectness = sum_{a in S} BCE(logit_a, [a positive]) / |S|
    loss_rpn_box        = sum_{a in S+} smooth_l1(delta_a - target_a; beta) / |S|

(``beta = 0``, plain L1, by default as Detectron2).

**Proposals** (``npseg.detection.generate_proposals``): top-k per level, decode, clip, NMS 0.7
per level, top-k overall. They are computed from the head's arrays, outside the graph: the RoI
heads treat proposals as constants (no gradient flows into the box coordinates).
"""

from __future__ import annotations

from npseg import functional as F
from npseg import nn
from npseg._device import array_module, ops_for_array
from npseg.detection import (AnchorGenerator, BoxCoder, Matcher, ProposalConfig,
                             generate_proposals, subsample_labels)

__all__ = ["RPNHead", "RPN", "flatten_head_outputs"]


class RPNHead(nn.Module):
    """3x3 conv (``in_channels``) + ReLU, then 1x1 convs to ``A`` logits and ``4 A`` deltas.

    ``forward(features)`` takes a list of ``(N, C, H_l, W_l)`` maps and returns two lists:
    objectness ``(N, A, H_l, W_l)`` and deltas ``(N, 4 A, H_l, W_l)`` (channel ``4 a + c`` is
    coordinate ``c`` of anchor ``a``).
    """

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.num_anchors = int(num_anchors)
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness = nn.Conv2d(in_channels, num_anchors, 1)
        self.deltas = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        for conv in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features):
        objectness, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            objectness.append(self.objectness(t))
            deltas.append(self.deltas(t))
        return objectness, deltas


def flatten_head_outputs(objectness, deltas):
    """Lists of per-level head maps -> ``(N, M)`` logits and ``(N, M, 4)`` deltas (Tensors).

    Level ``l``: ``(N, A, H, W) -> (N, H*W*A)`` and ``(N, 4A, H, W) -> (N, A, 4, H, W) ->
    (N, H, W, A, 4) -> (N, H*W*A, 4)``, the order of the anchors; levels concatenated, so
    ``M = sum_l H_l W_l A_l``. Differentiable (reshape, permute, concat).
    """
    flat_obj, flat_del = [], []
    for o, d in zip(objectness, deltas):
        n, a, h, w = o.shape
        flat_obj.append(o.permute(0, 2, 3, 1).reshape(n, h * w * a))
        flat_del.append(d.reshape(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, h * w * a, 4))
    return F.concat(flat_obj, dim=1), F.concat(flat_del, dim=1)


class RPN(nn.Module):
    """Anchors + :class:`RPNHead` + training losses + proposals.

    Args:
        in_channels: channels of the FPN levels.
        config: a :class:`~npseg.models.maskrcnn_config.MaskRCNNConfig` (anchor sizes, strides
            and ratios; matching, sampling, proposal sizes, smooth L1 beta).

    ``forward(features, image_size, targets=None, rng=None)``:

    * ``features``: list of the FPN maps P2..P6 (Tensors);
    * ``image_size``: ``(H, W)`` of the (padded) input images;
    * ``targets``: in training, a list of per-image dicts with ``boxes`` (``(G, 4)`` arrays on
      the features' device and dtype, already clipped to the image);
    * ``rng``: the ``numpy.random.Generator`` of the anchor sampling.

    Returns ``(proposals, losses)``: a list (per image) of ``(R_i, 4)`` proposal boxes (arrays,
    highest objectness first) and, in training, ``{"loss_rpn_objectness", "loss_rpn_box"}``
    (else an empty dict).
    """

    def __init__(self, in_channels: int, config):
        super().__init__()
        self.config = config
        self.anchor_generator = AnchorGenerator(
            sizes=tuple((s,) for s in config.anchor_sizes),
            aspect_ratios=tuple(config.anchor_aspect_ratios),
            strides=tuple(config.anchor_strides))
        anchors_per_location = self.anchor_generator.num_anchors_per_location()
        self.head = RPNHead(in_channels, anchors_per_location[0])
        self.matcher = Matcher(config.rpn_fg_iou_threshold, config.rpn_bg_iou_threshold,
                               allow_low_quality_matches=True)
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.proposal_config = ProposalConfig(
            pre_nms_topk_train=config.rpn_pre_nms_topk_train,
            pre_nms_topk_test=config.rpn_pre_nms_topk_test,
            post_nms_topk_train=config.rpn_post_nms_topk_train,
            post_nms_topk_test=config.rpn_post_nms_topk_test,
            nms_thresh=config.rpn_nms_threshold, min_size=config.rpn_min_size)

    def anchors(self, features):
        """One ``(H_l * W_l * A, 4)`` anchor array per level, on the features' device/dtype."""
        sizes = [tuple(f.shape[-2:]) for f in features]
        return self.anchor_generator(sizes, like=features[0].data)

    def forward(self, features, image_size, targets=None, rng=None, compute_proposals=True):
        features = list(features)
        if len(features) != self.anchor_generator.num_levels:
            raise ValueError(f"the RPN expects {self.anchor_generator.num_levels} feature levels "
                             f"(one per anchor size), got {len(features)}")
        objectness, deltas = self.head(features)
        anchors = self.anchors(features)
        batch = features[0].shape[0]

        proposals = None
        if compute_proposals:
            # Proposals come from the arrays: they are constants for the RoI heads.
            level_scores, level_deltas = [], []
            for o, d in zip(objectness, deltas):
                n, a, h, w = o.shape
                level_scores.append(o.data.transpose(0, 2, 3, 1).reshape(n, h * w * a))
                level_deltas.append(d.data.reshape(n, a, 4, h, w).transpose(0, 3, 4, 1, 2)
                                    .reshape(n, h * w * a, 4))
            found = generate_proposals(level_scores, level_deltas, anchors,
                                       [tuple(image_size)] * batch, training=self.training,
                                       config=self.proposal_config)
            proposals = [boxes for boxes, _ in found]

        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("the RPN needs targets in training mode")
            losses = self.losses(objectness, deltas, anchors, targets, rng)
        return proposals, losses

    # --- training ---------------------------------------------------------------------------
    def label_anchors(self, anchors, gt_boxes):
        """``(labels (M,) int8 in {1, 0, -1}, matched gt (M,) int64)`` for one image."""
        if gt_boxes.shape[0] == 0:                    # no objects: every anchor is background
            iou = array_module(anchors).zeros((0, anchors.shape[0]), dtype=anchors.dtype)
        else:
            iou = ops_for_array(anchors).box_iou(gt_boxes, anchors)     # (G, M)
        matches, labels = self.matcher(iou)
        return labels, matches

    def losses(self, objectness, deltas, anchors, targets, rng):
        cfg = self.config
        logits, box_deltas = flatten_head_outputs(objectness, deltas)  # (N, M), (N, M, 4)
        all_anchors = _concat(anchors)                                  # (M, 4)
        batch, m = logits.shape
        xp = logits.xp
        sampled, sampled_labels, positive, positive_targets = [], [], [], []
        for i, target in enumerate(targets):
            gt_boxes = target["boxes"]
            labels, matches = self.label_anchors(all_anchors, gt_boxes)
            pos, neg = subsample_labels(labels, cfg.rpn_batch_size_per_image,
                                        cfg.rpn_positive_fraction, rng)
            sampled.append(i * m + xp.concatenate([pos, neg]))
            sampled_labels.append(xp.concatenate([xp.ones(pos.size, dtype=all_anchors.dtype),
                                                  xp.zeros(neg.size, dtype=all_anchors.dtype)]))
            positive.append(i * m + pos)
            if pos.size:
                positive_targets.append(self.box_coder.encode(gt_boxes[matches[pos]],
                                                              all_anchors[pos]))
        sampled = xp.concatenate(sampled)
        positive = xp.concatenate(positive)
        count = max(int(sampled.size), 1)
        obj = logits.reshape(batch * m)[sampled]
        loss_obj = F.binary_cross_entropy_with_logits(obj, xp.concatenate(sampled_labels),
                                                      reduction="sum") * (1.0 / count)
        pred = box_deltas.reshape(batch * m, 4)[positive]
        target = (xp.concatenate(positive_targets) if positive_targets
                  else xp.zeros((0, 4), dtype=all_anchors.dtype))
        loss_box = F.smooth_l1_loss(pred, target, reduction="sum",
                                    beta=cfg.rpn_smooth_l1_beta) * (1.0 / count)
        return {"loss_rpn_objectness": loss_obj, "loss_rpn_box": loss_box}


def _concat(arrays):
    return array_module(arrays[0]).concatenate(arrays, axis=0)
