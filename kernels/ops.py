"""Integer kernels, one per IR op: the oracle every target is checked against.

Layout: activations are NHWC (batch first, channels last), conv weights OHWI. Each docstring
states the integer contract. Integer arithmetic is exact: convolutions run as im2col + GEMM on
float32 only when the bounds pass proves every partial sum below 2**24 (float32 represents all
integers up to 2**24 exactly, so every product and sum is exact), otherwise on float64 (exact
below 2**53, which int32-bounded accumulators always are; the kernel refuses larger bounds).
"""

from __future__ import annotations

import numpy as np

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
        patches = xf[:, ::stride, ::stride, :][:, :ho, :wo, :].reshape(n * ho * wo, c)
    else:  # im2col: kh * kw shifted views side by side, columns ordered (i, j, c) as OHWI
        patches = np.concatenate(
            [xf[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
             for i in range(kh) for j in range(kw)], axis=-1,
        ).reshape(n * ho * wo, kh * kw * c)  # fmt: skip
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
    x: np.ndarray,
    thresholds: np.ndarray,
    direction: np.ndarray,
    mult: int,
    offset: int,
    shift: int = 0,
) -> np.ndarray:
    """``X[..., c] = mult * #{t : d_c x[..., c] >= theta[c, t]} + offset`` (compare and count).

    Inputs: integer ``x`` (channels last) within int32 with ``|x| < 2**31 - 1``, integer
    ``theta`` ``(C, n)`` within int32 and non-decreasing along t, ``d`` int8 ``(C,)`` in
    {-1, 0, 1}. Up to 15 levels the comparisons are counted one level at a time (int32
    compares); beyond, the count is found by binary search over the sorted levels (``b``
    rounds of one compare each: ``j`` grows by ``2**k`` when level ``j + 2**k`` is reached),
    which gives the same count because thresholds are sorted. With ``shift > 0`` the counted
    value is ``(d_c x + 2**(shift - 1)) >> shift`` (round half up: the requantization of
    LiteRT's int16 conv output; int64 arithmetic). Output int32.
    """
    channels, levels = thresholds.shape
    if shift:
        wide = x.astype(np.int64) * direction.astype(np.int64)
        value = ((wide + (1 << (shift - 1))) >> shift).astype(np.int32)
    else:
        value = x.astype(np.int32, copy=False) * direction.astype(np.int32)
    theta = thresholds.astype(np.int32, copy=False)
    if levels <= 15:
        count = np.zeros(value.shape, np.uint8)
        reached = np.empty(value.shape, bool)
        for t in range(levels):
            np.greater_equal(value, theta[:, t], out=reached)
            np.add(count, reached, out=count, casting="unsafe")
    else:
        rounds = int(levels).bit_length()
        padded = np.full((channels, 2**rounds), np.iinfo(np.int64).max)  # never reached
        padded[:, :levels] = theta
        flat = padded.T.ravel()  # level-major: index = level * C + channel
        channel = np.arange(channels, dtype=np.int64)
        count = np.zeros(value.shape, np.int64)
        for k in reversed(range(rounds)):
            candidate = count + 2**k
            reached = value >= flat[(candidate - 1) * channels + channel]
            count = np.where(reached, candidate, count)
    out = count.astype(np.int32)
    out *= mult
    out += offset
    return out


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
