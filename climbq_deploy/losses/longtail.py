"""Long-tail baselines to ablate HomoVar against, and one factory for every loss.

- ``ce``: plain cross-entropy.
- ``cb``: class-balanced loss (Cui et al. 2019), effective number
  ``E_k = (1 - beta^n_k) / (1 - beta)`` images, weight
  ``w_k = 1 / E_k = (1 - beta) / (1 - beta^n_k)``, normalised to ``sum_k w_k = K``.
  HomoVar's weights equal these whenever its bounds do not bite (method card §10).
- ``la``: logit-adjusted loss (Menon et al. 2021), ``CE(x + tau log pi, y)`` with the prior
  ``pi_k = n_k / N``; ``tau = 1`` is the balanced softmax.
- ``homovar``: :class:`~climbq_deploy.losses.homovar.HomoVarLoss` (option ``tau``: its weights on
  logit-adjusted logits).

Every loss is called alike, ``loss(logits, labels, features=None)``; only HomoVar reads the
features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from climbq_deploy.errors import ConfigError
from climbq_deploy.losses.homovar import (
    FORMS,
    HomoVarLoss,
    check_choice,
    check_counts,
    check_open_unit,
    log_prior,
    weighted_loss,
)

Counts = Tensor | Sequence[int] | np.ndarray
LOSS_NAMES = ("ce", "cb", "la", "homovar")


def class_balanced_weights(class_counts: Counts, beta: float = 0.999) -> Tensor:
    """Cui et al. (2019) weights ``w_k = (1 - beta) / (1 - beta^n_k)``, scaled to sum to K.

    Args:
        class_counts: (K,) training images per class, whole numbers >= 1.
        beta: in (0, 1); ``beta -> 0`` gives equal weights, ``beta -> 1`` gives ``1 / n_k``.

    Returns:
        (K,) float32 weights.
    """
    beta = check_open_unit("beta", beta)
    counts = check_counts(class_counts)
    log_beta = math.log(beta)
    weights = np.expm1(log_beta) / np.expm1(counts * log_beta)  # (1 - beta) / (1 - beta^n)
    return torch.as_tensor(counts.size * weights / weights.sum(), dtype=torch.float32)


class CrossEntropyLoss(nn.Module):
    """Plain cross-entropy, mean over the batch, with the common ``forward`` signature."""

    def forward(self, logits: Tensor, labels: Tensor, features: Tensor | None = None) -> Tensor:
        return nn.functional.cross_entropy(logits, labels)


class ClassBalancedLoss(nn.Module):
    """Class-balanced loss: :func:`~climbq_deploy.losses.homovar.weighted_loss` with the fixed
    weights of :func:`class_balanced_weights`.

    ``form`` is ``"bce"`` (default, as HomoVar's default, so ``cb`` vs ``homovar`` differs only
    in the bounds) or ``"ce"`` (weighted cross-entropy normalised by the sum of sample weights).
    """

    weights: Tensor

    def __init__(self, class_counts: Counts, beta: float = 0.999, form: str = "bce") -> None:
        super().__init__()
        self.form = check_choice("form", form, FORMS)
        weights = class_balanced_weights(class_counts, beta)
        self.register_buffer("weights", weights, persistent=False)

    def forward(self, logits: Tensor, labels: Tensor, features: Tensor | None = None) -> Tensor:
        return weighted_loss(logits, labels, self.weights, self.form)


class LogitAdjustedLoss(nn.Module):
    """Logit-adjusted cross-entropy ``CE(x_i + tau log pi, y_i)``, mean over the batch.

    ``pi_k = n_k / N`` is the training prior; the adjustment is a fixed (K,) offset in logit
    units (nats). Predict with the raw logits (Menon et al. 2021, loss form).
    """

    log_prior: Tensor

    def __init__(self, class_counts: Counts, tau: float = 1.0) -> None:
        super().__init__()
        self.tau, prior = log_prior(check_counts(class_counts), tau)
        self.register_buffer("log_prior", prior, persistent=False)

    def forward(self, logits: Tensor, labels: Tensor, features: Tensor | None = None) -> Tensor:
        if logits.shape[-1] != self.log_prior.shape[0]:
            raise ConfigError(
                f"logits have {logits.shape[-1]} classes, the prior {self.log_prior.shape[0]}"
            )
        adjusted = logits + self.tau * self.log_prior.to(logits.dtype)
        return nn.functional.cross_entropy(adjusted, labels)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


_OPTIONS: dict[str, tuple[str, ...]] = {
    "ce": (),
    "cb": ("beta", "form"),
    "la": ("tau",),
    "homovar": ("alpha", "beta", "variant", "form", "tau"),
}


def make_loss(name: str, class_counts: Counts | None = None, **options: Any) -> nn.Module:
    """Build the loss ``name`` (one of :data:`LOSS_NAMES`) for dataset counts ``class_counts``.

    ``options`` are the named loss's keyword arguments: ``cb`` beta, form; ``la`` tau;
    ``homovar`` alpha, beta, variant, form, tau; ``ce`` none (``class_counts`` may be None).

    Raises:
        ConfigError: unknown name or option, missing counts, or an invalid option value.
    """
    if name not in _OPTIONS:
        raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        allowed = ", ".join(_OPTIONS[name]) or "none"
        raise ConfigError(f"loss {name!r} has no option {', '.join(unknown)} (allowed: {allowed})")
    if name == "ce":
        return CrossEntropyLoss()
    if class_counts is None:
        raise ConfigError(f"loss {name!r} needs the dataset class counts")
    if name == "cb":
        return ClassBalancedLoss(class_counts, **options)
    if name == "la":
        return LogitAdjustedLoss(class_counts, **options)
    return HomoVarLoss(class_counts, **options)
