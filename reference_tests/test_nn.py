"""npseg.nn: registration, state dicts, modes, default initialisation, layer shapes, devices,
and (optionally) a forward/backward comparison with PyTorch on copied weights."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npseg.functional as F
import npseg.nn as nn
import npseg.random
from npseg.autograd import Tensor, no_grad
from npseg.nn import init


class Block(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = Block(1, 4)
        self.stages = nn.ModuleList([Block(4, 4), Block(4, 4)])
        self.head = nn.Sequential(nn.Conv2d(4, 2, 1), nn.Dropout(0.5))
        self.scale = nn.Parameter(np.ones(1, dtype=np.float32))
        self.helpers = [nn.ReLU()]  # a plain list: not registered, as in PyTorch

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x) * self.scale


def make_net(seed=0):
    npseg.random.manual_seed(seed)
    return Net()


def image(seed=0, shape=(2, 1, 6, 6)):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


# ----------------------------------------------------------------------------- registration
def test_named_parameters_and_state_dict_names():
    net = make_net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["scale", "stem.conv.weight", "stem.bn.weight", "stem.bn.bias",
                     "stages.0.conv.weight", "stages.0.bn.weight", "stages.0.bn.bias",
                     "stages.1.conv.weight", "stages.1.bn.weight", "stages.1.bn.bias",
                     "head.0.weight", "head.0.bias"]
    assert len(list(net.parameters())) == len(names)
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    buffers = [n for n, _ in net.named_buffers()]
    assert buffers[:3] == ["stem.bn.running_mean", "stem.bn.running_var",
                           "stem.bn.num_batches_tracked"]
    state = net.state_dict()
    assert list(state)[:6] == ["scale", "stem.conv.weight", "stem.bn.weight", "stem.bn.bias",
                               "stem.bn.running_mean", "stem.bn.running_var"]
    assert set(state) == set(names) | set(buffers)
    assert all(type(v) is np.ndarray for v in state.values())
    state["scale"][...] = 7  # a copy: the model is untouched
    assert net.scale.data[0] == 1


def test_modules_children_and_unregistered_list():
    net = make_net()
    children = [n for n, _ in net.named_children()]
    assert children == ["stem", "stages", "head"]
    kinds = [type(m).__name__ for m in net.modules()]
    assert kinds.count("Block") == 3 and kinds.count("Conv2d") == 4 and "ReLU" not in kinds


def test_shared_parameters_counted_once():
    conv = nn.Conv2d(2, 2, 1)
    seq = nn.Sequential(conv, nn.ReLU(), conv)
    assert len(list(seq.parameters())) == 2
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias"]


def test_containers():
    seq = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU())
    seq.append(nn.Conv2d(2, 3, 1))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Conv2d) and isinstance(seq[1:], nn.Sequential)
    assert seq(image()).shape == (2, 3, 6, 6)
    ml = nn.ModuleList()
    ml.append(nn.Linear(2, 3))
    ml.extend([nn.Linear(3, 4)])
    ml.insert(0, nn.Identity())
    assert [type(m).__name__ for m in ml] == ["Identity", "Linear", "Linear"]
    assert [n for n, _ in ml.named_parameters()] == ["1.weight", "1.bias", "2.weight", "2.bias"]
    md = nn.ModuleDict({"a": nn.Linear(2, 2)})
    md["b"] = nn.Linear(2, 1)
    assert "b" in md and len(md) == 2 and len(list(md.parameters())) == 4


def test_assignment_rules():
    conv = nn.Conv2d(1, 1, 1)
    with pytest.raises(TypeError, match="weight"):
        conv.weight = Tensor(np.zeros((1, 1, 1, 1)))
    conv.bias = None
    assert [n for n, _ in conv.named_parameters()] == ["weight"]

    class Forgot(nn.Module):
        def __init__(self):
            self.conv = nn.Conv2d(1, 1, 1)

    with pytest.raises(AttributeError, match="super"):
        Forgot()
    with pytest.raises(AttributeError, match="nope"):
        conv.nope


# ----------------------------------------------------------------------------- load_state_dict
def test_load_state_dict_round_trip():
    a, b = make_net(0), make_net(1)
    x = image()
    a.eval(), b.eval()
    with no_grad():
        assert not np.allclose(a(x).data, b(x).data)
        b.load_state_dict(a.state_dict())
        np.testing.assert_array_equal(a(x).data, b(x).data)


def test_load_state_dict_errors_name_the_keys():
    net = make_net()
    good = net.state_dict()
    missing = dict(good)
    del missing["head.0.bias"]
    with pytest.raises(RuntimeError, match=r"missing keys: head\.0\.bias"):
        net.load_state_dict(missing)
    extra = dict(good, **{"head.1.weight": np.zeros(3)})
    with pytest.raises(RuntimeError, match=r"unexpected keys: head\.1\.weight"):
        net.load_state_dict(extra)
    wrong = dict(good)
    wrong["stem.conv.weight"] = np.zeros((4, 1, 5, 5), dtype=np.float32)
    before = net.stem.bn.weight.data.copy()
    wrong["stem.bn.weight"] = before + 1
    with pytest.raises(RuntimeError, match=r"size mismatch for stem\.conv\.weight.*\(4, 1, 5, 5\)"):
        net.load_state_dict(wrong)
    assert np.array_equal(net.stem.bn.weight.data, before)  # nothing copied on error
    result = net.load_state_dict(dict(missing, **{"extra": np.zeros(1)}), strict=False)
    assert result.missing_keys == ["head.0.bias"] and result.unexpected_keys == ["extra"]
    with pytest.raises(RuntimeError, match="size mismatch"):
        net.load_state_dict(wrong, strict=False)


def test_load_state_dict_keeps_dtype():
    net = nn.Linear(2, 2)
    net.load_state_dict({"weight": np.ones((2, 2)), "bias": np.zeros(2)})
    assert net.weight.dtype == np.float32 and np.all(net.weight.data == 1)


# ----------------------------------------------------------------------------- modes
def test_train_eval_switch_batch_norm():
    bn = nn.BatchNorm2d(3)
    x = Tensor(np.random.default_rng(0).normal(5.0, 2.0, (8, 3, 4, 4)).astype(np.float32))
    y = bn(x)  # training: batch statistics, running stats move toward them
    np.testing.assert_allclose(y.data.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(bn.running_mean.data, 0.1 * x.data.mean(axis=(0, 2, 3)),
                               rtol=1e-5)
    assert bn.num_batches_tracked.item() == 1
    seq = nn.Sequential(bn)
    seq.eval()
    assert not bn.training
    frozen = bn.running_mean.data.copy()
    y = bn(x)  # evaluation: running statistics, unchanged
    assert np.array_equal(bn.running_mean.data, frozen) and bn.num_batches_tracked.item() == 1
    expected = (x.data - frozen[:, None, None]) / np.sqrt(bn.running_var.data[:, None, None]
                                                          + 1e-5)
    np.testing.assert_allclose(y.data, expected, rtol=1e-5, atol=1e-5)
    seq.train()
    assert bn.training


def test_batch_norm_cumulative_average_and_no_tracking():
    x1 = Tensor(np.random.default_rng(1).standard_normal((4, 2, 3, 3)).astype(np.float32))
    x2 = Tensor(np.random.default_rng(2).standard_normal((4, 2, 3, 3)).astype(np.float32))
    bn = nn.BatchNorm2d(2, momentum=None)
    bn(x1), bn(x2)
    means = (x1.data.mean(axis=(0, 2, 3)) + x2.data.mean(axis=(0, 2, 3))) / 2
    np.testing.assert_allclose(bn.running_mean.data, means, rtol=1e-5, atol=1e-6)
    free = nn.BatchNorm2d(2, track_running_stats=False, affine=False).eval()
    assert list(free.state_dict()) == [] and list(free.parameters()) == []
    np.testing.assert_allclose(free(x1).data.mean(axis=(0, 2, 3)), 0, atol=1e-5)


def test_train_eval_switch_dropout():
    net = nn.Sequential(nn.Dropout(0.5))
    x = Tensor(np.ones((10, 10), dtype=np.float32))
    npseg.random.manual_seed(0)
    y = net(x)
    assert (y.data == 0).any() and np.all((y.data == 0) | (y.data == 2))
    net.eval()
    assert np.array_equal(net(x).data, x.data)


def test_zero_grad_and_requires_grad():
    net = make_net()
    net.eval()
    (net(image()).sum()).backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.requires_grad_(False)
    assert not net(image()).requires_grad


# ----------------------------------------------------------------------------- initialisation
def uniform_bound_check(values, bound):
    values = np.asarray(values, dtype=np.float64).ravel()
    assert np.abs(values).max() <= bound
    # a uniform draw fills its range: extremes near the bound, std near bound / sqrt(3)
    assert np.abs(values).max() > 0.9 * bound
    assert abs(values.std() - bound / math.sqrt(3)) < 0.1 * bound


def test_default_init_bounds():
    npseg.random.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, groups=2)
    fan_in = 8 * 9
    uniform_bound_check(conv.weight.data, 1 / math.sqrt(fan_in))
    uniform_bound_check(nn.Conv2d(64, 256, 3).bias.data, 1 / math.sqrt(64 * 9))
    tconv = nn.ConvTranspose2d(32, 16, 4)  # PyTorch's fan_in: weight.shape[1] * kH * kW
    uniform_bound_check(tconv.weight.data, 1 / math.sqrt(16 * 16))
    linear = nn.Linear(50, 400)
    uniform_bound_check(linear.weight.data, 1 / math.sqrt(50))
    uniform_bound_check(linear.bias.data, 1 / math.sqrt(50))
    bn = nn.BatchNorm2d(5)
    assert np.all(bn.weight.data == 1) and np.all(bn.bias.data == 0)
    assert np.all(bn.running_var.data == 1) and np.all(bn.running_mean.data == 0)
    assert conv.weight.dtype == np.float32
    assert nn.Conv2d(1, 1, 1, dtype=np.float64).weight.dtype == np.float64


def test_init_is_seeded():
    npseg.random.manual_seed(5)
    a = nn.Conv2d(3, 4, 3).weight.data
    npseg.random.manual_seed(5)
    b = nn.Conv2d(3, 4, 3).weight.data
    c = nn.Conv2d(3, 4, 3).weight.data
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_init_functions_statistics():
    gen = np.random.default_rng(0)
    w = nn.Parameter(np.zeros((256, 128, 3, 3), dtype=np.float32))
    init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", generator=gen)
    assert abs(w.data.std() - math.sqrt(2 / (256 * 9))) < 0.01 * math.sqrt(2 / (256 * 9))
    init.xavier_uniform_(w, generator=gen)
    uniform_bound_check(w.data, math.sqrt(6 / ((128 + 256) * 9)))
    init.kaiming_uniform_(w, nonlinearity="relu", generator=gen)
    uniform_bound_check(w.data, math.sqrt(2) * math.sqrt(3 / (128 * 9)))
    init.normal_(w, 1.0, 0.5, generator=gen)
    assert abs(w.data.mean() - 1) < 0.01 and abs(w.data.std() - 0.5) < 0.01
    init.constant_(w, 3)
    assert np.all(w.data == 3)
    arr = np.ones((2, 3))
    assert init.zeros_(arr) is arr and np.all(arr == 0)
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    with pytest.raises(ValueError, match="nonlinearity"):
        init.calculate_gain("swish")


def test_bilinear_kernel_values():
    np.testing.assert_allclose(init.bilinear_kernel(4)[0], [0.0625, 0.1875, 0.1875, 0.0625])
    np.testing.assert_allclose(init.bilinear_kernel(3)[0], [0.25, 0.5, 0.25])
    w = nn.Parameter(np.zeros((3, 3, 4, 4)))
    init.bilinear_(w)
    assert np.all(w.data[0, 1] == 0) and np.allclose(w.data[2, 2], init.bilinear_kernel(4))


def test_bilinear_transposed_conv_upsamples_like_interpolate():
    """FCN's 2x upsampling layer (k=4, stride 2, padding 1) initialised with ``bilinear_``
    equals bilinear interpolation (align_corners=False) away from the border."""
    up = nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1, bias=False, dtype=np.float64)
    init.bilinear_(up.weight)
    x = Tensor(np.random.default_rng(0).standard_normal((1, 2, 5, 6)))
    with no_grad():
        y = up(x).data
        z = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False).data
    assert y.shape == z.shape == (1, 2, 10, 12)
    np.testing.assert_allclose(y[..., 1:-1, 1:-1], z[..., 1:-1, 1:-1], atol=1e-12)


# ----------------------------------------------------------------------------- layer shapes
@given(h=st.integers(5, 9), w=st.integers(5, 9), k=st.integers(1, 3), s=st.integers(1, 2),
       p=st.integers(0, 1), d=st.integers(1, 2))
def test_conv_layer_shapes(h, w, k, s, p, d):
    npseg.random.manual_seed(0)
    x = Tensor(np.zeros((1, 2, h, w), dtype=np.float32))
    conv = nn.Conv2d(2, 4, k, stride=s, padding=p, dilation=d)
    out = conv(x)
    expect = lambda n: (n + 2 * p - d * (k - 1) - 1) // s + 1  # noqa: E731
    assert out.shape == (1, 4, expect(h), expect(w))
    tconv = nn.ConvTranspose2d(4, 3, k, stride=s, padding=0, dilation=d)
    back = tconv(out, output_size=None)
    grow = lambda n: (n - 1) * s + d * (k - 1) + 1  # noqa: E731
    assert back.shape == (1, 3, grow(expect(h)), grow(expect(w)))
    if s == 2:
        assert tconv(out, output_size=(grow(expect(h)) + 1, grow(expect(w)))).shape[2:] == \
            (grow(expect(h)) + 1, grow(expect(w)))


def test_layer_shapes():
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 7, 8)).astype(np.float32))
    assert nn.Conv2d(3, 5, 3, padding="same")(x).shape == (2, 5, 7, 8)
    assert nn.MaxPool2d(2)(x).shape == (2, 3, 3, 4)
    assert nn.MaxPool2d(2, ceil_mode=True)(x).shape == (2, 3, 4, 4)
    y, idx = nn.MaxPool2d(2, return_indices=True)(x)
    assert nn.MaxUnpool2d(2)(y, idx, output_size=x.shape).shape == x.shape
    assert nn.MaxUnpool2d(2)(y, idx).shape == (2, 3, 6, 8)
    assert nn.AvgPool2d(3, stride=2, padding=1)(x).shape == (2, 3, 4, 4)
    assert nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)(x).shape == \
        (2, 3, 14, 16)
    assert nn.Upsample(size=(5, 5))(x).shape == (2, 3, 5, 5)
    assert nn.Flatten()(x).shape == (2, 3 * 7 * 8)
    assert nn.Linear(8, 4)(x).shape == (2, 3, 7, 4)
    for act in (nn.ReLU(), nn.LeakyReLU(0.2), nn.Sigmoid(), nn.Tanh(), nn.Identity(3)):
        assert act(x).shape == x.shape
    with pytest.raises(ValueError, match="4-D"):
        nn.BatchNorm2d(3)(Tensor(np.zeros((2, 3), dtype=np.float32)))
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2d(3, 4, 1, groups=2)


def test_loss_modules():
    rng = np.random.default_rng(0)
    logits = Tensor(rng.standard_normal((2, 3, 4, 4)).astype(np.float32), requires_grad=True)
    target = rng.integers(0, 3, (2, 4, 4))
    loss = nn.CrossEntropyLoss()(logits, target)
    assert loss.shape == () and loss.item() > 0
    weighted = nn.CrossEntropyLoss(weight=np.array([1, 2, 3], dtype=np.float32))
    assert "weight" in weighted.state_dict()
    assert nn.BCEWithLogitsLoss()(logits, (logits.data > 0).astype(np.float32)).shape == ()
    assert nn.SmoothL1Loss(reduction="none")(logits, np.zeros_like(logits.data)).shape == \
        logits.shape


def test_repr():
    text = repr(make_net())
    assert "(stem): Block(" in text and "(0): Conv2d(4, 2, kernel_size=(1, 1)" in text
    assert "BatchNorm2d(4, eps=1e-05, momentum=0.1" in text and "Dropout(p=0.5)" in text


# ----------------------------------------------------------------------------- dtypes, devices
def test_to_dtype_and_device_keep_parameter_objects():
    net = make_net()
    params = list(net.parameters())
    net.double()
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]
    assert all(p.dtype == np.float64 for p in params)
    assert net.stem.bn.running_mean.dtype == np.float64
    assert net.stem.bn.num_batches_tracked.dtype == np.int64
    with pytest.raises(ValueError, match="device"):
        net.to("tpu")


def test_to_cuda_and_back():
    npseg_gpu = pytest.importorskip("npseg_gpu")
    try:
        npseg_gpu.device()
        import npseg_gpu.ops  # noqa: F401
    except Exception as e:
        pytest.skip(f"npseg_gpu unavailable: {e}")
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU())
    x = image(shape=(2, 1, 4, 4))
    expected = net(x).data
    net.to("cuda")
    assert all(t.device == "cuda" for t in list(net.parameters()) + list(net.buffers()))
    out = net(x.to("cuda"))
    assert out.device == "cuda"
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)
    state = net.state_dict()
    assert all(type(v) is np.ndarray for v in state.values())
    out.sum().backward()
    net.to("cpu")
    assert all(t.device == "cpu" and type(t.data) is np.ndarray for t in net.parameters())
    assert all(type(p.grad) is np.ndarray for p in net.parameters())


# ----------------------------------------------------------------------------- PyTorch
@pytest.mark.torch
def test_forward_and_backward_match_torch_with_copied_weights():
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    class TorchNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv = tnn.Conv2d(2, 4, 3, padding=1)
            self.bn = tnn.BatchNorm2d(4)
            self.pool = tnn.MaxPool2d(2)
            self.up = tnn.ConvTranspose2d(4, 3, 2, stride=2)
            self.head = tnn.Conv2d(7, 3, 1)

        def forward(self, x):
            skip = torch.relu(self.bn(self.conv(x)))
            return self.head(torch.cat([self.up(self.pool(skip)), skip], 1))

    class OurNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1, dtype=np.float64)
            self.bn = nn.BatchNorm2d(4, dtype=np.float64)
            self.pool = nn.MaxPool2d(2)
            self.up = nn.ConvTranspose2d(4, 3, 2, stride=2, dtype=np.float64)
            self.head = nn.Conv2d(7, 3, 1, dtype=np.float64)

        def forward(self, x):
            skip = F.relu(self.bn(self.conv(x)))
            return self.head(F.concat([self.up(self.pool(skip)), skip], 1))

    torch.manual_seed(0)
    theirs = TorchNet().double()
    ours = OurNet()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 6, 6))
    target = rng.integers(0, 3, (2, 6, 6))
    for mode in ("train", "eval"):
        getattr(theirs, mode)(), getattr(ours, mode)()
        t_out = theirs(torch.from_numpy(x))
        t_loss = tnn.functional.cross_entropy(t_out, torch.from_numpy(target))
        theirs.zero_grad()
        t_loss.backward()
        out = ours(Tensor(x))
        loss = F.cross_entropy(out, target)
        ours.zero_grad()
        loss.backward()
        np.testing.assert_allclose(out.data, t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
        t_params = dict(theirs.named_parameters())
        for name, p in ours.named_parameters():
            np.testing.assert_allclose(p.grad, t_params[name].grad.numpy(), rtol=1e-8,
                                       atol=1e-12, err_msg=name)
        for name, b in ours.state_dict().items():
            np.testing.assert_allclose(b, theirs.state_dict()[name].numpy(), rtol=1e-10,
                                       err_msg=name)


def test_sequential_fuses_batch_norm_and_relu_with_the_same_numbers(monkeypatch):
    """Conv -> BN -> ReLU in a Sequential runs BN and ReLU as one op; outputs, gradients and
    running statistics are those of the modules called one by one."""
    npseg.random.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                        nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2), nn.ReLU())
    twin = nn.Sequential(*[m for m in seq])                 # the same modules, called by hand
    fused_calls = []
    original = nn.BatchNorm2d.forward_relu
    monkeypatch.setattr(nn.BatchNorm2d, "forward_relu",
                        lambda self, x: fused_calls.append(self) or original(self, x))
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 4)).astype(np.float32)
    state = {k: v.copy() for k, v in seq.state_dict().items()}

    xa = Tensor(x, requires_grad=True)
    out = seq(xa)
    out.sum().backward()
    assert fused_calls == [seq[1], seq[4]]
    got = [out.data, xa.grad] + [p.grad.copy() for p in seq.parameters()]
    got_state = {k: v.copy() for k, v in seq.state_dict().items()}

    seq.load_state_dict(state)
    for p in seq.parameters():
        p.grad = None
    xb = Tensor(x, requires_grad=True)
    y = xb
    for module in twin:
        y = module(y)
    y.sum().backward()
    expected = [y.data, xb.grad] + [p.grad for p in twin.parameters()]
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    assert all(np.array_equal(got_state[k], v) for k, v in twin.state_dict().items())
    assert len(fused_calls) == 2                            # the modules one by one: no fusion


def test_sequential_does_not_fuse_subclasses_or_other_orders():
    class MyReLU(nn.ReLU):
        def forward(self, x):
            return F.relu(x) * 2.0

    x = Tensor(np.random.default_rng(1).standard_normal((2, 3, 2, 2)).astype(np.float32))
    bn = nn.BatchNorm2d(3)
    out = nn.Sequential(bn, MyReLU())(x)
    assert np.array_equal(out.data, 2.0 * np.maximum(bn(x).data, 0))
    relu_first = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3))(x)   # ReLU then BN: no fusion
    assert relu_first.shape == (2, 3, 2, 2) and (relu_first.data < 0).any()
