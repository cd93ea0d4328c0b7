"""Calibration sets: which training images a post-training quantizer looks at.

A calibration set is ``size`` images of a training split, drawn with a seed in one of two modes:

- ``natural``: a uniform draw without replacement from all training images, so the set follows
  the long tail (class ``k`` gets ``size * n_k / N`` images in expectation). This is what a
  user calibrating "with some training data" gets, and what the LiteRT converter's
  representative dataset or a TensorRT calibrator sees by default.
- ``balanced``: equal images per class, capped by availability. The quota is the largest
  equal share: ``q_k = min(n_k, L)`` with ``L`` the largest level such that
  ``sum_k min(n_k, L) <= size`` (water filling), then the images still missing
  (``size - sum_k q_k``, fewer than the number of uncapped classes) go one each to the
  uncapped classes in class-id order. Within a class the images are a seeded uniform draw.
  So a tail class with fewer images than its share gives all it has, and the set keeps the
  requested size whenever the training split holds that many images.

The indices (sorted, into the training split), the seed, the mode and the per-class counts are
kept in :class:`CalibrationSet` and written into the calibrated run's provenance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from climbq_deploy.errors import ConfigError, DataError

CALIBRATION_MODES = ("natural", "balanced")


@dataclass(frozen=True)
class CalibrationSet:
    """Indices into a training split, and how they were drawn.

    Attributes:
        mode: ``natural`` or ``balanced``.
        seed: seed of :func:`numpy.random.default_rng`.
        indices: sorted int64 indices into the training images.
        counts: images per class id in the set.
    """

    mode: str
    seed: int
    indices: np.ndarray
    counts: tuple[int, ...]

    @property
    def size(self) -> int:
        return len(self.indices)

    def provenance(self) -> dict[str, Any]:
        """JSON-ready record (mode, seed, size, per-class counts, the indices themselves)."""
        return {
            "mode": self.mode,
            "seed": self.seed,
            "size": self.size,
            "counts": list(self.counts),
            "indices": self.indices.tolist(),
        }


def balanced_quota(available: list[int] | np.ndarray, size: int) -> np.ndarray:
    """Images per class of a class-balanced set of ``size`` (water filling, see module doc).

    Raises:
        DataError: fewer than ``size`` images in all.
    """
    have = np.asarray(available, dtype=np.int64)
    if size > int(have.sum()):
        raise DataError(
            f"calibration set of {size} images asked for, the training split has "
            f"only {int(have.sum())}"
        )
    quota = np.zeros_like(have)
    open_ = have > 0
    left = size
    while left > 0 and open_.any():
        share = left // int(open_.sum())
        if share == 0:  # fewer images left than open classes: one each, in class-id order
            for k in np.flatnonzero(open_)[:left]:
                quota[k] += 1
            break
        take = np.where(open_, np.minimum(share, have - quota), 0)
        quota += take
        left -= int(take.sum())
        open_ &= quota < have
    return quota


def draw_calibration_set(
    labels: np.ndarray, size: int, mode: str = "natural", seed: int = 0, num_classes: int = 0
) -> CalibrationSet:
    """Draw ``size`` training images (indices into ``labels``) in ``mode`` with ``seed``.

    ``num_classes`` (default: ``max(labels) + 1``) sets the length of the per-class counts.

    Raises:
        ConfigError: unknown mode, size below 1, negative seed.
        DataError: ``size`` above the number of training images, labels not 1-D integers.
    """
    if mode not in CALIBRATION_MODES:
        raise ConfigError(f"calibration mode must be one of {CALIBRATION_MODES}, got {mode!r}")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ConfigError(f"calibration size must be an integer >= 1, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"calibration seed must be an integer >= 0, got {seed!r}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"labels must be a non-empty 1-D integer array, got {labels.dtype} {labels.shape}"
        )
    k = max(int(num_classes), int(labels.max()) + 1)
    if size > len(labels):
        raise DataError(
            f"calibration set of {size} images asked for, the training split has only {len(labels)}"
        )
    rng = np.random.default_rng(int(seed))
    if mode == "natural":
        indices = rng.choice(len(labels), size=int(size), replace=False)
    else:
        quota = balanced_quota(np.bincount(labels, minlength=k), int(size))
        parts = [
            rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False)
            for c, q in enumerate(quota)
        ]
        indices = np.concatenate(parts)
    indices = np.sort(indices.astype(np.int64))
    counts = tuple(int(c) for c in np.bincount(labels[indices], minlength=k))
    return CalibrationSet(mode, int(seed), indices, counts)
