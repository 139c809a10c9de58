"""Batches from a data set, reproducible epoch by epoch.

Every random choice of epoch ``e`` comes from generators seeded by ``(seed, e)``:

* the order: ``default_rng(SeedSequence([seed, e, 0])).permutation(len(dataset))``;
* the transform of dataset item ``i``: ``default_rng(SeedSequence([seed, e, 1, i]))``.

So a sample's augmentation depends only on (seed, epoch, index), not on the batch size or on
which samples came before it, and a run resumed at epoch ``e`` (``loader.set_epoch(e)``) sees
exactly the batches the interrupted run would have seen.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from npseg.data.transforms import INSTANCE_KEYS

__all__ = ["DataLoader", "collate"]


def collate(samples: list) -> dict:
    """Samples -> a batch.

    * ``images``: float32 ``(B, C, H, W)`` (all images must have one size; use a crop or
      resize transform for data sets whose images differ);
    * ``labels``: int64 ``(B, H, W)``, when the samples have a ``label``;
    * ``instances``: a list of B dicts with the samples' ``masks``/``boxes``/``labels``
      (``iscrowd``), when they have ``boxes`` (counts differ from image to image);
    * ``image_ids``: a list of the samples' ``image_id`` (None where absent).
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    shapes = {s["image"].shape for s in samples}
    if len(shapes) > 1:
        raise ValueError(
            f"images in a batch have different shapes {sorted(shapes)}; add a transform that "
            f"gives one size (e.g. RandomScaleCrop(crop_size=...) or Resize(size))")
    batch = {"images": np.stack([s["image"] for s in samples]).astype(np.float32, copy=False)}
    if all("label" in s for s in samples):
        batch["labels"] = np.stack([s["label"] for s in samples]).astype(np.int64, copy=False)
    if all("boxes" in s for s in samples):
        batch["instances"] = [{k: s[k] for k in INSTANCE_KEYS if k in s} for s in samples]
    batch["image_ids"] = [s.get("image_id") for s in samples]
    return batch


class DataLoader:
    """Iterate a data set in batches.

    Args:
        dataset: anything with ``__len__`` and ``__getitem__`` returning sample dicts.
        batch_size: samples per batch.
        shuffle: a new random order every epoch (else dataset order).
        seed: seeds the order and the transforms (module docstring).
        drop_last: drop a last, smaller batch.
        transform: called as ``transform(sample, rng)`` on every sample.

    ``for batch in loader`` runs the current epoch (``loader.epoch``, 0 at first) and then
    advances it by one, so consecutive loops see new orders and augmentations; ``set_epoch(e)``
    jumps (e.g. when resuming a run), and ``iter_epoch(e)`` runs epoch ``e`` without touching the
    counter. Batches are dicts (see :func:`collate`) with ``indices`` (dataset indices) added.
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, transform=None):
        if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.transform = transform
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next ``for batch in loader`` runs."""
        if not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def order(self, epoch: int) -> np.ndarray:
        """Dataset indices in the order epoch ``epoch`` visits them."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng(np.random.SeedSequence([self.seed, epoch, 0])).permutation(n)

    def load(self, index: int, epoch: int) -> dict:
        """Dataset item ``index`` as epoch ``epoch`` sees it (transformed)."""
        sample = self.dataset[int(index)]
        if self.transform is not None:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, 1, int(index)]))
            sample = self.transform(sample, rng)
        return sample

    def iter_epoch(self, epoch: int):
        """Yield the batches of epoch ``epoch``."""
        order = self.order(epoch)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            batch = collate([self.load(i, epoch) for i in idx])
            batch["indices"] = idx.copy()
            yield batch

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        return self.iter_epoch(epoch)

    def __repr__(self):
        return (f"DataLoader(dataset={self.dataset!r}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last})")
