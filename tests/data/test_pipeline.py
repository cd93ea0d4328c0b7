import numpy as np
import pytest
import torch

from climbq_deploy.data.pipeline import (
    Augment,
    BatchLoader,
    ClassBalancedSampler,
    SequentialSampler,
    ShuffleSampler,
)
from climbq_deploy.errors import ConfigError, DataError

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8), rng.integers(0, 5, 50)


def normalised(images: np.ndarray) -> np.ndarray:
    """(x / 255 - mean) / std in float64, NCHW: the independent reference."""
    x = images.astype(np.float64).transpose(0, 3, 1, 2) / 255.0
    return (x - np.array(MEAN).reshape(1, 3, 1, 1)) / np.array(STD).reshape(1, 3, 1, 1)


def test_no_augmentation_is_exact_normalisation_in_order(data) -> None:
    images, labels = data
    loader = BatchLoader(images, labels, 16, mean=MEAN, std=STD)
    batches = list(loader.epoch(0))
    assert [len(y) for _, y in batches] == [16, 16, 16, 2] and len(loader) == 4
    x = torch.cat([b for b, _ in batches]).numpy()
    np.testing.assert_allclose(x, normalised(images), rtol=0, atol=2e-6)
    np.testing.assert_array_equal(torch.cat([y for _, y in batches]).numpy(), labels)
    assert batches[0][0].dtype == torch.float32
    assert batches[0][0].is_contiguous(memory_format=torch.channels_last)


def test_crop_and_flip_produce_windows_of_the_padded_image(data) -> None:
    images, labels = data
    loader = BatchLoader(
        images, labels, 50, mean=MEAN, std=STD, augment=Augment.from_name("crop_flip"), seed=3
    )
    x, y = next(loader.epoch(0))
    reference = normalised(images)
    padded = np.pad(reference, ((0, 0), (0, 0), (4, 4), (4, 4)), constant_values=np.nan)
    zero = normalised(np.zeros((1, 1, 1, 3), np.uint8)).reshape(1, 3, 1, 1)
    padded = np.where(np.isnan(padded), zero, padded)
    flips = offsets = 0
    for i, out in enumerate(x.numpy()):  # sequential sampler: output i comes from image i
        matches = [
            (dy, dx, flipped)
            for dy in range(9)
            for dx in range(9)
            for flipped in (False, True)
            if np.allclose(
                out,
                padded[i, :, dy : dy + 8, dx : dx + 8][:, :, :: -1 if flipped else 1],
                atol=2e-6,
            )
        ]
        assert matches, f"augmented image {i} is not a (flipped) window of its padded input"
        dy, dx, flipped = matches[0]
        flips += flipped
        offsets += (dy, dx) != (4, 4)
    np.testing.assert_array_equal(y.numpy(), labels)
    assert 10 < flips < 40 and offsets > 30


def test_epochs_are_deterministic_and_differ(data) -> None:
    images, labels = data
    make = lambda: BatchLoader(  # noqa: E731
        images, labels, 8, augment=Augment(4, True), sampler=ShuffleSampler(50, seed=1), seed=2
    )
    a0, b0, a1 = list(make().epoch(0)), list(make().epoch(0)), list(make().epoch(1))
    for (xa, ya), (xb, yb) in zip(a0, b0, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(torch.cat([y for _, y in a0]), torch.cat([y for _, y in a1]))


def test_samplers() -> None:
    assert np.array_equal(SequentialSampler(4).epoch_indices(7), [0, 1, 2, 3])
    perm = ShuffleSampler(100, seed=5).epoch_indices(2)
    assert sorted(perm.tolist()) == list(range(100)) and perm.tolist() != list(range(100))
    labels = np.array([0] * 900 + [1] * 90 + [3] * 10)  # class 2 is empty
    sampler = ClassBalancedSampler(labels, seed=0, epoch_size=30_000)
    drawn = labels[sampler.epoch_indices(0)]
    freq = np.bincount(drawn, minlength=4) / len(drawn)
    assert freq[2] == 0
    np.testing.assert_allclose(freq[[0, 1, 3]], 1 / 3, atol=0.02)
    assert len(set(sampler.epoch_indices(0)[drawn == 3].tolist())) == 10  # all tail images used


def test_drop_last(data) -> None:
    images, labels = data
    loader = BatchLoader(images, labels, 16, drop_last=True)
    assert len(loader) == 3 and [len(y) for _, y in loader.epoch(0)] == [16, 16, 16]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"images": np.zeros((2, 8, 8), np.uint8)}, DataError, "uint8 N x H x W x 3"),
        ({"images": np.zeros((0, 8, 8, 3), np.uint8), "labels": np.zeros(0)}, DataError, "empty"),
        ({"labels": np.zeros(3)}, DataError, "labels for"),
        ({"batch_size": 0}, ConfigError, "batch size"),
        ({"std": (1.0, 0.0, 1.0)}, ConfigError, "std"),
    ],
)
def test_bad_loader_input(kwargs: dict, error: type, match: str) -> None:
    args = {"images": np.zeros((2, 8, 8, 3), np.uint8), "labels": np.zeros(2), "batch_size": 2}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        BatchLoader(args.pop("images"), args.pop("labels"), args.pop("batch_size"), **args)


def test_unknown_augmentation_name() -> None:
    with pytest.raises(ConfigError, match="augmentation"):
        Augment.from_name("mixup")
