"""Mask R-CNN (He, Gkioxari, Dollár & Girshick): Faster R-CNN with FPN plus a mask branch.

Two stages over one shared feature pyramid::

    images (N, 3, H, W) in [0, 1]
      -> normalise (x - pixel_mean) / pixel_std
      -> ResNet: C2..C5 (strides 4..32)
      -> FPN: P2..P5 (+ P6 for the RPN), fpn_channels each
      -> stage 1, RPN (P2..P6): objectness + deltas per anchor -> proposals (constants)
      -> stage 2, RoI heads (P2..P5): multi-level RoIAlign, box head (classes + class-specific
         box deltas), mask head (one 28x28 mask per class)

Training, ``model(images, targets)`` in ``model.train()`` mode, returns the five losses
(``loss_rpn_objectness``, ``loss_rpn_box``, ``loss_cls``, ``loss_box``, ``loss_mask``), each
multiplied by its weight in ``config.loss_weights``; their sum is the training objective.
Inference, ``model(images)`` in ``model.eval()`` mode, returns one dict per image with
``boxes (R, 4)``, ``labels (R,)`` (1..num_classes), ``scores (R,)`` and ``masks`` bool
``(R, H, W)``.

The parts live in :mod:`.fpn`, :mod:`.rpn` and :mod:`.roi_heads`; the hyper-parameters in
:class:`~npseg.models.maskrcnn_config.MaskRCNNConfig`. Random choices (anchor and RoI sampling)
draw from ``npseg.random.generator()`` unless an ``rng`` is passed, so ``npseg.random.
manual_seed`` makes a run repeatable and a checkpoint's random state resumes it exactly.
"""

from __future__ import annotations

import numbers

import numpy as np

from npseg import nn
from npseg import random as _random
from npseg.autograd import Tensor, to_device

from .fpn import FPN
from .maskrcnn_config import LOSS_NAMES, MaskRCNNConfig
from .resnet import ResNet
from .roi_heads import RoIHeads
from .rpn import RPN

__all__ = ["MaskRCNN", "MaskRCNNConfig", "LOSS_NAMES", "resolve_config"]

_PRESETS = {"default": MaskRCNNConfig.default, "shapes": MaskRCNNConfig.shapes,
            "tiny": MaskRCNNConfig.tiny}


def resolve_config(config=None, **overrides) -> MaskRCNNConfig:
    """A :class:`MaskRCNNConfig` from ``None`` (Detectron2 defaults), a preset name
    (``"default"``, ``"shapes"``, ``"tiny"``), a dict (``to_dict()``'s output) or a config,
    with ``overrides`` (field=value) applied on top."""
    if config is None:
        config = MaskRCNNConfig()
    elif isinstance(config, str):
        if config not in _PRESETS:
            raise ValueError(f"config preset must be one of {', '.join(_PRESETS)}, got {config!r}")
        config = _PRESETS[config]()
    elif isinstance(config, dict):
        config = MaskRCNNConfig.from_dict(config)
    elif not isinstance(config, MaskRCNNConfig):
        raise TypeError(f"config must be a MaskRCNNConfig, a dict, a preset name or None, "
                        f"got {type(config).__name__}")
    if overrides:
        config = config.replace(**overrides)
    return config


class MaskRCNN(nn.Module):
    """Mask R-CNN with a ResNet-FPN backbone.

    Args:
        num_classes: foreground classes (shapes: 3); labels are ``1..num_classes``, 0 is the
            background.
        config: a :class:`MaskRCNNConfig`, a dict of one, a preset name or None (defaults).
        **overrides: config fields to change, e.g. ``MaskRCNN(3, "shapes", box_fc_dim=128)``.

    ``forward(images, targets=None, proposals=None, rng=None)``:

    * ``images``: a Tensor (or array) ``(N, 3, H, W)`` of images in ``[0, 1]`` (the model
      normalises them with ``config.pixel_mean``/``pixel_std``), one size per batch;
    * ``targets`` (training): a list of ``N`` dicts with ``boxes`` ``(G, 4)`` float
      ``(x1, y1, x2, y2)`` in pixels, ``labels`` ``(G,)`` int in ``1..num_classes`` and
      ``masks`` ``(G, H, W)`` bool (optionally ``iscrowd``: crowd instances are left out).
      Boxes are clipped to the image; boxes left without area are dropped with their masks;
      ``G = 0`` is allowed (only background RoIs, zero mask loss);
    * ``proposals``: optional list of ``(R_i, 4)`` arrays used instead of the RPN's proposals
      (the RPN losses are still computed in training); fixes the second stage's input, e.g.
      for gradient checks;
    * ``rng``: a ``numpy.random.Generator`` for the sampling (default the global one).

    Returns the loss dict (training) or the list of detections (evaluation).
    """

    def __init__(self, num_classes: int, config=None, **overrides):
        super().__init__()
        if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool) \
                or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1 (foreground classes), "
                             f"got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.config = cfg = resolve_config(config, **overrides)
        self.backbone = ResNet(cfg.backbone_depth, 3, cfg.backbone_width, cfg.backbone_blocks)
        self.fpn = FPN(self.backbone.out_channels, cfg.fpn_channels, extra_level=True)
        self.rpn = RPN(cfg.fpn_channels, cfg)
        self.roi_heads = RoIHeads(cfg.fpn_channels, self.num_classes, cfg)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"

    # --- pieces -------------------------------------------------------------------------------
    def normalize(self, images: Tensor) -> Tensor:
        """``(images - pixel_mean) / pixel_std`` per channel."""
        xp = images.xp
        mean = xp.asarray(self.config.pixel_mean, dtype=images.dtype).reshape(1, -1, 1, 1)
        std = xp.asarray(self.config.pixel_std, dtype=images.dtype).reshape(1, -1, 1, 1)
        return (images - mean) * (1.0 / std)

    def features(self, images: Tensor):
        """The FPN levels ``{"P2": ..., "P6": ...}`` of (unnormalised) images."""
        return self.fpn(self.backbone(self.normalize(images)))

    def prepare_targets(self, targets, image_size, dtype, device):
        """Validate the targets, move them to the model's device and dtype, clip the boxes to
        the image and drop instances without area (or marked ``iscrowd``)."""
        if not isinstance(targets, (list, tuple)):
            raise TypeError(f"targets must be a list of per-image dicts, got "
                            f"{type(targets).__name__}")
        height, width = image_size
        prepared = []
        for i, t in enumerate(targets):
            if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
                raise ValueError(f"targets[{i}] must be a dict with 'boxes', 'labels' and "
                                 f"'masks', got {type(t).__name__}"
                                 f"{' with keys ' + ', '.join(t) if isinstance(t, dict) else ''}")
            boxes = np.asarray(_host(t["boxes"]), dtype=np.float64).reshape(-1, 4)
            labels = np.asarray(_host(t["labels"])).reshape(-1)
            if labels.shape[0] != boxes.shape[0]:
                raise ValueError(f"targets[{i}]: {boxes.shape[0]} boxes but {labels.shape[0]} "
                                 f"labels")
            if not np.isfinite(boxes).all():
                raise ValueError(f"targets[{i}]['boxes'] must be finite")
            if labels.size and (labels.dtype.kind not in "iu" or labels.min() < 1
                                or labels.max() > self.num_classes):
                raise ValueError(f"targets[{i}]['labels'] must be ints in 1..{self.num_classes}, "
                                 f"got {labels.dtype} values {labels.min()}..{labels.max()}")
            if "masks" in t:
                masks = np.asarray(_host(t["masks"]))
                if masks.shape != (boxes.shape[0], height, width):
                    raise ValueError(f"targets[{i}]['masks'] must have shape "
                                     f"{(boxes.shape[0], height, width)} (one image-sized mask "
                                     f"per box), got {masks.shape}")
            else:
                raise ValueError(f"targets[{i}] has no 'masks': Mask R-CNN trains on instance "
                                 f"masks")
            boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if "iscrowd" in t:
                keep &= ~np.asarray(_host(t["iscrowd"]), dtype=bool).reshape(-1)
            prepared.append({
                "boxes": to_device(boxes[keep].astype(dtype), device),
                "labels": to_device(labels[keep].astype(np.int64), device),
                "masks": to_device(masks[keep].astype(bool), device),
            })
        return prepared

    # --- forward ------------------------------------------------------------------------------
    def forward(self, images, targets=None, proposals=None, rng=None):
        if not isinstance(images, Tensor):
            first = next(self.parameters())
            images = Tensor(to_device(np.asarray(_host(images), dtype=first.dtype), first.device),
                            device=first.device)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got shape {images.shape}")
        batch = images.shape[0]
        image_size = tuple(images.shape[-2:])
        if self.training:
            if targets is None:
                raise ValueError("training mode needs targets (a list of per-image dicts with "
                                 "boxes, labels, masks); call model.eval() for inference")
            if len(targets) != batch:
                raise ValueError(f"targets must have one dict per image ({batch}), "
                                 f"got {len(targets)}")
        if proposals is not None and len(proposals) != batch:
            raise ValueError(f"proposals must have one array per image ({batch}), "
                             f"got {len(proposals)}")
        if rng is None:
            rng = _random.generator()

        levels = list(self.features(images).values())           # P2..P6
        prepared = (self.prepare_targets(targets, image_size, images.dtype, images.device)
                    if self.training else None)
        found, rpn_losses = self.rpn(levels, image_size, prepared, rng,
                                     compute_proposals=proposals is None)
        if proposals is not None:
            found = [to_device(np.asarray(_host(p), dtype=images.dtype).reshape(-1, 4),
                               images.device) for p in proposals]
        detections, head_losses = self.roi_heads(levels[:4], found, image_size, prepared, rng)
        if not self.training:
            return detections
        losses = {**rpn_losses, **head_losses}
        weights = self.config.loss_weights
        return {name: losses[name] * float(weights[name]) if weights[name] != 1 else losses[name]
                for name in LOSS_NAMES}


def _host(x):
    """A host (NumPy) array from a NumPy/CuPy array, a Tensor or a list."""
    if isinstance(x, Tensor):
        return x.numpy()
    if hasattr(x, "get") and not isinstance(x, np.ndarray):
        return x.get()
    return x
