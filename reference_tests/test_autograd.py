"""Autograd and functional: every Tensor-level op's gradient by central differences (float64),
a small network end to end, graph bookkeeping (reuse, accumulation, no_grad, freeing)."""

import gc
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import npseg.functional as F
import npseg.nn as nn
import npseg.random
from npseg.autograd import Tensor, no_grad, record, unbroadcast
from npseg.gradcheck import gradcheck

seeds = st.integers(0, 2**32 - 1)


def leaf(rng, shape, low=None):
    """A float64 leaf requiring grad: standard normal, or uniform in [low, low + 2] (no zeros)."""
    data = rng.standard_normal(shape) if low is None else rng.uniform(low, low + 2, shape)
    return Tensor(data, requires_grad=True)


# ----------------------------------------------------------------------------- the network
class SkipNet(nn.Module):
    """conv-bn-relu-maxpool-convtranspose, concatenated with the skip, then a 1x1 conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64)
        self.bn = nn.BatchNorm2d(3, dtype=np.float64)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ConvTranspose2d(3, 2, 2, stride=2, dtype=np.float64)
        self.head = nn.Conv2d(5, 3, 1, dtype=np.float64)

    def forward(self, x):
        skip = F.relu(self.bn(self.conv(x)))
        y = self.up(self.pool(skip))
        return self.head(F.concat([y, skip], dim=1))


def test_network_end_to_end_gradcheck():
    npseg.random.manual_seed(3)
    rng = np.random.default_rng(0)
    model = SkipNet()
    # non-trivial BN affine parameters, so their gradients are tested too
    model.bn.weight.data = rng.uniform(0.5, 1.5, 3)
    model.bn.bias.data = rng.standard_normal(3)
    x = leaf(rng, (2, 2, 6, 6))
    target = rng.integers(0, 3, (2, 6, 6))
    params = list(model.parameters())
    assert len(params) == 8

    def loss(x, *_):
        return F.cross_entropy(model(x), target)

    gradcheck(loss, [x] + params, n_directions=6)
    # and every parameter received a non-zero gradient from backward
    for p in params:
        p.grad = None
    loss(x).backward()
    assert all(p.grad is not None and np.abs(p.grad).sum() > 0 for p in params)


def test_linear_and_losses_gradcheck():
    rng = np.random.default_rng(1)
    x, w, b = leaf(rng, (2, 3, 4)), leaf(rng, (5, 4)), leaf(rng, (5,))
    gradcheck(lambda x, w, b: F.linear(x, w, b), [x, w, b], mode="full")
    logits = leaf(rng, (3, 4))
    target = rng.uniform(0, 1, (3, 4))
    gradcheck(lambda z: F.binary_cross_entropy_with_logits(z, target), [logits], mode="full")
    gradcheck(lambda z: F.smooth_l1_loss(z, 2 * target, beta=0.5, reduction="sum"), [logits],
              mode="full")


# ----------------------------------------------------------------------------- structural ops
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3), seed=seeds,
       op=st.sampled_from(["add", "sub", "mul", "div", "radd", "rsub", "rmul", "rdiv"]))
def test_arithmetic_broadcasting_gradcheck(shapes, seed, op):
    rng = np.random.default_rng(seed)
    a_shape, b_shape = shapes.input_shapes
    a, b = leaf(rng, a_shape, low=0.5), leaf(rng, b_shape, low=0.5)
    fn = {"add": F.add, "sub": F.sub, "mul": F.mul, "div": F.div,
          "radd": lambda a, b: b + a, "rsub": lambda a, b: b - a,
          "rmul": lambda a, b: b * a, "rdiv": lambda a, b: b / a}[op]
    out = fn(a, b)
    assert out.shape == shapes.result_shape
    gradcheck(fn, [a, b], mode="full")


def test_arithmetic_with_scalars_and_arrays():
    rng = np.random.default_rng(2)
    a = leaf(rng, (2, 3), low=0.5)
    c = rng.standard_normal(3)
    gradcheck(lambda a: 2.0 * a - 1 + a / 3.0 + 4.0 / a - a * c + c - (-a) + a ** 3, [a],
              mode="full")
    # numpy arrays on the left defer to the Tensor (no elementwise object array)
    assert isinstance(c + a, Tensor) and isinstance(c * a, Tensor)
    # python scalars keep float32
    f = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    assert (2.5 * f + np.float64(1)).dtype == np.float32
    assert (f * np.array([True, False, True])).dtype == np.float32
    assert (np.arange(3) - f).dtype == np.float32


def test_unbroadcast_sums_broadcast_axes():
    g = np.arange(24.0).reshape(2, 3, 4)
    assert np.array_equal(unbroadcast(g, (3, 1)), g.sum(axis=(0, 2)).reshape(3, 1))
    assert np.array_equal(unbroadcast(g, ()), np.asarray(g.sum()))
    assert unbroadcast(g, (2, 3, 4)) is g


@given(seed=seeds, n=st.integers(1, 3), dim=st.integers(-3, 2))
def test_concat_and_stack_gradcheck(seed, n, dim):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, n)
    axis = dim % 3
    tensors = []
    for s in sizes:
        shape = [2, 3, 2]
        shape[axis] = int(s)
        tensors.append(leaf(rng, tuple(shape)))
    out = F.concat(tensors, dim=dim)
    assert out.shape[axis] == sizes.sum()
    gradcheck(lambda *ts: F.concat(ts, axis=dim), tensors, mode="full")
    same = [leaf(rng, (2, 3)) for _ in range(n)]
    assert F.stack(same, dim=dim % 3).shape[dim % 3] == n
    gradcheck(lambda *ts: F.stack(ts, dim=dim % 3), same, mode="full")


def test_concat_rejects_mismatched_shapes():
    a, b = Tensor(np.zeros((2, 3))), Tensor(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="concat"):
        F.concat([a, b], dim=1)


@given(seed=seeds, index=st.sampled_from([
    (slice(None), 1), (slice(1, None, 2),), (Ellipsis, slice(None, None, -1)), (-1, None, 0),
    (slice(0, 2), slice(1, 3))]))
def test_basic_indexing_gradcheck(seed, index):
    x = leaf(np.random.default_rng(seed), (3, 4))
    gradcheck(lambda x: x[index], [x], mode="full")


def test_fancy_indexing_scatters_repeated_indices():
    rng = np.random.default_rng(4)
    x = leaf(rng, (4, 3))
    rows = np.array([0, 2, 2, 3, 0, 0])
    gradcheck(lambda x: x[rows], [x], mode="full")
    gradcheck(lambda x: x[rows, np.array([1, 1, 1, 0, 2, 1])], [x], mode="full")
    gradcheck(lambda x: x[[1, 1], 1:], [x], mode="full")
    gradcheck(lambda x: x[x.data > 0], [x], mode="full")
    x.grad = None
    x[rows].sum().backward()
    assert np.array_equal(x.grad[:, 0], [3, 0, 2, 1])  # each row counted as often as indexed


@given(seed=seeds, h=st.integers(3, 7), w=st.integers(3, 7), ch=st.integers(0, 3),
       cw=st.integers(0, 3))
def test_center_crop_gradcheck_and_offsets(seed, h, w, ch, cw):
    x = leaf(np.random.default_rng(seed), (1, 2, h, w))
    size = (h - ch, w - cw)
    out = F.center_crop(x, size)
    assert out.shape == (1, 2) + size
    top, left = ch // 2, cw // 2
    assert np.array_equal(out.data, x.data[..., top:top + size[0], left:left + size[1]])
    gradcheck(lambda x: F.center_crop(x, size), [x], mode="full")


def test_center_crop_rejects_larger_size():
    with pytest.raises(ValueError, match="size"):
        F.center_crop(Tensor(np.zeros((1, 1, 4, 4))), (5, 4))


@given(seed=seeds, pads=st.lists(st.integers(0, 2), min_size=2, max_size=4)
       .filter(lambda p: len(p) % 2 == 0))
def test_pad_gradcheck(seed, pads):
    x = leaf(np.random.default_rng(seed), (1, 2, 3, 2))
    out = F.pad(x, tuple(pads))
    assert out.shape[-1] == 2 + pads[0] + pads[1]
    if len(pads) == 4:
        assert out.shape[-2] == 3 + pads[2] + pads[3]
        assert np.array_equal(out.data[..., pads[2]:pads[2] + 3, pads[0]:pads[0] + 2], x.data)
    assert out.data.sum() == pytest.approx(x.data.sum())  # zeros around
    gradcheck(lambda x: F.pad(x, tuple(pads)), [x], mode="full")


def test_pad_bad_input():
    x = Tensor(np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="pad"):
        F.pad(x, (1, 2, 3))
    with pytest.raises(ValueError, match="pad"):
        F.pad(x, (-1, 0))


def test_shape_ops_gradcheck():
    rng = np.random.default_rng(5)
    x = leaf(rng, (2, 3, 4))
    gradcheck(lambda x: x.reshape(4, 6), [x], mode="full")
    gradcheck(lambda x: F.reshape(x, (3, -1)), [x], mode="full")
    gradcheck(lambda x: F.flatten(x, 1), [x], mode="full")
    gradcheck(lambda x: F.permute(x, (2, 0, 1)), [x], mode="full")
    gradcheck(lambda x: x.transpose(0, 2), [x], mode="full")
    assert F.permute(x, (2, 0, 1)).shape == (4, 2, 3)
    assert x.transpose(0, 2).shape == (4, 3, 2)
    assert F.flatten(x, 1).shape == (2, 12)


@given(seed=seeds, axis=st.sampled_from([None, 0, 1, -1, (0, 2), (1, 2)]), keep=st.booleans())
def test_sum_and_mean_gradcheck(seed, axis, keep):
    x = leaf(np.random.default_rng(seed), (2, 3, 4))
    s = F.sum(x, axis, keep)
    assert s.shape == np.sum(x.data, axis=axis, keepdims=keep).shape
    np.testing.assert_allclose(F.mean(x, axis, keep).data,
                               np.mean(x.data, axis=axis, keepdims=keep))
    gradcheck(lambda x: F.sum(x, axis, keep), [x], mode="full")
    gradcheck(lambda x: x.mean(axis=axis, keepdims=keep), [x], mode="full")


def test_elementwise_functions_gradcheck():
    rng = np.random.default_rng(6)
    x = leaf(rng, (2, 3), low=0.5)
    gradcheck(lambda x: F.exp(x) + F.log(x), [x], mode="full")
    gradcheck(lambda x: F.softmax(x, dim=1), [x], mode="full")
    gradcheck(lambda x: F.log_softmax(x, dim=0), [x], mode="full")
    np.testing.assert_allclose(F.softmax(x, 1).data.sum(axis=1), 1.0)
    w = leaf(rng, (2, 3, 4))
    gradcheck(lambda x, w: x @ w, [x, w], mode="full")
    np.testing.assert_allclose((x @ w).data, x.data @ w.data)


def test_activations_and_pooling_through_autograd():
    rng = np.random.default_rng(7)
    # well-separated values: no ties for max pooling, no value near a kink
    x = Tensor(rng.permutation(np.arange(1, 33)).reshape(1, 2, 4, 4) / 4.0 - 4.1,
               requires_grad=True)
    for fn in (F.relu, F.sigmoid, F.tanh, lambda t: F.leaky_relu(t, 0.2),
               lambda t: F.max_pool2d(t, 2), lambda t: F.avg_pool2d(t, 2, 1, 1),
               lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False),
               lambda t: F.interpolate(t, size=(3, 5), mode="nearest")):
        gradcheck(fn, [x], mode="full")


def test_max_pool_indices_and_unpool():
    rng = np.random.default_rng(8)
    x = Tensor(rng.permutation(16).reshape(1, 1, 4, 4).astype(np.float64), requires_grad=True)
    y, indices = F.max_pool2d(x, 2, return_indices=True)
    assert isinstance(y, Tensor) and not isinstance(indices, Tensor)
    up = F.max_unpool2d(y, indices, 2)
    assert up.shape == x.shape
    kept = up.data != 0
    assert np.array_equal(up.data[kept], x.data[kept]) and kept.sum() == 4
    gradcheck(lambda x: F.max_unpool2d(F.max_pool2d(x, 2, return_indices=True)[0], indices, 2,
                                       output_size=(1, 1, 4, 4)), [x], mode="full")


def test_dropout_through_autograd_uses_global_generator():
    x = Tensor(np.ones((4, 50)), requires_grad=True)
    npseg.random.manual_seed(11)
    a = F.dropout(x, 0.5, training=True)
    npseg.random.manual_seed(11)
    b = F.dropout(x, 0.5, training=True)
    assert np.array_equal(a.data, b.data)
    assert set(np.unique(a.data)) <= {0.0, 2.0} and 0 < (a.data == 0).sum() < a.numel()
    a.sum().backward()
    assert np.array_equal(x.grad, a.data)  # d/dx = mask / (1 - p), here exactly y
    assert np.array_equal(F.dropout(x, 0.5, training=False).data, x.data)


def test_batch_norm_functional_updates_running_stats():
    rng = np.random.default_rng(9)
    x = leaf(rng, (4, 3, 2, 2))
    mean, var = np.zeros(3), np.ones(3)
    F.batch_norm(x, mean, var, training=True, momentum=0.5)
    np.testing.assert_allclose(mean, 0.5 * x.data.mean(axis=(0, 2, 3)))
    gamma, beta = leaf(rng, (3,)), leaf(rng, (3,))
    gradcheck(lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True), [x, gamma, beta])
    with pytest.raises(ValueError, match="running_mean"):
        F.batch_norm(x, None, None, training=False)


# ----------------------------------------------------------------------------- bookkeeping
def test_tensor_used_twice_accumulates():
    x = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    y = x * x + x          # x used three times
    z = (y * 2 + y).sum()  # y used twice
    z.backward()
    np.testing.assert_allclose(x.grad, 3 * (2 * x.data + 1))


def test_grads_accumulate_across_backward_calls():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 3 + 2 * x.data)


def test_leaf_grad_is_a_private_copy():
    x = Tensor(np.zeros(3), requires_grad=True)
    y = Tensor(np.zeros(3), requires_grad=True)
    upstream = np.ones(3)
    (x + y).backward(upstream)
    assert x.grad is not upstream and x.grad is not y.grad
    x.grad *= 5
    assert np.array_equal(y.grad, np.ones(3)) and np.array_equal(upstream, np.ones(3))


def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = F.relu(x * 2) + 1
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()
    z = (x * 2).sum()  # recording is back on after the block
    assert z.requires_grad


def test_constants_do_not_require_grad():
    a = Tensor(np.ones(2))
    b = a * 3 + 1
    assert not b.requires_grad and b.is_leaf
    c = Tensor(np.ones(2), requires_grad=True)
    d = (b * c).sum()
    d.backward()
    assert a.grad is None and b.grad is None and np.array_equal(c.grad, b.data)


def test_backward_frees_the_graph():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    hidden = F.relu(x * 2)
    probe = weakref.ref(hidden)
    loss = hidden.sum()
    del hidden
    gc.collect()
    assert probe() is not None  # alive: the graph holds it
    loss.backward()
    gc.collect()
    assert probe() is None      # freed with the closures
    with pytest.raises(RuntimeError, match="freed"):
        loss.backward()


def test_retain_graph_allows_a_second_backward():
    x = Tensor(np.array([2.0]), requires_grad=True)
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(x.grad, [8.0])


def test_backward_argument_checks():
    x = Tensor(np.ones(3), requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="one-element"):
        y.backward()
    with pytest.raises(ValueError, match="shape"):
        y.backward(np.ones(4))
    y.backward(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(x.grad, [2.0, 4.0, 6.0])


def test_retain_grad_and_detach():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = (x * 3).retain_grad()
    d = h.detach()
    assert not d.requires_grad and d.data is h.data
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad, 2 * h.data)


def test_record_ignores_none_parents_and_checks_grad_shapes():
    x = Tensor(np.ones(3), requires_grad=True)
    y = record(x.data * 2, (x, None), lambda d: (2 * d, None))
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 2.0)
    bad = record(x.data * 2, (x,), lambda d: (d[:2],))
    with pytest.raises(RuntimeError, match="shape"):
        bad.sum().backward()


def test_tensor_construction():
    t = Tensor([[1, 2], [3, 4]], dtype=np.float32)
    assert t.shape == (2, 2) and t.dtype == np.float32 and t.ndim == 2 and t.device == "cpu"
    assert t.size() == (2, 2) and t.size(1) == 2 and t.numel() == 4 and len(t) == 2
    assert Tensor(np.float64(3.0)).item() == 3.0
    with pytest.raises(TypeError, match="floating"):
        Tensor(np.arange(3), requires_grad=True)
    with pytest.raises(ValueError, match="device"):
        Tensor(np.ones(2), device="gpu")
    assert "requires_grad=True" in repr(Tensor(np.ones(2), requires_grad=True))


def test_cuda_device_matches_cpu():
    """A tiny forward/backward on "cuda" (the simulator without a GPU) equals the CPU one."""
    npseg_gpu = pytest.importorskip("npseg_gpu")
    try:
        npseg_gpu.device()
        import npseg_gpu.ops  # noqa: F401
    except Exception as e:  # no usable GPU package here
        pytest.skip(f"npseg_gpu unavailable: {e}")
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 2, 4, 4))
    w = rng.standard_normal((3, 2, 3, 3))
    results = {}
    for device in ("cpu", "cuda"):
        xt = Tensor(x, requires_grad=True).to(device)
        wt = Tensor(w, requires_grad=True)
        wd = wt.to(device)
        out = F.relu(F.conv2d(xt, wd, padding=1))
        assert out.device == device
        out.sum().backward()
        results[device] = (out.numpy(), wt.grad)
    np.testing.assert_allclose(results["cuda"][0], results["cpu"][0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(results["cuda"][1], results["cpu"][1], rtol=1e-10, atol=1e-12)


@settings(max_examples=5)
@given(seed=seeds)
def test_float32_graph_keeps_float32(seed):
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((2, 2, 4, 4)).astype(np.float32), requires_grad=True)
    npseg.random.manual_seed(0)
    conv = nn.Conv2d(2, 2, 3)
    loss = F.cross_entropy(F.relu(conv(x)), np.zeros((2, 2, 2), dtype=np.int64))
    assert loss.dtype == np.float32
    loss.backward()
    assert x.grad.dtype == np.float32 and conv.weight.grad.dtype == np.float32


def test_roi_ops_through_autograd_accept_both_box_forms():
    rng = np.random.default_rng(13)
    x = Tensor(rng.permutation(2 * 2 * 8 * 8).reshape(2, 2, 8, 8) / 10.0, requires_grad=True)
    boxes = [np.array([[0.5, 1.0, 6.2, 5.5]]), np.array([[1.0, 0.0, 7.0, 7.5], [2, 2, 4, 5]])]
    rois = np.array([[0, 0.5, 1.0, 6.2, 5.5], [1, 1.0, 0.0, 7.0, 7.5], [1, 2, 2, 4, 5]])
    a = F.roi_align(x, boxes, (2, 2), sampling_ratio=2)
    b = F.roi_align(x, rois, (2, 2), sampling_ratio=2)
    assert a.shape == (3, 2, 2, 2)
    np.testing.assert_array_equal(a.data, b.data)
    gradcheck(lambda x: F.roi_align(x, rois, (2, 3), spatial_scale=0.9, aligned=True), [x])
    gradcheck(lambda x: F.roi_pool(x, boxes, 2), [x])
