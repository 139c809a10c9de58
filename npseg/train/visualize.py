"""Coloured overlays of label maps and instance masks, written as PNG with Pillow."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["palette", "colorize", "overlay", "side_by_side", "draw_instances", "to_uint8_image"]


def palette(num_colors: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: class k -> (r, g, b) from the bits of k; 0 is black.

    Returns a (num_colors, 3) uint8 array. Label 255 (ignore) is painted white by ``colorize``.
    """
    k = np.arange(num_colors)
    colours = np.zeros((num_colors, 3), dtype=np.int64)
    for shift in range(7, -1, -1):  # 8 bits, 3 interleaved channels
        for channel in range(3):
            colours[:, channel] |= ((k >> (3 * (7 - shift) + channel)) & 1) << shift
    return colours.astype(np.uint8)


def colorize(label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """(H, W) int label map -> (H, W, 3) uint8 colours; ignored pixels white."""
    colours = palette(256)[np.clip(label, 0, 255)]
    colours[label == ignore_index] = 255
    return colours


def to_uint8_image(image: np.ndarray) -> np.ndarray:
    """(3, H, W) float in [0, 1] (or (H, W, 3) uint8) -> (H, W, 3) uint8."""
    if image.dtype == np.uint8:
        return image
    return (np.clip(np.transpose(image, (1, 2, 0)), 0, 1) * 255 + 0.5).astype(np.uint8)


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised label over the image where the label is not background."""
    rgb = to_uint8_image(image).astype(np.float32)
    colours = colorize(label).astype(np.float32)
    blend = np.where((label > 0)[..., None], (1 - alpha) * rgb + alpha * colours, rgb)
    return blend.astype(np.uint8)


def side_by_side(panels, gap: int = 4) -> Image.Image:
    """Several (H, W, 3) uint8 panels left to right with a white gap."""
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    x = 0
    for p in panels:
        canvas[:p.shape[0], x:x + p.shape[1]] = p
        x += p.shape[1] + gap
    return Image.fromarray(canvas)


def draw_instances(image: np.ndarray, boxes, labels, scores=None, masks=None,
                   class_names=None, alpha: float = 0.45) -> Image.Image:
    """Boxes, labels, scores and coloured masks of detections drawn on the image."""
    rgb = to_uint8_image(image).astype(np.float32)
    colours = palette(64)[1:].astype(np.float32)  # skip black
    if masks is not None:
        for k, mask in enumerate(np.asarray(masks, dtype=bool)):
            colour = colours[k % len(colours)]
            rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colour
    picture = Image.fromarray(rgb.astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for k, box in enumerate(np.asarray(boxes, dtype=float).reshape(-1, 4)):
        colour = tuple(int(c) for c in colours[k % len(colours)])
        draw.rectangle([float(v) for v in box], outline=colour)
        name = class_names[int(labels[k])] if class_names is not None else str(int(labels[k]))
        text = name if scores is None else f"{name} {float(scores[k]):.2f}"
        draw.text((float(box[0]) + 1, float(box[1]) + 1), text, fill=colour)
    return picture
