"""Balanced sampling of positives and negatives for a training mini-batch.

An image has far more background anchors/proposals than foreground ones. Faster R-CNN trains on
``batch_size_per_image`` of them with at most ``positive_fraction`` positives:

    num_pos = min(#positives, int(batch_size_per_image * positive_fraction))
    num_neg = min(#negatives, batch_size_per_image - num_pos)

each drawn uniformly without replacement (negatives fill what positives leave). RPN: 256 at
0.5; RoI heads: 512 at 0.25. Ignored entries are never drawn.

Randomness comes from an explicit ``numpy.random.Generator`` so that a run is reproducible: the
same generator state gives the same sample. The permutations are drawn on the host (they are
small index arrays) and moved to the labels' device; the labels never leave it.
"""

from __future__ import annotations

import numpy as np

from npseg._device import array_module
from npseg.ops._checks import check_int, check_int_array, check_number

__all__ = ["BalancedPositiveNegativeSampler", "subsample_labels", "check_rng"]


def check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    return rng


def _draw(xp, candidates, count: int, rng):
    """``count`` of the index array ``candidates`` uniformly without replacement, sorted."""
    if count >= candidates.size:
        return candidates
    chosen = rng.permutation(candidates.size)[:count]
    return xp.sort(candidates[xp.asarray(chosen)])


def subsample_labels(labels, batch_size_per_image: int, positive_fraction: float, rng):
    """Indices ``(pos_idx, neg_idx)`` (int64, sorted) of a balanced sample of ``labels``.

    ``labels`` is an integer ``(N,)`` array: ``>= 1`` positive (1 for the RPN, a class id for the
    heads), ``0`` negative, ``< 0`` (``-1``) ignored.
    """
    check_int_array(labels, "labels")
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {tuple(labels.shape)}")
    batch_size_per_image = check_int(batch_size_per_image, "batch_size_per_image", minimum=0)
    positive_fraction = check_number(positive_fraction, "positive_fraction", low=0.0, high=1.0)
    check_rng(rng)
    xp = array_module(labels)
    positive = xp.nonzero(labels >= 1)[0]
    negative = xp.nonzero(labels == 0)[0]
    num_pos = min(int(positive.size), int(batch_size_per_image * positive_fraction))
    num_neg = min(int(negative.size), batch_size_per_image - num_pos)
    pos_idx = _draw(xp, positive, num_pos, rng)
    neg_idx = _draw(xp, negative, num_neg, rng)
    return pos_idx.astype(xp.int64), neg_idx.astype(xp.int64)


class BalancedPositiveNegativeSampler:
    """``sampler(labels, rng) -> (pos_idx, neg_idx)``: ``subsample_labels`` with fixed sizes."""

    def __init__(self, batch_size_per_image: int = 256, positive_fraction: float = 0.5):
        self.batch_size_per_image = check_int(batch_size_per_image, "batch_size_per_image",
                                              minimum=0)
        self.positive_fraction = check_number(positive_fraction, "positive_fraction", low=0.0,
                                              high=1.0)

    def __repr__(self):
        return (f"BalancedPositiveNegativeSampler("
                f"batch_size_per_image={self.batch_size_per_image}, "
                f"positive_fraction={self.positive_fraction})")

    def __call__(self, labels, rng):
        return subsample_labels(labels, self.batch_size_per_image, self.positive_fraction, rng)
