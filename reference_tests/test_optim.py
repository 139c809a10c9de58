"""npseg.optim: SGD / Adam / AdamW steps against hand-computed values (and, optionally, against
torch.optim on the same quadratic), state saving, and the learning-rate schedules."""

import math

import numpy as np
import pytest

from npseg import optim
from npseg.autograd import Tensor
from npseg.nn import Parameter
from npseg.optim import lr_scheduler


def run(opt_class, grads, p0=1.0, **kwargs):
    """Parameter values after one step per gradient in ``grads`` (gradients set by hand)."""
    p = Parameter(np.array([p0]))
    opt = opt_class([p], **kwargs)
    values = []
    for g in grads:
        p.grad = np.array([g])
        opt.step()
        values.append(float(p.data[0]))
    return values


# ----------------------------------------------------------------------------- SGD
def test_sgd_plain():
    assert run(optim.SGD, [1.0, 2.0], lr=0.1) == pytest.approx([0.9, 0.7])


def test_sgd_momentum():
    # buf = g on the first step, then buf = 0.9 buf + g; p -= lr * buf
    assert run(optim.SGD, [1.0, 2.0], lr=0.1, momentum=0.9) == pytest.approx([0.9, 0.61])


def test_sgd_dampening():
    # buf = 1; then 0.9 * 1 + (1 - 0.5) * 2 = 1.9
    assert run(optim.SGD, [1.0, 2.0], lr=0.1, momentum=0.9, dampening=0.5) == \
        pytest.approx([0.9, 0.71])


def test_sgd_nesterov():
    # step 1: buf = 1, g = 1 + 0.9 * 1 = 1.9;  step 2: buf = 2.9, g = 2 + 0.9 * 2.9 = 4.61
    assert run(optim.SGD, [1.0, 2.0], lr=0.1, momentum=0.9, nesterov=True) == \
        pytest.approx([0.81, 0.81 - 0.461])
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([Parameter(np.zeros(1))], lr=0.1, nesterov=True)


def test_sgd_weight_decay():
    # g' = g + 0.5 p:  1 + 0.5 = 1.5 -> 0.85;  2 + 0.425 = 2.425 -> 0.6075
    assert run(optim.SGD, [1.0, 2.0], lr=0.1, weight_decay=0.5) == pytest.approx([0.85, 0.6075])


# ----------------------------------------------------------------------------- Adam
def test_adam_two_steps():
    m1, v1 = 0.1 * 1.0, 0.001 * 1.0
    p1 = 1 - 0.1 * (m1 / 0.1) / (math.sqrt(v1 / 0.001) + 1e-8)
    m2, v2 = 0.9 * m1 + 0.1 * 2.0, 0.999 * v1 + 0.001 * 4.0
    p2 = p1 - 0.1 * (m2 / (1 - 0.9 ** 2)) / (math.sqrt(v2 / (1 - 0.999 ** 2)) + 1e-8)
    assert run(optim.Adam, [1.0, 2.0], lr=0.1) == pytest.approx([p1, p2], rel=1e-12)
    assert p1 == pytest.approx(0.9) and p2 == pytest.approx(0.8034817, abs=1e-6)


def test_adam_l2_versus_adamw_decoupled_decay():
    # Adam: g' = 1 + 0.1 * 1 = 1.1, and m_hat / sqrt(v_hat) = 1 -> p = 1 - 0.1 = 0.9
    assert run(optim.Adam, [1.0], lr=0.1, weight_decay=0.1) == pytest.approx([0.9])
    # AdamW: p = 1 * (1 - 0.1 * 0.1) = 0.99, then the Adam step of g = 1: 0.99 - 0.1 = 0.89
    assert run(optim.AdamW, [1.0], lr=0.1, weight_decay=0.1) == pytest.approx([0.89])
    assert optim.AdamW([Parameter(np.zeros(1))]).param_groups[0]["weight_decay"] == 0.01


def test_adam_amsgrad_uses_the_largest_second_moment():
    plain = run(optim.Adam, [10.0, 0.1, 0.1], lr=0.1)
    ams = run(optim.Adam, [10.0, 0.1, 0.1], lr=0.1, amsgrad=True)
    assert plain[0] == ams[0]
    # the remembered v_max (from g = 10) makes the later steps smaller
    assert abs(ams[2] - ams[1]) < abs(plain[2] - plain[1])


def test_float32_parameters_stay_float32():
    for cls, kw in ((optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-4)),
                    (optim.Adam, dict(lr=0.1)), (optim.AdamW, dict(lr=0.1))):
        p = Parameter(np.ones(3, dtype=np.float32))
        opt = cls([p], **kw)
        p.grad = np.ones(3, dtype=np.float32)
        data = p.data
        opt.step()
        assert p.data is data and p.data.dtype == np.float32  # in place


# ----------------------------------------------------------------------------- bookkeeping
def test_zero_grad_skip_and_groups():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    a.grad = np.ones(2)
    opt.step()  # b has no grad: untouched
    assert np.allclose(a.data, 0.9) and np.all(b.data == 1)
    b.grad = np.ones(2)
    opt.step()
    assert np.allclose(b.data, 0.0)
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    with pytest.raises(ValueError, match="more than one"):
        optim.SGD([{"params": [a]}, {"params": [a]}], lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="requires_grad"):
        optim.SGD([Tensor(np.ones(1))], lr=0.1)


@pytest.mark.parametrize("cls,kw", [(optim.SGD, dict(lr=0.1, momentum=0.9)),
                                    (optim.Adam, dict(lr=0.05, amsgrad=True))])
def test_optimizer_state_dict_resume(cls, kw):
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((6, 2, 3))

    def make():
        ps = [Parameter(np.ones((2, 3))), Parameter(np.zeros(4))]
        return ps, cls(ps, **kw)

    ps, opt = make()
    for g in grads:
        ps[0].grad = g
        opt.step()
    ps2, opt2 = make()
    for g in grads[:3]:
        ps2[0].grad = g
        opt2.step()
    state = opt2.state_dict()
    assert set(state["state"]) == {0}  # the second parameter never had a gradient
    assert all(type(v) is np.ndarray for v in state["state"][0].values()
               if hasattr(v, "shape"))
    ps3, opt3 = make()
    ps3[0].data = ps2[0].data.copy()
    opt3.load_state_dict(state)
    for g in grads[3:]:
        ps3[0].grad = g
        opt3.step()
    np.testing.assert_array_equal(ps3[0].data, ps[0].data)


def test_optimizer_load_state_dict_checks():
    opt = optim.SGD([Parameter(np.ones(2))], lr=0.1, momentum=0.9)
    other = optim.SGD([Parameter(np.ones(3))], lr=0.1, momentum=0.9)
    other.param_groups[0]["params"][0].grad = np.ones(3)
    other.step()
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(other.state_dict())
    two = optim.SGD([Parameter(np.ones(2)), Parameter(np.ones(2))], lr=0.1)
    with pytest.raises(ValueError, match="parameters"):
        opt.load_state_dict(two.state_dict())


# ----------------------------------------------------------------------------- schedulers
def lrs(make_scheduler, n, lr=1.0):
    opt = optim.SGD([Parameter(np.zeros(1))], lr=lr)
    sched = make_scheduler(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        assert sched.get_last_lr() == [out[-1]]
        opt.step()
        sched.step()
    return out


def test_step_and_multistep_lr():
    assert lrs(lambda o: lr_scheduler.StepLR(o, 3, gamma=0.5), 8) == \
        pytest.approx([1, 1, 1, .5, .5, .5, .25, .25])
    assert lrs(lambda o: lr_scheduler.MultiStepLR(o, [5, 2], gamma=0.1), 7) == \
        pytest.approx([1, 1, .1, .1, .1, .01, .01])


def test_cosine_and_polynomial_lr():
    c = math.cos(math.pi / 4)
    assert lrs(lambda o: lr_scheduler.CosineAnnealingLR(o, 4), 5) == \
        pytest.approx([1, (1 + c) / 2, .5, (1 - c) / 2, 0], abs=1e-12)
    assert lrs(lambda o: lr_scheduler.CosineAnnealingLR(o, 2, eta_min=0.5), 3) == \
        pytest.approx([1, .75, .5])
    assert lrs(lambda o: lr_scheduler.PolynomialLR(o, 4, power=2.0), 6) == \
        pytest.approx([1, .5625, .25, .0625, 0, 0])


def test_warmup_schedules():
    assert lrs(lambda o: lr_scheduler.WarmupMultiStepLR(o, [6], gamma=0.1, warmup_factor=0.2,
                                                        warmup_iters=4), 8, lr=2.0) == \
        pytest.approx([.4, .8, 1.2, 1.6, 2, 2, .2, .2])
    assert lrs(lambda o: lr_scheduler.WarmupMultiStepLR(o, [], warmup_factor=0.2,
                                                        warmup_iters=2,
                                                        warmup_method="constant"), 3) == \
        pytest.approx([.2, .2, 1])
    cos = lrs(lambda o: lr_scheduler.WarmupCosineLR(o, 4, warmup_factor=0.5, warmup_iters=1), 5)
    assert cos == pytest.approx([.5, (1 + math.cos(math.pi / 4)) / 2, .5,
                                 (1 - math.cos(math.pi / 4)) / 2, 0], abs=1e-12)


def test_scheduler_state_dict_resume():
    def make():
        p = Parameter(np.zeros(1))
        opt = optim.SGD([p], lr=1.0)
        return opt, lr_scheduler.WarmupMultiStepLR(opt, [4], warmup_iters=3, warmup_factor=0.1)

    opt, sched = make()
    for _ in range(3):
        sched.step()
    saved_opt, saved = opt.state_dict(), sched.state_dict()
    expected = []
    for _ in range(4):
        sched.step()
        expected.append(opt.param_groups[0]["lr"])
    opt2, sched2 = make()
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved)
    got = []
    for _ in range(4):
        sched2.step()
        got.append(opt2.param_groups[0]["lr"])
    assert got == expected


# ----------------------------------------------------------------------------- PyTorch
CONFIGS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.05)),
    ("Adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, amsgrad=True)),
    ("AdamW", dict(lr=0.05)),
    ("AdamW", dict(lr=0.05, weight_decay=0.3, amsgrad=True)),
]


@pytest.mark.torch
@pytest.mark.parametrize("name,kw", CONFIGS)
def test_optimizers_match_torch_on_a_quadratic(name, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    a, c, p0 = rng.uniform(0.5, 2, (3, 4)), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    ours = Parameter(p0.copy())
    theirs = torch.tensor(p0.copy(), requires_grad=True)
    opt = getattr(optim, name)([ours], **kw)
    topt = getattr(torch.optim, name)([theirs], **kw)
    for _ in range(25):
        # f(p) = 0.5 * sum(a * (p - c)^2), gradient a * (p - c)
        ours.grad = a * (ours.data - c)
        opt.step()
        topt.zero_grad()
        (0.5 * (torch.from_numpy(a) * (theirs - torch.from_numpy(c)) ** 2).sum()).backward()
        topt.step()
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.torch
def test_schedulers_match_torch():
    torch = pytest.importorskip("torch")
    makers = [
        (lambda o: lr_scheduler.StepLR(o, 3, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
        (lambda o: lr_scheduler.MultiStepLR(o, [2, 2, 7], 0.3),
         lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 2, 7], 0.3)),
        (lambda o: lr_scheduler.CosineAnnealingLR(o, 10, 0.01),
         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 10, 0.01)),
        (lambda o: lr_scheduler.PolynomialLR(o, 8, 0.9),
         lambda o: torch.optim.lr_scheduler.PolynomialLR(o, 8, 0.9)),
    ]
    for ours_make, theirs_make in makers:
        opt = optim.SGD([Parameter(np.zeros(1))], lr=0.5)
        topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
        ours, theirs = ours_make(opt), theirs_make(topt)
        for _ in range(11):
            assert opt.param_groups[0]["lr"] == pytest.approx(topt.param_groups[0]["lr"],
                                                              rel=1e-9, abs=1e-12)
            topt.step()
            ours.step(), theirs.step()
