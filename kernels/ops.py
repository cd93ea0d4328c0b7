"""Integer kernels, one per IR op: the oracle every target is checked against.

Layout: activations are NHWC (batch first, channels last), conv weights OHWI. Each docstring
states the integer contract. Integer arithmetic is exact: convolutions run as im2col + GEMM on
float32 only when the bounds pass proves every partial sum below 2**24 (float32 represents all
integers up to 2**24 exactly, so every product and sum is exact), otherwise on float64 (exact
below 2**53, which int32-bounded accumulators always are; the kernel refuses larger bounds).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

FLOAT32_EXACT = 2**24
INT32_MAX = 2**31 - 1


def input_quant(
    images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...], step: float
) -> np.ndarray:
    """uint8 NHWC images to int32 ``I = round_half_even((p / 255 - mean_c) / std_c / step)``.

    Computed in float64 (``step = 2**-k`` with ``k <= 24``, so ``|I| < 2**26``). Output int32
    NHWC.
    """
    p = images.astype(np.float64) / 255.0
    values = np.rint((p - np.asarray(mean)) / np.asarray(std) / step)
    return values.astype(np.int32)


def int_conv(
    x: np.ndarray, weight: np.ndarray, stride: int, padding: int, groups: int,
    partial_bound: int,
) -> np.ndarray:  # fmt: skip
    """``acc[n, y, x, o] = sum_{i, j, c} W[o, i, j, c] * X[n, s y + i - p, s x + j - p, g(o) c]``.

    Inputs: integer NHWC ``x``, int8 OHWI ``weight`` (``I = C / groups``), zero padding.
    Output: int32 NHWC accumulators. ``partial_bound`` (from the bounds pass) bounds every
    partial sum and must fit int32: below 2**24 the GEMM runs in float32, else in float64
    (exact below 2**53). No rounding anywhere: the result is the exact integer sum.
    """
    if partial_bound > INT32_MAX:
        raise ValueError(f"partial sums up to {partial_bound} do not fit the int32 accumulator")
    dtype = np.float32 if partial_bound < FLOAT32_EXACT else np.float64
    out_ch, kh, kw, cin_g = weight.shape
    n, h, w, c = x.shape
    xf = x.astype(dtype, copy=False)
    if padding:
        xf = np.pad(xf, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho, wo = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    wf = weight.astype(dtype)
    if groups == c and cin_g == 1 and out_ch == c:  # depthwise: kh * kw shifted products
        acc = np.zeros((n, ho, wo, c), dtype)
        for i in range(kh):
            for j in range(kw):
                window = xf[:, i : i + stride * (ho - 1) + 1 : stride,
                            j : j + stride * (wo - 1) + 1 : stride, :]  # fmt: skip
                acc += window * wf[:, i, j, 0]
        return acc.astype(np.int32)
    if kh == kw == 1:
        cols = xf[:, ::stride, ::stride, :][:, :ho, :wo, :]
        patches = cols.reshape(n * ho * wo, c)
    else:
        view = sliding_window_view(xf, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
        # view: (n, ho, wo, c, kh, kw) -> rows (n ho wo), columns (kh, kw, c) as OHWI
        patches = view.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, kh * kw * c)
    if groups == 1:
        acc = patches @ wf.reshape(out_ch, -1).T
    else:
        acc = np.empty((n * ho * wo, out_ch), dtype)
        per_out, cols = out_ch // groups, patches.reshape(n * ho * wo, kh * kw, c)
        for g in range(groups):
            part = cols[:, :, g * cin_g : (g + 1) * cin_g].reshape(n * ho * wo, -1)
            block = wf[g * per_out : (g + 1) * per_out].reshape(per_out, -1)
            acc[:, g * per_out : (g + 1) * per_out] = part @ block.T
    return acc.reshape(n, ho, wo, out_ch).astype(np.int32)


def threshold_act(
    x: np.ndarray, thresholds: np.ndarray, direction: np.ndarray, mult: int, offset: int
) -> np.ndarray:
    """``X[..., c] = mult * #{t : d_c x[..., c] >= theta[c, t]} + offset`` (compare and count).

    Inputs: integer ``x`` (channels last), integer ``theta`` ``(C, n)`` non-decreasing along t,
    ``d`` int8 ``(C,)`` in {-1, 0, 1}. The count is computed as one binary search
    (``searchsorted(..., side="right")`` = number of thresholds ``<= value``, which equals
    the number of comparisons ``value >= theta_t`` that hold) over all channels at once, the
    channels separated by a per-channel offset larger than the value range. Output int32.
    """
    channels, levels = thresholds.shape
    value = x.astype(np.int64) * direction.astype(np.int64)
    theta = thresholds.astype(np.int64)
    lo = min(int(value.min(initial=0)), int(theta.min(initial=0)))
    hi = max(int(value.max(initial=0)), int(theta.max(initial=0)))
    span = hi - lo + 2
    base = np.arange(channels, dtype=np.int64) * span
    flat = (theta - lo + base[:, None]).ravel()
    counts = (
        np.searchsorted(flat, value - lo + base, side="right")
        - np.arange(channels, dtype=np.int64) * levels
    )
    return (mult * counts + offset).astype(np.int32)


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)``, dtype unchanged."""
    return np.maximum(x, 0)


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a + b`` in int32 (the bounds pass proves the sum fits)."""
    return a.astype(np.int32) + b.astype(np.int32)


def global_sum_pool(x: np.ndarray) -> np.ndarray:
    """``s[n, c] = sum_{h, w} x[n, h, w, c]`` in int64 (bounded by the bounds pass)."""
    return x.astype(np.int64).sum(axis=(1, 2))


def linear(s: np.ndarray, weight: np.ndarray, bias: np.ndarray, scale: float) -> np.ndarray:
    """Float head: ``logits = (s * scale) @ W.T + b`` in float64 (``s`` the integer pool sums,
    ``scale`` their unit: input step / (H W))."""
    return (s.astype(np.float64) * scale) @ weight.T.astype(np.float64) + bias


def int_linear(
    s: np.ndarray, weight: np.ndarray, weight_scale: np.ndarray, bias: np.ndarray, scale: float
) -> np.ndarray:
    """int8 head: ``acc = s @ W_q.T`` exact in int64, ``logits = acc * w_scale * scale + b``."""
    acc = s.astype(np.int64) @ weight.T.astype(np.int64)
    return acc * (weight_scale * scale) + bias
