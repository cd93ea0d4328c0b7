"""Weight and activation quantizers as modules: ClimbQ (§2, §3) and the uniform and LSQ baselines.

Every quantizer lands on a uniform integer grid, so the exporter lowers them all alike:

- a weight quantizer gives ``w_hat = W_int * scale`` (:meth:`WeightQuantizer.integer_weights`);
- an activation quantizer gives ``x_hat = X_int * step`` with ``X_int = mult * j + offset`` and
  ``j`` = the number of ascending thresholds ``T_1..T_n`` that ``x`` reaches
  (:meth:`ActivationQuantizer.grid`).

- climbq: weights ``j = round(n Phi((w - mu) / s))``, ``W_int = 2j - n``, scale ``1/n``;
  activations ``j = round(n Phi(x / sigma))``, ``X_int = 2j - n``, step ``R/n``.
- uniform: DoReFa weights ``j = round(n (tanh w / (2 max|tanh w|) + 1/2))``, ``W_int = 2j - n``;
  clipped activations ``j = round(n (clip(x, -R, R) + R) / 2R)``, ``X_int = 2j - n``, step ``R/n``.
- lsq: ``q = round(clip(v / s, -Q_N, Q_P))`` for weights and activations, each with its own
  learned step ``s``.

- ptq (post-training, :mod:`climbq_deploy.calibration`): per-output-channel symmetric weights
  ``W_int = clip(round(w / s_o), -Q, Q)``, ``s_o = max|w_o| / Q``; per-tensor symmetric
  activations ``X_int = clip(round(x / s), -Q, Q)``, ``s = r / Q`` with the range ``r``
  calibrated on data; ``Q = 2**(b-1) - 1``.

LSQ (Esser et al. 2020): ``Q_N = 2**(b-1)``, ``Q_P = 2**(b-1) - 1``, step initialised to
``2 mean|v| / sqrt(Q_P)`` on the first training batch, gradient scaled by ``1/sqrt(numel Q_P)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtri
from torch import Tensor, nn

from climbq_deploy.distributed import global_mean, global_numel
from climbq_deploy.errors import ConfigError
from climbq_deploy.quant.functional import (
    FULL_PRECISION,
    check_bits,
    climbq_activation,
    climbq_weight_unit,
    levels,
    lsq_quantize,
    round_ste,
    uniform_activation,
    weight_codes,
)

ACTIVATION_RANGE = 2.0  # R of §3
INFERENCE_SIGMA = 2.0


@dataclass(frozen=True)
class ActivationGrid:
    """An activation quantizer in integer terms.

    ``j = #{t : x >= thresholds[t]}`` (thresholds ascending, float64, in the units of x),
    ``X_int = mult * j + offset``, and the dequantized value is ``X_int * step``.
    """

    thresholds: np.ndarray
    mult: int
    offset: int
    step: float


class WeightQuantizer(nn.Module):
    bits: int

    def integer_weights(self, w: Tensor) -> tuple[Tensor, float | Tensor]:
        """``(W_int int64, scale)`` with ``forward(w) == W_int * scale`` (up to float rounding).

        ``scale`` is a float (one per tensor) or a float64 tensor of shape ``(O,)``, one per
        output channel (``W_int[o] * scale[o]``); capture folds per-channel scales into the
        BatchNorm that follows the conv."""
        raise NotImplementedError

    def integer_grid(self) -> tuple[int, int]:
        """``(mult, offset)`` with ``W_int = mult * code + offset``, ``code`` in ``0..2**bits-1``.

        ClimbQ and DoReFa weights: ``(2, -n)`` (odd integers in ``[-n, n]``)."""
        return 2, -levels(self.bits)


class ActivationQuantizer(nn.Module):
    bits: int

    def forward(self, x: Tensor, sigma: float | Tensor = INFERENCE_SIGMA) -> Tensor:
        raise NotImplementedError

    def grid(self) -> ActivationGrid:
        raise NotImplementedError


class ClimbQWeight(WeightQuantizer):
    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, w: Tensor) -> Tensor:
        return climbq_weight_unit(w, self.bits)

    def integer_weights(self, w: Tensor) -> tuple[Tensor, float]:
        n = levels(self.bits)
        return 2 * weight_codes(w, self.bits) - n, 1.0 / n


class ClimbQActivation(ActivationQuantizer):
    """``x_hat = (2j/n - 1) R``, ``j = round(n Phi(x / sigma))``; sigma per sample in training."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, x: Tensor, sigma: float | Tensor = INFERENCE_SIGMA) -> Tensor:
        return climbq_activation(x, self.bits, sigma, ACTIVATION_RANGE)

    def grid(self) -> ActivationGrid:
        n = levels(self.bits)
        t = np.arange(1, n + 1, dtype=np.float64)
        thresholds = INFERENCE_SIGMA * ndtri((t - 0.5) / n)
        return ActivationGrid(thresholds, 2, -n, ACTIVATION_RANGE / n)


class UniformWeight(WeightQuantizer):
    """DoReFa weights: ``w_t = tanh(w) / (2 max|tanh w|) + 1/2``, ``j = round(n w_t)``."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def _unit(self, w: Tensor) -> Tensor:
        t = torch.tanh(w)
        return t / (2 * t.abs().max().clamp_min(1e-12)) + 0.5

    def forward(self, w: Tensor) -> Tensor:
        n = levels(self.bits)
        return 2.0 * round_ste(n * self._unit(w)) / n - 1.0

    def integer_weights(self, w: Tensor) -> tuple[Tensor, float]:
        n = levels(self.bits)
        j = torch.round(n * self._unit(w.detach().double())).to(torch.int64)
        return 2 * j - n, 1.0 / n


class UniformActivation(ActivationQuantizer):
    """Clipped uniform: ``j = round(n (clip(x, -R, R) + R) / 2R)``, ``x_hat = (2j - n) R / n``
    (integer times step, as for ClimbQ)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, x: Tensor, sigma: float | Tensor = INFERENCE_SIGMA) -> Tensor:
        return uniform_activation(x, self.bits, ACTIVATION_RANGE)

    def grid(self) -> ActivationGrid:
        n, r = levels(self.bits), ACTIVATION_RANGE
        t = np.arange(1, n + 1, dtype=np.float64)
        return ActivationGrid(-r + 2 * r * (t - 0.5) / n, 2, -n, r / n)


class _LSQ(nn.Module):
    """Shared LSQ step handling: lazy data-driven init, gradient-scaled step."""

    batch_sharded = False  # True for activations: their batch is split across processes

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.q_n, self.q_p = 2 ** (bits - 1), 2 ** (bits - 1) - 1
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    def _scaled_step(self, v: Tensor) -> Tensor:
        if not bool(self.initialized):
            with torch.no_grad():
                # mean |v| over the global batch under data-parallel training
                init = 2 * global_mean(v.detach().abs()) / math.sqrt(self.q_p)
                self.step.copy_(init.clamp_min(1e-8))
                self.initialized.fill_(True)
        # numel of the global batch for activations under data-parallel training
        numel = global_numel(v) if self.batch_sharded and self.training else v.numel()
        g = 1.0 / math.sqrt(numel * self.q_p)
        return (self.step - self.step * g).detach() + self.step * g

    def _quantize(self, v: Tensor) -> Tensor:
        return lsq_quantize(v, self._scaled_step(v), self.q_n, self.q_p)


class LSQWeight(_LSQ, WeightQuantizer):
    def forward(self, w: Tensor) -> Tensor:
        return self._quantize(w)

    def integer_grid(self) -> tuple[int, int]:
        """LSQ weights are ``q`` in ``[-Q_N, Q_P]``: ``(1, -Q_N)``."""
        return 1, -self.q_n

    def integer_weights(self, w: Tensor) -> tuple[Tensor, float]:
        s = float(self.step.detach())
        q = torch.round(torch.clamp(w.detach().double() / s, -self.q_n, self.q_p))
        return q.to(torch.int64), s


class LSQActivation(_LSQ, ActivationQuantizer):
    batch_sharded = True

    def forward(self, x: Tensor, sigma: float | Tensor = INFERENCE_SIGMA) -> Tensor:
        return self._quantize(x)

    def grid(self) -> ActivationGrid:
        s = float(self.step.detach())
        k = np.arange(-self.q_n, self.q_p, dtype=np.float64)
        return ActivationGrid(s * (k + 0.5), 1, -self.q_n, s)


def symmetric_limit(bits: int) -> int:
    """``Q = 2**(b-1) - 1``: the largest magnitude of a symmetric signed b-bit grid."""
    return 2 ** (check_bits(bits) - 1) - 1


class PTQWeight(WeightQuantizer):
    """Per-output-channel symmetric weights of post-training quantization.

    ``s_o = max|w_o| / Q`` (``s_o = 1`` for an all-zero channel), ``Q = 2**(b-1) - 1``,
    ``W_int = clip(round(w / s_o), -Q, Q)`` (half-to-even), ``w_hat = W_int * s_o``. The
    scales come from the weights themselves: no state, nothing to calibrate. Computed in
    float64 (as ClimbQ's codes), so training-free models and their export agree.
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.limit = symmetric_limit(bits)

    def _scales(self, w: Tensor) -> Tensor:
        peak = w.detach().double().abs().flatten(1).amax(dim=1)
        return torch.where(peak > 0, peak / self.limit, torch.ones_like(peak))

    def forward(self, w: Tensor) -> Tensor:
        w_int, scale = self.integer_weights(w)
        shape = (-1,) + (1,) * (w.dim() - 1)
        return (w_int.double() * scale.view(shape)).to(w.dtype)

    def integer_grid(self) -> tuple[int, int]:
        """``W_int = code - Q``, codes ``0..2Q`` (within ``0..2**b - 1``): ``(1, -Q)``."""
        return 1, -self.limit

    def integer_weights(self, w: Tensor) -> tuple[Tensor, Tensor]:
        scale = self._scales(w)
        shape = (-1,) + (1,) * (w.dim() - 1)
        q = torch.round(w.detach().double() / scale.view(shape))
        return q.clamp(-self.limit, self.limit).to(torch.int64), scale


class PTQActivation(ActivationQuantizer):
    """Per-tensor symmetric activations with a calibrated range ``r`` (buffer ``range``).

    ``s = r / Q``, ``X_int = clip(round(x / s), -Q, Q)`` (half-to-even), ``x_hat = X_int * s``;
    as thresholds: ``j = #{k : x >= s (k + 1/2)}``, ``k = -Q .. Q - 1``, ``X_int = j - Q``
    (ties round up there, half-to-even here: only exact ties can differ). ``range`` is NaN
    until :mod:`climbq_deploy.calibration` calibrates it; an uncalibrated quantizer refuses to run.
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.limit = symmetric_limit(bits)
        self.register_buffer("range", torch.tensor(float("nan"), dtype=torch.float64))

    def set_range(self, value: float) -> None:
        """Set ``r`` (> 0, finite, in the units of x)."""
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"activation range must be finite and > 0, got {value}")
        self.range.fill_(value)

    def step(self) -> float:
        """``s = r / Q`` (float64)."""
        r = float(self.range)
        if not math.isfinite(r) or r <= 0:
            raise ConfigError(
                f"ptq activation quantizer ({self.bits} bits) has no calibrated range (r = {r}); "
                "PTQ models are made by `climbq calibrate`, not trained"
            )
        return r / self.limit

    def forward(self, x: Tensor, sigma: float | Tensor = INFERENCE_SIGMA) -> Tensor:
        s = self.step()
        return round_ste(x / s).clamp(-self.limit, self.limit) * s

    def grid(self) -> ActivationGrid:
        s = self.step()
        k = np.arange(-self.limit, self.limit, dtype=np.float64)
        return ActivationGrid(s * (k + 0.5), 1, -self.limit, s)


METHODS = ("fp32", "climbq", "climbq+", "uniform", "lsq", "ptq")
_WEIGHT = {
    "climbq": ClimbQWeight,
    "climbq+": ClimbQWeight,
    "uniform": UniformWeight,
    "lsq": LSQWeight,
    "ptq": PTQWeight,
}
_ACTIVATION = {
    "climbq": ClimbQActivation,
    "climbq+": ClimbQActivation,
    "uniform": UniformActivation,
    "lsq": LSQActivation,
    "ptq": PTQActivation,
}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    return method


def make_weight_quantizer(method: str, bits: int) -> WeightQuantizer | None:
    """The weight quantizer of ``method`` at ``bits``, or None for fp32 / 32 bits."""
    check_method(method)
    check_bits(bits, "weight bits")
    if method == "fp32" or bits == FULL_PRECISION:
        return None
    return _WEIGHT[method](bits)


def make_activation_quantizer(method: str, bits: int) -> ActivationQuantizer | None:
    """The activation quantizer of ``method`` at ``bits``, or None for fp32 / 32 bits."""
    check_method(method)
    check_bits(bits, "activation bits")
    if method == "fp32" or bits == FULL_PRECISION:
        return None
    return _ACTIVATION[method](bits)
