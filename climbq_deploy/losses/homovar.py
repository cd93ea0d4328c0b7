"""HomoVar class weights and loss (ClimbQ+, method card §5), vectorised over batch and classes.

Symbols (per batch; ``B`` samples, ``K`` classes, ``D`` feature channels):

- ``f_i`` (D,): penultimate features of sample ``i`` (after average pooling), ``y_i`` its label;
- ``n_k``: training images of class ``k`` in the *dataset*, ``N = sum_k n_k``;
  ``b_k``: samples of class ``k`` in the *batch*;
- ``m_k = (sum_{i: y_i = k} f_i) / n_k``: class mean (feature units);
- ``z_i = sum_d |f_id - m_{y_i,d}|``: Levene value (feature units);
- ``S_k = sum_{i: y_i = k} z_i``; ``zbar_k = S_k / n_k``; ``zbar = (1/K) sum_k zbar_k``;
- ``S_W = sum_i (z_i - zbar_{y_i})^2 / (N - K)``; ``F = F^{-1}_{K-1, N-K}(1 - alpha)``;
- ``C_k = (K-1) F S_W - sum_{j != k} n_j (zbar_j - zbar)^2``;
- bounds ``n_k^L, n_k^U``: absolute values of the roots in ``n`` (images) of
  ``zbar^2 n^2 - (2 zbar S_k + C_k) n + S_k^2 = 0``, discriminant ``C_k (C_k + 4 zbar S_k)``,
  taken in the authors' order: with ``p = 2 zbar S_k + C_k`` and ``r = sqrt(disc)``,
  ``n_k^L = |(p - r) / (2 zbar^2)|`` and ``n_k^U = |(p + r) / (2 zbar^2)|``, **not sorted**:
  when ``p < 0`` (both roots negative, e.g. a class absent from the batch with ``C_k < 0``)
  ``n_k^L > n_k^U``, and step 6 uses them so (``bounds="authors"``). ``bounds="sorted"`` takes
  ``n_k^L = min``, ``n_k^U = max`` instead (the default of the corrected variant);
- ``beta_k = beta ** (1 / (n_k^L - n_k))`` if ``n_k < n_k^L``, ``beta ** (1 / (n_k - n_k^U))``
  if ``n_k > n_k^U``, else ``beta`` (also for a negative discriminant or ``zbar == 0``);
- ``w_k = (1 - beta_k) / (1 - beta_k ** n_k)`` in (0, 1], then ``w <- K w / sum(w)``.

``variant="faithful"`` is the text above (the authors' code, bounds in their order), where
``m_k`` is not a mean: with ``b_k << n_k`` it is nearly 0 and ``z_i`` is nearly the L1 norm of
``f_i``. ``variant="corrected"`` (the card's corrected variant) divides only the class mean by
the batch count,
``m_k = (sum_{i: y_i = k} f_i) / max(b_k, 1)``, so ``z_i`` is the Levene deviation from the class's
batch mean; a class absent from the batch has no samples, ``S_k = 0`` and ``zbar_k = 0`` as in the
faithful variant. Steps 2-7 are unchanged: ``zbar_k = S_k / n_k`` is the theorem's own model
(``zbar_k(n) = S_k / n``, the quadratic at ``n = n_k`` is class k's term of the test), which a
batch-count ``zbar_k`` would break (then ``C_k < 0`` in every batch and the absolute values of
negative roots make the bounds bite at random).

Bounds order: ``bounds=None`` means ``"authors"`` for the faithful variant and ``"sorted"`` for
the corrected one. ``variant="faithful", bounds="sorted"`` is what this module computed before
2026-12-07 (every ClimbQ+ run trained before then); it differs from the authors' code only in
batches where some class has ``p < 0``.

The weights are statistics of the batch and carry no gradient (method card §10).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from climbq_deploy.errors import ConfigError

VARIANTS = ("faithful", "corrected")
BOUNDS = ("authors", "sorted")
FORMS = ("bce", "ce")


def bounds_order(variant: str, bounds: str | None) -> str:
    """The bounds order a variant uses: ``bounds`` checked, or the variant's default
    (``"authors"`` for ``"faithful"``, ``"sorted"`` for ``"corrected"``)."""
    check_choice("variant", variant, VARIANTS)
    if bounds is None:
        return "authors" if variant == "faithful" else "sorted"
    return check_choice("bounds", bounds, BOUNDS)


def check_counts(class_counts: Tensor | Sequence[int] | np.ndarray) -> np.ndarray:
    """Validate dataset class counts ``n_k`` and return them as a float64 NumPy vector.

    Raises:
        ConfigError: not a non-empty 1-D vector of finite, integer-valued counts >= 1 (class
            frequencies or priors passed by mistake fail here).
    """
    if isinstance(class_counts, Tensor):
        class_counts = class_counts.detach().cpu().numpy()
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ConfigError(f"class_counts must be a non-empty 1-D vector, got shape {counts.shape}")
    bad = ~np.isfinite(counts) | (counts < 1) | (counts != np.round(counts))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ConfigError(
            f"class_counts must be whole image counts >= 1; class {k} has {counts[k]!r}"
        )
    return counts


def check_open_unit(name: str, value: float) -> float:
    """Return ``value`` as float if it lies strictly inside (0, 1), else raise ConfigError."""
    if not isinstance(value, int | float) or not 0.0 < float(value) < 1.0:
        raise ConfigError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    return float(value)


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ConfigError listing them."""
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    return value


@functools.lru_cache(maxsize=64)
def f_critical(alpha: float, dfn: int, dfd: int) -> float:
    """Upper ``alpha`` critical value of F(dfn, dfd): ``scipy.stats.f.ppf(1 - alpha, dfn, dfd)``.

    Cached: computed once per (alpha, K - 1, N - K), not once per batch.
    """
    return float(stats.f.ppf(1.0 - alpha, dfn, dfd))


@dataclass(frozen=True)
class HomoVarStatistics:
    """Every intermediate of §5 for one batch (float64 tensors on the features' device).

    ``z`` is (B,), all others (K,) except the scalars ``zbar``, ``s_w``, ``f_crit``.
    ``n_lower``/``n_upper`` are NaN where the bounds are undefined (``defined`` False: negative
    discriminant or ``zbar == 0``); ``batch_counts`` are the ``b_k``.
    ``raw_weights`` are the ``w_k`` before normalisation, in (0, 1]; ``weights`` sum to K.
    """

    z: Tensor
    batch_counts: Tensor
    zbar_k: Tensor
    zbar: Tensor
    s_w: Tensor
    f_crit: float
    c_k: Tensor
    s_k: Tensor
    discriminant: Tensor
    defined: Tensor
    n_lower: Tensor
    n_upper: Tensor
    beta_k: Tensor
    raw_weights: Tensor
    weights: Tensor


def _check_batch(features: Tensor, labels: Tensor, num_classes: int) -> None:
    if features.ndim != 2:
        raise ConfigError(f"features must be (B, D), got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ConfigError(f"features must be floating point, got {features.dtype}")
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ConfigError(
            f"labels must be (B,) with B = {features.shape[0]} to match features "
            f"{tuple(features.shape)}, got shape {tuple(labels.shape)}"
        )
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ConfigError(f"labels must be integer class indices, got {labels.dtype}")
    if features.shape[0] == 0:
        raise ConfigError("the batch is empty (B = 0)")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ConfigError(
            f"labels must lie in [0, {num_classes - 1}], got values in [{low}, {high}]"
        )


def homovar_bounds(
    features: Tensor,
    labels: Tensor,
    class_counts: Tensor | Sequence[int] | np.ndarray,
    alpha: float = 0.05,
    beta: float = 0.999,
    variant: str = "faithful",
    bounds: str | None = None,
) -> HomoVarStatistics:
    """§5 steps 1-7 for one batch: Levene values, bounds ``n_k^L, n_k^U``, ``beta_k``, weights.

    Args:
        features: (B, D) penultimate features; detached here, no gradient flows back.
        labels: (B,) integer labels in [0, K).
        class_counts: (K,) dataset counts ``n_k`` (whole numbers >= 1, ``N = sum n_k > K``).
        alpha: significance level of the Levene F test, in (0, 1).
        beta: effective-number base of Cui et al., in (0, 1).
        variant: ``"faithful"`` (authors' code) or ``"corrected"`` (see the module docstring).
        bounds: ``"authors"`` (the roots' order of the authors' code, unsorted), ``"sorted"``
            (``n_k^L <= n_k^U``), or None for the variant's default.

    Raises:
        ConfigError: shapes, dtypes, label range, alpha/beta, counts, ``N <= K`` or variant.
    """
    order = bounds_order(variant, bounds)
    alpha = check_open_unit("alpha", alpha)
    beta = check_open_unit("beta", beta)
    counts_np = check_counts(class_counts)
    num_classes, total = counts_np.size, int(counts_np.sum())
    if total <= num_classes:
        raise ConfigError(f"N = sum(class_counts) = {total} must exceed K = {num_classes}")
    _check_batch(features, labels, num_classes)
    counts = torch.as_tensor(counts_np, dtype=torch.float64, device=features.device)
    f_crit = f_critical(alpha, num_classes - 1, total - num_classes)
    with torch.no_grad():
        return _statistics(
            features.detach().to(torch.float64),
            labels.long(),
            counts,
            total,
            f_crit,
            beta,
            variant,
            order,
        )


def _statistics(
    f: Tensor,
    y: Tensor,
    n: Tensor,
    total: int,
    f_crit: float,
    beta: float,
    variant: str,
    order: str,
) -> HomoVarStatistics:
    num_classes, batch = n.shape[0], f.shape[0]
    b = torch.zeros(num_classes, dtype=f.dtype, device=f.device).index_add_(
        0, y, torch.ones(batch, dtype=f.dtype, device=f.device)
    )
    divisor = n if variant == "faithful" else b.clamp(min=1.0)  # absent classes: sum 0, m_k 0
    feature_sums = torch.zeros(num_classes, f.shape[1], dtype=f.dtype, device=f.device)
    means = feature_sums.index_add_(0, y, f) / divisor[:, None]
    z = (f - means[y]).abs().sum(dim=1)
    s_k = torch.zeros(num_classes, dtype=f.dtype, device=f.device).index_add_(0, y, z)
    zbar_k = s_k / n
    zbar = zbar_k.mean()
    s_w = ((z - zbar_k[y]) ** 2).sum() / (total - num_classes)
    between = n * (zbar_k - zbar) ** 2
    c_k = (num_classes - 1) * f_crit * s_w - (between.sum() - between)

    # Roots of a n^2 - p n + c with a = zbar^2, p = 2 zbar S_k + C_k, c = S_k^2, in the
    # cancellation-free form q = (p + sign(p) sqrt(disc)) / 2, roots q / a and c / q:
    # q / a = (p + r) / 2a for p >= 0 and (p - r) / 2a for p < 0, c / q the other root.
    a, p, c = zbar**2, 2 * zbar * s_k + c_k, s_k**2
    disc = p**2 - 4 * a * c
    defined = (disc >= 0) & (a > 0)
    q = (p + torch.copysign(disc.clamp(min=0).sqrt(), p)) / 2
    root_1 = (q / a).abs()
    root_2 = torch.where(q != 0, c / q, 0.0).abs()
    if order == "sorted":
        lower, upper = torch.minimum(root_1, root_2), torch.maximum(root_1, root_2)
    else:  # the authors' |(p - r) / 2a|, |(p + r) / 2a|
        positive = torch.signbit(p).logical_not()
        lower = torch.where(positive, root_2, root_1)
        upper = torch.where(positive, root_1, root_2)
    nan = torch.full_like(n, math.nan)
    n_lower = torch.where(defined, lower, nan)
    n_upper = torch.where(defined, upper, nan)

    # log(beta_k) = log(beta) / distance outside the bounds; NaN bounds compare False.
    log_beta = math.log(beta)
    below, above = n < n_lower, n > n_upper
    log_beta_k = torch.where(
        below,
        log_beta / (n_lower - n),
        torch.where(above, log_beta / (n - n_upper), torch.full_like(n, log_beta)),
    )
    raw = torch.expm1(log_beta_k) / torch.expm1(n * log_beta_k)  # (1 - beta_k) / (1 - beta_k^n)
    return HomoVarStatistics(
        z=z,
        batch_counts=b,
        zbar_k=zbar_k,
        zbar=zbar,
        s_w=s_w,
        f_crit=f_crit,
        c_k=c_k,
        s_k=s_k,
        discriminant=disc,
        defined=defined,
        n_lower=n_lower,
        n_upper=n_upper,
        beta_k=torch.exp(log_beta_k),
        raw_weights=raw,
        weights=num_classes * raw / raw.sum(),
    )


def homovar_class_weights(*args: Any, **kwargs: Any) -> Tensor:
    """HomoVar class weights ``w_k`` (K,), float32, positive, summing to K, without gradient:
    ``homovar_bounds(*args, **kwargs).weights`` (the same arguments; it also gives every
    intermediate).

    Equal to the class-balanced weights of Cui et al. (:func:`class_balanced_weights` in
    ``longtail``) whenever every ``n_k`` lies within its bounds.
    """
    return homovar_bounds(*args, **kwargs).weights.to(torch.float32)


def log_prior(counts: np.ndarray, tau: object) -> tuple[float, Tensor]:
    """``(tau, log pi)`` for a logit adjustment ``x + tau log pi``: ``tau`` checked finite and
    made a float, ``pi_k = n_k / N`` the prior of ``counts`` (K,), float32 log in nats."""
    if isinstance(tau, bool) or not isinstance(tau, int | float) or not math.isfinite(tau):
        raise ConfigError(f"tau must be a finite number, got {tau!r}")
    return float(tau), torch.as_tensor(np.log(counts / counts.sum()), dtype=torch.float32)


def log1m_softmax(logits: Tensor) -> Tensor:
    """``log(1 - softmax(logits))`` along the last axis, accurate where ``softmax`` rounds to 1.

    With ``M`` the row maximum (at column ``j*``), ``e_j = exp(x_j - M)`` and
    ``s = sum_{l != j*} e_l``: ``log(1 - p_{j*}) = log s - log1p(s)`` and, for every other column
    (``p_j <= 1/2``), ``log(1 - p_j) = log1p(-e_j / (1 + s))``. No cancellation, O(B K) memory.
    ``s`` is floored at the dtype's smallest normal number (``log`` about -87 in float32), the
    analogue of ``torch.nn.BCELoss`` clamping its logs at -100, so gradients stay finite.
    """
    top, arg = logits.max(dim=-1, keepdim=True)
    is_top = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, arg, True)
    others = torch.where(is_top, 0.0, torch.exp(logits - top))  # 0 at j*: no log1p(-1) there
    rest = others.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(logits.dtype).tiny)
    top_value = torch.log(rest) - torch.log1p(rest)
    return torch.where(is_top, top_value, torch.log1p(-others / (1.0 + rest)))


def weighted_loss(logits: Tensor, labels: Tensor, class_weights: Tensor, form: str) -> Tensor:
    """Class-weighted classification loss (scalar), sample weight ``v_i = w_{y_i}``.

    - ``"bce"`` (authors' code, as in Cui et al.'s softmax variant): binary cross-entropy between
      ``p = softmax(logits)`` and the one-hot labels, each row weighted by ``v_i``, mean over all
      ``B K`` entries: ``-(1/(B K)) sum_i v_i sum_j [t_ij log p_ij + (1 - t_ij) log(1 - p_ij)]``.
      Computed in log space (:func:`log1m_softmax`): equal to ``torch.nn.BCELoss`` on
      ``softmax`` except where float ``p`` rounds to 1, where BCELoss clamps ``log 0`` to -100.
    - ``"ce"``: weighted cross-entropy normalised by the sum of the sample weights,
      ``sum_i v_i (-log p_{i,y_i}) / sum_i v_i``, i.e. ``F.cross_entropy(logits, y, weight=w)``;
      only the ratios of the weights matter.
    """
    check_choice("form", form, FORMS)
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ConfigError(
            f"logits must be (B, K) and labels (B,), got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if class_weights.shape != logits.shape[1:]:
        raise ConfigError(
            f"{class_weights.shape[0]} class weights for logits with {logits.shape[1]} classes"
        )
    dtype = torch.promote_types(logits.dtype, torch.float32)  # half/bfloat16 -> float32
    logits, labels = logits.to(dtype), labels.long()
    weights = class_weights.to(device=logits.device, dtype=dtype)
    if form == "ce":
        return nn.functional.cross_entropy(logits, labels, weight=weights)
    target = nn.functional.one_hot(labels, logits.shape[1]).to(logits.dtype)
    log_p = torch.log_softmax(logits, dim=1)
    bce = -(target * log_p + (1 - target) * log1m_softmax(logits))
    return (weights[labels][:, None] * bce).mean()


class HomoVarLoss(nn.Module):
    """ClimbQ+ loss: :func:`weighted_loss` with the batch's HomoVar weights (§5).

    ``forward(logits, labels, features)``: logits (B, K), labels (B,), penultimate features
    (B, D). The weights of the last call are kept in ``last_weights`` (K,) and all intermediates
    in ``last_statistics`` for reports and plots.

    ``bounds``: the order of the HomoVar bounds (:func:`bounds_order`; None: the variant's
    default, the authors' order for the faithful variant).

    ``tau`` (default 0, the paper's loss) applies the HomoVar weights to logit-adjusted logits
    (Menon et al. 2021): ``weighted_loss(x + tau log pi, y, w, form)`` with the dataset prior
    ``pi_k = n_k / N``, a fixed (K,) offset in nats. The weights are unchanged (they read the
    features, not the logits); predict with the raw logits, as for the ``la`` loss.
    """

    def __init__(
        self,
        class_counts: Tensor | Sequence[int] | np.ndarray,
        alpha: float = 0.05,
        beta: float = 0.999,
        variant: str = "faithful",
        form: str = "bce",
        tau: float = 0.0,
        bounds: str | None = None,
    ) -> None:
        super().__init__()
        counts = check_counts(class_counts)
        self.class_counts = tuple(int(c) for c in counts)
        self.tau, prior = log_prior(counts, tau)
        self.register_buffer("log_prior", prior, persistent=False)
        self.alpha = check_open_unit("alpha", alpha)
        self.beta = check_open_unit("beta", beta)
        self.variant = check_choice("variant", variant, VARIANTS)
        self.bounds = bounds_order(variant, bounds)
        self.form = check_choice("form", form, FORMS)
        if sum(self.class_counts) <= len(self.class_counts):
            raise ConfigError(
                f"N = sum(class_counts) = {sum(self.class_counts)} must exceed "
                f"K = {len(self.class_counts)}"
            )
        self.last_weights: Tensor | None = None
        self.last_statistics: HomoVarStatistics | None = None

    def forward(self, logits: Tensor, labels: Tensor, features: Tensor | None = None) -> Tensor:
        if features is None:
            raise ConfigError("HomoVarLoss needs the penultimate features (B, D); got None")
        statistics = homovar_bounds(
            features, labels, self.class_counts, self.alpha, self.beta, self.variant, self.bounds
        )
        self.last_statistics = statistics
        self.last_weights = statistics.weights.to(torch.float32)
        if self.tau:
            logits = logits + self.tau * self.log_prior.to(logits.device, logits.dtype)
        return weighted_loss(logits, labels, self.last_weights, self.form)

    def extra_repr(self) -> str:
        tau = f", tau={self.tau}" if self.tau else ""
        return (
            f"K={len(self.class_counts)}, alpha={self.alpha}, beta={self.beta}, "
            f"variant={self.variant!r}, bounds={self.bounds!r}, form={self.form!r}{tau}"
        )
