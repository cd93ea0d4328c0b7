"""Long-tail accuracy metrics on a balanced test set.

Shot groups follow the long-tail literature, by *training* images per class:
many-shot ``> 100``, medium-shot ``20..100`` (inclusive), few-shot ``< 20``. A group's accuracy is
the mean of its classes' accuracies (all in %); an empty group is ``None``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from climbq_deploy.errors import DataError

MANY_ABOVE = 100
FEW_BELOW = 20


@dataclass(frozen=True)
class LongTailMetrics:
    top1: float
    per_class: list[float]
    many: float | None
    medium: float | None
    few: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def shot_groups(train_counts: list[int] | np.ndarray) -> dict[str, np.ndarray]:
    """Class ids of the many / medium / few groups."""
    counts = np.asarray(train_counts)
    return {
        "many": np.flatnonzero(counts > MANY_ABOVE),
        "medium": np.flatnonzero((counts >= FEW_BELOW) & (counts <= MANY_ABOVE)),
        "few": np.flatnonzero(counts < FEW_BELOW),
    }


def long_tail_metrics(
    predictions: np.ndarray, labels: np.ndarray, train_counts: list[int] | np.ndarray
) -> LongTailMetrics:
    """Top-1 (% of all test images), per-class accuracy (%), and the shot-group means."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    k = len(train_counts)
    if predictions.shape != labels.shape or labels.ndim != 1 or labels.size == 0:
        raise DataError(
            f"predictions {predictions.shape}, labels {labels.shape}: must be equal non-empty 1-D"
        )
    if labels.min() < 0 or labels.max() >= k:
        raise DataError(f"labels must lie in 0..{k - 1}")
    correct = predictions == labels
    totals = np.bincount(labels, minlength=k)
    hits = np.bincount(labels, weights=correct, minlength=k)
    if np.any(totals == 0):
        missing = np.flatnonzero(totals == 0).tolist()
        raise DataError(f"test set has no images of class(es) {missing}")
    per_class = 100.0 * hits / totals
    groups = {
        name: (float(per_class[ids].mean()) if len(ids) else None)
        for name, ids in shot_groups(train_counts).items()
    }
    return LongTailMetrics(
        top1=float(100.0 * correct.mean()), per_class=per_class.tolist(), **groups
    )
