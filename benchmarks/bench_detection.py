"""Detection ops of npseg.ops next to torchvision's CPU kernels.

    python benchmarks/bench_detection.py [--threads 2] [--repeat 5]

RoIAlign (512 RoIs, 256 channels, 7x7, sampling_ratio 2, aligned) and RoIPool on a
2x256x50x50 float32 map with spatial_scale 1/16 (boxes in an 800x800 image), forward and
forward + backward; NMS on 4000 clustered boxes (many overlaps, as RPN proposals) at IoU 0.7 and
0.5. Both libraries run in this process with the same thread count, their runs alternating.
Prints the median time of ``--repeat`` runs after one warm-up run; torch is optional (its
column shows ``-`` without it).
"""

from __future__ import annotations

import argparse
import os
import sys


def _parse():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="BLAS / torch threads (default 2)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per entry (default 5)")
    return parser.parse_args()


ARGS = _parse()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402  (after the thread variables)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from npseg import ops  # noqa: E402

from _timing import median_ms_interleaved  # noqa: E402

try:
    import torch
    import torchvision

    torch.set_num_threads(ARGS.threads)
except ImportError:  # torch is optional
    torch = torchvision = None


def make_rois(rng, k=512, n=2, image=800):
    """Boxes of 32..400 pixels a side inside an ``image`` x ``image`` picture."""
    size = rng.uniform(32, 400, (k, 2))
    corner = rng.uniform(0, 1, (k, 2)) * (image - size)
    batch = rng.integers(0, n, (k, 1))
    return np.concatenate([batch, corner, corner + size], axis=1).astype(np.float32)


def make_nms_boxes(rng, k=4000, objects=60, image=800):
    """Proposal-like boxes: jittered copies around a few dozen objects, random scores."""
    centre = rng.uniform(0, image, (objects, 2))[rng.integers(0, objects, k)]
    centre += rng.normal(0, 20, (k, 2))
    size = np.exp(rng.normal(4.5, 0.5, (k, 2)))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)
    return boxes, rng.random(k).astype(np.float32)


def main():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 256, 50, 50)).astype(np.float32)
    rois = make_rois(rng)
    boxes, scores = make_nms_boxes(rng)
    scale = 1 / 16
    dout = rng.standard_normal((rois.shape[0], 256, 7, 7)).astype(np.float32)
    rows = []

    def align_fwd():
        return ops.roi_align_forward(x, rois, 7, scale, 2, True)

    def align_fwd_bwd():
        out, cache = ops.roi_align_forward(x, rois, 7, scale, 2, True)
        return ops.roi_align_backward(dout, cache)

    def pool_fwd():
        return ops.roi_pool_forward(x, rois, 7, scale)

    def pool_fwd_bwd():
        out, cache = ops.roi_pool_forward(x, rois, 7, scale)
        return ops.roi_pool_backward(dout, cache)

    torch_fns = {}
    if torch is not None:
        xt, rt, gt = torch.from_numpy(x), torch.from_numpy(rois), torch.from_numpy(dout)
        bt, st = torch.from_numpy(boxes), torch.from_numpy(scores)
        tvops = torchvision.ops

        def t_fwd_bwd(op, *args):
            def run():
                xg = xt.clone().requires_grad_()
                op(xg, rt, 7, *args).backward(gt)
                return xg.grad
            return run

        with torch.no_grad():
            torch_fns["align_fwd"] = lambda: tvops.roi_align(xt, rt, 7, scale, 2, True)
            torch_fns["pool_fwd"] = lambda: tvops.roi_pool(xt, rt, 7, scale)
        torch_fns["align_fwd_bwd"] = t_fwd_bwd(tvops.roi_align, scale, 2, True)
        torch_fns["pool_fwd_bwd"] = t_fwd_bwd(tvops.roi_pool, scale)
        torch_fns["nms_0.7"] = lambda: tvops.nms(bt, st, 0.7)
        torch_fns["nms_0.5"] = lambda: tvops.nms(bt, st, 0.5)

    shape = "x 2x256x50x50, 512 RoIs, 7x7"
    entries = [
        ("roi_align fwd (sr 2, aligned)", shape, align_fwd, "align_fwd"),
        ("roi_align fwd+bwd", shape, align_fwd_bwd, "align_fwd_bwd"),
        ("roi_pool fwd", shape, pool_fwd, "pool_fwd"),
        ("roi_pool fwd+bwd", shape, pool_fwd_bwd, "pool_fwd_bwd"),
        ("nms iou 0.7", f"4000 boxes, keeps {len(ops.nms(boxes, scores, 0.7))}",
         lambda: ops.nms(boxes, scores, 0.7), "nms_0.7"),
        ("nms iou 0.5", f"4000 boxes, keeps {len(ops.nms(boxes, scores, 0.5))}",
         lambda: ops.nms(boxes, scores, 0.5), "nms_0.5"),
    ]
    if torch is not None:  # same answers before timing anything
        assert np.array_equal(ops.nms(boxes, scores, 0.7), torch_fns["nms_0.7"]().numpy())
        assert np.allclose(align_fwd()[0], torch_fns["align_fwd"]().numpy(), atol=1e-5)
    for name, what, fn, key in entries:
        if key in torch_fns:
            ours, theirs = median_ms_interleaved([fn, torch_fns[key]], ARGS.repeat)
        else:
            (ours,), theirs = median_ms_interleaved([fn], ARGS.repeat), None
        rows.append((name, what, ours, theirs))

    print(f"threads: {ARGS.threads}, median of {ARGS.repeat} runs, float32"
          + ("" if torch is None else f", torch {torch.__version__}, "
             f"torchvision {torchvision.__version__}"))
    header = ("op", "shape", "npseg ms", "torch ms", "ratio")
    widths = (30, 32, 9, 9, 6)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for name, what, ours, theirs in rows:
        cells = (name, what, f"{ours:.1f}", "-" if theirs is None else f"{theirs:.1f}",
                 "-" if theirs is None else f"{ours / theirs:.2f}")
        print("  ".join(cell.ljust(w) for cell, w in zip(cells, widths)))


if __name__ == "__main__":
    main()
