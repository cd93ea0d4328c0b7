import json
import math

import pytest

from climbq_deploy.data.longtail import longtail_counts
from climbq_deploy.errors import ConfigError, DataError
from tests.conftest import SHARED


def plain_counts(n_max: int, gamma: float, k: int) -> list[int]:
    """§6 written out with math.floor and math.pow, independently of the module."""
    out = [n_max]
    for _ in range(k - 1):
        out.append(math.floor(out[-1] * math.pow(gamma, -1.0 / (k - 1))))
    return out


@pytest.mark.parametrize(
    ("gamma", "expected"),
    [
        (50, [1000, 647, 418, 270, 174, 112, 72, 46, 29, 18]),
        (10, [1000, 774, 599, 463, 358, 277, 214, 165, 127, 98]),
        (200, [1000, 555, 308, 170, 94, 52, 28, 15, 8, 4]),
    ],
)
def test_syndigits_counts_match_the_authors(gamma: int, expected: list[int]) -> None:
    assert longtail_counts(1000, gamma, 10) == expected


@pytest.mark.skipif(not (SHARED / "data/climbq-splits").is_dir(), reason="../shared not present")
@pytest.mark.parametrize("gamma", [10, 50, 200])
def test_counts_equal_the_shared_json(gamma: int) -> None:
    path = SHARED / f"data/climbq-splits/syndigits_counts_gamma{gamma}.json"
    authors = json.loads(path.read_text())
    assert longtail_counts(1000, gamma, 10) == [authors[str(k)] for k in range(10)]


def test_cifar_gamma50_counts() -> None:
    assert longtail_counts(5000, 50, 10) == [5000, 3237, 2095, 1356, 877, 567, 367, 237, 153, 99]


@pytest.mark.parametrize(("n_max", "gamma", "k"), [(5000, 100, 10), (777, 3.5, 7), (100, 1, 4)])
def test_other_gammas_follow_the_formula(n_max: int, gamma: float, k: int) -> None:
    assert longtail_counts(n_max, gamma, k) == plain_counts(n_max, gamma, k)


def test_gamma_one_is_balanced_and_one_class_is_fine() -> None:
    assert longtail_counts(10, 1, 3) == [10, 10, 10]
    assert longtail_counts(10, 50, 1) == [10]


@pytest.mark.parametrize("gamma", [0.5, 0, -3, float("nan"), float("inf")])
def test_bad_gamma_is_refused(gamma: float) -> None:
    with pytest.raises(ConfigError, match="gamma"):
        longtail_counts(100, gamma, 10)


def test_too_few_images_is_an_error_naming_the_class() -> None:
    with pytest.raises(DataError, match=r"class 2: wants 25, has 20"):
        longtail_counts(100, 16, 5, available=[100, 100, 20, 100, 100])


def test_cap_takes_the_minimum_and_warns_and_next_count_follows_the_capped_one() -> None:
    with pytest.warns(UserWarning, match="class 2: capped at 20"):
        counts = longtail_counts(100, 16, 5, available=[100, 100, 20, 100, 100], cap=True)
    assert counts == [100, 50, 20, 10, 5]


def test_a_class_rounded_to_zero_is_an_error() -> None:
    with pytest.raises(DataError, match="no images"):
        longtail_counts(3, 100, 10)
