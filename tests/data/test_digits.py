import numpy as np
import pytest
from sklearn.datasets import load_digits

from climbq_deploy.data.digits import build_digits
from climbq_deploy.errors import DataError


def test_digits_lt_counts_test_balance_and_disjoint_split() -> None:
    ds = build_digits(10, seed=0, test_per_class=40)
    assert ds.counts("test") == [40] * 10
    train = ds.counts("train")
    assert train[0] == int((load_digits().target == 0).sum()) - 40
    assert train == sorted(train, reverse=True) and train[-1] >= 1
    assert ds.train_images.shape[1:] == (32, 32, 3) and ds.train_images.dtype == np.uint8
    assert np.array_equal(ds.train_images[..., 0], ds.train_images[..., 2])  # grey as RGB
    train_set = {im.tobytes() for im in ds.train_images}
    assert not train_set & {im.tobytes() for im in ds.test_images}


def test_pixels_are_upsampled_digits() -> None:
    with pytest.warns(UserWarning, match="capped"):
        ds = build_digits(1, seed=0, test_per_class=10, size=8, cap=True)  # 8x8: no upsampling
    bunch = load_digits()
    expected = {np.rint(im * 255 / 16).astype(np.uint8).tobytes() for im in bunch.images}
    assert all(im[..., 0].tobytes() in expected for im in ds.test_images)


def test_too_many_test_images() -> None:
    with pytest.raises(DataError, match="cannot hold out"):
        build_digits(10, test_per_class=500)
