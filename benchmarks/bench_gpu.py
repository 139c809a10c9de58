"""Forward + backward time of every op of npseg_gpu.ops on the GPU, next to npseg on the CPU and
PyTorch on the GPU.

    python benchmarks/bench_gpu.py [--threads 2] [--repeat 10] [--only conv] [--no-cpu]
                                   [--no-torch]

Each op row times one forward and one backward pass of an op (a plain function such as nms:
one call) on realistic float32 shapes: npseg_gpu (CuPy + Numba kernels, median of ``--repeat``
runs after a warm-up that compiles the kernels, the GPU synchronised around each run), npseg on
the CPU with ``--threads`` BLAS threads (median of fewer runs: it is slow), and PyTorch on the
GPU (cuDNN/cuBLAS, autograd; torchvision for the detection ops) where torch with CUDA is
installed. The last rows (``--only train``) time one training step of whole models (forward,
cross entropy, backward, AdamW) at ``npseg train``'s presets, against the same architecture
written in torch. Columns: milliseconds, gpu/torch (npseg_gpu time over torch's; the targets
are conv within 2x) and cpu/gpu (the speed-up over the CPU).

Without a GPU (no CuPy, no device, or Numba's simulator switched on) the script says so and
exits with status 0. ``--sim`` runs the same rows on tiny shapes in the simulator, to check the
script itself on a machine without a GPU (its times mean nothing).
"""

from __future__ import annotations

import argparse
import os
import sys


def _parse():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (BLAS and torch)")
    parser.add_argument("--repeat", type=int, default=10, help="timed GPU runs per op (median)")
    parser.add_argument("--cpu-repeat", type=int, default=3, help="timed CPU runs per op")
    parser.add_argument("--only", default="", help="run only ops whose name contains this")
    parser.add_argument("--no-cpu", action="store_true", help="skip the npseg CPU column")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch CUDA column")
    parser.add_argument("--sim", action="store_true",
                        help="tiny shapes in Numba's CUDA simulator (checks the script only)")
    return parser.parse_args()


ARGS = _parse()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)  # before numpy is imported
if ARGS.sim:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba is imported

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import npseg.ops as cpu_ops  # noqa: E402
from _timing import median_ms  # noqa: E402
from _torch_twins import torch_twin  # noqa: E402
import npseg_gpu  # noqa: E402

DT = np.float32


def _device_or_exit():
    try:
        device = npseg_gpu.device()
    except RuntimeError as error:
        print(f"bench_gpu: no GPU to measure on, nothing to do.\n  ({error})")
        sys.exit(0)
    if device == "sim" and not ARGS.sim:
        print("bench_gpu: NUMBA_ENABLE_CUDASIM is set (Numba's CUDA simulator): there is no GPU "
              "to measure on, nothing to do. (--sim runs tiny shapes to check this script.)")
        sys.exit(0)
    return device


def _torch_cuda():
    if ARGS.no_torch or ARGS.sim:
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.set_num_threads(ARGS.threads)
    return torch


# --------------------------------------------------------------------------------------- cases
# A case is (op name, shape label, make): make(rng) returns a dict with the op's forward
# arguments as host arrays ("args", "kwargs"; the string "rng" stands for a generator), and
# optionally "torch", the same forward in torch (given CUDA tensors, returning the output whose
# backward is timed) with "no_grad", the positions of float arguments torch must not
# differentiate (targets, running statistics).


def _randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(DT)


def _size(full, tiny):
    return tiny if ARGS.sim else full


def _label(shape):
    return "x".join(map(str, shape))


def _F():
    import torch.nn.functional

    return torch.nn.functional


def _cases():
    import math

    cases = []

    def conv(kernel_label, shape, c_out, k, stride=1, padding=0):
        shape, c_out = _size((shape, c_out), ((1, 2, 6, 6), 3))
        c_in = shape[1]

        def make(rng):
            w = _randn(rng, c_out, c_in, k, k, scale=1 / math.sqrt(c_in * k * k))
            return dict(args=(_randn(rng, *shape), w, _randn(rng, c_out)),
                        kwargs=dict(stride=stride, padding=padding),
                        torch=lambda x, w, b: _F().conv2d(x, w, b, stride=stride,
                                                          padding=padding))
        cases.append(("conv2d", f"{kernel_label} {_label(shape)}->{c_out}", make))

    conv("3x3", (8, 64, 64, 64), 64, 3, padding=1)
    conv("3x3", (4, 256, 32, 32), 256, 3, padding=1)
    conv("7x7/2", (8, 3, 128, 128), 64, 7, stride=2, padding=3)
    conv("1x1", (8, 256, 32, 32), 64, 1)

    tshape = _size((8, 64, 32, 32), (1, 2, 4, 4))

    def tconv(rng):
        c = tshape[1]
        w = _randn(rng, c, c, 4, 4, scale=1 / math.sqrt(c * 16))
        return dict(args=(_randn(rng, *tshape), w, None), kwargs=dict(stride=2, padding=1),
                    torch=lambda x, w, b: _F().conv_transpose2d(x, w, None, stride=2,
                                                                padding=1))
    cases.append(("conv_transpose2d", f"4x4/2 {_label(tshape)}", tconv))

    n, n_in, n_out = _size((256, 4096, 1024), (4, 5, 3))

    def linear(rng):
        return dict(args=(_randn(rng, n, n_in), _randn(rng, n_out, n_in, scale=n_in ** -0.5),
                          _randn(rng, n_out)),
                    torch=lambda x, w, b: _F().linear(x, w, b))
    cases.append(("linear", f"{n}x{n_in}->{n_out}", linear))

    big = _size((8, 64, 128, 128), (1, 2, 6, 6))

    def max_pool(rng):
        return dict(args=(_randn(rng, *big), 2), kwargs=dict(stride=2),
                    torch=lambda x, k: _F().max_pool2d(x, k, stride=2))
    cases.append(("max_pool2d", f"2/2 {_label(big)}", max_pool))

    def max_pool3(rng):
        return dict(args=(_randn(rng, *big), 3), kwargs=dict(stride=2, padding=1),
                    torch=lambda x, k: _F().max_pool2d(x, k, stride=2, padding=1))
    cases.append(("max_pool2d", f"3/2 pad 1 {_label(big)}", max_pool3))

    def unpool(rng):
        (y, idx), _ = cpu_ops.max_pool2d_forward(_randn(rng, *big), 2, stride=2)
        return dict(args=(y, idx, big[2:]),
                    torch=lambda y, idx, size: _F().max_unpool2d(y, idx, 2, stride=2,
                                                                 output_size=size))
    cases.append(("max_unpool2d", f"2/2 -> {_label(big)}", unpool))

    def avg_pool(rng):
        return dict(args=(_randn(rng, *big), 3), kwargs=dict(stride=2, padding=1),
                    torch=lambda x, k: _F().avg_pool2d(x, k, stride=2, padding=1))
    cases.append(("avg_pool2d", f"3/2 pad 1 {_label(big)}", avg_pool))

    def batch_norm(rng):
        c = big[1]
        return dict(args=(_randn(rng, *big), 1 + _randn(rng, c, scale=0.1),
                          _randn(rng, c, scale=0.1), np.zeros(c, DT), np.ones(c, DT), True),
                    torch=lambda x, g, b, mean, var, training: _F().batch_norm(
                        x, mean, var, g, b, training=True),
                    no_grad=(3, 4))
    cases.append(("batch_norm", f"train {_label(big)}", batch_norm))

    for name in ("relu", "sigmoid", "tanh"):
        def activation(rng, name=name):
            return dict(args=(_randn(rng, *big),), torch=lambda x: getattr(x, name)())
        cases.append((name, _label(big), activation))

    def dropout(rng):
        return dict(args=(_randn(rng, *big), 0.5, True, "rng"),
                    torch=lambda x, p, training, rng: _F().dropout(x, p, training))
    cases.append(("dropout", f"p=0.5 {_label(big)}", dropout))

    small, size = _size(((8, 21, 32, 32), (256, 256)), ((1, 2, 3, 3), (7, 5)))

    def interpolate(rng):
        return dict(args=(_randn(rng, *small), size), kwargs=dict(mode="bilinear"),
                    torch=lambda x, size: _F().interpolate(x, size=size, mode="bilinear",
                                                           align_corners=False))
    cases.append(("interpolate", f"bilinear {_label(small)}->{size[0]}", interpolate))

    seg = _size((8, 21, 128, 128), (1, 3, 4, 4))

    def cross_entropy(rng):
        target = rng.integers(0, seg[1], (seg[0],) + seg[2:])
        return dict(args=(_randn(rng, *seg), target),
                    torch=lambda x, t: _F().cross_entropy(x, t))
    cases.append(("cross_entropy", _label(seg), cross_entropy))

    masks = _size((8, 80, 28, 28), (1, 2, 3, 3))

    def bce(rng):
        return dict(args=(_randn(rng, *masks), rng.random(masks).astype(DT)),
                    torch=lambda x, t: _F().binary_cross_entropy_with_logits(x, t),
                    no_grad=(1,))
    cases.append(("binary_cross_entropy_with_logits", _label(masks), bce))

    deltas = _size((512, 324), (3, 4))

    def smooth_l1(rng):
        return dict(args=(_randn(rng, *deltas), _randn(rng, *deltas)), kwargs=dict(beta=1 / 9),
                    torch=lambda p, t: _F().smooth_l1_loss(p, t, beta=1 / 9), no_grad=(1,))
    cases.append(("smooth_l1_loss", _label(deltas), smooth_l1))

    def im2col(rng):
        return dict(args=(_randn(rng, *_size((8, 64, 64, 64), (1, 2, 4, 4))), 3),
                    kwargs=dict(padding=1))
    cases.append(("im2col", "3x3 pad 1 " + _label(_size((8, 64, 64, 64), (1, 2, 4, 4))),
                  im2col))

    # detection: a Mask R-CNN box head's RoIs on a stride-16 map of an 800-pixel image
    fmap, n_rois, pooled = _size(((2, 256, 50, 50), 512, 7), ((1, 2, 5, 5), 3, 2))

    def rois(rng):
        image = fmap[2] * 16
        xy = rng.uniform(0, image * 0.8, (n_rois, 2))
        wh = rng.uniform(16, image * 0.5, (n_rois, 2))
        boxes = np.concatenate([xy, np.minimum(xy + wh, image)], axis=1)
        return np.concatenate([rng.integers(0, fmap[0], (n_rois, 1)), boxes], 1).astype(DT)

    def roi_case(op, **kwargs):
        """A case of ``op`` (roi_align or roi_pool) with the same keywords for torchvision."""
        def case(rng):
            return dict(args=(_randn(rng, *fmap), rois(rng), pooled), kwargs=kwargs,
                        torch=lambda x, r, size: getattr(_torchvision(), op)(x, r, size,
                                                                            **kwargs),
                        no_grad=(1,))
        return case

    cases.append(("roi_align", f"{n_rois} rois {pooled}x{pooled} on {_label(fmap)}",
                  roi_case("roi_align", spatial_scale=1 / 16, sampling_ratio=2, aligned=True)))
    cases.append(("roi_align", f"adaptive grid, {n_rois} rois",
                  roi_case("roi_align", spatial_scale=1 / 16)))
    cases.append(("roi_pool", f"{n_rois} rois {pooled}x{pooled} on {_label(fmap)}",
                  roi_case("roi_pool", spatial_scale=1 / 16)))

    n_boxes = _size(4000, 70)

    def nms(rng):
        centre = rng.uniform(0, 800, (n_boxes, 2))
        size = rng.uniform(16, 200, (n_boxes, 2))
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(DT)
        return dict(args=(boxes, rng.random(n_boxes).astype(DT), 0.7),
                    torch=lambda b, s, t: _torchvision().nms(b, s, t), no_grad=(0, 1))
    cases.append(("nms", f"{n_boxes} boxes, IoU 0.7", nms))

    def batched_nms(rng):
        args = nms(rng)["args"]
        idxs = rng.integers(0, 80, n_boxes)
        return dict(args=(args[0], args[1], idxs, 0.5),
                    torch=lambda b, s, i, t: _torchvision().batched_nms(b, s, i, t),
                    no_grad=(0, 1))
    cases.append(("batched_nms", f"{n_boxes} boxes, 80 classes", batched_nms))
    return cases


def _torchvision():
    import torchvision.ops

    return torchvision.ops


# ------------------------------------------------------------------------- training steps
# One training step (forward, cross entropy, backward, AdamW step) of a whole model, float32:
# npseg_gpu ("cuda"), npseg on the CPU, and the same architecture written in torch on CUDA.
# Rows: (model name, npseg config, batch, image side); the first ones are `npseg train`'s
# presets (TrainConfig.PRESETS) at its default batch and image size.
TRAINING_STEPS = [
    ("unet", dict(width=0.125, batch_norm=True), 16, 64),
    ("unet", dict(width=0.5, batch_norm=True), 8, 128),
    ("fcn8s", dict(width=0.25, batch_norm=True, head_channels=128, dropout=0.1), 16, 64),
    ("segnet", dict(width=0.125, depth=4), 16, 64),
]
CLASSES = 4  # the shapes data set: background + 3 shapes


def _training_row(name, config, batch, side, torch):
    import npseg_gpu
    from npseg import functional as F
    from npseg import optim
    from npseg.autograd import Tensor
    from npseg.models import build_model

    batch, side = _size((batch, side), (2, 16 if name == "segnet" else 8))
    if ARGS.sim:
        config = dict(config, width=1 / 32)
        if name == "fcn8s":
            config["head_channels"] = 8
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 3, side, side)).astype(DT)
    labels = rng.integers(0, CLASSES, (batch, side, side))

    def npseg_step(device):
        model = build_model(name, CLASSES, **config)
        if device != "cpu":
            model.to(device)
        optimizer = optim.AdamW(model.parameters(), lr=1e-3)
        move = npseg_gpu.asarray if device != "cpu" else np.asarray
        x, t = Tensor(move(images), device=device), move(labels)

        def step():
            optimizer.zero_grad()
            F.cross_entropy(model(x), t).backward()
            optimizer.step()
        return step

    gpu = npseg_step("cuda")
    gpu()
    gpu_ms = median_ms(gpu, ARGS.repeat, npseg_gpu.synchronize)
    cpu_ms = torch_ms = None
    if not ARGS.no_cpu:
        cpu = npseg_step("cpu")
        cpu()
        cpu_ms = median_ms(cpu, ARGS.cpu_repeat)
    twin = torch_twin(torch, name, CLASSES, config) if torch is not None else None
    if twin is not None:
        twin = twin.cuda().train()
        optimizer = torch.optim.AdamW(twin.parameters(), lr=1e-3)
        x = torch.from_numpy(images).cuda()
        t = torch.from_numpy(labels).cuda()

        def torch_step():
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(twin(x), t).backward()
            optimizer.step()
        torch_step()
        torch_ms = median_ms(torch_step, ARGS.repeat, torch.cuda.synchronize)
    label = f"{batch}x3x{side}x{side} width {config['width']:g}"
    _print_row(f"train step {name}", label, cpu_ms, gpu_ms, torch_ms)


# ------------------------------------------------------------------------------------ timing

def _npseg_step(ops, name, args, kwargs, to_device, rng_factory):
    """A function running forward and backward of ``ops``' op ``name`` once."""
    def move(a):
        if isinstance(a, str) and a == "rng":
            return rng_factory()
        return to_device(a) if isinstance(a, np.ndarray) else a

    dev_args = [move(a) for a in args]
    if not hasattr(ops, f"{name}_forward"):          # a plain function (im2col, nms, ...)
        fn = getattr(ops, name)
        return lambda: fn(*dev_args, **kwargs)
    forward, backward = getattr(ops, f"{name}_forward"), getattr(ops, f"{name}_backward")
    out, _ = forward(*dev_args, **kwargs)
    y = out[0] if isinstance(out, tuple) else out
    dout = to_device(np.ones(y.shape, dtype=y.dtype))

    def step():
        backward(dout, forward(*dev_args, **kwargs)[1])
    return step


def _torch_step(torch, fn, args, no_grad):
    """A function running ``fn`` forward and backward once on CUDA tensors (forward only when
    nothing requires a gradient: nms)."""
    tensors = []
    for k, a in enumerate(args):
        if isinstance(a, np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(a)).cuda()
            tensors.append(t.requires_grad_(t.is_floating_point() and k not in no_grad))
        else:
            tensors.append(a)
    if not any(getattr(t, "requires_grad", False) for t in tensors):
        return lambda: fn(*tensors)
    grad = torch.ones_like(fn(*tensors))

    def step():
        fn(*tensors).backward(grad)
    return step


def main():
    device = _device_or_exit()
    import npseg_gpu.ops as gpu_ops
    import npseg_gpu.random

    torch = _torch_cuda()
    rng = np.random.default_rng(0)
    print(f"npseg_gpu on {device}; CPU columns with {ARGS.threads} threads; torch CUDA: "
          f"{'yes' if torch is not None else 'no'}")
    header = f"{'op':34s} {'shape':28s} {'cpu ms':>9s} {'gpu ms':>9s} {'torch ms':>9s} " \
             f"{'gpu/torch':>9s} {'cpu/gpu':>8s}"
    print(header)
    print("-" * len(header))
    for name, label, make in _cases():
        if ARGS.only and ARGS.only not in name:
            continue
        case = make(rng)
        args, kwargs, torch_fn = case["args"], case.get("kwargs", {}), case.get("torch")
        gpu = _npseg_step(gpu_ops, name, args, kwargs, npseg_gpu.asarray,
                          lambda: npseg_gpu.random.default_rng(0))
        gpu()  # warm-up: compiles the kernels, fills CuPy's caches
        gpu_ms = median_ms(gpu, ARGS.repeat, npseg_gpu.synchronize)
        cpu_ms = torch_ms = None
        if not ARGS.no_cpu:
            cpu = _npseg_step(cpu_ops, name, args, kwargs, np.copy,
                              lambda: np.random.default_rng(0))
            cpu_ms = median_ms(cpu, ARGS.cpu_repeat)
        if torch is not None and torch_fn is not None:
            step = _torch_step(torch, torch_fn, args, case.get("no_grad", ()))
            step()
            torch_ms = median_ms(step, ARGS.repeat, torch.cuda.synchronize)

        _print_row(name, label, cpu_ms, gpu_ms, torch_ms)
    for name, config, batch, side in TRAINING_STEPS:
        if ARGS.only and ARGS.only not in f"train step {name}":
            continue
        _training_row(name, config, batch, side, torch)


def _print_row(name, label, cpu_ms, gpu_ms, torch_ms):
    def cell(v, fmt="9.2f"):
        return format(v, fmt) if v is not None else f"{'-':>{fmt.split('.')[0]}}"
    ratio = gpu_ms / torch_ms if torch_ms else None
    speedup = cpu_ms / gpu_ms if cpu_ms else None
    print(f"{name:34s} {label:28s} {cell(cpu_ms)} {cell(gpu_ms)} {cell(torch_ms)} "
          f"{cell(ratio, '9.2f')} {cell(speedup, '8.1f')}", flush=True)


if __name__ == "__main__":
    main()
