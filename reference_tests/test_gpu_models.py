"""Models on the GPU: ``model.to("cuda")``, every model of npseg.models through npseg_gpu.ops,
optimizer state on the device, training steps that match the CPU, ``npseg train --device cuda``.

Where there is no GPU the "cuda" device is Numba's CUDA simulator (``conftest.py`` switches it
on): device arrays are NumPy arrays, and every op still runs through ``npseg_gpu.ops`` and its
kernels, which these tests check by counting the calls into both ops packages. On a machine with
a GPU the same tests run on it (device arrays are then CuPy arrays).

Models are tiny (width 1/32, a 16x16 input, depth 1-2) and compared with the same model on the
CPU in float64, to a relative 1e-8 of each array's largest magnitude: the two devices differ only
in summation order. Every parameter is first moved off its initial value, so that FCN's
zero-initialised score layers pass gradients through the whole net.
"""

from __future__ import annotations

import contextlib
import json
import os

import numpy as np
import pytest

pytest.importorskip("numba", reason="npseg_gpu needs numba-cuda (pip install -e '.[test]')")
pytest.importorskip("numba.cuda", reason="npseg_gpu needs numba-cuda (pip install -e '.[test]')")

import npseg.ops as cpu_ops  # noqa: E402
import npseg_gpu  # noqa: E402
import npseg_gpu.ops as gpu_ops  # noqa: E402
from npseg import functional as F  # noqa: E402
from npseg import optim  # noqa: E402
from npseg import random as npseg_random  # noqa: E402
from npseg.autograd import Tensor  # noqa: E402
from npseg.models import MODELS, build_model  # noqa: E402

RTOL = 1e-8  # float64, relative to the largest magnitude of the array compared

#: model name -> (tiny config, input side); dropout 0: the two devices draw different masks.
#: Batch norm (SegNet's, here) is by far the slowest op in the simulator: small maps. Mask R-CNN
#: (an instance model with its own forward) has its own tests below.
TINY = {
    "fcn32s": (dict(width=1 / 32, head_channels=8, dropout=0.0), 8),
    "fcn16s": (dict(width=1 / 32, head_channels=8, dropout=0.0), 8),
    "fcn8s": (dict(width=1 / 32, head_channels=8, dropout=0.0), 8),
    "unet": (dict(width=1 / 32, depth=2), 8),
    "unet-valid": (dict(width=1 / 32, depth=1), 20),     # 20 -> 4 (input_size_for(4))
    "segnet": (dict(width=1 / 32, depth=2), 8),
}
CLASSES = 3


def _device_array_type():
    """``cupy.ndarray`` on a GPU, ``numpy.ndarray`` in the simulator."""
    return type(npseg_gpu.asarray(np.zeros(1)))


def _host(a):
    return np.asarray(npseg_gpu.asnumpy(a)) if not isinstance(a, np.ndarray) else a


def _assert_close(expected, got, what, rtol=RTOL, scale=None):
    """Equal to ``rtol`` relative to ``scale`` (default: the largest magnitude of ``expected``)."""
    expected, got = _host(expected), _host(got)
    assert got.shape == expected.shape and got.dtype == expected.dtype, what
    if scale is None:
        scale = max(float(np.abs(expected).max()) if expected.size else 0.0, 1e-30)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def _tiny_model(name, dtype=np.float64, seed=0, **overrides):
    """The tiny model ``name`` in ``dtype`` (a seeded initialisation), every parameter moved off
    its initial value (tiny nets have few channels: a unit dead for the whole batch would stop
    the gradient of the layers below)."""
    npseg_random.manual_seed(seed)
    config = dict(TINY[name][0], **overrides)
    model = build_model(name, CLASSES, **config).to(dtype=dtype)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        noise = 0.2 * rng.standard_normal(p.shape)
        if p.ndim == 1:            # biases (and batch-norm scales) positive: no dead ReLUs
            noise = 0.1 + np.abs(noise)
        p.data = (p.data + noise).astype(dtype)
    return model


def _copy(model, name, device, **overrides):
    """A second model ``name`` with ``model``'s parameters and buffers, on ``device``."""
    config = dict(TINY[name][0], **overrides)
    twin = build_model(name, CLASSES, **config).to(dtype=next(model.parameters()).dtype)
    twin.load_state_dict(model.state_dict())
    return twin.to(device)


def _batch(name, n=2, seed=1, dtype=np.float64):
    _, side = TINY[name]
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, side, side)).astype(dtype), side


class _OpCalls:
    """Counts the calls into each ops package by name (the functional layer looks ops up as
    attributes of the package ``ops_for(device)`` returns)."""

    def __init__(self, monkeypatch):
        self.calls = {"cpu": [], "cuda": []}
        for device, package in (("cpu", cpu_ops), ("cuda", gpu_ops)):
            for name, fn in package.OPS.items():
                monkeypatch.setattr(package, name, self._counting(device, name, fn))

    def _counting(self, device, name, fn):
        def wrapper(*args, **kwargs):
            self.calls[device].append(name)
            return fn(*args, **kwargs)
        return wrapper

    def take(self):
        calls, self.calls = self.calls, {"cpu": [], "cuda": []}
        return {k: sorted(set(v)) for k, v in calls.items()}


@pytest.fixture
def op_calls(monkeypatch):
    return _OpCalls(monkeypatch)


def _loss(model, x, device, side):
    logits = model(Tensor(npseg_gpu.asarray(x) if device == "cuda" else x, device=device))
    h, w = logits.shape[2:]
    target = (np.arange(x.shape[0] * h * w).reshape(x.shape[0], h, w) * 7 // 5) % CLASSES
    target = npseg_gpu.asarray(target) if device == "cuda" else target
    return logits, F.cross_entropy(logits, target)


# --- moving a model -----------------------------------------------------------------------------

def test_module_to_cuda_moves_parameters_and_buffers():
    model = build_model("unet", CLASSES, width=1 / 32, depth=2, batch_norm=True)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    old_data = {n: t.data for n, t in list(params.items()) + list(buffers.items())}
    state = model.state_dict()
    assert any(b.dtype == np.int64 for b in buffers.values())      # num_batches_tracked moves too

    assert model.to("cuda") is model
    device_array = _device_array_type()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        assert t is params.get(name, buffers.get(name)), name      # same objects: optimizers
        assert t.device == "cuda" and isinstance(t.data, device_array), name
        assert t.data is not old_data[name], name                  # a copy on the device
        if name in params:
            assert t.requires_grad, name
    for key, value in model.state_dict().items():                 # host copies, same values
        assert isinstance(value, np.ndarray)
        np.testing.assert_array_equal(value, state[key], err_msg=key)

    model.to("cpu")
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        assert t.device == "cpu" and isinstance(t.data, np.ndarray), name
        np.testing.assert_array_equal(t.data, state[name], err_msg=name)


def test_tiny_configs_cover_every_model():
    assert sorted(TINY) == sorted(set(MODELS) - {"maskrcnn"})


# --- every model, forward and backward ----------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TINY))
def test_model_forward_backward_on_cuda_matches_cpu(name, op_calls):
    cpu_model = _tiny_model(name)
    gpu_model = _copy(cpu_model, name, "cuda")
    x, side = _batch(name)

    logits_cpu, loss_cpu = _loss(cpu_model, x, "cpu", side)
    loss_cpu.backward()
    used_cpu = op_calls.take()
    logits_gpu, loss_gpu = _loss(gpu_model, x, "cuda", side)
    assert logits_gpu.device == "cuda" and isinstance(logits_gpu.data, _device_array_type())
    loss_gpu.backward()
    used_gpu = op_calls.take()

    # the GPU model ran through npseg_gpu.ops only, and through the same ops as on the CPU
    assert used_cpu["cuda"] == [] and used_gpu["cpu"] == []
    assert used_gpu["cuda"] == used_cpu["cpu"]
    assert {"conv2d_forward", "conv2d_backward", "cross_entropy_backward"} <= set(used_gpu["cuda"])

    _assert_close(logits_cpu.data, logits_gpu.data, f"{name} logits")
    _assert_close(loss_cpu.data, loss_gpu.data, f"{name} loss")
    grads_gpu = dict(gpu_model.named_parameters())
    # relative to the largest gradient of the model: a conv bias before batch norm has a zero
    # gradient, computed as rounding noise that differs between the devices
    scale = max(float(np.abs(p.grad).max()) for p in cpu_model.parameters())
    for pname, p in cpu_model.named_parameters():
        g = grads_gpu[pname].grad
        assert g is not None and isinstance(g, _device_array_type()), pname
        if p.ndim > 1:
            assert np.abs(p.grad).max() > 1e-6 * scale, pname     # the gradient reached it
        _assert_close(p.grad, g, f"{name} grad of {pname}", scale=scale)
    buffers_gpu = dict(gpu_model.named_buffers())              # batch-norm running statistics
    for bname, b in cpu_model.named_buffers():
        if b.dtype.kind == "f":
            _assert_close(b.data, buffers_gpu[bname].data, f"{name} buffer {bname}")


def test_dropout_on_cuda_draws_from_the_device_generator():
    """nn.Dropout of a model on "cuda" draws its masks from ``npseg.random.generator("cuda")``
    (seeded by ``npseg.random.manual_seed``) and is the identity in eval mode."""
    from npseg import nn

    layer = nn.Dropout(0.5).to("cuda")
    x = Tensor(npseg_gpu.asarray(np.ones((4, 64))), device="cuda")
    npseg_random.manual_seed(3)
    first, second = _host(layer(x).data), _host(layer(x).data)
    npseg_random.manual_seed(3)
    again = _host(layer(x).data)
    assert set(np.unique(first)) == {0.0, 2.0} and not np.array_equal(first, second)
    np.testing.assert_array_equal(first, again)
    layer.eval()
    np.testing.assert_array_equal(_host(layer(x).data), np.ones((4, 64)))


# --- optimizers -----------------------------------------------------------------------------------

def _step(model, optimizer, x, device, side):
    optimizer.zero_grad()
    _, loss = _loss(model, x, device, side)
    loss.backward()
    optimizer.step()
    return float(loss.data)


@pytest.mark.parametrize("make", [
    lambda params: optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-3),
    lambda params: optim.AdamW(params, lr=1e-2, weight_decay=1e-2),
], ids=["sgd-momentum", "adamw"])
def test_optimizer_state_moves_with_to_cuda(make):
    name = "unet"
    x, side = _batch(name)
    model = _tiny_model(name, batch_norm=False)
    optimizer = make(list(model.parameters()))
    _step(model, optimizer, x, "cpu", side)                     # state arrays exist now
    reference = _copy(model, name, "cpu", batch_norm=False)
    reference_optimizer = make(list(reference.parameters()))
    reference_optimizer.load_state_dict(optimizer.state_dict())

    old = {id(p): dict(s) for p, s in optimizer.state.items()}
    model.to("cuda")
    assert optimizer.to("cuda") is optimizer
    device_array = _device_array_type()
    arrays = 0
    for p, state in optimizer.state.items():
        for key, value in state.items():
            if hasattr(value, "shape") and not np.isscalar(value):
                arrays += 1
                assert isinstance(value, device_array) and value is not old[id(p)][key], key
                np.testing.assert_array_equal(_host(value), _host(old[id(p)][key]))
    assert arrays >= len(optimizer.state)

    # the next steps on the device continue exactly where the CPU would
    for _ in range(2):
        loss_gpu = _step(model, optimizer, x, "cuda", side)
        loss_cpu = _step(reference, reference_optimizer, x, "cpu", side)
        _assert_close(np.asarray(loss_cpu), np.asarray(loss_gpu), "loss")
    params = dict(model.named_parameters())
    for pname, p in reference.named_parameters():
        _assert_close(p.data, params[pname].data, pname)
    # and the state comes back to the host for a checkpoint
    saved = optimizer.state_dict()["state"]
    assert all(isinstance(v, np.ndarray) for s in saved.values() for v in s.values()
               if hasattr(v, "shape"))


def test_training_steps_on_cuda_match_cpu():
    """A few AdamW steps of a tiny U-Net on both devices: same losses, same parameters.
    (Batch norm's running statistics are compared in the forward/backward test above and
    trained through in the training-loop test below: it is the slow op in the simulator.)"""
    name = "unet"
    x, side = _batch(name, n=2, seed=3)
    cpu_model = _tiny_model(name, seed=5, batch_norm=False)
    gpu_model = _copy(cpu_model, name, "cuda", batch_norm=False)
    runs = {}
    for device, model in (("cpu", cpu_model), ("cuda", gpu_model)):
        optimizer = optim.AdamW(list(model.parameters()), lr=2e-2, weight_decay=1e-2)
        runs[device] = [_step(model, optimizer, x, device, side) for _ in range(3)]
    assert runs["cpu"][-1] < runs["cpu"][0]                   # it does train
    _assert_close(np.array(runs["cpu"]), np.array(runs["cuda"]), "losses")
    state_gpu = gpu_model.state_dict()
    for key, value in cpu_model.state_dict().items():
        if value.dtype.kind == "f":
            _assert_close(value, state_gpu[key], key)
        else:
            np.testing.assert_array_equal(value, state_gpu[key], err_msg=key)


# --- Mask R-CNN ----------------------------------------------------------------------------------

@contextlib.contextmanager
def _arrays_on_cuda():
    """Within this block, bare arrays count as "cuda" arrays in the simulator too.

    Detection code picks the ops for a bare array by its type (``ops_for_array``): CuPy ->
    ``npseg_gpu.ops``. In the simulator device arrays are NumPy arrays, so it would pick
    ``npseg.ops``; while a model runs on "cuda" here, every array is a device array, and this
    routes them as a GPU would (on a GPU nothing is changed).
    """
    if npseg_gpu.device() != "sim":
        yield
        return
    import sys

    import npseg._device

    with pytest.MonkeyPatch.context() as patch:
        for module in list(sys.modules.values()):
            name = getattr(module, "__name__", "") or ""
            if (name.startswith("npseg.") and not name.startswith("npseg._device")
                    and getattr(module, "ops_for_array", None) is npseg._device.ops_for_array):
                patch.setattr(module, "ops_for_array", lambda x: gpu_ops)
        yield


def _maskrcnn_pair(**overrides):
    """A tiny float64 Mask R-CNN on the CPU and its copy on "cuda", and two shapes images."""
    from npseg.data.shapes import ShapesDataset
    from npseg.models.maskrcnn import MaskRCNN

    npseg_random.manual_seed(0)
    cpu_model = MaskRCNN(3, "tiny", **overrides).double()
    gpu_model = MaskRCNN(3, "tiny", **overrides).double()
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model.to("cuda")
    samples = [ShapesDataset("train", 16, 32, min_area=4)[i] for i in (0, 1)]
    images = np.stack([s["image"] for s in samples]).astype(np.float64)
    targets = [{k: s[k] for k in ("boxes", "labels", "masks")} for s in samples]
    return cpu_model, gpu_model, images, targets


def test_maskrcnn_inference_on_cuda_matches_cpu(op_calls):
    """The whole model in eval mode on "cuda" (backbone, FPN, RPN proposals with batched NMS,
    multi-level RoIAlign, box decoding, per-class NMS, mask pasting): the same detections as
    the CPU, through npseg_gpu.ops only."""
    from npseg.autograd import no_grad

    cpu_model, gpu_model, images, _ = _maskrcnn_pair()
    cpu_model.eval()
    gpu_model.eval()
    with no_grad():
        expected = cpu_model(Tensor(images))
        op_calls.take()
        with _arrays_on_cuda():
            got = gpu_model(Tensor(npseg_gpu.asarray(images), device="cuda"))
    used = op_calls.take()
    assert used["cpu"] == []
    assert {"roi_align_forward", "batched_nms", "decode_boxes"} <= set(used["cuda"])
    for e, g in zip(expected, got):
        assert e["boxes"].shape[0] > 0
        for key in ("labels", "masks"):
            np.testing.assert_array_equal(_host(g[key]), e[key], err_msg=key)
        for key in ("boxes", "scores"):
            _assert_close(e[key], g[key], key)


def test_maskrcnn_heads_train_on_cuda_like_cpu(op_calls):
    """The training losses of the RPN and the RoI heads on "cuda" (anchor and RoI sampling with
    the same generator, proposals, RoIAlign forward and backward, box and mask losses), and
    their gradients w.r.t. the FPN levels and every head parameter, equal the CPU's. The
    backbone runs on the CPU here: its batch norm takes minutes in the simulator."""
    from npseg.autograd import no_grad

    # few anchors and RoIs: every simulated RoIAlign thread costs ~0.1 ms
    cpu_model, gpu_model, images, targets = _maskrcnn_pair(
        rpn_batch_size_per_image=16, rpn_pre_nms_topk_train=24, rpn_post_nms_topk_train=8,
        roi_batch_size_per_image=6)
    with no_grad():
        levels = [t.data for t in cpu_model.features(Tensor(images)).values()]
    size = tuple(images.shape[2:])
    runs = {}
    for device, model in (("cpu", cpu_model), ("cuda", gpu_model)):
        move = npseg_gpu.asarray if device == "cuda" else np.array
        inputs = [Tensor(move(a), requires_grad=True, device=device) for a in levels]
        prepared = model.prepare_targets(targets, size, np.float64, device)
        rng = np.random.default_rng(0)
        op_calls.take()
        with _arrays_on_cuda() if device == "cuda" else contextlib.nullcontext():
            proposals, losses = model.rpn(inputs, size, prepared, rng)
            _, head_losses = model.roi_heads(inputs[:4], proposals, size, prepared, rng)
            losses.update(head_losses)
            sum(losses.values()).backward()
        runs[device] = dict(model=model, inputs=inputs, losses=losses, proposals=proposals,
                            used=op_calls.take())
    cpu, gpu = runs["cpu"], runs["cuda"]
    assert gpu["used"]["cpu"] == [] and gpu["used"]["cuda"] == cpu["used"]["cpu"]
    assert {"roi_align_forward", "roi_align_backward", "batched_nms", "box_iou",
            "encode_boxes"} <= set(gpu["used"]["cuda"])
    assert sorted(cpu["losses"]) == sorted(gpu["losses"]) and len(cpu["losses"]) == 5
    for key, value in cpu["losses"].items():
        assert float(value.data) > 0, key                     # every loss takes part
        _assert_close(value.data, gpu["losses"][key].data, key)
    for e, g in zip(cpu["proposals"], gpu["proposals"]):
        _assert_close(e, g, "proposals")
    grads = [t.grad for t in cpu["inputs"]] + [p.grad for p in cpu["model"].parameters()
                                                 if p.grad is not None]
    scale = max(float(np.abs(g).max()) for g in grads)
    for k, (e, g) in enumerate(zip(cpu["inputs"], gpu["inputs"])):
        _assert_close(e.grad, g.grad, f"grad of FPN level {k}", scale=scale)
    gpu_params = dict(gpu["model"].named_parameters())
    for name, p in cpu["model"].named_parameters():
        if name.startswith(("rpn.", "roi_heads.")):
            assert p.grad is not None, name
            _assert_close(p.grad, gpu_params[name].grad, f"grad of {name}", scale=scale)


# --- the training loop --------------------------------------------------------------------------

def _train(device, out_dir):
    from npseg.train import TrainConfig, train

    config = TrainConfig.for_model("unet", device=device, epochs=1, batch_size=2, image_size=16,
                                   train_size=2, val_size=2, num_predictions=1,
                                   model_config=dict(width=1 / 32, depth=2))
    return train(config, str(out_dir), progress=False)


def test_train_loop_on_cuda(tmp_path):
    """``npseg train unet --device cuda`` in small: one epoch of one step, validation,
    checkpoints, a prediction picture; the same numbers as the CPU run (float32)."""
    result_gpu = _train("cuda", tmp_path / "cuda")
    result_cpu = _train("cpu", tmp_path / "cpu")
    for name in ("last.npz", "best.npz", "metrics.json"):
        assert (tmp_path / "cuda" / name).is_file(), name
    assert os.listdir(tmp_path / "cuda" / "predictions")
    with open(tmp_path / "cuda" / "metrics.json") as f:
        metrics = json.load(f)

    assert metrics["final"]["loss"] == result_gpu["final"]["loss"]

    def losses(result):
        return np.array([result["final"]["loss"], result["final"]["val_loss"]])

    assert np.isfinite(losses(result_gpu)).all()
    np.testing.assert_allclose(losses(result_gpu), losses(result_cpu), rtol=1e-4)

    # the checkpoint reloads onto the device and predicts there
    from npseg.train import load_trained

    model, task, config, _ = load_trained(str(tmp_path / "cuda" / "last.npz"), device="cuda")
    assert all(p.device == "cuda" for p in model.parameters())
    images = np.random.default_rng(0).random((1, 3, 16, 16)).astype(np.float32)
    pred = task.predict(model, images)
    assert isinstance(pred, np.ndarray) and pred.shape == (1, 16, 16)
    cpu_model, cpu_task, _, _ = load_trained(str(tmp_path / "cuda" / "last.npz"), device="cpu")
    agree = (cpu_task.predict(cpu_model, images) == pred).mean()
    assert agree > 0.99
