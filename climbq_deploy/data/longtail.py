"""Long-tailed class counts (method §6).

    n_0 = n_max
    n_k = min(floor(n_{k-1} * gamma ** (-1 / (K - 1))), available_k)      k = 1 .. K-1

Class 0 is the head, class K-1 the tail; the imbalance ratio is roughly ``n_0 / n_{K-1} = gamma``
(exactly so before flooring). Counts are computed in float64 from the previous *floored* count, as
the authors' split lists were, so gamma 50 with ``n_max = 1000`` gives
1000, 647, 418, 270, 174, 112, 72, 46, 29, 18.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from climbq_deploy.errors import ConfigError, DataError


def longtail_counts(
    n_max: int,
    gamma: float,
    num_classes: int,
    available: Sequence[int] | None = None,
    *,
    cap: bool = False,
) -> list[int]:
    """Training images per class for imbalance ratio ``gamma`` (head first).

    Args:
        n_max: images of the head class (class 0).
        gamma: imbalance ratio, at least 1 (1 gives a balanced set).
        num_classes: number of classes K (at least 1).
        available: images available per class; a count above it is an error, or with
            ``cap=True`` is lowered to it with a warning (§6 takes the minimum).
        cap: cap counts at ``available`` instead of refusing.

    Raises:
        ConfigError: gamma below 1 or not finite, n_max or num_classes below 1.
        DataError: a class has fewer images available than its count and ``cap`` is False.
    """
    if not isinstance(gamma, int | float) or not math.isfinite(gamma) or gamma < 1:
        raise ConfigError(f"gamma must be a finite number >= 1, got {gamma!r}")
    if int(n_max) < 1:
        raise ConfigError(f"n_max must be >= 1, got {n_max!r}")
    if int(num_classes) < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes!r}")
    if available is not None and len(available) != num_classes:
        raise ConfigError(f"available has {len(available)} entries for {num_classes} classes")

    factor = float(gamma) ** (-1.0 / (num_classes - 1)) if num_classes > 1 else 1.0
    counts: list[int] = []
    short: list[tuple[int, int, int]] = []
    for k in range(num_classes):
        wanted = int(n_max) if k == 0 else int(np.floor(np.float64(counts[-1]) * factor))
        have = wanted if available is None else int(available[k])
        if wanted > have:
            short.append((k, wanted, have))
        counts.append(min(wanted, have))
    if short and not cap:
        detail = ", ".join(f"class {k}: wants {w}, has {h}" for k, w, h in short)
        raise DataError(
            f"not enough images for the long-tail counts ({detail}); "
            "lower --n-max or pass --cap to take what is there"
        )
    for k, wanted, have in short:
        warnings.warn(
            f"class {k}: capped at {have} available images (formula asks {wanted})", stacklevel=2
        )
    if any(c < 1 for c in counts):
        raise DataError(f"long-tail counts {counts} leave a class with no images")
    return counts
