"""Mask R-CNN: FPN, RPN head, box and mask heads, multi-level RoIAlign, the whole model.

* gradient checks (float64, random directions) of every head and of the whole model's total
  loss with the second stage's input (proposals) and the random sampling fixed;
* training / inference outputs (keys, shapes, dtypes), loss weights, odd image sizes;
* degenerate inputs: images without objects, empty masks, boxes partly or wholly outside the
  image, no detections;
* learning: the model overfits one image (loss falls, predicted masks match the ground truth);
* the config's JSON round trip, presets and validation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npseg import functional as F
from npseg import nn, optim
from npseg import random as npseg_random
from npseg.autograd import Tensor, no_grad
from npseg.data.shapes import ShapesDataset
from npseg.detection import assign_levels
from npseg.gradcheck import compare_gradients, gradcheck
from npseg.models.fpn import FPN
from npseg.models.maskrcnn import LOSS_NAMES, MaskRCNN, resolve_config
from npseg.models.maskrcnn_config import MaskRCNNConfig
from npseg.models.roi_heads import BoxHead, MaskHead, multilevel_roi_align
from npseg.models.rpn import RPNHead, flatten_head_outputs
from npseg.train.instance import evaluate_instances, instance_loss_names


def _params(module):
    return list(module.parameters())


def _flat(tensors):
    return F.concat([t.reshape(-1) for t in tensors], dim=0)


def _rand(rng, *shape):
    return Tensor(rng.standard_normal(shape), requires_grad=True)


# ----------------------------------------------------------------------------- heads
@pytest.mark.parametrize("sizes", [((8, 8), (4, 4), (2, 2), (1, 1)),
                                   ((9, 7), (5, 4), (3, 2), (2, 1))])
def test_fpn_gradcheck_and_shapes(sizes):
    npseg_random.manual_seed(0)
    rng = np.random.default_rng(1)
    channels = [4, 5, 6, 7]
    fpn = FPN(channels, 3).double()
    feats = [_rand(rng, 2, c, *hw) for c, hw in zip(channels, sizes)]
    out = fpn({f"C{k + 2}": f for k, f in enumerate(feats)})
    assert list(out) == ["P2", "P3", "P4", "P5", "P6"]
    for k, hw in enumerate(sizes):
        assert out[f"P{k + 2}"].shape == (2, 3) + hw
    assert out["P6"].shape[-2:] == tuple((s + 1) // 2 for s in sizes[-1])
    assert np.array_equal(out["P6"].data, out["P5"].data[:, :, ::2, ::2])

    def fn(*inputs):
        return _flat(list(fpn(list(inputs[:4])).values()))

    gradcheck(fn, feats + _params(fpn), n_directions=3)


def test_rpn_head_gradcheck_and_flatten_order():
    npseg_random.manual_seed(0)
    rng = np.random.default_rng(2)
    head = RPNHead(4, 3).double()
    feats = [_rand(rng, 2, 4, 5, 6), _rand(rng, 2, 4, 3, 3)]

    def fn(*inputs):
        obj, deltas = head(list(inputs[:2]))
        return _flat(obj + deltas)

    gradcheck(fn, feats + _params(head), n_directions=3)

    obj, deltas = head(feats)
    flat_obj, flat_del = flatten_head_outputs(obj, deltas)
    assert flat_obj.shape == (2, 5 * 6 * 3 + 3 * 3 * 3)
    assert flat_del.shape == (2, 5 * 6 * 3 + 3 * 3 * 3, 4)
    # anchor (y, x, a) of level 0 is row (y * W + x) * A + a; its deltas are channels 4a..4a+3
    y, x, a = 2, 4, 1
    row = (y * 6 + x) * 3 + a
    assert flat_obj.data[1, row] == obj[0].data[1, a, y, x]
    assert np.array_equal(flat_del.data[1, row], deltas[0].data[1, 4 * a:4 * a + 4, y, x])


def test_box_head_gradcheck():
    npseg_random.manual_seed(0)
    rng = np.random.default_rng(3)
    head = BoxHead(3, 4, num_classes=2, fc_dim=6).double()
    for p in head.parameters():                      # weights large enough to matter
        p.data = rng.standard_normal(p.shape) * 0.5
    x = _rand(rng, 5, 3, 4, 4)
    logits, deltas = head(x)
    assert logits.shape == (5, 3) and deltas.shape == (5, 8)
    gradcheck(lambda *inputs: _flat(head(inputs[0])), [x] + _params(head), n_directions=3)


def test_mask_head_gradcheck():
    npseg_random.manual_seed(0)
    rng = np.random.default_rng(4)
    head = MaskHead(3, 2, conv_dim=4, num_conv=2).double()
    for p in head.parameters():
        p.data = rng.standard_normal(p.shape) * 0.5
    x = _rand(rng, 3, 3, 5, 5)
    assert head(x).shape == (3, 2, 10, 10)
    gradcheck(lambda *inputs: head(inputs[0]), [x] + _params(head), n_directions=3)


def _roi_strategy(image=64):
    coord = st.floats(0, image, allow_nan=False, width=32)
    return st.tuples(st.integers(0, 1), coord, coord, coord, coord)


@settings(max_examples=10)
@given(st.lists(_roi_strategy(), min_size=0, max_size=8))
def test_multilevel_roi_align_matches_per_level_and_gradcheck(raw):
    rng = np.random.default_rng(5)
    rois = np.array([[b, min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]
                     for b, x1, y1, x2, y2 in raw], dtype=np.float64).reshape(-1, 5)
    feats = [_rand(rng, 2, 2, 64 >> k, 64 >> k) for k in range(2, 6)]   # P2..P5 of 64x64
    canonical = 16.0              # level 2 below 8 px, 3 below 16, 4 below 32, 5 above
    out = multilevel_roi_align(feats, rois, 3, 2, sampling_ratio=2, canonical_size=canonical)
    assert out.shape == (rois.shape[0], 2, 3, 3)
    levels = assign_levels(rois[:, 1:], 2, 5, canonical) if len(rois) else []
    for r, k in enumerate(levels):
        expected = F.roi_align(feats[k - 2], rois[r:r + 1], 3, 1.0 / 2 ** k, 2, aligned=True)
        np.testing.assert_allclose(out.data[r], expected.data[0], rtol=0, atol=1e-12)
    gradcheck(lambda *f: multilevel_roi_align(list(f), rois, 3, 2, 2, canonical), feats,
              n_directions=2)


# ----------------------------------------------------------------------------- whole model
def _sample(index, size=32, min_area=4):
    return ShapesDataset("train", 16, size, min_area=min_area)[index]


def _batch(indices, size=32):
    samples = [_sample(i, size) for i in indices]
    images = np.stack([s["image"] for s in samples])
    targets = [{k: s[k] for k in ("boxes", "labels", "masks")} for s in samples]
    return images, targets


def _tiny(**overrides):
    npseg_random.manual_seed(0)
    return MaskRCNN(3, "tiny", **overrides)


def _share_flat_parameters(model):
    """Make every parameter a view into one flat float64 array (perturbed as one input)."""
    params = _params(model)
    flat = np.concatenate([p.data.reshape(-1) for p in params])
    offset = 0
    for p in params:
        n = p.data.size
        p.data = flat[offset:offset + n].reshape(p.shape)
        offset += n
    return flat, params


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_whole_model_total_loss_gradcheck(seed):
    """d(total loss)/d(every parameter) of the whole model, checked along random directions of
    the full parameter vector. The proposals are given and the sampler's generator is fixed,
    so the sampled anchors and RoIs stay the same under the small perturbations.

    Every parameter is made non-zero (zero biases put ReLUs fed by dead units exactly on their
    kink), and the step is small: the loss is smooth but strongly curved along directions
    that move all ~90k parameters at once (batch norm over 2 values per channel at C5)."""
    model = _tiny().double()
    rng = np.random.default_rng(100 + seed)
    for _, p in model.named_parameters():
        if p.ndim > 1 and np.abs(p.data).max() < 0.05:     # predictors: away from tiny init
            p.data = rng.standard_normal(p.shape) * 0.1
        elif not p.data.any():                               # zero biases: off the kinks
            p.data = rng.standard_normal(p.shape) * 0.05
    images, targets = _batch([seed % 8, (seed + 3) % 8])
    images = Tensor(images.astype(np.float64))
    proposals = []
    for t in targets:                                 # jittered ground truth + random boxes
        jitter = t["boxes"] + rng.uniform(-2, 2, t["boxes"].shape)
        corners = rng.uniform(0, 32, (6, 2, 2))
        random_boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1) + 1], axis=1)
        boxes = np.concatenate([jitter, random_boxes]).clip(0, 32)
        proposals.append(boxes[(boxes[:, 2] > boxes[:, 0] + 1) & (boxes[:, 3] > boxes[:, 1] + 1)])

    def total():
        losses = model(images, targets, proposals=proposals, rng=np.random.default_rng(0))
        return sum(losses.values()), losses

    flat, params = _share_flat_parameters(model)
    loss, losses = total()
    assert all(float(losses[k].item()) > 0 for k in LOSS_NAMES)   # every loss takes part
    model.zero_grad()
    loss.backward()
    grad = np.concatenate([p.grad.reshape(-1) for p in params])
    compare_gradients(lambda _: float(total()[0].item()), [flat], [grad], n_directions=6,
                      eps=1e-8, rtol=1e-4, atol=1e-6, seed=seed, names=["all parameters"])


def test_training_outputs_and_gradients():
    model = _tiny()
    images, targets = _batch([0, 1])
    losses = model(Tensor(images), targets)
    assert tuple(losses) == LOSS_NAMES
    for name, value in losses.items():
        assert isinstance(value, Tensor) and value.shape == () and value.requires_grad, name
        assert value.dtype == np.float32 and np.isfinite(value.item()), name
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name
        assert np.isfinite(p.grad).all(), name


def test_loss_weights_scale_the_losses():
    images, targets = _batch([2, 3])
    base = _tiny()(Tensor(images), targets, rng=np.random.default_rng(0))
    weights = {k: 0.5 + i for i, k in enumerate(LOSS_NAMES)}
    weighted = _tiny(loss_weights=weights)(Tensor(images), targets, rng=np.random.default_rng(0))
    for k in LOSS_NAMES:
        np.testing.assert_allclose(weighted[k].item(), weights[k] * base[k].item(), rtol=1e-5)


def test_inference_outputs():
    model = _tiny().eval()
    images, _ = _batch([0, 1, 2])
    with no_grad():
        out = model(Tensor(images))
    assert isinstance(out, list) and len(out) == 3
    cfg = model.config
    for det in out:
        assert set(det) == {"boxes", "labels", "scores", "masks"}
        r = det["boxes"].shape[0]
        assert 0 < r <= cfg.detections_per_image
        assert det["boxes"].shape == (r, 4) and det["boxes"].dtype == np.float32
        assert det["labels"].shape == (r,) and det["labels"].dtype == np.int64
        assert det["scores"].shape == (r,) and det["scores"].dtype == np.float32
        assert det["masks"].shape == (r, 32, 32) and det["masks"].dtype == bool
        assert det["labels"].min() >= 1 and det["labels"].max() <= 3
        assert (det["scores"] > cfg.score_threshold).all() and (det["scores"] <= 1).all()
        assert (np.diff(det["scores"]) <= 0).all()                  # best first
        assert (det["boxes"] >= 0).all() and (det["boxes"] <= 32).all()
        assert (det["boxes"][:, 2:] > det["boxes"][:, :2]).all()


def test_inference_without_detections_returns_empty_arrays():
    model = _tiny(score_threshold=1.0).eval()         # no probability exceeds 1
    images, _ = _batch([0, 1])
    with no_grad():
        out = model(Tensor(images))
    for det in out:
        assert det["boxes"].shape == (0, 4) and det["boxes"].dtype == np.float32
        assert det["labels"].shape == (0,) and det["labels"].dtype == np.int64
        assert det["scores"].shape == (0,) and det["scores"].dtype == np.float32
        assert det["masks"].shape == (0, 32, 32) and det["masks"].dtype == bool


@pytest.mark.parametrize("size", [(45, 37), (64, 48)])
def test_odd_image_sizes(size):
    model = _tiny()
    h, w = size
    sample = ShapesDataset("train", 4, size, min_area=4)[0]
    images = np.stack([sample["image"]] * 2)
    targets = [{k: sample[k] for k in ("boxes", "labels", "masks")}] * 2
    losses = model(Tensor(images), targets)
    sum(losses.values()).backward()
    model.eval()
    with no_grad():
        out = model(Tensor(images))
    assert out[0]["masks"].shape[1:] == (h, w)


def test_images_without_objects_train():
    model = _tiny()
    images, targets = _batch([0, 1])
    empty = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
             "masks": np.zeros((0, 32, 32), bool)}
    losses = model(Tensor(images), [empty, empty])
    assert losses["loss_mask"].item() == 0 and losses["loss_box"].item() == 0
    assert losses["loss_rpn_box"].item() == 0
    assert losses["loss_rpn_objectness"].item() > 0 and losses["loss_cls"].item() > 0
    sum(losses.values()).backward()
    for name, p in model.roi_heads.mask_head.named_parameters():
        assert p.grad is not None and not p.grad.any(), name       # zero gradient, not None
    assert any(p.grad.any() for p in model.roi_heads.box_head.parameters())

    # one image with objects, one without: the mask loss is back
    model.zero_grad()
    losses = model(Tensor(images), [targets[0], empty])
    assert losses["loss_mask"].item() > 0
    sum(losses.values()).backward()


def test_empty_masks_and_boxes_outside_the_image():
    model = _tiny()
    images, targets = _batch([0, 1])
    masks = np.zeros((3, 32, 32), bool)
    masks[0, :10, :12] = True                          # the visible part of a clipped box
    target = {"boxes": np.array([[-6, -4, 12, 10],     # partly outside: clipped
                                 [20, 18, 30, 29],     # an empty mask
                                 [40, 5, 50, 20]],     # wholly outside: dropped
                                dtype=np.float32),
              "labels": np.array([1, 2, 3]), "masks": masks}
    prepared = model.prepare_targets([target], (32, 32), np.float32, "cpu")[0]
    np.testing.assert_array_equal(prepared["boxes"], [[0, 0, 12, 10], [20, 18, 30, 29]])
    np.testing.assert_array_equal(prepared["labels"], [1, 2])
    assert prepared["masks"].shape == (2, 32, 32)
    losses = model(Tensor(images), [target, targets[1]])
    assert all(np.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()


def test_bad_targets_are_rejected():
    model = _tiny()
    images, targets = _batch([0, 1])
    with pytest.raises(ValueError, match="targets"):
        model(Tensor(images))
    bad = dict(targets[0], labels=np.full(len(targets[0]["labels"]), 4))
    with pytest.raises(ValueError, match="labels"):
        model(Tensor(images), [bad, targets[1]])
    bad = dict(targets[0], masks=targets[0]["masks"][:, :16])
    with pytest.raises(ValueError, match="masks"):
        model(Tensor(images), [bad, targets[1]])
    with pytest.raises(ValueError, match="one dict per image"):
        model(Tensor(images), targets * 2)
    with pytest.raises(ValueError, match="images"):
        model(Tensor(images[:, :1]), targets)


def _mask_iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _overfit(index, steps, size=64):
    """Train a small model on one image; returns (losses per step, sample, detections)."""
    npseg_random.manual_seed(0)
    model = MaskRCNN(3, "tiny", backbone_width=0.25, fpn_channels=16, box_fc_dim=64,
                     box_pooler_resolution=7, mask_size=14, mask_conv_dim=16)
    sample = ShapesDataset("train", 8, size, max_instances=3)[index]
    images = Tensor(sample["image"][None])
    targets = [{k: sample[k] for k in ("boxes", "labels", "masks")}]
    opt = optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(steps):
        losses = model(images, targets)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    model.eval()
    with no_grad():
        det = model(images)[0]
    return history, sample, det


def _check_overfit(index, steps=80):
    history, sample, det = _overfit(index, steps)
    assert np.mean(history[-10:]) < 0.35 * history[0], history
    assert len(det["scores"]) > 0
    for k in range(len(sample["labels"])):
        ious = np.array([_mask_iou(sample["masks"][k], m) for m in det["masks"]])
        best = int(np.argmax(ious))
        assert ious[best] > 0.5, (k, ious.max())
        assert det["labels"][best] == sample["labels"][k]


def test_overfits_one_image():
    _check_overfit(1)


@pytest.mark.slow
@pytest.mark.parametrize("index", [0, 2, 3, 5])
def test_overfits_other_images(index):
    _check_overfit(index)


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("preset", ["default", "shapes", "tiny"])
def test_config_round_trip(preset):
    cfg = resolve_config(preset)
    text = json.dumps(cfg.to_dict())
    back = MaskRCNNConfig.from_dict(json.loads(text))
    assert back == cfg
    assert MaskRCNNConfig.from_dict(text) == cfg
    assert resolve_config(cfg.to_dict()) == cfg


def test_config_defaults_are_detectron2s():
    cfg = MaskRCNNConfig()
    assert cfg.anchor_sizes == (32, 64, 128, 256, 512)
    assert cfg.anchor_strides == (4, 8, 16, 32, 64)
    assert cfg.anchor_aspect_ratios == (0.5, 1.0, 2.0)
    assert (cfg.rpn_fg_iou_threshold, cfg.rpn_bg_iou_threshold) == (0.7, 0.3)
    assert (cfg.rpn_batch_size_per_image, cfg.rpn_positive_fraction) == (256, 0.5)
    assert (cfg.rpn_pre_nms_topk_train, cfg.rpn_post_nms_topk_train) == (2000, 1000)
    assert (cfg.rpn_pre_nms_topk_test, cfg.rpn_post_nms_topk_test) == (1000, 1000)
    assert (cfg.roi_batch_size_per_image, cfg.roi_positive_fraction) == (512, 0.25)
    assert cfg.box_reg_weights == (10.0, 10.0, 5.0, 5.0)
    assert (cfg.score_threshold, cfg.nms_threshold, cfg.detections_per_image) == (0.05, 0.5, 100)
    assert (cfg.mask_size, cfg.fpn_channels, cfg.box_fc_dim) == (28, 256, 1024)
    assert cfg.backbone_depth == 50
    assert set(cfg.loss_weights.values()) == {1.0}


def test_model_from_config_dict_has_the_same_parameters():
    cfg = MaskRCNNConfig.shapes(box_fc_dim=32)
    a = MaskRCNN(3, cfg)
    b = MaskRCNN(3, json.loads(json.dumps(cfg.to_dict())))
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(sa[k].shape == sb[k].shape for k in sa)
    b.load_state_dict(sa)


@pytest.mark.parametrize("change, match", [
    ({"mask_size": 27}, "mask_size"),
    ({"anchor_sizes": (32, 64)}, "anchor_sizes"),
    ({"rpn_bg_iou_threshold": 0.8}, "rpn_bg_iou_threshold"),
    ({"loss_weights": {"loss_cls": 1.0}}, "loss_weights"),
    ({"backbone_depth": 42}, "backbone_depth"),
    ({"box_fc_dim": 0}, "box_fc_dim"),
])
def test_config_validation(change, match):
    with pytest.raises((ValueError, TypeError), match=match):
        MaskRCNNConfig(**change)


def test_config_errors():
    with pytest.raises(ValueError, match="unknown"):
        MaskRCNNConfig.from_dict({"no_such_field": 1})
    with pytest.raises(ValueError, match="preset"):
        resolve_config("huge")
    with pytest.raises(ValueError, match="num_classes"):
        MaskRCNN(0)


# ----------------------------------------------------------------------------- evaluation
class _Oracle(nn.Module):
    """Returns a data set's ground truth as detections, image after image (loader order)."""

    def __init__(self, dataset, drop_last_instance=False):
        super().__init__()
        self.weight = nn.Parameter(np.zeros(1, np.float32))
        self.dataset, self.next, self.drop = dataset, 0, drop_last_instance

    def forward(self, images):
        out = []
        for _ in range(images.shape[0]):
            s = self.dataset[self.next]
            self.next += 1
            k = len(s["labels"]) - (1 if self.drop and len(s["labels"]) > 1 else 0)
            out.append({"boxes": s["boxes"][:k], "labels": s["labels"][:k],
                        "scores": np.linspace(0.9, 0.5, k).astype(np.float32),
                        "masks": s["masks"][:k]})
        return out


def test_evaluate_instances_scores_ground_truth_as_perfect():
    data = ShapesDataset("val", 6, 32, min_area=4)
    oracle = _Oracle(data)
    metrics = evaluate_instances(oracle, data, batch_size=4)
    for key in ("bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75"):
        assert metrics[key] == pytest.approx(1.0), key
    assert oracle.training                              # mode restored
    partial = evaluate_instances(_Oracle(data, drop_last_instance=True), data, batch_size=4)
    assert partial["segm_AP"] < 1.0 and partial["bbox_AP50"] < 1.0
    assert tuple(instance_loss_names) == LOSS_NAMES


def test_evaluate_instances_runs_the_model():
    model = _tiny()
    data = ShapesDataset("val", 3, 32, min_area=4)
    metrics = evaluate_instances(model, data, batch_size=2)
    assert metrics["num_images"] == 3 and metrics["num_detections"] > 0
    for key in ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert model.training


# ----------------------------------------------------------------------------- PyTorch
@pytest.mark.torch
@pytest.mark.parametrize("sizes", [((8, 8), (4, 4), (2, 2), (1, 1)),
                                   ((9, 7), (5, 4), (3, 2), (2, 1))])
def test_fpn_matches_torchvision(sizes):
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    rng = np.random.default_rng(7)
    channels = [4, 5, 6, 7]
    ours = FPN(channels, 3).double()
    theirs = tv_ops.FeaturePyramidNetwork(channels, 3, extra_blocks=LastLevelMaxPool()).double()
    with torch.no_grad():
        for k in range(4):
            theirs.inner_blocks[k][0].weight.copy_(torch.from_numpy(ours.lateral[k].weight.data))
            theirs.inner_blocks[k][0].bias.copy_(torch.from_numpy(ours.lateral[k].bias.data))
            theirs.layer_blocks[k][0].weight.copy_(torch.from_numpy(ours.output[k].weight.data))
            theirs.layer_blocks[k][0].bias.copy_(torch.from_numpy(ours.output[k].bias.data))
    feats = [rng.standard_normal((2, c) + hw) for c, hw in zip(channels, sizes)]
    got = ours([Tensor(f) for f in feats])
    with torch.no_grad():
        want = theirs({str(k): torch.from_numpy(f) for k, f in enumerate(feats)})
    for (name, g), w in zip(got.items(), want.values()):
        np.testing.assert_allclose(g.data, w.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
