"""digits-LT: scikit-learn's bundled 8x8 handwritten digits, long-tailed, upsampled to RGB.

scikit-learn ships 1,797 real handwritten digits (UCI optical recognition set, 8x8, values 0..16)
inside its wheel, so this set needs no download. A balanced test split of ``test_per_class``
images per digit is held out first (seeded); the training set is drawn from the rest by the §6
formula with ``n_max`` = what is left of digit 0. Pixels are scaled to 0..255 (``v * 255 / 16``,
rounded half-to-even), upsampled bicubically to ``size x size`` and repeated on three channels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from climbq_deploy.data.dataset import ImageDataset
from climbq_deploy.data.longtail import longtail_counts
from climbq_deploy.errors import ConfigError, DataError

TEST_PER_CLASS = 50


def _upsample(images8: np.ndarray, size: int) -> np.ndarray:
    grey = np.clip(np.rint(images8.astype(np.float64) * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    out = np.empty((len(grey), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(grey):
        big = np.asarray(Image.fromarray(image, mode="L").resize((size, size), Image.BICUBIC))
        out[i] = big[..., None]
    return out


def build_digits(
    gamma: float,
    seed: int = 0,
    size: int = 32,
    test_per_class: int = TEST_PER_CLASS,
    cap: bool = False,
) -> ImageDataset:
    """Long-tailed train / balanced test split of scikit-learn's digits (see module)."""
    if not 8 <= size <= 256:
        raise ConfigError(f"--size must be in 8..256, got {size}")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("digits-LT needs scikit-learn (pip install scikit-learn)") from None
    bunch = load_digits()
    images8, labels = np.asarray(bunch.images), np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(seed)
    test_idx, pools = [], []
    for k in range(10):
        members = rng.permutation(np.flatnonzero(labels == k))
        if len(members) <= test_per_class:
            raise DataError(
                f"digit {k} has {len(members)} images; cannot hold out {test_per_class} for test"
            )
        test_idx.append(np.sort(members[:test_per_class]))
        pools.append(members[test_per_class:])  # random order: a prefix is a random subset
    counts = longtail_counts(len(pools[0]), gamma, 10, [len(p) for p in pools], cap=cap)
    train_idx = np.concatenate(
        [np.sort(pool[:count]) for pool, count in zip(pools, counts, strict=True)]
    )
    test_idx_all = np.concatenate(test_idx)
    info = {
        "source": "sklearn.datasets.load_digits",
        "seed": seed,
        "gamma": gamma,
        "size": size,
        "test_per_class": test_per_class,
        "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        "augment": "none",
    }
    return ImageDataset(
        name="digits-lt",
        class_names=tuple("0123456789"),
        train_images=_upsample(images8[train_idx], size),
        train_labels=labels[train_idx],
        test_images=_upsample(images8[test_idx_all], size),
        test_labels=labels[test_idx_all],
        info=info,
    )
