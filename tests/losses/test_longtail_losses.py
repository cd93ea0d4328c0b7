"""Class-balanced, logit-adjusted and plain losses, and the loss factory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from climbq_deploy.errors import ConfigError
from climbq_deploy.losses import (
    LOSS_NAMES,
    ClassBalancedLoss,
    CrossEntropyLoss,
    HomoVarLoss,
    LogitAdjustedLoss,
    class_balanced_weights,
    make_loss,
)

COUNTS = [5000, 3237, 2095, 1356, 877, 567, 367, 237, 153, 99]


def log_softmax64(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def batch(seed: int = 0, size: int = 64, classes: int = 10):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=2.0, size=(size, classes)), rng.integers(0, classes, size)


def test_class_balanced_weights_by_hand() -> None:
    # beta 1/2, counts 4, 2, 1: (1/2) / (1 - 2^-n) = 8/15, 2/3, 1 -> sum 33/15 -> times 3 / sum
    got = class_balanced_weights([4, 2, 1], beta=0.5)
    np.testing.assert_allclose(got.numpy(), [8 / 11, 10 / 11, 15 / 11], rtol=1e-6)
    assert got.dtype == torch.float32


def test_class_balanced_weights_cifar_lt_and_limits() -> None:
    got = class_balanced_weights(COUNTS).numpy()
    raw = np.array([0.001 / (1 - 0.999**n) for n in COUNTS])
    np.testing.assert_allclose(got, 10 * raw / raw.sum(), rtol=1e-6)
    assert got.sum() == pytest.approx(10, rel=1e-6)
    assert (np.diff(got) > 0).all()  # rarer class, larger weight
    # beta -> 1: weights -> 1 / n_k; beta -> 0: equal weights
    inverse = 1 / np.array(COUNTS, dtype=float)
    near_one = class_balanced_weights(COUNTS, beta=1 - 1e-9).numpy()
    np.testing.assert_allclose(near_one, 10 * inverse / inverse.sum(), rtol=1e-4)
    np.testing.assert_allclose(class_balanced_weights(COUNTS, beta=1e-9).numpy(), 1.0, rtol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 1.0, -0.5, 2.0])
def test_class_balanced_weights_reject_beta(beta: float) -> None:
    with pytest.raises(ConfigError, match="beta"):
        class_balanced_weights(COUNTS, beta=beta)


@pytest.mark.parametrize("counts", [[], [3, 0], [2.5, 3], [[1, 2]], [0.7, 0.3]])
def test_class_balanced_weights_reject_counts(counts) -> None:
    with pytest.raises(ConfigError, match="class_counts"):
        class_balanced_weights(counts)


def test_class_balanced_ce_equals_weighted_mean_of_sample_losses() -> None:
    logits, labels = batch(1)
    got = ClassBalancedLoss(COUNTS, form="ce")(torch.tensor(logits), torch.tensor(labels))
    raw = np.array([0.001 / (1 - 0.999**n) for n in COUNTS])
    v = (10 * raw / raw.sum())[labels]
    nll = -log_softmax64(logits)[np.arange(len(labels)), labels]
    assert float(got) == pytest.approx(np.sum(v * nll) / v.sum(), rel=1e-6)


def test_class_balanced_bce_equals_the_explicit_formula() -> None:
    logits, labels = batch(2)
    got = ClassBalancedLoss(COUNTS, form="bce")(torch.tensor(logits), torch.tensor(labels))
    raw = np.array([0.001 / (1 - 0.999**n) for n in COUNTS])
    w = 10 * raw / raw.sum()
    p, t = np.exp(log_softmax64(logits)), np.eye(10)[labels]
    want = -np.mean(w[labels][:, None] * (t * np.log(p) + (1 - t) * np.log(1 - p)))
    assert float(got) == pytest.approx(want, rel=1e-6)


def test_homovar_equals_class_balanced_when_the_bounds_do_not_bite() -> None:
    rng = np.random.default_rng(1)  # the batch of test_homovar's seed 1: every beta_k = beta
    labels = rng.choice(10, 128, p=np.array(COUNTS) / sum(COUNTS))
    features = rng.normal(size=(128, 64))
    logits = torch.tensor(rng.normal(size=(128, 10)))
    for form in ("bce", "ce"):
        homovar = HomoVarLoss(COUNTS, form=form)
        got = homovar(logits, torch.tensor(labels), torch.tensor(features))
        assert torch.allclose(
            homovar.last_statistics.beta_k, torch.tensor(0.999, dtype=torch.float64)
        )
        want = ClassBalancedLoss(COUNTS, form=form)(logits, torch.tensor(labels))
        assert float(got) == pytest.approx(float(want), rel=1e-6)


@pytest.mark.parametrize("tau", [1.0, 0.5, 0.0, 2.0])
def test_logit_adjusted_equals_cross_entropy_on_shifted_logits(tau: float) -> None:
    logits, labels = batch(3)
    got = LogitAdjustedLoss(COUNTS, tau=tau)(torch.tensor(logits), torch.tensor(labels))
    prior = np.array(COUNTS, dtype=float) / sum(COUNTS)
    adjusted = logits + tau * np.log(prior)
    want = -log_softmax64(adjusted)[np.arange(len(labels)), labels].mean()
    assert float(got) == pytest.approx(want, rel=1e-6)


def test_logit_adjusted_with_tau_one_is_the_balanced_softmax() -> None:
    logits, labels = batch(4)
    got = LogitAdjustedLoss(COUNTS)(torch.tensor(logits), torch.tensor(labels))
    n = np.array(COUNTS, dtype=float)
    scores = n * np.exp(logits)  # balanced softmax: p_k proportional to n_k exp(x_k)
    want = -np.mean(np.log(scores[np.arange(len(labels)), labels] / scores.sum(axis=1)))
    assert float(got) == pytest.approx(want, rel=1e-6)


def test_logit_adjusted_rejects_bad_tau_and_class_mismatch() -> None:
    with pytest.raises(ConfigError, match="tau"):
        LogitAdjustedLoss(COUNTS, tau=float("nan"))
    with pytest.raises(ConfigError, match="classes"):
        LogitAdjustedLoss(COUNTS)(torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))


def test_cross_entropy_wrapper_ignores_features() -> None:
    logits, labels = batch(5)
    got = CrossEntropyLoss()(torch.tensor(logits), torch.tensor(labels), torch.zeros(64, 3))
    want = -log_softmax64(logits)[np.arange(len(labels)), labels].mean()
    assert float(got) == pytest.approx(want, rel=1e-9)


def test_make_loss_builds_every_name_and_they_are_called_alike() -> None:
    assert LOSS_NAMES == ("ce", "cb", "la", "homovar")
    kinds = {
        "ce": CrossEntropyLoss,
        "cb": ClassBalancedLoss,
        "la": LogitAdjustedLoss,
        "homovar": HomoVarLoss,
    }
    rng = np.random.default_rng(6)
    labels = torch.tensor(rng.choice(10, 32, p=np.array(COUNTS) / sum(COUNTS)))
    features = torch.tensor(rng.normal(size=(32, 16)), dtype=torch.float32)
    for name in LOSS_NAMES:
        loss = make_loss(name, COUNTS)
        assert type(loss) is kinds[name]
        logits = torch.randn(32, 10, requires_grad=True)
        value = loss(logits, labels, features)
        assert value.ndim == 0 and torch.isfinite(value)
        value.backward()
        assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_make_loss_passes_options() -> None:
    cb = make_loss("cb", COUNTS, beta=0.5, form="ce")
    assert cb.form == "ce"
    np.testing.assert_allclose(cb.weights.numpy(), class_balanced_weights(COUNTS, 0.5).numpy())
    assert make_loss("la", COUNTS, tau=0.25).tau == 0.25
    homovar = make_loss(
        "homovar", COUNTS, alpha=0.1, beta=0.99, variant="corrected", form="ce", tau=1.0
    )
    assert (homovar.alpha, homovar.beta, homovar.variant, homovar.form, homovar.tau) == (
        0.1,
        0.99,
        "corrected",
        "ce",
        1.0,
    )
    assert make_loss("homovar", COUNTS).tau == 0.0  # the paper's loss by default
    assert isinstance(make_loss("ce"), CrossEntropyLoss)


def test_make_loss_errors_name_the_choices() -> None:
    with pytest.raises(ConfigError, match="ce, cb, la, homovar") as error:
        make_loss("focal", COUNTS)
    assert "focal" in str(error.value)
    with pytest.raises(ConfigError, match="allowed: tau"):
        make_loss("la", COUNTS, beta=0.9)
    with pytest.raises(ConfigError, match="allowed: none"):
        make_loss("ce", COUNTS, tau=1.0)
    with pytest.raises(ConfigError, match="class counts"):
        make_loss("cb")
    with pytest.raises(ConfigError, match="form"):
        make_loss("cb", COUNTS, form="softmax")
    with pytest.raises(ConfigError, match="variant"):
        make_loss("homovar", COUNTS, variant="paper")
    with pytest.raises(ConfigError, match="alpha"):
        make_loss("homovar", COUNTS, alpha=1.0)
