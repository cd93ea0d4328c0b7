"""HomoVar weights (method card §5) against a plain-loop transcription of the text, and the loss."""

from __future__ import annotations

import ast
import inspect
import math

import mpmath
import numpy as np
import pytest
import torch
from scipy import stats
from torch.overrides import TorchFunctionMode

from climbq_deploy.errors import ConfigError
from climbq_deploy.losses import HomoVarLoss, homovar_bounds, homovar_class_weights
from climbq_deploy.losses import homovar as homovar_module
from climbq_deploy.losses.homovar import log1m_softmax

COUNTS = [5000, 3237, 2095, 1356, 877, 567, 367, 237, 153, 99]  # CIFAR-10-LT, gamma 50
K, B, D = 10, 128, 64
BETA = 0.999


def make_batch(seed: int, classes: int = K, batch: int = B) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features; labels drawn in proportion to COUNTS among the first ``classes``."""
    rng = np.random.default_rng(seed)
    prior = np.array(COUNTS[:classes], dtype=float)
    labels = rng.choice(classes, batch, p=prior / prior.sum())
    return rng.normal(size=(batch, D)), labels


def reference(
    features, labels, counts, alpha=0.05, beta=BETA, variant="faithful", bounds=None
) -> dict:
    """§5 steps 1-7 as written, one sample and one class at a time, in Python floats.

    ``bounds="authors"`` (the faithful default) takes the roots as the authors' code does,
    ``n_L = |(-b - r) / 2a|``, ``n_U = |(-b + r) / 2a|``, unsorted; ``"sorted"`` (the corrected
    default) sorts them."""
    bounds = bounds or ("authors" if variant == "faithful" else "sorted")
    n_classes, total = len(counts), sum(counts)
    rows = [[float(v) for v in row] for row in features]
    ys = [int(v) for v in labels]
    width = len(rows[0])
    batch_counts = [ys.count(k) for k in range(n_classes)]
    means = [[0.0] * width for _ in range(n_classes)]
    for row, y in zip(rows, ys, strict=True):
        for d in range(width):
            means[y][d] += row[d]
    for k in range(n_classes):
        divisor = counts[k] if variant == "faithful" else max(batch_counts[k], 1)
        means[k] = [v / divisor for v in means[k]]
    z = [
        sum(abs(row[d] - means[y][d]) for d in range(width))
        for row, y in zip(rows, ys, strict=True)
    ]
    class_sums = [0.0] * n_classes
    for zi, y in zip(z, ys, strict=True):
        class_sums[y] += zi
    zbar_k = [class_sums[k] / counts[k] for k in range(n_classes)]
    zbar = sum(zbar_k) / n_classes
    s_w = sum((zi - zbar_k[y]) ** 2 for zi, y in zip(z, ys, strict=True)) / (total - n_classes)
    f_crit = stats.f.ppf(1 - alpha, n_classes - 1, total - n_classes)
    out = {"disc": [], "lower": [], "upper": [], "beta_k": [], "raw": []}
    for k in range(n_classes):
        c_k = (n_classes - 1) * f_crit * s_w - sum(
            counts[j] * (zbar_k[j] - zbar) ** 2 for j in range(n_classes) if j != k
        )
        qa, qb, qc = zbar**2, -(2 * zbar * class_sums[k] + c_k), class_sums[k] ** 2
        disc = qb * qb - 4 * qa * qc
        n = counts[k]
        lower = upper = math.nan
        beta_k = beta
        if disc >= 0 and qa != 0:
            r = math.sqrt(disc)
            lower, upper = abs((-qb - r) / (2 * qa)), abs((-qb + r) / (2 * qa))
            if bounds == "sorted":
                lower, upper = min(lower, upper), max(lower, upper)
            if n < lower:
                beta_k = beta ** (1 / (lower - n))
            elif n > upper:
                beta_k = beta ** (1 / (n - upper))
        out["disc"].append(disc)
        out["lower"].append(lower)
        out["upper"].append(upper)
        out["beta_k"].append(beta_k)
        out["raw"].append((1 - beta_k) / (1 - beta_k**n))
    raw = out["raw"]
    out["weights"] = [n_classes * w / sum(raw) for w in raw]
    out["batch_counts"] = batch_counts
    return {key: np.array(value) for key, value in out.items()}


def class_balanced(counts, beta=BETA) -> np.ndarray:
    raw = np.array([(1 - beta) / (1 - beta**n) for n in counts])
    return len(counts) * raw / raw.sum()


def run(seed: int, variant: str, classes: int = K):
    features, labels = make_batch(seed, classes)
    got = homovar_bounds(torch.tensor(features), torch.tensor(labels), COUNTS, variant=variant)
    return got, reference(features, labels, COUNTS, variant=variant)


@pytest.mark.parametrize("variant", ["faithful", "corrected"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 6, 10])
def test_weights_equal_the_loop_transcription(seed: int, variant: str) -> None:
    features, labels = make_batch(seed)
    want = reference(features, labels, COUNTS, variant=variant)
    got = homovar_class_weights(
        torch.tensor(features), torch.tensor(labels), COUNTS, variant=variant
    )
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want["weights"], rtol=1e-5)


@pytest.mark.parametrize("variant", ["faithful", "corrected"])
@pytest.mark.parametrize("seed", [0, 6, 10])
def test_intermediates_equal_the_loop_transcription(seed: int, variant: str) -> None:
    got, want = run(seed, variant)
    np.testing.assert_array_equal(got.batch_counts.numpy(), want["batch_counts"])
    np.testing.assert_allclose(got.discriminant.numpy(), want["disc"], rtol=1e-7)
    np.testing.assert_array_equal(got.defined.numpy(), ~np.isnan(want["lower"]))
    np.testing.assert_allclose(got.n_lower.numpy(), want["lower"], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(got.n_upper.numpy(), want["upper"], rtol=1e-7)
    np.testing.assert_allclose(got.beta_k.numpy(), want["beta_k"], rtol=1e-12)
    np.testing.assert_allclose(got.raw_weights.numpy(), want["raw"], rtol=1e-9)


@pytest.mark.parametrize("variant", ["faithful", "corrected"])
def test_classes_absent_from_the_batch(variant: str) -> None:
    got, want = run(seed=7, variant=variant, classes=7)  # classes 7, 8, 9 never drawn
    assert got.batch_counts[7:].tolist() == [0, 0, 0]
    weights = got.weights.numpy()
    assert np.isfinite(weights).all() and (weights > 0).all()
    assert np.isfinite(got.raw_weights.numpy()).all()
    np.testing.assert_allclose(weights, want["weights"], rtol=1e-5)


@pytest.mark.parametrize(("seed", "variant"), [(0, "faithful"), (6, "faithful"), (10, "corrected")])
def test_negative_discriminant_leaves_beta(seed: int, variant: str) -> None:
    got, want = run(seed, variant)
    negative = got.discriminant.numpy() < 0
    assert negative.any()
    np.testing.assert_array_equal(negative, want["disc"] < 0)
    np.testing.assert_allclose(got.beta_k.numpy()[negative], BETA, rtol=1e-12)
    assert np.isnan(got.n_lower.numpy()[negative]).all()


@pytest.mark.parametrize(
    ("seed", "variant"), [(0, "faithful"), (6, "corrected"), (10, "corrected")]
)
def test_bounds_bite(seed: int, variant: str) -> None:
    got, want = run(seed, variant)
    bites = np.abs(want["beta_k"] - BETA) > 1e-9
    assert bites.any()
    np.testing.assert_array_equal(np.abs(got.beta_k.numpy() - BETA) > 1e-9, bites)
    assert not np.allclose(got.weights.numpy(), class_balanced(COUNTS), rtol=1e-3)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_wide_bounds_give_the_class_balanced_weights(seed: int) -> None:
    got, want = run(seed, "faithful")
    assert np.allclose(want["beta_k"], BETA)
    n = np.array(COUNTS, dtype=float)
    inside = (got.n_lower.numpy() <= n) & (n <= got.n_upper.numpy())
    assert inside.all()
    np.testing.assert_allclose(got.weights.numpy(), class_balanced(COUNTS), rtol=1e-9)


@pytest.mark.parametrize("variant", ["faithful", "corrected"])
def test_weights_are_positive_finite_sum_to_k_and_raw_lie_in_unit_interval(variant: str) -> None:
    for seed in range(12):
        got, _ = run(seed, variant)
        weights, raw = got.weights.numpy(), got.raw_weights.numpy()
        assert np.isfinite(weights).all() and (weights > 0).all()
        assert weights.sum() == pytest.approx(K, rel=1e-12)
        assert ((raw > 0) & (raw <= 1)).all()


def hand_built_absent_class_batch() -> tuple[np.ndarray, np.ndarray, list[int]]:
    """K = 3, counts (8, 6, 5), one feature: class 0 widely spread around 10, class 1 nearly
    constant at 1, class 2 absent. The classes' Levene values differ more between than within
    classes, so ``C_2 < 0``; with ``S_2 = 0`` the authors' ``b = -(2 zbar S_2 + C_2) > 0``."""
    features = np.array([[v] for v in (10, 14, 6, 12, 8, 15, 5, 10, 1, 1.01, 0.99, 1, 1, 1)])
    labels = np.array([0] * 8 + [1] * 6)
    return features, labels, [8, 6, 5]


def test_faithful_bounds_keep_the_authors_order_where_both_roots_are_negative() -> None:
    features, labels, counts = hand_built_absent_class_batch()
    # The authors' formula, written out here for this batch (not by the code under test).
    n = [float(c) for c in counts]
    big_k, total = 3, sum(counts)
    z = []
    for f, y in zip(features[:, 0], labels, strict=True):
        mean = features[labels == y, 0].sum() / n[y]  # the batch sum over the dataset count
        z.append(abs(f - mean))
    s = [sum(zi for zi, y in zip(z, labels, strict=True) if y == k) for k in range(big_k)]
    zbar_k = [s[k] / n[k] for k in range(big_k)]
    zbar = sum(zbar_k) / big_k
    s_w = sum((zi - zbar_k[y]) ** 2 for zi, y in zip(z, labels, strict=True)) / (total - big_k)
    f_crit = stats.f.ppf(0.95, big_k - 1, total - big_k)
    weights_raw = []
    for k in range(big_k):
        c_k = (big_k - 1) * f_crit * s_w - sum(
            n[j] * (zbar_k[j] - zbar) ** 2 for j in range(big_k) if j != k
        )
        b = -(2 * zbar * s[k] + c_k)
        r = math.sqrt(b * b - 4 * zbar**2 * s[k] ** 2)
        n_l, n_u = abs((-b - r) / (2 * zbar**2)), abs((-b + r) / (2 * zbar**2))
        if k == 2:
            assert s[2] == 0 and c_k < 0 and b > 0 and n_l > n_u  # the case this test is for
            expected_lower, expected_upper = n_l, n_u
        beta_k = BETA
        if n[k] < n_l:
            beta_k = BETA ** (1 / (n_l - n[k]))
        elif n[k] > n_u:
            beta_k = BETA ** (1 / (n[k] - n_u))
        weights_raw.append((1 - beta_k) / (1 - beta_k ** n[k]))
    expected = [big_k * w / sum(weights_raw) for w in weights_raw]

    got = homovar_bounds(torch.tensor(features), torch.tensor(labels), counts)
    assert float(got.n_lower[2]) == pytest.approx(expected_lower, rel=1e-12)
    assert float(got.n_upper[2]) == pytest.approx(expected_upper, rel=1e-12)
    np.testing.assert_allclose(got.weights.numpy(), expected, rtol=1e-12)
    # the sorted order is a different computation on this batch
    sorted_ = homovar_bounds(torch.tensor(features), torch.tensor(labels), counts, bounds="sorted")
    assert float(sorted_.n_lower[2]) == pytest.approx(expected_upper, rel=1e-12)
    assert not np.allclose(sorted_.weights.numpy(), expected, rtol=1e-5)


def test_faithful_weights_equal_the_authors_code_on_random_batches() -> None:
    """40 batches of 128 from the gamma-50 counts, some with absent classes: the faithful
    weights equal the authors' unsorted transcription to 1e-6, and some of these batches are
    ones where sorting the bounds would change the weights."""
    differ = 0
    for seed in range(40):
        classes = K if seed % 2 else 6 + seed % 4  # odd seeds: all classes; even: tail absent
        features, labels = make_batch(100 + seed, classes)
        authors = reference(features, labels, COUNTS, bounds="authors")
        sorted_ = reference(features, labels, COUNTS, bounds="sorted")
        got = homovar_class_weights(torch.tensor(features), torch.tensor(labels), COUNTS)
        np.testing.assert_allclose(got.numpy(), authors["weights"], rtol=1e-6)
        differ += not np.allclose(authors["weights"], sorted_["weights"], rtol=1e-6)
    assert differ > 0


@pytest.mark.parametrize("seed", [0, 7, 10])
def test_sorted_bounds_are_the_named_option_and_the_corrected_default(seed: int) -> None:
    features, labels = make_batch(seed, classes=7)
    x, y = torch.tensor(features), torch.tensor(labels)
    want = reference(features, labels, COUNTS, bounds="sorted")
    got = homovar_class_weights(x, y, COUNTS, variant="faithful", bounds="sorted")
    np.testing.assert_allclose(got.numpy(), want["weights"], rtol=1e-6)
    corrected = homovar_bounds(x, y, COUNTS, variant="corrected")
    assert (corrected.n_lower[corrected.defined] <= corrected.n_upper[corrected.defined]).all()
    assert HomoVarLoss(COUNTS).bounds == "authors"
    assert HomoVarLoss(COUNTS, variant="corrected").bounds == "sorted"
    with pytest.raises(ConfigError, match="unknown bounds 'both'"):
        HomoVarLoss(COUNTS, bounds="both")


def test_zero_levene_values_leave_every_class_at_beta() -> None:
    labels = torch.tensor(make_batch(0)[1])
    got = homovar_bounds(torch.zeros(B, D, dtype=torch.float64), labels, COUNTS)
    assert float(got.zbar) == 0.0
    assert not got.defined.any()
    np.testing.assert_allclose(got.weights.numpy(), class_balanced(COUNTS), rtol=1e-9)


def test_no_gradient_reaches_the_features() -> None:
    features, labels = make_batch(0)
    feats = torch.tensor(features, dtype=torch.float32, requires_grad=True)
    logits = torch.randn(B, K, requires_grad=True)
    weights = homovar_class_weights(feats, torch.tensor(labels), COUNTS)
    assert not weights.requires_grad
    HomoVarLoss(COUNTS)(logits, torch.tensor(labels), feats).backward()
    assert feats.grad is None
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def softmax64(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("variant", ["faithful", "corrected"])
def test_bce_form_equals_the_explicit_formula(variant: str) -> None:
    features, labels = make_batch(0)
    logits = np.random.default_rng(1).normal(scale=3.0, size=(B, K))
    loss = HomoVarLoss(COUNTS, variant=variant, form="bce")
    got = loss(torch.tensor(logits), torch.tensor(labels), torch.tensor(features))
    w = reference(features, labels, COUNTS, variant=variant)["weights"]
    p, t = softmax64(logits), np.eye(K)[labels]
    want = -np.mean(w[labels][:, None] * (t * np.log(p) + (1 - t) * np.log(1 - p)))
    assert float(got) == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(loss.last_weights.numpy(), w, rtol=1e-5)
    assert loss.last_statistics is not None


def test_ce_form_is_normalised_by_the_sample_weights() -> None:
    features, labels = make_batch(6)
    logits = np.random.default_rng(2).normal(scale=3.0, size=(B, K))
    loss = HomoVarLoss(COUNTS, variant="corrected", form="ce")
    got = loss(torch.tensor(logits), torch.tensor(labels), torch.tensor(features))
    w = reference(features, labels, COUNTS, variant="corrected")["weights"]
    v = w[labels]
    want = np.sum(v * -np.log(softmax64(logits)[np.arange(B), labels])) / v.sum()
    assert float(got) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("form", ["bce", "ce"])
def test_tau_applies_the_weights_to_logit_adjusted_logits(form: str) -> None:
    features, labels = make_batch(4)
    logits = np.random.default_rng(3).normal(scale=3.0, size=(B, K))
    adjusted = logits + 1.5 * np.log(np.array(COUNTS) / sum(COUNTS))
    loss = HomoVarLoss(COUNTS, variant="corrected", form=form, tau=1.5)
    got = loss(torch.tensor(logits), torch.tensor(labels), torch.tensor(features))
    w = reference(features, labels, COUNTS, variant="corrected")["weights"]
    p, t = softmax64(adjusted), np.eye(K)[labels]
    if form == "bce":
        want = -np.mean(w[labels][:, None] * (t * np.log(p) + (1 - t) * np.log(1 - p)))
    else:
        want = np.sum(w[labels] * -np.log(p[np.arange(B), labels])) / w[labels].sum()
    assert float(got) == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(loss.last_weights.numpy(), w, rtol=1e-5)  # weights unmoved
    plain = HomoVarLoss(COUNTS, variant="corrected", form=form)
    untouched = plain(torch.tensor(logits), torch.tensor(labels), torch.tensor(features))
    assert abs(float(untouched) - float(got)) > 1e-3  # tau moved the loss
    zero = HomoVarLoss(COUNTS, variant="corrected", form=form, tau=0.0)
    assert float(zero(torch.tensor(logits), torch.tensor(labels), torch.tensor(features))) == (
        float(untouched)
    )


@pytest.mark.parametrize("tau", [float("nan"), float("inf"), "1", True])
def test_tau_must_be_a_finite_number(tau: object) -> None:
    with pytest.raises(ConfigError, match="tau must be a finite number"):
        HomoVarLoss(COUNTS, tau=tau)  # type: ignore[arg-type]


def test_log1m_softmax_stays_exact_where_softmax_rounds_to_one() -> None:
    rows = [[30.0, 0.0, -5.0], [2.0, 2.0, -1.0], [0.0, 0.0, 0.0], [-3.0, 1.5, 200.0]]
    logits = torch.tensor(rows, requires_grad=True)
    got = log1m_softmax(logits)
    assert torch.softmax(logits, 1)[0, 0] == 1.0  # float32 rounds; the log-space form does not
    with mpmath.workdps(60):
        want = [
            [float(mpmath.log(1 - mpmath.exp(x) / mpmath.fsum(map(mpmath.exp, row)))) for x in row]
            for row in rows[:3]
        ]
    np.testing.assert_allclose(got[:3].detach().numpy(), want, rtol=1e-5)
    assert float(got[3, 2].detach()) == pytest.approx(
        math.log(torch.finfo(torch.float32).tiny), rel=1e-6
    )
    got.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_invalid_inputs_raise_config_error() -> None:
    features, labels = torch.zeros(4, 3), torch.tensor([0, 1, 2, 1])
    counts = [10, 5, 2]
    cases = [
        (features[:3], labels, counts, {}),  # batch sizes differ
        (features[0], labels, counts, {}),  # 1-D features
        (features, labels.float(), counts, {}),  # float labels
        (features, torch.tensor([0, 1, 3, 1]), counts, {}),  # label out of range
        (features, torch.tensor([0, -1, 2, 1]), counts, {}),
        (features, labels, counts, {"alpha": 0.0}),
        (features, labels, counts, {"alpha": 1.5}),
        (features, labels, counts, {"beta": 1.0}),
        (features, labels, counts, {"variant": "fixed"}),
        (features, labels, [1, 1, 1], {}),  # N <= K
        (features, labels, [0.5, 0.3, 0.2], {}),  # a prior, not counts
        (features, labels, [10, 5], {}),  # K = 2 but label 2
    ]
    for feats, labs, cnts, options in cases:
        with pytest.raises(ConfigError):
            homovar_class_weights(feats, labs, cnts, **options)
    with pytest.raises(ConfigError, match="features"):
        HomoVarLoss(counts)(torch.zeros(4, 3), labels)
    with pytest.raises(ConfigError, match="form"):
        HomoVarLoss(counts, form="focal")


def test_statistics_have_no_python_loop() -> None:
    for function in (homovar_module._statistics, log1m_softmax, homovar_module.weighted_loss):
        tree = ast.parse(inspect.getsource(function).lstrip())
        loops = (ast.For, ast.While, ast.ListComp, ast.GeneratorExp, ast.SetComp, ast.DictComp)
        assert not [node for node in ast.walk(tree) if isinstance(node, loops)], function.__name__


class CountCalls(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_torch_calls_do_not_grow_with_the_batch() -> None:
    counted = []
    for batch in (16, 1024):
        features, labels = make_batch(0, batch=batch)
        features_t, labels_t = torch.tensor(features), torch.tensor(labels)
        with CountCalls() as mode:
            homovar_class_weights(features_t, labels_t, COUNTS)
        counted.append(mode.calls)
    assert counted[0] == counted[1] > 0
