import numpy as np
import pytest

from climbq_deploy.errors import DataError
from climbq_deploy.train.validation import balanced_accuracy, split_validation


def test_split_is_per_class_disjoint_and_seeded() -> None:
    labels = np.repeat(np.arange(4), [100, 30, 9, 1])
    train, val = split_validation(labels, 0.1, seed=5)
    assert np.bincount(labels[val], minlength=4).tolist() == [10, 3, 0, 0]
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    again, val_again = split_validation(labels, 0.1, seed=5)
    assert np.array_equal(val, val_again) and np.array_equal(train, again)
    assert not np.array_equal(val, split_validation(labels, 0.1, seed=6)[1])


def test_every_class_keeps_a_training_image() -> None:
    labels = np.repeat(np.arange(3), [4, 2, 1])
    train, _ = split_validation(labels, 0.99, seed=0)
    assert np.bincount(labels[train], minlength=3).tolist() == [1, 1, 1]
    assert split_validation(labels, 0.0, seed=0)[1].size == 0


def test_a_fraction_that_holds_out_nothing_is_an_error() -> None:
    with pytest.raises(DataError, match="holds out no image"):
        split_validation(np.repeat(np.arange(2), [5, 3]), 0.1, seed=0)


def test_balanced_accuracy_by_hand() -> None:
    labels = np.array([0, 0, 0, 0, 1])
    predictions = np.array([0, 0, 0, 0, 0])
    assert balanced_accuracy(predictions, labels) == 50.0  # plain accuracy would be 80
