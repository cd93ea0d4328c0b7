"""Calibration sets: natural (long-tailed) and class-balanced draws, seeded and recorded."""

import json

import numpy as np
import pytest

from climbq_deploy.calibration.calibset import balanced_quota, draw_calibration_set
from climbq_deploy.errors import ConfigError, DataError

GAMMA50 = [1000, 647, 418, 270, 174, 112, 72, 46, 29, 18]


def labels_of(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts).astype(np.int64)


def test_balanced_quota_on_syndigits_gamma50() -> None:
    # level 58 fills 7 classes (7*58 + 46 + 29 + 18 = 499); the 1 left goes to class 0
    assert balanced_quota(GAMMA50, 500).tolist() == [59, 58, 58, 58, 58, 58, 58, 46, 29, 18]
    assert balanced_quota(GAMMA50, 100).tolist() == [10] * 10
    assert balanced_quota(GAMMA50, 13).tolist() == [2, 2, 2, 1, 1, 1, 1, 1, 1, 1]


def test_balanced_quota_caps_and_refills() -> None:
    assert balanced_quota([10, 3, 7], 15).tolist() == [6, 3, 6]
    assert balanced_quota([10, 3, 7], 20).tolist() == [10, 3, 7]
    assert balanced_quota([5, 0, 5], 4).tolist() == [2, 0, 2]
    with pytest.raises(DataError, match="only 20"):
        balanced_quota([10, 3, 7], 21)


def test_balanced_set_has_the_quota_of_distinct_images_per_class() -> None:
    labels = labels_of(GAMMA50)
    np.random.default_rng(0).shuffle(labels)
    calib = draw_calibration_set(labels, 500, "balanced", seed=4)
    assert calib.counts == (59, 58, 58, 58, 58, 58, 58, 46, 29, 18)
    assert calib.size == 500 and len(np.unique(calib.indices)) == 500
    assert np.all(np.diff(calib.indices) > 0)
    assert np.bincount(labels[calib.indices], minlength=10).tolist() == list(calib.counts)
    tail = np.flatnonzero(labels == 9)
    assert set(calib.indices[labels[calib.indices] == 9]) == set(tail)  # all 18 tail images


def test_natural_set_follows_the_long_tail_and_is_seeded() -> None:
    labels = labels_of(GAMMA50)
    a = draw_calibration_set(labels, 500, "natural", seed=1)
    b = draw_calibration_set(labels, 500, "natural", seed=1)
    c = draw_calibration_set(labels, 500, "natural", seed=2)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)
    assert sum(a.counts) == 500 and len(np.unique(a.indices)) == 500
    # the documented draw: a uniform choice without replacement with numpy's default_rng
    expected = np.sort(np.random.default_rng(1).choice(len(labels), 500, replace=False))
    np.testing.assert_array_equal(a.indices, expected)
    # 500 of 2786 images: class 0 expects ~179.5 (hypergeometric sd ~ 10), class 9 ~3.2
    assert 140 < a.counts[0] < 220 and a.counts[9] < 15


def test_provenance_is_json_and_complete() -> None:
    calib = draw_calibration_set(labels_of([5, 3, 2]), 6, "balanced", seed=7)
    record = json.loads(json.dumps(calib.provenance()))
    assert record["mode"] == "balanced" and record["seed"] == 7 and record["size"] == 6
    assert record["counts"] == [2, 2, 2] and record["indices"] == calib.indices.tolist()


def test_bad_requests_name_the_problem() -> None:
    labels = labels_of([5, 3])
    with pytest.raises(ConfigError, match="calibration mode"):
        draw_calibration_set(labels, 2, "stratified")
    with pytest.raises(ConfigError, match="size"):
        draw_calibration_set(labels, 0)
    with pytest.raises(ConfigError, match="seed"):
        draw_calibration_set(labels, 2, seed=-1)
    with pytest.raises(DataError, match="only 8"):
        draw_calibration_set(labels, 9)
    with pytest.raises(DataError, match="1-D integer"):
        draw_calibration_set(np.zeros((2, 2), np.int64), 1)
