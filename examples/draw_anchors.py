"""Draw the anchors of one FPN level on a shapes image, and which of them the RPN calls positive.

Each location of level P``k`` (stride ``2**k``) carries one anchor per aspect ratio (h / w of
0.5, 1, 2) of the level's size; the ``shapes`` preset uses sizes 8, 16, 32, 64, 128 on P2..P6.
The script draws the anchors of every ``--every``-th location in grey, the anchor centres as
dots, and in colour the anchors the RPN's matcher labels positive for the image's objects (IoU
>= 0.7 with a ground-truth box, or the best anchor of a ground truth), the ground truth in white.

    python examples/draw_anchors.py [--level 3] [--index 0] [--out anchors.png] [--scale 4]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npseg import ops  # noqa: E402
from npseg.data import ShapesDataset  # noqa: E402
from npseg.detection import AnchorGenerator, Matcher  # noqa: E402
from npseg.models.maskrcnn_config import MaskRCNNConfig  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", type=int, default=3, help="FPN level k (P2..P6)")
    parser.add_argument("--index", type=int, default=0, help="shapes sample to draw on")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--every", type=int, default=3, help="draw every n-th location's anchors")
    parser.add_argument("--scale", type=int, default=4, help="screen pixels per image pixel")
    parser.add_argument("--out", default="anchors.png")
    args = parser.parse_args()
    if not 2 <= args.level <= 6:
        parser.error("--level must be 2..6 (P2..P6)")

    cfg = MaskRCNNConfig.shapes()
    sample = ShapesDataset("train", args.index + 1, args.image_size)[args.index]
    size = args.image_size
    generator = AnchorGenerator(sizes=tuple((s,) for s in cfg.anchor_sizes),
                                aspect_ratios=cfg.anchor_aspect_ratios,
                                strides=cfg.anchor_strides)
    feature_sizes = [(-(-size // s),) * 2 for s in cfg.anchor_strides]   # ceil(H / stride)
    anchors = generator(feature_sizes, dtype=np.float64)
    lvl = args.level - 2
    stride, a = cfg.anchor_strides[lvl], generator.num_anchors_per_location()[lvl]
    level_anchors = anchors[lvl]                                          # (H*W*A, 4)

    # the RPN's labels over all levels' anchors, as in training
    every_anchor = np.concatenate(anchors)
    gt = sample["boxes"].astype(np.float64)
    _, labels = Matcher(cfg.rpn_fg_iou_threshold, cfg.rpn_bg_iou_threshold,
                        allow_low_quality_matches=True)(ops.box_iou(gt, every_anchor))
    offset = sum(len(x) for x in anchors[:lvl])
    positive = labels[offset:offset + len(level_anchors)] == 1

    k = args.scale
    rgb = (np.clip(sample["image"].transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
    canvas = Image.fromarray(rgb).resize((size * k, size * k), Image.NEAREST)
    draw = ImageDraw.Draw(canvas, "RGBA")
    h, w = feature_sizes[lvl]
    grid = level_anchors.reshape(h, w, a, 4)
    for i in range(0, h, args.every):
        for j in range(0, w, args.every):
            for box in grid[i, j]:
                draw.rectangle([float(v) * k for v in box], outline=(200, 200, 200, 110))
            cx, cy = j * stride * k, i * stride * k
            draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=(255, 255, 0, 255))
    colours = [(255, 60, 60, 255), (60, 220, 60, 255), (80, 140, 255, 255)]
    for n in np.nonzero(positive)[0]:
        draw.rectangle([float(v) * k for v in level_anchors[n]], outline=colours[n % a], width=2)
    for box in gt:
        draw.rectangle([float(v) * k for v in box], outline=(255, 255, 255, 255), width=2)
    draw.text((4, 4), f"P{args.level}: stride {stride}, size {cfg.anchor_sizes[lvl]}, ratios "
              f"{cfg.anchor_aspect_ratios}; {len(level_anchors)} anchors, "
              f"{int(positive.sum())} positive", fill=(255, 255, 255, 255))
    canvas.save(args.out)
    print(f"P{args.level}: {h}x{w} locations x {a} anchors = {len(level_anchors)} anchors "
          f"(size {cfg.anchor_sizes[lvl]}, stride {stride}); {int(positive.sum())} positive for "
          f"{len(gt)} objects; drawn to {args.out}")


if __name__ == "__main__":
    main()
