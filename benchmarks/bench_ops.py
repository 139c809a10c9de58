"""Forward + backward time of every dense op of npseg.ops, side by side with PyTorch CPU.

    python benchmarks/bench_ops.py [--threads 2] [--repeat 7] [--only conv] [--no-torch]

Each row times one forward and one backward pass (upstream gradient precomputed), median of
``--repeat`` runs after a warm-up, npseg and torch in alternating blocks of runs. Both use the
same thread count (BLAS for npseg, intra-op threads for torch). Timings on a machine that is
busy with other work are meaningless (OpenBLAS's threads degrade badly when CPUs are
oversubscribed): run it on an idle machine. For the
convolutions a second table gives the "BLAS floor": the same three matrix products
(forward, weight gradient, input gradient) as single 2-D float32 GEMMs on ready-made operands,
which no im2col-based implementation can beat. Ops not (yet) in npseg.ops print "missing".
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _parse():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for BLAS and torch")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per op (median)")
    parser.add_argument("--only", default="", help="run only ops whose name contains this")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch column")
    parser.add_argument("--no-floor", action="store_true", help="skip the BLAS floor table")
    return parser.parse_args()


ARGS = _parse()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)  # before numpy is imported

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from npseg import ops  # noqa: E402

torch = None
if not ARGS.no_torch:
    try:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(ARGS.threads)
    except ImportError:
        torch = None

DT = np.float32
RNG = np.random.default_rng(0)


def randn(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(DT)


def tt(a, grad=False):
    """A torch tensor sharing nothing with the NumPy array."""
    t = torch.tensor(np.array(a))
    return t.requires_grad_(True) if grad else t


# ------------------------------------------------------------------------------------ cases
# Each case: (op, shape label, setup) where setup() returns (npseg_step, torch_step or None).
# A step runs one forward and one backward pass.


def npseg_step(name, args, kwargs=None, dout=None):
    """forward(*args, **kwargs) then backward(dout, cache); dout defaults to ones (1 for a loss)."""
    forward, backward = getattr(ops, name + "_forward"), getattr(ops, name + "_backward")
    kwargs = kwargs or {}
    out, _ = forward(*args, **kwargs)
    y = out[0] if isinstance(out, tuple) else out
    g = np.asarray(RNG.standard_normal(y.shape), dtype=y.dtype) if dout is None else dout

    def step():
        backward(g, forward(*args, **kwargs)[1])
    return step


def torch_step(fn, inputs):
    """fn(*inputs) then backward with a random upstream gradient (1 for a scalar loss)."""
    if torch is None:
        return None
    y = fn(*inputs)
    y = y[0] if isinstance(y, tuple) else y
    g = torch.randn_like(y) if y.ndim else torch.tensor(1.0)
    leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]

    def step():
        for t in leaves:
            t.grad = None
        out = fn(*inputs)
        (out[0] if isinstance(out, tuple) else out).backward(g)
    return step


def conv_case(x_shape, w_shape, transposed=False, **kw):
    name = "conv_transpose2d" if transposed else "conv2d"

    def setup():
        x = randn(*x_shape)
        fan_in = w_shape[1] * w_shape[2] * w_shape[3]
        w = randn(*w_shape, scale=fan_in ** -0.5)
        b = randn(w_shape[1] * kw.get("groups", 1) if transposed else w_shape[0])
        ours = npseg_step(name, (x, w, b), kw)
        theirs = None
        if torch:
            fn = getattr(F, name)
            theirs = torch_step(lambda a, c, d: fn(a, c, d, **kw), [tt(x, 1), tt(w, 1), tt(b, 1)])
        return ours, theirs
    k = w_shape[2:]
    label = (f"{'x'.join(map(str, x_shape))} {x_shape[1]}->"
             f"{w_shape[1] if transposed else w_shape[0]} k{k[0]}x{k[1]}"
             + "".join(f" {key[0]}{val}" for key, val in kw.items()))
    return name, label, setup


def gemm_floor(x_shape, w_shape, transposed=False, stride=1, padding=0, dilation=1, groups=1):
    """The three GEMMs of an im2col convolution as single 2-D products (groups=1)."""
    N, C, H, W = x_shape
    kh, kw = w_shape[2:]
    if transposed:  # the GEMMs of the conv2d it is the adjoint of: windows = the input x
        C_img, O, L = w_shape[1], C, N * H * W
    else:
        Ho = (H + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
        Wo = (W + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
        C_img, O, L = C, w_shape[0], N * Ho * Wo
    K = C_img * kh * kw
    A, B, G = randn(O, K), randn(K, L), randn(O, L)

    def step():
        A @ B          # forward products
        G @ B.T        # weight gradient
        A.T @ G        # column gradient
    return step, 2.0 * 3 * O * K * L


def elementwise_case(name, torch_fn, shape=(8, 64, 64, 64), kwargs=None, label=None):
    def setup():
        x = randn(*shape)
        ours = npseg_step(name, (x,), kwargs)
        theirs = torch_step(torch_fn, [tt(x, 1)]) if torch else None
        return ours, theirs
    return name, label or "x".join(map(str, shape)), setup


def linear_case(m, n_in, n_out):
    def setup():
        x, w, b = randn(m, n_in), randn(n_out, n_in, scale=n_in ** -0.5), randn(n_out)
        return (npseg_step("linear", (x, w, b)),
                torch_step(F.linear, [tt(x, 1), tt(w, 1), tt(b, 1)]) if torch else None)
    return "linear", f"{m}x{n_in} -> {n_out}", setup


def max_pool_case(k, s, p, shape=(8, 64, 64, 64)):
    def setup():
        x = randn(*shape)
        return (npseg_step("max_pool2d", (x, k, s, p)),
                torch_step(lambda a: F.max_pool2d(a, k, s, p), [tt(x, 1)]) if torch else None)
    return "max_pool2d", f"{'x'.join(map(str, shape))} k{k} s{s} p{p}", setup


def max_unpool_case(shape=(8, 64, 64, 64)):
    def setup():
        x = randn(*shape)
        if not hasattr(ops, "max_pool2d_forward"):
            raise AttributeError("max_unpool2d needs max_pool2d_forward for its indices")
        (y, idx), _ = ops.max_pool2d_forward(x, 2, 2)
        ours = npseg_step("max_unpool2d", (y, idx, shape[2:]))
        theirs = None
        if torch:
            yt, it = F.max_pool2d(tt(x), 2, 2, return_indices=True)
            theirs = torch_step(lambda a: F.max_unpool2d(a, it, 2, 2, output_size=shape[2:]),
                                [yt.detach().requires_grad_(True)])
        return ours, theirs
    return "max_unpool2d", f"{'x'.join(map(str, shape))} from 2x2 s2", setup


def avg_pool_case(k, s, p, shape=(8, 64, 64, 64)):
    def setup():
        x = randn(*shape)
        return (npseg_step("avg_pool2d", (x, k, s, p)),
                torch_step(lambda a: F.avg_pool2d(a, k, s, p), [tt(x, 1)]) if torch else None)
    return "avg_pool2d", f"{'x'.join(map(str, shape))} k{k} s{s} p{p}", setup


def batch_norm_case(shape=(8, 64, 64, 64), relu=False):
    """Batch norm in training; with ``relu``, npseg's fused batch_norm_relu against PyTorch's
    batch norm then ReLU."""
    name = "batch_norm_relu" if relu else "batch_norm"

    def setup():
        C = shape[1]
        x, gamma, beta = randn(*shape), randn(C), randn(C)
        rm, rv = np.zeros(C, DT), np.ones(C, DT)
        ours = npseg_step(name, (x, gamma, beta, rm, rv, True))
        theirs = None
        if torch:
            trm, trv = torch.zeros(C), torch.ones(C)
            after = F.relu if relu else (lambda y: y)
            theirs = torch_step(
                lambda a, g, b: after(F.batch_norm(a, trm, trv, g, b, training=True)),
                [tt(x, 1), tt(gamma, 1), tt(beta, 1)])
        return ours, theirs
    return name, "x".join(map(str, shape)) + " train", setup


def dropout_case(shape=(8, 64, 64, 64)):
    def setup():
        x = randn(*shape)
        ours = npseg_step("dropout", (x, 0.5, True, np.random.default_rng(0)))
        return ours, torch_step(lambda a: F.dropout(a, 0.5, True), [tt(x, 1)]) if torch else None
    return "dropout", "x".join(map(str, shape)) + " p0.5", setup


def interpolate_case(mode, align_corners, shape=(8, 64, 32, 32)):
    size = (2 * shape[2], 2 * shape[3])

    def setup():
        x = randn(*shape)
        kw = dict(mode=mode) if mode == "nearest" else dict(mode=mode, align_corners=align_corners)
        ours = npseg_step("interpolate", (x, size), dict(mode=mode, align_corners=align_corners))
        theirs = None
        if torch:
            theirs = torch_step(lambda a: F.interpolate(a, size=size, **kw), [tt(x, 1)])
        return ours, theirs
    label = f"{'x'.join(map(str, shape))} 2x {mode}" + ("" if mode == "nearest" else
                                                          f" ac={align_corners}")
    return "interpolate", label, setup


def cross_entropy_case(shape=(8, 21, 128, 128), ignore_index=255):
    def setup():
        logits = randn(*shape)
        target = RNG.integers(0, shape[1], size=(shape[0],) + shape[2:])
        target[RNG.random(target.shape) < 0.1] = ignore_index  # 10% "void" pixels
        ours = npseg_step("cross_entropy", (logits, target), dict(ignore_index=ignore_index),
                          dout=np.array(1.0, DT))
        theirs = None
        if torch:
            t = torch.tensor(target)
            theirs = torch_step(lambda a: F.cross_entropy(a, t, ignore_index=ignore_index),
                                [tt(logits, 1)])
        return ours, theirs
    return "cross_entropy", "x".join(map(str, shape)) + f" ignore={ignore_index}", setup


def bce_case(shape=(8, 1, 256, 256)):
    def setup():
        logits, target = randn(*shape), (RNG.random(shape) < 0.3).astype(DT)
        ours = npseg_step("binary_cross_entropy_with_logits", (logits, target),
                          dout=np.array(1.0, DT))
        theirs = None
        if torch:
            t = tt(target)
            theirs = torch_step(lambda a: F.binary_cross_entropy_with_logits(a, t), [tt(logits, 1)])
        return ours, theirs
    return "binary_cross_entropy_with_logits", "x".join(map(str, shape)), setup


def smooth_l1_case(shape=(98304, 4)):
    def setup():
        pred, target = randn(*shape), randn(*shape)
        ours = npseg_step("smooth_l1_loss", (pred, target), dout=np.array(1.0, DT))
        theirs = None
        if torch:
            t = tt(target)
            theirs = torch_step(lambda a: F.smooth_l1_loss(a, t, beta=1.0), [tt(pred, 1)])
        return ours, theirs
    return "smooth_l1_loss", "x".join(map(str, shape)), setup


CONVS = [
    ((8, 64, 64, 64), (64, 64, 3, 3), False, dict(padding=1)),
    ((4, 256, 32, 32), (256, 256, 3, 3), False, dict()),
    ((8, 3, 128, 128), (64, 3, 7, 7), False, dict(stride=2, padding=3)),
    ((8, 64, 32, 32), (64, 64, 4, 4), True, dict(stride=2, padding=1)),
]

if torch:
    _act = dict(relu=F.relu, leaky_relu=lambda a: F.leaky_relu(a, 0.01),
                sigmoid=torch.sigmoid, tanh=torch.tanh)
else:
    _act = dict.fromkeys(("relu", "leaky_relu", "sigmoid", "tanh"))

CASES = (
    [conv_case(xs, ws, t, **kw) for xs, ws, t, kw in CONVS]
    + [linear_case(512, 12544, 1024), linear_case(512, 1024, 1024)]
    + [max_pool_case(2, 2, 0), max_pool_case(3, 2, 1), max_unpool_case(),
       avg_pool_case(2, 2, 0), avg_pool_case(3, 2, 1), batch_norm_case(),
       batch_norm_case(relu=True)]
    + [elementwise_case(name, fn) for name, fn in _act.items()]
    + [dropout_case(),
       interpolate_case("bilinear", False), interpolate_case("bilinear", True),
       interpolate_case("nearest", False),
       cross_entropy_case(), bce_case(), smooth_l1_case()]
)


# ---------------------------------------------------------------------------------- timing


def time_pair(ours, theirs, repeat):
    """Median ms of each step over ``repeat`` runs, after a warm-up run of each.

    The runs go in blocks (ours, then theirs, twice), with a pause before each block: a BLAS
    or OpenMP library keeps its threads spinning for a while after a call, which would slow
    the other library's next run if the two alternated run by run.
    """
    a, b = [], []
    for half in (repeat - repeat // 2, repeat // 2):
        for step, times in ((ours, a), (theirs, b)):
            if step is None or half == 0:
                continue
            time.sleep(0.2)
            step()  # warm-up: first-touch allocations, lazy initialization
            for _ in range(half):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(a)), (1e3 * float(np.median(b)) if b else None)


def main():
    print(f"threads={ARGS.threads}  repeat={ARGS.repeat}  numpy {np.__version__}"
          + (f"  torch {torch.__version__}" if torch else "  (no torch)"))
    header = f"{'op':<34}{'shape':<34}{'npseg ms':>10}{'torch ms':>10}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    for name, label, setup in CASES:
        if ARGS.only not in name:
            continue
        if not hasattr(ops, name + "_forward"):
            print(f"{name:<34}{label:<34}{'missing':>10}")
            continue
        try:
            ours, theirs = setup()
            t_ours, t_torch = time_pair(ours, theirs, ARGS.repeat)
        except Exception as error:  # an op still being written: report, keep going
            print(f"{name:<34}{label:<34}{'error':>10}  {type(error).__name__}: {error}")
            continue
        ratio = f"{t_ours / t_torch:8.2f}" if t_torch else f"{'-':>8}"
        torch_col = f"{t_torch:10.2f}" if t_torch else f"{'-':>10}"
        print(f"{name:<34}{label:<34}{t_ours:10.2f}{torch_col}{ratio}", flush=True)

    if ARGS.no_floor or ARGS.only not in "conv2d conv_transpose2d":
        return
    print("\nBLAS floor (the three GEMMs of each convolution alone, single 2-D products)")
    print(f"{'op':<34}{'shape':<34}{'GEMMs ms':>10}{'GFLOP/s':>10}{'npseg ms':>10}{'eff':>8}")
    for (xs, ws, transposed, kw), (name, label, setup) in zip(CONVS, CASES):
        if ARGS.only not in name or not hasattr(ops, name + "_forward"):
            continue
        floor, flops = gemm_floor(xs, ws, transposed, **kw)
        ours, _ = setup()
        t_floor, t_ours = time_pair(floor, ours, ARGS.repeat)
        print(f"{name:<34}{label:<34}{t_floor:10.2f}{flops / t_floor / 1e6:10.1f}"
              f"{t_ours:10.2f}{t_floor / t_ours:8.0%}", flush=True)


if __name__ == "__main__":
    main()
