"""RoIPool's two quantisation steps against RoIAlign, measured on a smooth feature map.

A stride-32 feature map is sampled from a known smooth function ``f`` (the value of map pixel
``(i, j)`` is ``f`` at its centre), so the *exact* pooled values of any box are known: the
average (or the maximum) of the continuous ``f`` over each of the 7 x 7 bins of the box.

RoIPool (Fast R-CNN) quantises twice (the seeds' example: a 665-pixel box on a stride-32 map
is 20.78 cells wide):

1. the box corners are rounded to whole cells: ``round(x1 / 32)``, so 20.78 cells become 21 and
   the box edge moves by up to 16 image pixels;
2. each bin is widened to whole cells: bin ``q`` covers cells ``floor(q w / 7) ..
   ceil((q + 1) w / 7)`` of the rounded box, so neighbouring bins overlap and their edges move
   again by up to a cell (32 pixels).

RoIAlign keeps every coordinate real and reads the map by bilinear interpolation at regularly
spaced points inside each bin; with ``aligned=True`` it also removes the half-cell offset
between pixel indices and pixel centres.

The script prints, for each box, how far (in image pixels) RoIPool's box corners and bin edges
move, and the error of each method against the exact crop; it draws the first box (map, exact
bins, RoIPool's quantised bins, RoIAlign's sampling points) and the 7 x 7 results to a PNG.

    python examples/roipool_vs_roialign.py [--out roi_quantisation.png] [--boxes 20]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npseg import ops  # noqa: E402

STRIDE = 32
CELLS = 24                     # the map is CELLS x CELLS (a 768 x 768 image)
BINS = 7


def f(s, t):
    """The smooth "feature" at continuous map coordinates (s, t) = (x, y) / stride."""
    return np.sin(2 * np.pi * s / 9.0) * np.cos(2 * np.pi * t / 7.0) + 0.05 * s


def feature_map():
    centres = np.arange(CELLS) + 0.5
    return f(centres[None, :], centres[:, None])[None, None]          # (1, 1, H, W)


def exact_bins(box, reduce, dense=24):
    """Average or maximum of f over each of the BINS x BINS exact bins of ``box`` (pixels)."""
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64) / STRIDE
    out = np.empty((BINS, BINS))
    frac = (np.arange(dense) + 0.5) / dense
    for p in range(BINS):
        t = y1 + (p + frac) * (y2 - y1) / BINS
        for q in range(BINS):
            s = x1 + (q + frac) * (x2 - x1) / BINS
            values = f(s[None, :], t[:, None])
            out[p, q] = values.mean() if reduce == "mean" else values.max()
    return out


def roipool_edges(lo, hi):
    """RoIPool's bin edges along one axis, in image pixels, for a box edge pair (lo, hi)."""
    start, end = np.round(lo / STRIDE), np.round(hi / STRIDE)      # quantisation 1
    size = max(end - start + 1, 1)
    q = np.arange(BINS)
    first = start + np.floor(q * size / BINS)                       # quantisation 2
    last = start + np.ceil((q + 1) * size / BINS)
    return start * STRIDE, (end + 1) * STRIDE, first * STRIDE, last * STRIDE


def measure(boxes, x):
    rois = np.concatenate([np.zeros((len(boxes), 1)), boxes], axis=1)
    scale = 1.0 / STRIDE
    align, _ = ops.roi_align_forward(x, rois, BINS, scale, sampling_ratio=2, aligned=True)
    align_old, _ = ops.roi_align_forward(x, rois, BINS, scale, sampling_ratio=2, aligned=False)
    pool, _ = ops.roi_pool_forward(x, rois, BINS, scale)
    rows = []
    for k, box in enumerate(boxes):
        mean, peak = exact_bins(box, "mean"), exact_bins(box, "max")
        x_start, x_end, x_first, x_last = roipool_edges(box[0], box[2])
        exact_edges = box[0] + np.arange(BINS) * (box[2] - box[0]) / BINS
        rows.append({
            "corner_shift": max(abs(x_start - box[0]), abs(x_end - box[2])),
            "bin_shift": float(np.abs(x_first - exact_edges).max()),
            "align": float(np.abs(align[k, 0] - mean).mean()),
            "align_unaligned": float(np.abs(align_old[k, 0] - mean).mean()),
            "pool": float(np.abs(pool[k, 0] - peak).mean()),
        })
    return rows, (align[0, 0], pool[0, 0])


# ----------------------------------------------------------------------------- drawing
def grey(values, lo, hi, cell):
    v = np.clip((values - lo) / (hi - lo), 0, 1)
    img = (v * 255).astype(np.uint8)
    return np.kron(img, np.ones((cell, cell), dtype=np.uint8))


def draw(path, x, box, align, pool):
    cell = 16                                   # screen pixels per map cell
    lo, hi = float(x.min()), float(x.max())
    canvas = Image.fromarray(grey(x[0, 0], lo, hi, cell)).convert("RGB")
    draw_map = ImageDraw.Draw(canvas)
    px = cell / STRIDE                          # screen pixels per image pixel
    x1, y1, x2, y2 = box
    # RoIPool: the quantised bins (red)
    _, _, xf, xl = roipool_edges(x1, x2)
    _, _, yf, yl = roipool_edges(y1, y2)
    for q in range(BINS):
        for p in range(BINS):
            draw_map.rectangle([xf[q] * px, yf[p] * px, xl[q] * px - 1, yl[p] * px - 1],
                               outline=(220, 40, 40))
    # exact bins (green) and RoIAlign's 2 x 2 sampling points per bin (blue)
    bw, bh = (x2 - x1) / BINS, (y2 - y1) / BINS
    for q in range(BINS + 1):
        green = (40, 200, 40)
        draw_map.line([(x1 + q * bw) * px, y1 * px, (x1 + q * bw) * px, y2 * px], fill=green)
        draw_map.line([x1 * px, (y1 + q * bh) * px, x2 * px, (y1 + q * bh) * px], fill=green)
    for p in range(BINS):
        for q in range(BINS):
            for iy in range(2):
                for ix in range(2):
                    sx = (x1 + (q + (ix + 0.5) / 2) * bw) * px
                    sy = (y1 + (p + (iy + 0.5) / 2) * bh) * px
                    draw_map.ellipse([sx - 1.5, sy - 1.5, sx + 1.5, sy + 1.5], fill=(60, 90, 255))
    mean, peak = exact_bins(box, "mean"), exact_bins(box, "max")
    tile = 24
    panels = [("exact mean", mean), ("RoIAlign", align),
              ("|RoIAlign - exact|", np.abs(align - mean)),
              ("exact max", peak), ("RoIPool", pool), ("|RoIPool - exact|", np.abs(pool - peak))]
    worst = max(float(np.abs(align - mean).max()), float(np.abs(pool - peak).max()), 1e-12)
    side = Image.new("RGB", (2 * (BINS * tile + 10) + 10, 3 * (BINS * tile + 22) + 10), "white")
    pen = ImageDraw.Draw(side)
    for n, (title, values) in enumerate(panels):
        col, row = n // 3, n % 3
        left, top = 10 + col * (BINS * tile + 10), 10 + row * (BINS * tile + 22)
        span = (0.0, worst) if title.startswith("|") else (lo, hi)   # errors: one scale
        side.paste(Image.fromarray(grey(values, *span, tile)).convert("RGB"), (left, top + 12))
        pen.text((left, top), title, fill=(0, 0, 0))
    out = Image.new("RGB", (canvas.width + side.width, max(canvas.height + 40, side.height)),
                    "white")
    out.paste(canvas, (0, 0))
    legend = ImageDraw.Draw(out)
    legend.text((4, canvas.height + 4), "green: exact bins   red: RoIPool's quantised bins",
                fill=(0, 0, 0))
    legend.text((4, canvas.height + 20), f"blue: RoIAlign samples   errors scaled to {worst:.3f}",
                fill=(0, 0, 0))
    out.paste(side, (canvas.width, 0))
    out.save(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="roi_quantisation.png", help="PNG to write")
    parser.add_argument("--boxes", type=int, default=20, help="random boxes besides the seeds'")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    x = feature_map()
    rng = np.random.default_rng(args.seed)
    seeds_box = [17.3, 41.9, 17.3 + 665, 41.9 + 665]              # 665 px: 20.78 cells
    corners = rng.uniform(0, CELLS * STRIDE - 100, (args.boxes, 2))
    sizes = rng.uniform(100, 500, (args.boxes, 2))
    boxes = np.concatenate([[seeds_box], np.concatenate([corners, corners + sizes], axis=1)])
    boxes = np.minimum(boxes, CELLS * STRIDE)
    rows, (align, pool) = measure(boxes, x)

    print(f"feature map {CELLS}x{CELLS} at stride {STRIDE}; {BINS}x{BINS} bins; "
          f"errors are mean |output - exact| per bin (f spans {x.min():.2f}..{x.max():.2f})")
    print(f"{'box (x1, y1, x2, y2) px':>34} | {'corner':>7} {'bin edge':>8} | "
          f"{'RoIAlign':>8} {'unaligned':>9} {'RoIPool':>8}")
    for box, r in zip(boxes, rows):
        text = "(" + ", ".join(f"{v:6.1f}" for v in box) + ")"
        print(f"{text:>34} | {r['corner_shift']:6.1f}px {r['bin_shift']:6.1f}px | "
              f"{r['align']:8.4f} {r['align_unaligned']:9.4f} {r['pool']:8.4f}")
    mean = {k: np.mean([r[k] for r in rows]) for k in rows[0]}
    print(f"{'mean':>34} | {mean['corner_shift']:6.1f}px {mean['bin_shift']:6.1f}px | "
          f"{mean['align']:8.4f} {mean['align_unaligned']:9.4f} {mean['pool']:8.4f}")
    print("corner: RoIPool's box edge shift (quantisation 1); bin edge: its largest bin edge "
          "shift (both steps); x axis shown")
    draw(args.out, x, boxes[0], align, pool)
    print(f"drawing of the first box written to {args.out}")


if __name__ == "__main__":
    main()
