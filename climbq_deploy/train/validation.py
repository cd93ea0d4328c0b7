"""A validation split held out of the long-tailed training set, for best-epoch selection.

The test set is never used to select anything; ``--val-fraction f`` holds out
``floor(f * count_k)`` images of each class ``k`` (keeping at least one for training), drawn
with the run's seed. The validation set inherits the training imbalance, so it is scored by
*balanced* accuracy: the mean of per-class accuracies over the classes it contains.
"""

from __future__ import annotations

import numpy as np

from climbq_deploy.errors import DataError


def split_validation(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(train_indices, val_indices)``, each sorted, disjoint, covering ``labels``."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 0x7A1])
    val: list[np.ndarray] = []
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        take = min(int(np.floor(fraction * len(members))), len(members) - 1)
        if take > 0:
            val.append(rng.choice(members, size=take, replace=False))
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    if fraction > 0 and val_idx.size == 0:
        raise DataError(
            f"val_fraction {fraction} holds out no image (largest class has "
            f"{np.bincount(labels).max()}); raise it or drop it"
        )
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def balanced_accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present in ``labels`` of per-class accuracy, in %."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    classes = np.unique(labels)
    return float(np.mean([100.0 * np.mean(predictions[labels == k] == k) for k in classes]))
