"""The integer arithmetic every target's lowering shares, in one place.

Targets differ in which ops they build, not in the numbers: each computes a layer as
``X = mult * #{t : d_c acc >= theta_ct} + offset`` with ``acc = conv(X_in, W_int)``, and each
must keep every intermediate exact in the number type its runtime uses (int16 conv outputs in
LiteRT, float32 in TensorRT/ONNX). This module holds that arithmetic as plain integers and
NumPy, so the emitters only build graphs from it and tests check it exactly:

- :func:`partial_sum_bound`: the largest partial sum any accumulation order reaches;
- :func:`signed_weight`: the direction-folded filter ``d_c W_int``;
- :func:`conv_padding`: whether a runtime's implicit "SAME" padding equals the conv's;
- :func:`undilated_weight`: a dilated filter written out with zeros, for a kernel that takes
  no dilation (at the cost of the zeros' multiply-adds);
- :class:`DigitPlan`: a stem input split into digits whose convs stay exact
  (:func:`int16_digit_plan` for LiteRT, :func:`float32_digit_plan` for ONNX);
- :class:`CountPlan`: the compare-and-count's thresholds, multiplier, offset and direction;
- :func:`value_steps`: the step every value of an integer tensor is a multiple of.

Units: every quantity here is an integer in the units of its tensor (``scale`` per unit, see
:mod:`climbq_deploy.ir.graph`); no rounding happens anywhere in this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.graph import (
    Add,
    Concat,
    Graph,
    IntConv,
    MaxPool,
    Node,
    Relu,
    ThresholdAct,
)

__all__ = [
    "FLOAT32_EXACT",
    "INT16_PART_LIMIT",
    "CountPlan",
    "DigitPlan",
    "conv_padding",
    "count_plan",
    "dilated_span",
    "float32_digit_bits",
    "float32_digit_plan",
    "int16_digit_plan",
    "nhwc_pads",
    "partial_sum_bound",
    "signed_weight",
    "undilated_weight",
    "value_steps",
]

FLOAT32_EXACT = 2**24  # float32 holds every integer of smaller magnitude exactly
INT16_PART_LIMIT = 2**15  # an int16 conv output is exact while |acc| < 2**15
INT32_MAX = 2**31 - 1


# -- convs ------------------------------------------------------------------------------------


def partial_sum_bound(weight: np.ndarray, lo: int, hi: int) -> int:
    """Largest ``|partial sum|`` any accumulation order can reach: ``max_o sum |W| max|x|``.

    ``weight`` is any ``(O, ...)`` integer filter, inputs lie in ``[lo, hi]`` (zero padding adds
    zeros, which never raise the bound). Exact integer (int64 sums of ``|W|``); 0 for a filter
    without taps."""
    w = np.abs(weight.reshape(weight.shape[0], -1).astype(np.int64))
    return int(w.sum(axis=1).max() * max(abs(lo), abs(hi), 0)) if w.size else 0


def signed_weight(weight: np.ndarray, direction: np.ndarray, dtype: type = np.int64) -> np.ndarray:
    """The filter ``d_c W_int[c, ...]`` (output channel first): a conv with it writes
    ``d_c acc_c``, the value the count compares, so no separate multiply by the direction is
    needed (``d_c = 0``, a constant channel, gives an all-zero filter and the value 0).

    Computed in ``dtype`` (``W_int`` and ``d`` cast first, then multiplied): exact for the integer
    types and for float32/64 (``|W_int| <= 255``). In a float type a zero times ``-1`` is
    ``-0.0``, as a float conv's filter stores it; the value is the same."""
    return weight.astype(dtype) * direction.astype(dtype)[:, None, None, None]


def dilated_span(kernel: int, dilation: int) -> int:
    """The rows (or columns) a kernel of ``kernel`` taps spaced ``dilation`` apart covers:
    ``d (k - 1) + 1`` (``k`` itself undilated)."""
    return dilation * (kernel - 1) + 1


def conv_padding(conv: IntConv) -> str:
    """How an NHWC runtime pads ``conv`` (torch-style symmetric zero padding ``p``): ``"VALID"``
    (``p = 0``), ``"SAME"`` (TFLite's "SAME" pads ``floor((K - 1) / 2)`` before and the rest
    after, ``K`` the dilated kernel's span :func:`dilated_span`; equal to ``p`` on every side
    only at stride 1 with an odd ``K`` and ``p = K // 2``), else ``"PAD"``: an explicit zero
    pad of ``p`` (:func:`nhwc_pads`), then "VALID"."""
    span = dilated_span(conv.weight.shape[1], conv.dilation)
    if conv.padding == 0:
        return "VALID"
    if conv.stride == 1 and conv.padding == span // 2 and span % 2 == 1:
        return "SAME"
    return "PAD"


def undilated_weight(weight: np.ndarray, dilation: int) -> np.ndarray:
    """An OHWI filter with ``dilation`` written out as zeros: the undilated filter ``W'`` of
    span ``K = d (k - 1) + 1`` with ``W'[o, d i, d j, c] = W[o, i, j, c]`` and 0 elsewhere.

    A conv with ``W'`` (dilation 1, the same stride and padding) equals the dilated conv with
    ``W`` exactly: output ``y`` reads ``x[s y + i' - p]`` at tap ``i'``; the nonzero taps are
    ``i' = d i``, i.e. ``x[s y + d i - p]`` times ``W[i]``, and the zero taps add nothing. The
    output size ``(H + 2 p - K) // s + 1`` is the dilated conv's. ``sum |W'_o| = sum |W_o|``,
    so every partial-sum bound is unchanged.

    Cost: ``K**2 / k**2`` times the multiply-adds (3x3, d = 2: 25 / 9 = 2.8x; d = 3: 49 / 9 =
    5.4x), and the filter grows by the same factor; a runtime that takes dilation itself is
    cheaper. Zeros are off the odd weight grids (``2 code - n``), so a form that stores codes
    ``(W - offset) / mult`` or splits ``W`` into odd parts must see ``W'`` only after that
    step, or not at all."""
    if dilation == 1:
        return weight
    out_c, kh, kw, cin = weight.shape
    spread = np.zeros(
        (out_c, dilated_span(kh, dilation), dilated_span(kw, dilation), cin), weight.dtype
    )
    spread[:, ::dilation, ::dilation, :] = weight
    return spread


def nhwc_pads(p: int) -> np.ndarray:
    """The ``(4, 2)`` int32 pad amounts of an NHWC tensor padded by ``p`` on H and W."""
    return np.array([[0, 0], [p, p], [p, p], [0, 0]], np.int32)


# -- digit splits of the stem input -------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DigitPlan:
    """A conv of a wide integer input computed exactly from digit convs.

    The input ``x`` (already zero-padded) is offset to ``u = x + offset`` and split into digits,
    most significant first: ``u = sum_k bases[k] u_k`` with ``u_k = floor(r_k / bases[k])``
    and ``r_{k+1} = r_k mod bases[k]`` (floor division, ``r_0 = u``; the last base is 1, so the
    last digit is the remainder). Each digit is convolved on its own (no padding: ``x`` is
    padded, so every tap sees ``offset`` added), every partial sum of each digit conv stays
    below ``part_limit`` in magnitude (exact in the runtime's type), and

        ``conv(x)_o = sum_k bases[k] conv(u_k)_o + correction_o``,

    ``correction_o = -offset * sum W_o`` (the offset's contribution through every tap). All in
    integers; :meth:`split` and :meth:`recombine` are the NumPy form of what a target builds.
    With ``offset = 0`` padding the digits instead of ``x`` is the same (digits of 0 are 0).
    """

    bases: tuple[int, ...]
    offset: int
    correction: np.ndarray = field(repr=False)
    part_limit: int

    def split(self, x: np.ndarray) -> list[np.ndarray]:
        """The digits ``u_k`` of ``u = x + offset`` (int64, most significant first)."""
        rest = x.astype(np.int64) + self.offset
        digits = []
        for base in self.bases[:-1]:
            digits.append(rest // base)
            rest = rest % base
        digits.append(rest)
        return digits

    def recombine(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        """``sum_k bases[k] parts[k] + correction`` (int64; channels last)."""
        pairs = zip(self.bases, parts, strict=True)
        return sum(base * part.astype(np.int64) for base, part in pairs) + self.correction

    def apply(self, x: np.ndarray, conv: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``conv(x)`` from ``conv`` of each digit of the padded ``x``: ``recombine(split)``."""
        return self.recombine([conv(digit) for digit in self.split(x)])


def int16_digit_plan(weight: np.ndarray, width: int, source: str) -> DigitPlan:
    """LiteRT's stem: ``b``-bit digits of ``u = I + 2**(B-1)`` in ``[0, 2**B)``.

    ``weight`` is the signed filter ``d_c W_int`` (int8 storage), ``width`` ``B`` the input's
    bits (``I`` in ``[-2**(B-1), 2**(B-1))``). ``b`` is the largest width in 1..8 with
    ``max_c sum |W_c| (2**b - 1) < 2**15``, so each digit's int16 conv output (digits in
    ``[0, 2**b)``) is its exact accumulator; ``ceil(B / b)`` digits, bases ``2**(b k)``
    most significant first, correction ``-2**(B-1) sum W_c``. The int32 sum is exact because
    ``|conv(u)| < 2**B max sum |W| <= 2**31 - 1`` (checked). Refuses (``LoweringError``
    naming ``source``) filters beyond int8 or too large for a 1-bit digit, and inputs too wide
    for int32."""
    c = weight.shape[0]
    rows = weight.astype(np.int64).reshape(c, -1)
    weight_sum = int(np.abs(rows).sum(axis=1).max())
    bits = (
        max(b for b in range(1, 9) if weight_sum * (2**b - 1) < INT16_PART_LIMIT)
        if weight_sum < 2**14
        else 0
    )
    if bits == 0 or np.abs(weight).max(initial=0) > 127:
        raise LoweringError(f"stem {source!r}: weights too large for the digit split")
    if weight_sum * 2**width > INT32_MAX:
        raise LoweringError(f"stem {source!r}: {width}-bit input times weights exceeds int32")
    count = -(-width // bits)  # digits of u in [0, 2**width)
    offset = 2 ** (width - 1)
    return DigitPlan(
        bases=tuple(2 ** (bits * k) for k in range(count - 1, -1, -1)),
        offset=offset,
        correction=-offset * rows.sum(axis=1),
        part_limit=INT16_PART_LIMIT,
    )


def float32_digit_bits(weight: np.ndarray, lo: int, hi: int) -> int | None:
    """Bits ``D`` of the low digit when a float32 conv of inputs in ``[lo, hi]`` needs a split,
    else None.

    ``I = 2**D h + l`` with ``h = floor(I / 2**D)`` and ``l`` in ``[0, 2**D)``: the smallest
    ``D`` with both digit convs' partial sums (:func:`partial_sum_bound` of ``[0, 2**D - 1]``
    and of ``|h| <= ceil(max|I| / 2**D)``) below 2**24, float32's exact integers. None when the
    plain conv already is; ``LoweringError`` when no ``D`` in 1..30 is."""
    if partial_sum_bound(weight, lo, hi) < FLOAT32_EXACT:
        return None
    for bits in range(1, 31):
        high = -(-max(abs(lo), abs(hi)) // 2**bits)
        if (
            max(partial_sum_bound(weight, 0, 2**bits - 1), partial_sum_bound(weight, -high, high))
            < FLOAT32_EXACT
        ):
            return bits
    raise LoweringError(f"stem input range [{lo}, {hi}] has no exact float32 digit split")


def float32_digit_plan(weight: np.ndarray, lo: int, hi: int) -> DigitPlan | None:
    """ONNX/TensorRT's stem: two digits ``I = 2**D h + l`` (:func:`float32_digit_bits`), each
    convolved exactly in float32, recombined ``2**D conv(h) + conv(l)`` in int32 (no offset,
    no correction); None when the plain float32 conv is exact."""
    bits = float32_digit_bits(weight, lo, hi)
    if bits is None:
        return None
    return DigitPlan(
        bases=(2**bits, 1),
        offset=0,
        correction=np.zeros(weight.shape[0], np.int64),
        part_limit=FLOAT32_EXACT,
    )


# -- compare and count --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CountPlan:
    """The numbers of a compare-and-count: ``X_c = mult * #{t : v_c >= thresholds[c, t]} +
    offset`` with ``v_c = direction_c x_c``, or ``v = x`` when ``direction`` is None (the conv
    before it already wrote ``d_c acc``: :func:`signed_weight`).

    ``thresholds`` int64 ``(C, n)`` (non-decreasing along t; a constant channel, ``d_c = 0``,
    compares ``v = 0`` against 0 for levels passed and 1 for the rest), ``direction`` int64
    ``(C,)`` in {-1, 0, 1}. Integers throughout; a runtime compares them in any type that holds
    ``v`` and the thresholds exactly."""

    thresholds: np.ndarray
    mult: int
    offset: int
    direction: np.ndarray | None

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``X`` (int64, channels last) of integer values ``x``."""
        v = x.astype(np.int64)
        if self.direction is not None:
            v = v * self.direction
        count = (v[..., None] >= self.thresholds).sum(axis=-1)
        return self.mult * count + self.offset


def count_plan(act: ThresholdAct, folded: bool) -> CountPlan:
    """The :class:`CountPlan` of ``act``; ``folded``: its input is a conv whose filter carries
    the direction (``direction`` None), else the count multiplies by ``d`` itself."""
    return CountPlan(
        thresholds=act.thresholds.astype(np.int64),
        mult=int(act.mult),
        offset=int(act.offset),
        direction=None if folded else act.direction.astype(np.int64),
    )


# -- value steps --------------------------------------------------------------------------------


def _act_step(node: ThresholdAct, steps: dict[str, int]) -> int:
    return math.gcd(int(node.mult), int(node.offset)) or 1


def _relu_step(node: Relu, steps: dict[str, int]) -> int:
    return steps.get(node.inputs[0], 1)


def _add_step(node: Add, steps: dict[str, int]) -> int:
    return math.gcd(*(steps.get(n, 1) for n in node.inputs)) or 1


def _max_pool_step(node: MaxPool, steps: dict[str, int]) -> int:
    return steps.get(node.inputs[0], 1)  # a max of multiples of m is one of them


def _concat_step(node: Concat, steps: dict[str, int]) -> int:
    return math.gcd(*(steps.get(n, 1) for n in node.inputs)) or 1


VALUE_STEP_RULES: dict[type[Node], Callable[[Node, dict[str, int]], int]] = {
    ThresholdAct: _act_step,
    Relu: _relu_step,
    Add: _add_step,
    MaxPool: _max_pool_step,
    Concat: _concat_step,
}


def value_steps(graph: Graph) -> dict[str, int]:
    """For each integer tensor, an ``m`` with every value a multiple of ``m``:
    ``mult * count + offset`` gives ``gcd(mult, offset)``, ReLU keeps it (0 is a multiple), as
    does max pool (a max is one of its values), an add or a concat takes the gcd of its inputs
    (:data:`VALUE_STEP_RULES`); tensors of other ops are absent
    (step 1)."""
    steps: dict[str, int] = {}
    for node in graph.nodes:
        rule = VALUE_STEP_RULES.get(type(node))
        if rule is not None:
            steps[node.output] = rule(node, steps)
    return steps
