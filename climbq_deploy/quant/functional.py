"""The quantizers' math as plain functions (method §2, §3).

Notation: ``b`` bits, ``n = 2**b - 1``, ``Phi`` the standard normal CDF, ``round`` half-to-even
(``torch.round``). Codes ``j`` are integers in ``0..n``; their integer form is the odd grid
``2j - n`` in ``[-n, n]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from climbq_deploy.errors import ConfigError

SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8, 32)
FULL_PRECISION = 32
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def check_bits(bits: int, what: str = "bits") -> int:
    """Return ``bits`` if it is 2..8 or 32 (= no quantization); else raise ConfigError."""
    if not isinstance(bits, int) or isinstance(bits, bool) or bits not in SUPPORTED_BITS:
        raise ConfigError(f"{what} must be one of 2..8 or 32 (off), got {bits!r}")
    return bits


def levels(bits: int) -> int:
    """``n = 2**bits - 1``: the largest code."""
    return 2 ** check_bits(bits) - 1


def normal_cdf(x: Tensor) -> Tensor:
    """``Phi(x) = (1 + erf(x / sqrt 2)) / 2``, differentiable, in x's dtype."""
    return 0.5 * (1.0 + torch.erf(x * _SQRT_HALF))


def round_ste(x: Tensor) -> Tensor:
    """``round(x)`` (half-to-even) forward, identity gradient backward (straight-through)."""
    return x + (torch.round(x) - x).detach()


def weight_codes(w: Tensor, bits: int) -> Tensor:
    """ClimbQ weight codes (§2): ``j = round(n * Phi((w - mean) / std))``, int64 in ``0..n``.

    ``std`` is unbiased (``torch.std``). Computed in float64 whatever w's dtype, so training
    (which calls :func:`climbq_weight_unit`) and export see the same codes.
    """
    n = levels(bits)
    if bits == FULL_PRECISION:
        raise ConfigError("weight_codes: 32 bits means no quantization; there are no codes")
    return torch.round(n * _weight_cdf(w.detach().double())).to(torch.int64)


def weight_rounding_error(w: Tensor, bits: int) -> Tensor:
    """The weight quantizer's rounding residual in code units: ``n * Phi((w - mean) / std) - j``
    with ``j`` the code of :func:`weight_codes`, float64, in ``[-1/2, 1/2]``.

    Its squared sum over a model's quantized convs is the "total weight quantization error" we
    report for the paper's scaling ablation (Table 6 view): for residuals spread uniformly its
    expectation is ``N / 12`` for ``N`` weights (22,521 for ResNet-20's 270,256 conv weights, the
    paper's unscaled figure being 21,856); weights sitting on their grid points make it smaller.
    """
    n = levels(bits)
    if bits == FULL_PRECISION:
        raise ConfigError("weight_rounding_error: 32 bits means no quantization")
    u = n * _weight_cdf(w.detach().double())
    return u - torch.round(u)


def _weight_cdf(w: Tensor) -> Tensor:
    std = w.std()
    if not torch.isfinite(std) or std <= 0:
        raise ConfigError(
            f"ClimbQ weight quantizer needs a tensor with positive finite std, got {float(std)} "
            f"(shape {tuple(w.shape)})"
        )
    return normal_cdf((w - w.mean()) / std)


def climbq_weight_unit(w: Tensor, bits: int) -> Tensor:
    """Quantized weights on the grid ``2j/n - 1`` in ``[-1, 1]`` (§2), straight-through on round.

    The CDF keeps its true derivative (mean and std inside autograd); float64 inside, result in
    w's dtype.
    """
    n = levels(bits)
    j = round_ste(n * _weight_cdf(w.double()))
    return (2.0 * j / n - 1.0).to(w.dtype)


def climbq_weight_unrounded(w: Tensor) -> Tensor:
    """The weight map of :func:`climbq_weight_unit` without its rounding: ``2 Phi(z) - 1`` with
    ``z = (w - mean) / std``, in ``(-1, 1)``, float64 inside, result in w's dtype.

    ``climbq_weight_unit(w, b) == 2 round(n u) / n - 1`` with ``u = (this + 1) / 2``: the
    difference between the two is the rounding alone, which is what a rounding-sensitivity
    probe (research/studies/rounding_sensitivity.py) removes one layer group at a time.
    """
    return (2.0 * _weight_cdf(w.double()) - 1.0).to(w.dtype)


def activation_codes(x: Tensor, bits: int, sigma: float | Tensor = 2.0) -> Tensor:
    """ClimbQ activation codes (§3): ``j = round(n * Phi(x / sigma))``, int64 in ``0..n``.

    ``sigma`` is a float or a tensor broadcastable to x (per-sample class scaling). Computed in
    x's floating dtype (float64 input gives scipy-exact codes).
    """
    n = levels(bits)
    if bits == FULL_PRECISION:
        raise ConfigError("activation_codes: 32 bits means no quantization; there are no codes")
    x = x.detach() if x.is_floating_point() else x.double()
    return torch.round(n * normal_cdf(x / sigma)).to(torch.int64)


def climbq_activation(x: Tensor, bits: int, sigma: float | Tensor = 2.0, r: float = 2.0) -> Tensor:
    """``x_hat = (2j/n - 1) * R`` with ``j = round(n * Phi(x / sigma))`` (§3), STE on round.

    Forward and backward are fused (:class:`_ClimbQActivation`): the gradient is that of the
    unrounded map, ``d x_hat / dx = 2R * phi(x / sigma) / sigma`` with ``phi`` the normal pdf;
    ``sigma`` (class scaling, computed from labels) gets no gradient.

    The value is computed as ``X_int * (R / n)`` with the integer ``X_int = 2j - n``, the
    integer program's own form: codes of opposite sign give exactly opposite floats, so an
    integer sum that is 0 (a residual add of ``X`` and ``-X``) is exactly 0.0 in float too,
    and the next quantizer sees the same exact tie ``n Phi(0) = n / 2`` as the integer
    program (half-to-even rounds it up, as the thresholds do: ``(n + 1) / 2`` is even).
    """
    n = levels(bits)
    return _ClimbQActivation.apply(x, n, sigma, r)


def climbq_activation_unrounded(x: Tensor, sigma: float | Tensor = 2.0, r: float = 2.0) -> Tensor:
    """The activation map of :func:`climbq_activation` without its rounding:
    ``R (2 Phi(x / sigma) - 1) = R erf(x / (sigma sqrt 2))``, in ``(-R, R)``, in x's dtype.

    :func:`climbq_activation` is this value with ``n Phi`` rounded to the code ``j``, i.e.
    ``(2 round(n (v / R + 1) / 2) / n - 1) R`` for ``v`` this value (§3).
    """
    return torch.erf(x / sigma * _SQRT_HALF) * r


class _ClimbQActivation(torch.autograd.Function):
    """One pass over x forward, one backward, no saved intermediates besides x."""

    @staticmethod
    def forward(ctx, x: Tensor, n: int, sigma: float | Tensor, r: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, sigma if isinstance(sigma, Tensor) else None)
        ctx.n, ctx.sigma, ctx.r = n, sigma, r
        u = x / sigma
        j = torch.erf_(u.mul_(_SQRT_HALF)).add_(1.0).mul_(0.5).mul_(n).round_()
        return j.mul_(2.0).sub_(n).mul_(r / n)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, None, None]:  # type: ignore[override]
        x, sigma_tensor = ctx.saved_tensors
        sigma = ctx.sigma if sigma_tensor is None else sigma_tensor
        u = x / sigma
        # 2R * phi(u) / sigma = 2R / (sigma sqrt(2 pi)) * exp(-u^2 / 2)
        slope = torch.exp_(u.square_().mul_(-0.5)).mul_(2.0 * ctx.r * _INV_SQRT_2PI).div_(sigma)
        return grad * slope, None, None, None


def class_scaled_sigma(
    labels: Tensor, num_classes: int, base: float = 2.0, counts: Tensor | None = None
) -> Tensor:
    """Per-sample ``sigma_i = base - p_i`` of the authors' class scaling (§3), shape ``B``.

    ``p_i = c(y_i) / sum_m c(y_m)`` with ``c(k)`` the fraction of the batch labelled ``k``;
    equivalently ``p_i = count(y_i) / sum_k count(k)**2``. ``counts`` are the batch's class
    counts when the batch is larger than ``labels`` (data-parallel training: the global batch);
    by default those of ``labels``. Used in training only; inference uses ``sigma = base``.
    """
    if counts is None:
        counts = torch.bincount(labels, minlength=num_classes)
    counts = counts.to(torch.float32)
    p = counts[labels] / counts.square().sum()
    return base - p


def uniform_activation(x: Tensor, bits: int, r: float = 2.0) -> Tensor:
    """Clipped uniform activation (the baseline): ``j = round(n (clip(x, -R, R) + R) / 2R)``,
    ``x_hat = (2j - n) * (R / n)``, STE on round.

    Fused (:class:`_UniformActivation`): one pass forward, one backward, only x saved. The
    gradient is ``d x_hat / dx = 1`` on ``[-R, R]`` (ends included) and 0 outside, computed by
    the same float operations, in the same order, as autograd through the unfused expression
    (:func:`uniform_activation_reference`), so both give bit-identical values and gradients.
    """
    return _UniformActivation.apply(x, levels(bits), r)


def uniform_activation_reference(x: Tensor, bits: int, r: float = 2.0) -> Tensor:
    """The unfused expression of :func:`uniform_activation` (autograd through every op)."""
    n = levels(bits)
    j = round_ste(n * (x.clamp(-r, r) + r) / (2 * r))
    return (2.0 * j - n) * (r / n)


class _UniformActivation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, n: int, r: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.n, ctx.r = n, r
        # round_ste's y + (round(y) - y) is round(y) exactly for y in [0, n] (Sterbenz)
        j = x.clamp(-r, r).add_(r).mul_(n).div_(2 * r).round_()
        return j.mul_(2.0).sub_(n).mul_(r / n)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        n, r = ctx.n, ctx.r
        # autograd's chain, op by op: * (R/n), * 2, / 2R, * n, then clamp's mask (ends pass)
        g = grad.mul(r / n).mul_(2.0).div_(2 * r).mul_(n)
        inside = (x >= -r).logical_and_(x <= r)
        return torch.where(inside, g, torch.zeros((), dtype=g.dtype)), None, None


def lsq_quantize(v: Tensor, s: Tensor, q_n: int, q_p: int) -> Tensor:
    """LSQ (Esser et al. 2020): ``v_hat = round(clip(v / s, -Q_N, Q_P)) * s``, STE on round.

    ``s`` is the (already gradient-scaled) 0-dim step. Fused (:class:`_LSQQuantize`): only v
    and s are saved. Gradients, as autograd gives them through the unfused expression
    (:func:`lsq_quantize_reference`), by the same float operations in the same order:

    - ``dv = where(-Q_N <= v/s <= Q_P, g * s, 0) / s``;
    - ``ds = sum(g * q) + sum(-where(.., g * s, 0) * ((v / s) / s))``, each sum cast to s's
      dtype before the two are added (``q = round(clip(v / s))``).
    """
    return _LSQQuantize.apply(v, s, q_n, q_p)


def lsq_quantize_reference(v: Tensor, s: Tensor, q_n: int, q_p: int) -> Tensor:
    """The unfused expression of :func:`lsq_quantize` (autograd through every op)."""
    return round_ste(torch.clamp(v / s, -q_n, q_p)) * s


def _sum_to_scalar(t: Tensor) -> Tensor:
    """``t`` summed over every dim as autograd's ``sum_to`` reduces a broadcast 0-dim input."""
    return t.sum(dim=tuple(range(t.dim())), keepdim=True).reshape(()) if t.dim() else t


class _LSQQuantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: Tensor, s: Tensor, q_n: int, q_p: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(v, s)
        ctx.q_n, ctx.q_p = q_n, q_p
        return torch.div(v, s).clamp_(-q_n, q_p).round_().mul_(s)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:  # type: ignore[override]
        v, s = ctx.saved_tensors
        q_n, q_p = ctx.q_n, ctx.q_p
        u = torch.div(v, s)
        inside = (u >= -q_n).logical_and_(u <= q_p)
        q = u.clamp(-q_n, q_p).round_()
        g_clip = torch.where(inside, grad * s, torch.zeros((), dtype=grad.dtype))
        grad_v = g_clip / s if ctx.needs_input_grad[0] else None
        grad_s = None
        if ctx.needs_input_grad[1]:
            from_product = _sum_to_scalar(grad * q).to(s.dtype)
            from_ratio = _sum_to_scalar(-g_clip * (u.div_(s))).to(s.dtype)
            grad_s = from_product + from_ratio
        return grad_v, grad_s, None, None
