"""Integer kernels, one per IR op: the oracle every target is checked against.

Layout: activations are NHWC (batch first, channels last), conv weights OHWI. Each docstring
states the integer contract. Integer arithmetic is exact: convolutions run as im2col + GEMM on
float32 only when the bounds pass proves every partial sum below 2**24 (float32 represents all
integers up to 2**24 exactly, so every product and sum is exact), otherwise on float64 (exact
below 2**53, which int32-bounded accumulators always are; the kernel refuses larger bounds).

No kernel wraps around silently: where NumPy's fixed-width arithmetic could overflow for inputs
outside a kernel's contract (int32 edges), the kernel checks its inputs or widens to int64 and
raises :class:`KernelError` (a ``ValueError`` too) naming the values, never returns a wrapped
result.
"""

from __future__ import annotations

import numpy as np

from climbq_deploy.errors import KernelError

FLOAT32_EXACT = 2**24
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _span(x: np.ndarray) -> tuple[int, int]:
    """``(min, max)`` of an integer array as Python ints (``(0, 0)`` when empty)."""
    return (int(x.min()), int(x.max())) if x.size else (0, 0)


def input_quant(
    images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...], step: float
) -> np.ndarray:
    """uint8 NHWC images to int32 ``I = round_half_even((p / 255 - mean_c) / std_c / step)``.

    Computed in float64 (``step = 2**-k`` with ``k <= 24``, so ``|I| < 2**26``). Output int32
    NHWC.
    """
    p = images.astype(np.float64) / 255.0
    values = np.rint((p - np.asarray(mean)) / np.asarray(std) / step)
    if values.size and (values.min() < INT32_MIN or values.max() > INT32_MAX):
        raise KernelError(
            f"input_quant: values [{values.min()}, {values.max()}] leave int32 "
            f"(mean {mean}, std {std}, step {step})"
        )
    return values.astype(np.int32)


def int_conv(
    x: np.ndarray,
    weight: np.ndarray,
    stride: int,
    padding: int,
    groups: int,
    partial_bound: int,
    dilation: int = 1,
) -> np.ndarray:
    """``acc[n, y, x, o] = sum_{i, j, c} W[o, i, j, c] * X[n, s y + d i - p, s x + d j - p,
    g(o) C_g + c]`` with ``C_g = C / G`` and ``g(o) = o // (O / G)`` (torch's grouping).

    Inputs: integer NHWC ``x``, int8 OHWI ``weight`` (``I = C / groups``), zero padding ``p``,
    stride ``s``, dilation ``d`` (tap ``i`` of the kernel reads ``d i`` rows below the first),
    ``G = groups`` dividing ``C`` and ``O``. Output: int32 NHWC accumulators,
    ``H_out = (H + 2 p - d (kh - 1) - 1) // s + 1`` (likewise ``W_out``). ``partial_bound``
    (from the bounds pass) bounds every partial sum and must fit int32: below 2**24 the GEMM
    runs in float32, else in float64 (exact below 2**53). No rounding anywhere: the result is
    the exact integer sum. The bound is checked against the actual inputs (``max_o sum |W_o| *
    max |x|``, one pass over ``x``), so inputs outside the proven range raise instead of giving
    inexact or wrapped sums. Dilation and groups change which inputs meet which weights, never
    the bound (each output still sums ``|W_o|``-weighted inputs).
    """
    if partial_bound > INT32_MAX:
        raise KernelError(f"partial sums up to {partial_bound} do not fit the int32 accumulator")
    out_ch, kh, kw, cin_g = weight.shape
    n, h, w, c = x.shape
    if dilation < 1 or groups < 1 or c % groups or out_ch % groups or cin_g * groups != c:
        raise KernelError(
            f"int_conv: weight {weight.shape} with groups {groups}, dilation {dilation} does "
            f"not fit an input of {c} channels"
        )
    lo, hi = _span(x)
    weight_sum = int(np.abs(weight.astype(np.int64)).reshape(out_ch, -1).sum(1).max(initial=0))
    if weight_sum * max(-lo, hi) > partial_bound:
        raise KernelError(
            f"int_conv: inputs in [{lo}, {hi}] with weight sum |W| {weight_sum} give partial sums "
            f"up to {weight_sum * max(-lo, hi)}, beyond the proven bound {partial_bound}"
        )
    dtype = np.float32 if partial_bound < FLOAT32_EXACT else np.float64
    xf = x.astype(dtype, copy=False)
    if padding:
        xf = np.pad(xf, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    wf = weight.astype(dtype)

    def tap(i: int, j: int) -> np.ndarray:
        """The inputs kernel tap ``(i, j)`` meets at every output position: ``(n, ho, wo, C)``."""
        top, left = dilation * i, dilation * j
        return xf[
            :,
            top : top + stride * (ho - 1) + 1 : stride,
            left : left + stride * (wo - 1) + 1 : stride,
        ]

    if groups == c and cin_g == 1 and out_ch == c:  # depthwise: kh * kw shifted products
        acc = np.zeros((n, ho, wo, c), dtype)
        for i in range(kh):
            for j in range(kw):
                acc += tap(i, j) * wf[:, i, j, 0]
        return acc.astype(np.int32)
    if kh == kw == 1:
        patches = xf[:, ::stride, ::stride, :][:, :ho, :wo, :].reshape(n * ho * wo, c)
    else:  # im2col: kh * kw shifted views side by side, columns ordered (i, j, c) as OHWI
        patches = np.concatenate(
            [tap(i, j) for i in range(kh) for j in range(kw)], axis=-1
        ).reshape(n * ho * wo, kh * kw * c)
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
    shift: np.ndarray | None = None,
) -> np.ndarray:
    """``X[..., c] = mult * #{t : d_c x[..., c] >= theta[c, t]} + offset`` (compare and count).

    Inputs: integer ``x`` (channels last), integer ``theta`` ``(C, n)`` non-decreasing along t,
    ``d`` int8 ``(C,)`` in {-1, 0, 1}. The compares run in int32 when ``d x`` and ``theta`` fit
    it (``|x| <= 2**31 - 1``, the lowered program's case), else in int64 (so ``x = -2**31``
    with ``d = -1``, or a threshold ``2**31`` meaning "never reached", count exactly). Up to 15
    levels the comparisons are counted one level at a time (int32
    compares); beyond, the count is found by binary search over the sorted levels (``b``
    rounds of one compare each: ``j`` grows by ``2**k`` when level ``j + 2**k`` is reached),
    which gives the same count because thresholds are sorted.

    ``shift`` (None: none) is the per-channel requantization ``s`` (int ``(C,)``, ``0..31``):
    channel c counts ``(d_c x + 2**(s_c - 1)) >> s_c`` where ``s_c > 0`` (floor of
    ``d_c x / 2**s_c + 1/2``: round half up, also for negative values, as LiteRT's int16 conv
    output with multiplier ``2**-s_c``) and ``d_c x`` where ``s_c = 0``; int64 arithmetic,
    exact (``|d_c x| < 2**62``). The shifted value is no wider than ``d_c x``. Output int32.
    """
    channels, levels = thresholds.shape
    (x_lo, x_hi), (t_lo, t_hi) = _span(x), _span(thresholds)
    if max(-x_lo, x_hi) >= 2**62:
        raise KernelError(f"threshold_act: inputs [{x_lo}, {x_hi}] beyond int64 headroom")
    fits = max(-x_lo, x_hi) <= INT32_MAX and t_lo >= INT32_MIN and t_hi <= INT32_MAX
    narrow = np.int32 if fits else np.int64
    if shift is not None and np.any(shift):
        s = np.asarray(shift)
        if s.shape != (channels,) or s.dtype.kind not in "iu" or s.min() < 0 or s.max() > 31:
            raise KernelError(
                f"threshold_act: shift must be ({channels},) integers in 0..31, "
                f"got shape {s.shape}, dtype {s.dtype}"
            )
        s = s.astype(np.int64)
        half = np.where(s > 0, np.left_shift(1, np.maximum(s - 1, 0)), 0)
        wide = x.astype(np.int64) * direction.astype(np.int64)
        value = ((wide + half) >> s).astype(narrow)
    else:
        value = x.astype(narrow, copy=False) * direction.astype(narrow)
    theta = thresholds.astype(narrow, copy=False)
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
    """``a + b`` in int32 (the bounds pass proves the sum fits; checked, summed in int64)."""
    total = a.astype(np.int64) + b.astype(np.int64)
    lo, hi = _span(total)
    if lo < INT32_MIN or hi > INT32_MAX:
        raise KernelError(f"add: sums in [{lo}, {hi}] leave int32")
    return total.astype(np.int32)


def max_pool(x: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
    """``y[n, i, j, c] = max_{0 <= a, b < k} x[n, s i + a - p, s j + b - p, c]`` over the
    positions inside the input (torch's ``max_pool2d``: padding is -inf, it never wins).

    Inputs: integer NHWC ``x``; ``kernel`` ``k >= 1``, ``stride`` ``s >= 1``, ``padding``
    ``0 <= p <= k // 2`` (so every window holds at least one input position). Output: the
    same dtype, ``H_out = (H + 2 p - k) // s + 1`` (floor, no ceil mode), likewise ``W_out``.
    Exact: a max of integers, computed in the input's dtype (the padding is the dtype's
    smallest value, which a window's real values are never below).
    """
    n, h, w, c = x.shape
    if not (kernel >= 1 and stride >= 1 and 0 <= padding <= kernel // 2):
        raise KernelError(
            f"max_pool: kernel {kernel}, stride {stride}, padding {padding} need kernel >= 1, "
            "stride >= 1 and 0 <= padding <= kernel // 2"
        )
    ho, wo = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    if ho < 1 or wo < 1:
        raise KernelError(
            f"max_pool: kernel {kernel} is larger than the padded input {h}x{w} (padding {padding})"
        )
    if x.dtype.kind not in "iu":
        raise KernelError(f"max_pool: integer input expected, got {x.dtype}")
    floor = np.iinfo(x.dtype).min
    padded = np.pad(
        x,
        ((0, 0), (padding, padding), (padding, padding), (0, 0)),
        constant_values=floor,
    )
    out = np.full((n, ho, wo, c), floor, x.dtype)
    for a in range(kernel):
        for b in range(kernel):
            window = padded[
                :, a : a + stride * (ho - 1) + 1 : stride, b : b + stride * (wo - 1) + 1 : stride
            ]
            np.maximum(out, window, out=out)
    return out


def concat(xs: list[np.ndarray]) -> np.ndarray:
    """``y[n, h, w, :] = (x_1[n, h, w, :], ..., x_k[n, h, w, :])``: integer NHWC tensors of
    equal batch and spatial shape joined along channels in order (``torch.cat(dim=1)`` in
    NCHW); equal scales are the program's contract, so no value changes. Output: the widest
    input dtype."""
    if not xs or any(x.shape[:-1] != xs[0].shape[:-1] for x in xs):
        raise KernelError(
            f"concat: inputs must share batch and spatial shape, got {[x.shape for x in xs]}"
        )
    return np.concatenate(xs, axis=-1)


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
