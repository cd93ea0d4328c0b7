"""Fast exact forms of the ClimbQ layer on LiteRT builtin ops, chosen per layer.

Today's int16 form (:mod:`.export`: 16x8 conv, GREATER_EQUAL, CAST, SUM) is exact but runs
outside XNNPACK. The forms here compute the same integers with ops XNNPACK runs (float32 and
int8 convs, clamps, sums), so a whole model is one XNNPACK partition wherever every layer has
one:

**The sign sum.** For an integer ``v`` and an integer threshold ``t``,
``clamp(2 (v - t) + 1, -1, 1)`` is exactly ``+1`` when ``v >= t`` and ``-1`` otherwise
(``2 (v - t) + 1`` is odd, so never 0). Summed over a channel's ``n`` thresholds,
``S = 2 count - n``, so the code is ``X = mult count + offset = (mult / 2) S + (mult n / 2 +
offset)``: for ClimbQ (``mult = 2``, ``offset = -n``) the sum *is* the code. Thresholds beyond
the value's bound ``B`` are clamped to ``±(B + 1)`` first (no count changes).

- ``float-signs``: a float32 conv of the integer codes (exact: every partial sum is an integer
  below 2**24, :func:`~.flavour.float_conv_is_exact`), a 1x1 ``DEPTHWISE_CONV_2D`` with
  multiplier ``n`` (weight 2, bias ``1 - 2 t``, fused ``RELU_N1_TO_1``) giving the ``n``
  signs, ``SUM`` over them. Exact when ``2 B + 3 < 2**24`` (``2 v`` is exact, ``1 - 2 t`` is
  exact, their sum is rounded once and an odd integer keeps its sign and ``|.| >= 1`` under
  rounding to nearest; the clamp then gives exactly ±1).
- ``int8-signs``: an int8 conv with every output channel repeated ``n`` times, filter ``2 W``,
  int32 bias ``1 - 2 t``, input/filter/output scale 1 and fused ``RELU_N1_TO_1`` (the
  requantization multiplies by exactly 1: the odd accumulator's sign survives, the clamp
  gives ±1), then a block-diagonal 1x1 int8 conv summing each channel's ``n`` signs with
  filter scale ``mult / 2`` and bias ``n + 2 offset / mult`` (scale ``mult / 2``): output
  ``(S + n) mult / 2 + offset = X`` exactly. Needs int8 codes in and out, ``|2 W| <= 127``,
  ``mult`` a power of two and ``4 B + 3 < 2**30`` (LiteRT's reference requantization shifts
  the accumulator left once). Costs ``n`` times the conv's multiply-adds: best for small n.
- the stem (20-bit input, partial sums beyond 2**24): ``I = 2**D h + l`` in two digit planes
  (:func:`~climbq_deploy.ir.integer_forms.float32_digit_plan`), one exact float32 conv each,
  ``2 (acc - t) + 1 = 2**(D+1) (A_h - t_h) + (2 A_l + 1 - 2 t_l)`` with ``t = 2**D t_h +
  t_l``: each term is exact in float32 (checked: ``|A_h - t_h| < 2**24``, ``|2 A_l + 1 - 2
  t_l| < 2**24``), one ADD rounds their odd sum once, keeping its sign; ``RELU_N1_TO_1``.
- anything else (a layer the int16 flavour requantizes, partial sums too large): the int16
  form of :mod:`.export`, converted in and out.

**Dilation and groups.** The builtin forms use LiteRT's own: the convs' dilation factors, a
grouped ``CONV_2D`` (filter ``(O, k, k, C / G)``), a depth multiplier
(:func:`~.export.conv_filter`), measured exact on every kernel path: no extra work. The fused
kernel takes only dense or depthwise, undilated convs, so :func:`_fused_layer` rewrites: a
dilated filter written out with zeros (``K**2 / k**2`` the multiply-adds, ``K = d (k - 1) +
1``: 2.8x for a 3x3 filter at ``d = 2``), a grouped conv as one fused op per group on a SLICE
of the input, CONCATENATION of the codes (:func:`fused_pieces`; no extra multiply-adds, one
copy each way). The fused op stores ``d W`` as is, so the zeros need no weight grid.

Which form a layer takes is decided by :func:`choose_forms` from a cost model whose constants
were measured on LiteRT 2.3 / XNNPACK (see :data:`COSTS`).

Tensors travel between layers as float32 (codes as exact float integers) or int8 (scale 1,
zero point 0): ``QUANTIZE`` / ``DEQUANTIZE`` convert exactly (integers within int8).

``MaxPool`` and ``Concat`` move integers without arithmetic, so they keep the view they get:
int8 (XNNPACK runs int8 MAX_POOL_2D and CONCATENATION; equal scale 1 and zero point 0, so
neither requantizes) wherever the values fit int8 and an input is int8 already (a max pool
also when its input has no float view yet), which keeps them int8 between fused ops; else
float32 (exact: integers below 2**24); else int32 (a concat; no LiteRT pool takes int32).
The pool's padding is explicit (:func:`~.pooling.max_pool_2d`: torch's is not TFLite's SAME).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.graph import (
    Add,
    Concat,
    GlobalSumPool,
    Graph,
    InputQuant,
    IntConv,
    Linear,
    MaxPool,
    Relu,
    ThresholdAct,
)
from climbq_deploy.ir.integer_forms import (
    FLOAT32_EXACT,
    conv_padding,
    dilated_span,
    nhwc_pads,
    partial_sum_bound,
    signed_weight,
    undilated_weight,
)
from climbq_deploy.ir.layers import ConvLayer, iter_layers, op_entry
from climbq_deploy.targets.tflite import export as int16_form
from climbq_deploy.targets.tflite.flavour import float_conv_is_exact, input_type
from climbq_deploy.targets.tflite.pooling import max_pool_2d

__all__ = [
    "COSTS",
    "FORMS",
    "FusedPiece",
    "LayerCost",
    "choose_forms",
    "fused_pieces",
    "write_fast_tflite",
]

FLOAT_SIGNS, INT8_SIGNS, INT16, FUSED = "float-signs", "int8-signs", "int16", "fused"
FORMS = (INT8_SIGNS, FLOAT_SIGNS, INT16, FUSED)
INT8_MIN, INT8_MAX = -128, 127
# LiteRT's reference int8 requantization by 1.0 computes acc * 2 in int32 first.
REF_REQUANT_LIMIT = 2**30
# LiteRT 2.3's optimized float DEPTHWISE_CONV_2D never returns when its output has more than
# 4832 channels (its accumulation buffer holds no whole pixel then; measured: 322 x 15
# channels run, 323 x 15 hang, with XNNPACK off). Past it the float sign stage is a broadcast
# MUL and ADD instead (:func:`_signs`).
FLOAT_DEPTHWISE_LIMIT = 4832
# The fused op takes dense and depthwise convs only: a conv of G other groups becomes G ops
# (:func:`fused_pieces`); past this many the layer keeps its builtin form (LiteRT's grouped
# conv) rather than become a chain of tiny ops.
FUSED_MAX_PIECES = 16
FUSED_MAX_KERNEL = 65536  # the fused kernel's limit on kernel sizes (climbq_conv_count.c)


@dataclass(frozen=True)
class Costs:
    """Seconds per unit of work in each form, batch 1, one thread (XNNPACK, LiteRT 2.3).

    ``float_mac``: one float32 conv multiply-add; ``int8_mac``: one int8 conv multiply-add;
    ``sign_element``: one output element of the float sign stage (depthwise with multiplier
    ``n`` plus the SUM), per output value ``H W C`` (it is dominated by per-element overhead,
    hardly by ``n``: measured, so no per-level term)."""

    float_mac: float
    int8_mac: float
    sign_element: float


COSTS = Costs(float_mac=20e-12, int8_mac=5.3e-12, sign_element=4.8e-9)
"""Fitted to single-layer LiteRT 2.3 / XNNPACK timings, batch 1, one thread, x86-64 AVX-512
(3x3 convs, 32x32x16, 16x16x32 and 8x8x64, n = 3, 7 and 15; ``bench/tflite_forms.py``,
results in ``bench/results/tflite_forms.md``): the float32 conv costs ~20 ps per
multiply-add, the int8 conv with ``n`` repeats ~5.3 ps per multiply-add (its ``n``-fold work
and the block-diagonal sum), the float sign stage (depthwise with multiplier ``n`` plus the
SUM) ~4.8 ns per output value ``H W C`` and hardly depends on ``n``. Only the ratios between
forms matter for the choice: int8 wins at n = 3 (3.2x a plain int8 conv against 9x), float
at n = 15 (9x against 15x)."""


@dataclass(frozen=True)
class LayerCost:
    """A layer's candidate forms, each with its estimated seconds (None: not exact here), and
    the one chosen."""

    layer: str
    costs: dict[str, float | None]
    chosen: str
    extra_levels: int = 0
    """Fused op only: never-reached thresholds appended so that its input shapes name its
    output shape (see :func:`choose_forms`)."""


# -- which forms are exact for a layer ----------------------------------------------------


def _bound(graph: Graph, name: str) -> tuple[int, int]:
    return graph.tensors[name].bounds or (-(2**31), 2**31 - 1)


def _acc_bound(graph: Graph, conv: IntConv) -> int:
    lo, hi = _bound(graph, conv.inputs[0])
    return partial_sum_bound(conv.weight, lo, hi)


def _fits_int8(graph: Graph, name: str) -> bool:
    lo, hi = _bound(graph, name)
    return lo >= INT8_MIN and hi <= INT8_MAX


def _power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _int8_sum_bias(act: ThresholdAct) -> int | None:
    """``n + 2 offset / mult`` when it is an integer and ``mult`` a power of two, else None."""
    n, mult, offset = act.thresholds.shape[1], int(act.mult), int(act.offset)
    if not _power_of_two(mult) or (2 * offset) % mult:
        return None
    return n + 2 * offset // mult


def int8_signs_exact(graph: Graph, layer: ConvLayer) -> str | None:
    """None when the ``int8-signs`` form computes ``layer`` exactly, else why not."""
    conv, act = layer.conv, layer.act
    if layer.stem:
        return "the stem reads the wide input"
    if act.shift is not None:
        return "the int16 flavour requantizes this layer"
    if 2 * int(np.abs(conv.weight).max(initial=0)) > INT8_MAX:
        return "2 W leaves int8"
    if not _fits_int8(graph, conv.inputs[0]) or not _fits_int8(graph, act.output):
        return "codes leave int8"
    if _int8_sum_bias(act) is None:
        return f"mult {act.mult} / offset {act.offset} have no exact int8 sum"
    if 4 * _acc_bound(graph, conv) + 3 >= REF_REQUANT_LIMIT:
        return "accumulators too large for the reference requantization"
    return None


@dataclass(frozen=True)
class FusedPiece:
    """One ``CLIMBQ_CONV_COUNT`` op of a conv layer: it reads input channels ``in_start ..
    in_start + in_c - 1`` and writes output channels ``out_start .. out_start + out_c - 1``;
    ``groups`` is the op's own (1: dense, ``in_c``: depthwise)."""

    in_start: int
    in_c: int
    out_start: int
    out_c: int
    groups: int


def fused_pieces(graph: Graph, conv: IntConv) -> list[FusedPiece]:
    """The fused ops that compute ``conv`` exactly, given that the C kernel takes only a dense
    conv (``G = 1``) or a depthwise one (``G = C = O``), undilated:

    - dense or depthwise: one op (a dilated filter is written out by
      :func:`~climbq_deploy.ir.integer_forms.undilated_weight`, see :func:`_fused_layer`);
    - ``G`` groups otherwise (grouped, or depthwise with a channel multiplier): ``G`` dense
      ops, op ``g`` on input channels ``g C / G ..`` (a SLICE) writing output channels
      ``g O / G ..``; their int8 codes are joined by one CONCATENATION. Exact: torch's
      group ``g`` reads exactly those inputs and writes exactly those outputs, and each
      output channel keeps its own thresholds. Cost: no extra multiply-adds (the
      block-diagonal dense filter would take ``G`` times as many); ``G`` SLICE copies of the
      input (its size in all) and one concat copy of the output."""
    c_in = graph.tensors[conv.inputs[0]].shape[-1]
    out_c, groups = conv.weight.shape[0], conv.groups
    if groups == 1 or groups == c_in == out_c:
        return [FusedPiece(0, c_in, 0, out_c, groups)]
    per_in, per_out = c_in // groups, out_c // groups
    return [FusedPiece(g * per_in, per_in, g * per_out, per_out, 1) for g in range(groups)]


def fused_exact(graph: Graph, layer: ConvLayer) -> str | None:
    """None when the fused ``CLIMBQ_CONV_COUNT`` op computes ``layer`` exactly, else why not:
    int8 filter, codes out within int8, every partial sum within int32. A layer reads int8
    codes (the kernel's contract: ``max_o sum |W_o| 128`` within int32); the stem reads the
    int32 input (the kernel's int32 mode wraps modulo 2**32 and cannot know the input's range,
    so the bound over ``[lo, hi]`` is proven here). Dilated and grouped convs are rewritten
    for the kernel (:func:`fused_pieces`, undilated filters), which changes no partial-sum
    bound; more than :data:`FUSED_MAX_PIECES` ops for one layer is refused."""
    conv, act = layer.conv, layer.act
    if act.shift is not None:
        return "the int16 flavour requantizes this layer"
    pieces = len(fused_pieces(graph, conv))
    if pieces > FUSED_MAX_PIECES:
        return f"{conv.groups} groups would take {pieces} fused ops (at most {FUSED_MAX_PIECES})"
    if dilated_span(conv.weight.shape[1], conv.dilation) >= FUSED_MAX_KERNEL:
        return f"the dilated kernel spans {FUSED_MAX_KERNEL} or more"
    if int(np.abs(conv.weight).max(initial=0)) > INT8_MAX:
        return "W leaves int8"
    if not layer.stem and not _fits_int8(graph, conv.inputs[0]):
        return "codes leave int8"
    if not _fits_int8(graph, act.output):
        return "codes leave int8"
    lo, hi = _bound(graph, conv.inputs[0]) if layer.stem else (INT8_MIN, INT8_MAX)
    if partial_sum_bound(conv.weight, lo, hi) > 2**31 - 2:
        return "accumulators may leave int32"
    if not 1 <= act.thresholds.shape[1] <= 255:
        return "levels beyond 1..255"
    return None


def fused_count_exact(graph: Graph, node: ThresholdAct) -> str | None:
    """None when the fused op computes the count of a non-conv value (a residual sum) exactly
    as a 1x1 depthwise ``CLIMBQ_CONV_COUNT`` with filter ``d`` (the direction, int8): the
    value and the codes within int8, 1..255 levels, no requantization; else why not."""
    if node.shift is not None:
        return "the int16 flavour requantizes this count"
    if not _fits_int8(graph, node.inputs[0]) or not _fits_int8(graph, node.output):
        return "values or codes leave int8"
    if not 1 <= node.thresholds.shape[1] <= 255:
        return "levels beyond 1..255"
    return None


def rectifier(graph: Graph, name: str) -> Relu | None:
    """The ``Relu`` that is the only consumer of tensor ``name`` (not a graph output), else
    None: the fused op then applies it (``max(code, 0)``, its ``relu`` flag) and the code
    before it is never stored."""
    if name == graph.output:
        return None
    consumers = graph.consumers(name)
    if len(consumers) == 1 and isinstance(consumers[0], Relu):
        return consumers[0]
    return None


def float_signs_exact(graph: Graph, layer: ConvLayer) -> str | None:
    """None when the ``float-signs`` form computes ``layer`` exactly, else why not."""
    conv, act = layer.conv, layer.act
    if act.shift is not None:
        return "the int16 flavour requantizes this layer"
    if layer.stem:
        return _stem_plan(graph, layer)[1]
    if not float_conv_is_exact(graph, conv):
        return "partial sums reach 2**24"
    if 2 * _acc_bound(graph, conv) + 3 >= FLOAT32_EXACT:
        return "2 acc + 1 - 2 t leaves float32's exact integers"
    return None


def _stem_plan(graph: Graph, layer: ConvLayer) -> tuple[int | None, str | None]:
    """``(D, None)``: the stem's digit bits (None: one plain float32 conv is exact), or
    ``(None, reason)`` when no exact float form exists (see module docstring)."""
    conv = layer.conv
    lo, hi = _bound(graph, conv.inputs[0])
    if max(abs(lo), abs(hi)) >= FLOAT32_EXACT:
        return None, "the input leaves float32's exact integers"
    weight = signed_weight(conv.weight, layer.act.direction)
    bound = partial_sum_bound(weight, lo, hi)
    if bound < FLOAT32_EXACT and 2 * bound + 3 < FLOAT32_EXACT:
        return None, None
    peak = max(abs(lo), abs(hi))
    for bits in range(1, 31):  # the first digit width whose every term is exact
        high = -(-peak // 2**bits)
        bound_h = partial_sum_bound(weight, -high, high)
        bound_l = partial_sum_bound(weight, 0, 2**bits - 1)
        t_h = (bound + 1) // 2**bits + 1  # |t_h| of thresholds clamped to ±(bound + 1)
        if bound_h + t_h < FLOAT32_EXACT and 2 * bound_l + 2 ** (bits + 1) < FLOAT32_EXACT:
            return bits, None
    return None, "no digit split of the stem keeps every term within float32's exact integers"


def _costs(graph: Graph, layer: ConvLayer) -> dict[str, float | None]:
    """Estimated seconds of each exact form of ``layer`` (:data:`COSTS`); None: not exact."""
    conv, act = layer.conv, layer.act
    ho, wo, c = graph.tensors[conv.output].shape
    n = act.thresholds.shape[1]
    macs = ho * wo * c * int(np.prod(conv.weight.shape[1:]))
    values = ho * wo * c
    costs: dict[str, float | None] = {INT8_SIGNS: None, FLOAT_SIGNS: None, INT16: 1.0}
    if int8_signs_exact(graph, layer) is None:
        costs[INT8_SIGNS] = COSTS.int8_mac * (macs * n + values * n * c)
    if float_signs_exact(graph, layer) is None:
        digits = 2 if layer.stem and _stem_plan(graph, layer)[0] is not None else 1
        costs[FLOAT_SIGNS] = COSTS.float_mac * macs * digits + COSTS.sign_element * values * digits
    return costs


def choose_forms(graph: Graph, fused: bool = False) -> list[LayerCost]:
    """Each conv layer's form: with ``fused``, the ``CLIMBQ_CONV_COUNT`` op wherever it is
    exact; else (and elsewhere) the cheapest exact builtin form by :data:`COSTS` (the int16
    form only where no other is exact)."""
    chosen = []
    # LiteRT's custom-op kernel interface asks for output shapes from input shapes alone: two
    # fused ops with equal input, filter and threshold shapes must give equal output shapes
    # (a stride-2 depthwise layer can share all three with a stride-1 one). Such a layer gets
    # ``k`` extra thresholds at ``B + 1``, beyond every accumulator (no count changes), the
    # smallest ``k`` that makes its threshold shape unique.
    fused_outputs: dict[tuple, tuple] = {}
    t = graph.tensors

    def extra_levels(
        in_shape: tuple[int, ...],
        weight_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        act: ThresholdAct,
    ) -> int:
        n = act.thresholds.shape[1]
        for k in range(0, 256 - n):
            top = int(act.mult) * (n + k) + int(act.offset)  # the kernel checks its code range
            if k and not INT8_MIN <= top <= INT8_MAX:
                break
            key = (in_shape, weight_shape, (weight_shape[0], n + k))
            if fused_outputs.setdefault(key, out_shape) == out_shape:
                return k
        return -1

    def conv_extra_levels(layer: ConvLayer) -> int:
        """For the layer's fused ops (:func:`fused_pieces`: equal shapes, one choice)."""
        conv = layer.conv
        piece = fused_pieces(graph, conv)[0]
        h, w, _ = t[conv.inputs[0]].shape
        ho, wo, _ = t[conv.output].shape
        _, kh, kw, per_group = conv.weight.shape
        d = conv.dilation
        weight_shape = (piece.out_c, dilated_span(kh, d), dilated_span(kw, d), per_group)
        return extra_levels((h, w, piece.in_c), weight_shape, (ho, wo, piece.out_c), layer.act)

    for layer in iter_layers(graph):
        if isinstance(layer, ConvLayer):
            costs = _costs(graph, layer)
            fast = {k: v for k, v in costs.items() if v is not None and k != INT16}
            pick = min(fast, key=lambda k: fast[k]) if fast else INT16
            if fused and fused_exact(graph, layer) is None:
                k = conv_extra_levels(layer)
                if k >= 0:
                    chosen.append(LayerCost(layer.act.output, costs, FUSED, k))
                    continue
            chosen.append(LayerCost(layer.act.output, costs, pick))
        elif isinstance(layer, ThresholdAct) and fused and fused_count_exact(graph, layer) is None:
            c = t[layer.output].shape[-1]
            k = extra_levels(t[layer.inputs[0]].shape, (c, 1, 1, 1), t[layer.output].shape, layer)
            if k >= 0:
                chosen.append(LayerCost(layer.output, {}, FUSED, k))
    return chosen


# -- the writer -----------------------------------------------------------------------------


class _FastEmit(int16_form._Emit):
    """:class:`~.export._Emit` with a float32 and an int8 view of each IR tensor besides the
    int32 one (``index``); views are converted on demand, exactly."""

    def __init__(self, graph: Graph, batch: int, weights: str, input_form: str = "uint8") -> None:
        super().__init__(graph, batch, weights, input_form)
        self.floats: dict[str, int] = {}
        self.int8s: dict[str, int] = {}
        self.forms: dict[str, str] = {}
        self.extra_levels: dict[str, int] = {}

    def const(self, name: str, values: np.ndarray, dtype: str, **quant: object) -> int:
        return self.b.add_tensor(name, values.shape, dtype, data=values.astype(dtype), **quant)

    def int8_tensor(self, name: str, shape: tuple[int, ...]) -> int:
        return self.b.add_tensor(name, shape, "int8", scale=1.0, zero_point=0)

    def float_view(self, name: str) -> int:
        if name not in self.floats:
            out = self.b.add_tensor(f"{name}/float", self.shape(name), "float32")
            if name in self.int8s:
                self.b.add_operator("DEQUANTIZE", [self.int8s[name]], [out])
            else:
                source = self.index.get(name, self.int16_of.get(name))
                self.b.add_operator("CAST", [source], [out])
            self.floats[name] = out
        return self.floats[name]

    def int8_view(self, name: str) -> int:
        if name not in self.int8s:
            out = self.int8_tensor(f"{name}/int8", self.shape(name))
            self.b.add_operator("QUANTIZE", [self.float_view(name)], [out])
            self.int8s[name] = out
        return self.int8s[name]

    def int32_view(self, name: str) -> int:
        if name not in self.index:
            out = self.b.add_tensor(f"{name}/int32", self.shape(name), "int32")
            source = self.int16_of.get(name)
            self.b.add_operator(
                "CAST", [self.float_view(name) if source is None else source], [out]
            )
            self.index[name] = out
        return self.index[name]


def write_fast_tflite(
    graph: Graph,
    batch: int = 1,
    program: bytes | None = None,
    weights: str = "int8",
    fused: bool = False,
    input_form: str = "uint8",
) -> tuple[bytes, list[LayerCost]]:
    """The ``.tflite`` bytes of the program in the fast forms, and each layer's form.

    ``graph`` is the int16 flavour (:func:`~.flavour.int16_flavour`): its requantized layers
    keep the int16 form. ``weights`` applies to those only (the fast forms store int8 or
    float32 filters). ``fused``: layers as the ``CLIMBQ_CONV_COUNT`` custom op wherever it is
    exact (:func:`fused_exact`; a runtime needs the op registered, see :mod:`.custom_op`).
    ``input_form``: uint8 images in (:func:`~.export.image_input`) or the int32 ``I``."""
    e = _FastEmit(graph, batch, weights, input_form)
    choices = choose_forms(graph, fused)
    e.forms = {c.layer: c.chosen for c in choices}
    e.extra_levels = {c.layer: c.extra_levels for c in choices}
    for layer in iter_layers(graph):
        emit = op_entry(FAST_EMITTERS, layer)
        if emit is None:
            raise LoweringError(f"op {layer.op!r} ({layer.source!r}) has no TFLite form yet")
        emit(e, layer)
    return e.finish(program), choices


def _clamped_thresholds(act: ThresholdAct, bound: int, extra: int = 0) -> np.ndarray:
    """Thresholds clamped to ``[-(bound + 1), bound + 1]``: for values within ``±bound`` the
    count is unchanged (a threshold below every value stays below, above stays above).
    ``extra`` more columns at ``bound + 1`` (never reached: no count changes)."""
    theta = np.clip(act.thresholds.astype(np.int64), -(bound + 1), bound + 1)
    return np.pad(theta, ((0, 0), (0, extra)), constant_values=bound + 1)


def _conv_layer(e: _FastEmit, layer: ConvLayer) -> None:
    form = e.forms[layer.act.output]
    if form == FUSED:
        _fused_layer(e, layer)
    elif form == INT8_SIGNS:
        _int8_signs_layer(e, layer)
    elif form == FLOAT_SIGNS and layer.stem:
        _float_stem_layer(e, layer)
    elif form == FLOAT_SIGNS:
        _float_signs_layer(e, layer)
    else:
        if not layer.stem:
            e.int32_view(layer.conv.inputs[0])
        int16_form._conv_layer(e, layer)


def _float_conv(e: _FastEmit, conv: IntConv, weight: np.ndarray, x: int, tag: str) -> int:
    """:func:`~.export.float_conv` in this writer (exact accumulators, float32)."""
    return int16_form.float_conv(e.b, e.graph, conv, weight, x, e.batch, tag)


def _signs_shape(e: _FastEmit, hwc: tuple[int, int, int], n: int) -> tuple[int, ...]:
    """The sign tensor's shape: ``(N, H, W, C n)`` (depthwise), or ``(N, H, W, C, n)`` (the
    broadcast form, when ``C n`` passes :data:`FLOAT_DEPTHWISE_LIMIT`)."""
    ho, wo, c = hwc
    if c * n > FLOAT_DEPTHWISE_LIMIT:
        return (e.batch, ho, wo, c, n)
    return (e.batch, ho, wo, c * n)


def _signs(
    e: _FastEmit,
    name: str,
    value: int,
    hwc: tuple[int, int, int],
    weight: np.ndarray,
    bias: np.ndarray,
    activation: str = "RELU_N1_TO_1",
) -> int:
    """``clamp(weight_c value_c + bias_{c,t}, -1, 1)`` for each channel ``c`` and level ``t``
    (``bias`` (C, n), ``weight`` (C,), a power of two or 0: the product is exact, the sum is
    rounded once), float32 (:func:`_signs_shape`): a 1x1 depthwise conv with multiplier ``n``
    (channel ``c n + t``), or, past LiteRT's float depthwise limit, the value reshaped to
    ``(N, H, W, C, 1)``, MUL by ``weight`` and a broadcast ADD of ``bias`` with the clamp
    fused."""
    ho, wo, c = hwc
    n = bias.shape[1]
    shape = _signs_shape(e, hwc, n)
    out = e.b.add_tensor(f"{name}/signs", shape, "float32")
    if len(shape) == 5:
        column = e.b.add_tensor(f"{name}/column", (e.batch, ho, wo, c, 1), "float32")
        e.b.add_operator("RESHAPE", [value], [column], new_shape=[-1, ho, wo, c, 1])
        scaled = e.b.add_tensor(f"{name}/column_scaled", (e.batch, ho, wo, c, 1), "float32")
        factor = e.const(f"{name}/sign_weight", weight.reshape(c, 1), "float32")
        e.b.add_operator("MUL", [column, factor], [scaled])
        b = e.const(f"{name}/sign_bias", bias, "float32")
        e.b.add_operator("ADD", [scaled, b], [out], fused_activation=activation)
        return out
    w = e.const(f"{name}/sign_weight", np.repeat(weight, n).reshape(1, 1, 1, c * n), "float32")
    b = e.const(f"{name}/sign_bias", bias.reshape(-1), "float32")
    e.b.add_operator(
        "DEPTHWISE_CONV_2D",
        [value, w, b],
        [out],
        padding="VALID",
        depth_multiplier=n,
        fused_activation=activation,
    )
    return out


def _sum_signs(e: _FastEmit, act: ThresholdAct, signs: int, hwc: tuple[int, int, int]) -> None:
    """The code ``(mult / 2) S + (mult n / 2 + offset)`` from the signs (float32), named
    ``act.output``."""
    ho, wo, c = hwc
    n = act.thresholds.shape[1]
    b = e.b
    shape = (e.batch, ho, wo, c)
    if len(_signs_shape(e, hwc, n)) == 5:
        grouped = signs
    else:
        grouped = b.add_tensor(f"{act.output}/sign_levels", (*shape, n), "float32")
        b.add_operator("RESHAPE", [signs], [grouped], new_shape=[-1, *shape[1:], n])
    axis = e.const(f"{act.output}/sign_axis", np.array([4]), "int32")
    mult, offset = int(act.mult), int(act.offset)
    plain = mult == 2 and offset == -n
    total = b.add_tensor(act.output if plain else f"{act.output}/sign_sum", shape, "float32")
    b.add_operator("SUM", [grouped, axis], [total], keep_dims=False)
    if not plain:
        scaled = b.add_tensor(f"{act.output}/sign_scaled", shape, "float32")
        b.add_operator(
            "MUL",
            [total, e.const(f"{act.output}/half_mult", np.array(mult / 2), "float32")],
            [scaled],
        )
        code = b.add_tensor(act.output, shape, "float32")
        shift = e.const(f"{act.output}/code_offset", np.array(mult * n / 2 + offset), "float32")
        b.add_operator("ADD", [scaled, shift], [code])
        total = code
    e.floats[act.output] = total


def _float_signs_layer(e: _FastEmit, layer: ConvLayer) -> None:
    conv, act = layer.conv, layer.act
    weight = signed_weight(conv.weight, act.direction, np.float32)
    acc = _float_conv(e, conv, weight, e.float_view(conv.inputs[0]), "")
    theta = _clamped_thresholds(act, _acc_bound(e.graph, conv))
    hwc = e.graph.tensors[conv.output].shape
    c = hwc[2]
    signs = _signs(e, act.output, acc, hwc, np.full(c, 2.0), 1.0 - 2.0 * theta)
    _sum_signs(e, act, signs, hwc)


def _float_stem_layer(e: _FastEmit, layer: ConvLayer) -> None:
    """The stem from two digit planes (module docstring), or one plain float conv."""
    conv, act = layer.conv, layer.act
    bits, reason = _stem_plan(e.graph, layer)
    assert reason is None
    hwc = e.graph.tensors[conv.output].shape
    c = hwc[2]
    weight = signed_weight(conv.weight, act.direction, np.float32)
    lo, hi = _bound(e.graph, conv.inputs[0])
    bound = partial_sum_bound(signed_weight(conv.weight, act.direction), lo, hi)
    theta = _clamped_thresholds(act, bound)
    name = conv.inputs[0]
    if bits is None:
        acc = _float_conv(e, conv, weight, e.float_view(name), "")
        signs = _signs(e, act.output, acc, hwc, np.full(c, 2.0), 1.0 - 2.0 * theta)
        _sum_signs(e, act, signs, hwc)
        return
    b = e.b
    x = e.float_view(name)  # exact: |I| < 2**24
    shape = e.shape(name)

    def scaled(tensor: int, factor: float, tag: str) -> int:
        out = b.add_tensor(f"{name}/{tag}", shape, "float32")
        const = e.const(f"{name}/{tag}_factor", np.array(factor), "float32")
        b.add_operator("MUL", [tensor, const], [out])
        return out

    high = b.add_tensor(f"{name}/high", shape, "float32")  # floor(I / 2**D), exact
    b.add_operator("FLOOR", [scaled(x, 2.0**-bits, "over_base")], [high])
    low = b.add_tensor(f"{name}/low", shape, "float32")  # I - 2**D h in [0, 2**D), exact
    b.add_operator("SUB", [x, scaled(high, 2.0**bits, "high_times_base")], [low])
    planes = [high, low]
    acc_h = _float_conv(e, conv, weight, planes[0], "high_")
    acc_l = _float_conv(e, conv, weight, planes[1], "low_")
    t_h = np.floor_divide(theta, 2**bits)
    t_l = theta - 2**bits * t_h
    scale = float(2 ** (bits + 1))
    s_h = _signs(e, f"{act.output}/high", acc_h, hwc, np.full(c, scale), -scale * t_h, "NONE")
    s_l = _signs(e, f"{act.output}/low", acc_l, hwc, np.full(c, 2.0), 1.0 - 2.0 * t_l, "NONE")
    signs = b.add_tensor(f"{act.output}/signs", _signs_shape(e, hwc, theta.shape[1]), "float32")
    b.add_operator("ADD", [s_h, s_l], [signs], fused_activation="RELU_N1_TO_1")
    _sum_signs(e, act, signs, hwc)


def _int8_signs_layer(e: _FastEmit, layer: ConvLayer) -> None:
    conv, act = layer.conv, layer.act
    b, t = e.b, e.graph.tensors
    ho, wo, c = t[conv.output].shape
    n = act.thresholds.shape[1]
    k = c * n
    x = e.int8_view(conv.inputs[0])
    padding = conv_padding(conv)
    if padding == "PAD":
        p, (h_, w_, c_in) = conv.padding, t[conv.inputs[0]].shape
        padded = e.int8_tensor(f"{conv.output}/padded", (e.batch, h_ + 2 * p, w_ + 2 * p, c_in))
        b.add_operator("PAD", [x, e.const(f"{conv.output}/pads", nhwc_pads(p), "int32")], [padded])
        x, padding = padded, "VALID"
    weight = 2 * signed_weight(conv.weight, act.direction)
    theta = _clamped_thresholds(act, _acc_bound(e.graph, conv))
    unit = {"scale": [1.0] * k, "zero_point": [0] * k}
    options: dict[str, object] = {
        "padding": padding,
        "stride_h": conv.stride,
        "stride_w": conv.stride,
        "fused_activation": "RELU_N1_TO_1",
        **int16_form.dilation_options(conv),
    }
    # each output channel o repeated n times, as channels o n .. o n + n - 1: the repeats stay
    # in o's group (block g of O n / G channels), so the grouping is LiteRT's native one
    op, filt, extra = int16_form.conv_filter(conv, np.repeat(weight, n, axis=0))
    if op == "DEPTHWISE_CONV_2D":  # output channel c m n + j reads input channel c
        w = e.const(f"{conv.output}/weight_x2", filt, "int8", quantized_dimension=3, **unit)
        options["depth_multiplier"] = extra["depth_multiplier"]
    else:
        w = e.const(f"{conv.output}/weight_x2", filt, "int8", **unit)
    bias = e.const(f"{conv.output}/sign_bias", (1 - 2 * theta).reshape(-1), "int32", **unit)
    signs = e.int8_tensor(f"{act.output}/signs", (e.batch, ho, wo, k))
    b.add_operator(op, [x, w, bias], [signs], **options)
    blocks = np.zeros((c, 1, 1, k), np.int64)
    for ch in range(c):
        blocks[ch, 0, 0, ch * n : (ch + 1) * n] = 1
    half = [int(act.mult) / 2] * c
    sum_quant = {"scale": half, "zero_point": [0] * c}
    ones = e.const(f"{act.output}/sign_blocks", blocks, "int8", **sum_quant)
    shift = e.const(f"{act.output}/sum_bias", np.full(c, _int8_sum_bias(act)), "int32", **sum_quant)
    # A ReLU that is the code's only consumer is the sum conv's fused RELU (int8, scale 1,
    # zero point 0: exactly max(code, 0)); the output is then named after it (see _fused_op).
    relu = rectifier(e.graph, act.output)
    name = act.output if relu is None else relu.output
    code = e.int8_tensor(name, (e.batch, ho, wo, c))
    b.add_operator(
        "CONV_2D",
        [signs, ones, shift],
        [code],
        padding="VALID",
        **({} if relu is None else {"fused_activation": "RELU"}),
    )
    e.int8s[name] = code


def _fused_layer(e: _FastEmit, layer: ConvLayer) -> None:
    """The layer as ``CLIMBQ_CONV_COUNT`` ops (:mod:`.custom_op`): int8 codes in, the int8
    filter ``d W``, int32 thresholds clamped to ``±(B + 1)`` (``B`` the accumulator bound; no
    count changes), int8 codes ``mult count + offset`` out (see :func:`_fused_op`). The kernel
    takes no dilation: a dilated filter goes in written out with zeros
    (:func:`~climbq_deploy.ir.integer_forms.undilated_weight`, ``K**2 / k**2`` the
    multiply-adds; ``d W`` is stored as is, so the zeros are exact); a grouped conv goes in as
    one op per group (:func:`fused_pieces`, :func:`_fused_groups`)."""
    conv, act = layer.conv, layer.act
    weight = undilated_weight(signed_weight(conv.weight, act.direction), conv.dilation)
    bound = min(_acc_bound(e.graph, conv), 2**31 - 2)
    theta = _clamped_thresholds(act, bound, e.extra_levels.get(act.output, 0))
    pieces = fused_pieces(e.graph, conv)
    if len(pieces) > 1:
        _fused_groups(e, conv, act, weight, theta, pieces, layer.stem)
        return
    _fused_op(
        e, conv.inputs[0], weight, theta, act, conv.stride, conv.padding, conv.groups, layer.stem
    )


def _fused_groups(
    e: _FastEmit,
    conv: IntConv,
    act: ThresholdAct,
    weight: np.ndarray,
    theta: np.ndarray,
    pieces: list[FusedPiece],
    wide: bool,
) -> None:
    """A grouped conv layer as one dense fused op per group (:func:`fused_pieces`): SLICE
    group ``g``'s input channels from the int8 (the stem: int32) view, the op with that
    group's filter rows and thresholds, then CONCATENATION of the int8 codes along channels,
    named ``act.output`` (or its ReLU's output, which every op then applies)."""
    t = e.graph.tensors
    h, w, _ = t[conv.inputs[0]].shape
    ho, wo, c = t[act.output].shape
    x = e.int32_view(conv.inputs[0]) if wide else e.int8_view(conv.inputs[0])
    relu = rectifier(e.graph, act.output)
    codes = []
    for g, piece in enumerate(pieces):
        tag = f"{act.output}/group{g}"
        shape = (e.batch, h, w, piece.in_c)
        part = (
            e.b.add_tensor(f"{tag}/input", shape, "int32")
            if wide
            else e.int8_tensor(f"{tag}/input", shape)
        )
        begin = e.const(f"{tag}/begin", np.array([0, 0, 0, piece.in_start]), "int32")
        size = e.const(f"{tag}/size", np.array(shape), "int32")
        e.b.add_operator("SLICE", [x, begin, size], [part])
        rows = slice(piece.out_start, piece.out_start + piece.out_c)
        codes.append(
            _conv_count(
                e,
                lambda part=part: part,
                (h, w, piece.in_c),
                (ho, wo, piece.out_c),
                weight[rows],
                theta[rows],
                act,
                conv.stride,
                conv.padding,
                piece.groups,
                wide,
                relu is not None,
                tag,
                tag,
            )
        )
    name = act.output if relu is None else relu.output
    joined = e.int8_tensor(name, (e.batch, ho, wo, c))
    e.b.add_operator("CONCATENATION", codes, [joined], axis=3)
    e.int8s[name] = joined


def _fused_count(e: _FastEmit, node: ThresholdAct) -> None:
    """A count of a non-conv int8 value (a residual sum) as a 1x1 depthwise fused op with
    filter ``d`` (the direction): ``acc = d x`` exactly, then the same count and code."""
    c = e.graph.tensors[node.output].shape[-1]
    lo, hi = _bound(e.graph, node.inputs[0])
    theta = _clamped_thresholds(node, max(abs(lo), abs(hi)), e.extra_levels.get(node.output, 0))
    weight = node.direction.astype(np.int64).reshape(c, 1, 1, 1)
    _fused_op(e, node.inputs[0], weight, theta, node, 1, 0, c)


def _fused_op(
    e: _FastEmit,
    x: str,
    weight: np.ndarray,
    theta: np.ndarray,
    act: ThresholdAct,
    stride: int,
    padding: int,
    groups: int,
    wide: bool = False,
) -> None:
    """One ``CLIMBQ_CONV_COUNT`` op reading the int8 view of ``x`` (``wide``: the int32 view,
    the kernel's int32-input mode, for the stem). When the code's only
    consumer is a ``Relu`` (:func:`rectifier`), the op applies it (``relu`` set) and its
    output is that Relu's tensor (``act.output`` is then never stored; a check compares
    ``max(code, 0)`` there); else the output is named ``act.output``."""
    t = e.graph.tensors
    relu = rectifier(e.graph, act.output)
    name = act.output if relu is None else relu.output
    code = _conv_count(
        e,
        lambda: e.int32_view(x) if wide else e.int8_view(x),
        t[x].shape,
        t[act.output].shape,
        weight,
        theta,
        act,
        stride,
        padding,
        groups,
        wide,
        relu is not None,
        act.output,
        name,
    )
    e.int8s[name] = code


def _conv_count(
    e: _FastEmit,
    x: Callable[[], int],
    in_hwc: tuple[int, ...],
    out_hwc: tuple[int, ...],
    weight: np.ndarray,
    theta: np.ndarray,
    act: ThresholdAct,
    stride: int,
    padding: int,
    groups: int,
    wide: bool,
    relu: bool,
    tag: str,
    name: str,
) -> int:
    """The ``CUSTOM`` op itself on the TFLite tensor ``x()`` (``in_hwc`` per image; int32 when
    ``wide``; made after the op's constants, the tensor order of earlier files): filter
    ``{tag}/weight``, thresholds ``{tag}/thresholds``, int8 output ``name`` of ``out_hwc``;
    returns the output tensor."""
    from climbq_deploy.targets.tflite.custom_op import CUSTOM_CODE, conv_count_options

    h, w, c_in = in_hwc
    ho, wo, c = out_hwc
    params = {
        "in_h": h,
        "in_w": w,
        "in_c": c_in,
        "out_h": ho,
        "out_w": wo,
        "out_c": c,
        "kernel_h": weight.shape[1],
        "kernel_w": weight.shape[2],
        "stride": stride,
        "pad": padding,
        "groups": groups,
        "levels": theta.shape[1],
        "mult": int(act.mult),
        "offset": int(act.offset),
        "relu": int(relu),
        "input_type": int(wide),
    }
    w8 = e.const(f"{tag}/weight", weight, "int8", scale=1.0, zero_point=0)
    th = e.const(f"{tag}/thresholds", theta, "int32")
    code = e.int8_tensor(name, (e.batch, ho, wo, c))
    e.b.add_operator(
        "CUSTOM",
        [x(), w8, th],
        [code],
        custom_code=CUSTOM_CODE,
        custom_options=conv_count_options(params),
    )
    return code


def _threshold_act(e: _FastEmit, node: ThresholdAct) -> None:
    """A count of a non-conv value (a residual sum): the fused op where chosen
    (:func:`_fused_count`), else the float sign sum with weight ``2 d`` when the values are
    exact in float32, else the int16-form count."""
    if e.forms.get(node.output) == FUSED:
        _fused_count(e, node)
        return
    lo, hi = _bound(e.graph, node.inputs[0])
    bound = max(abs(lo), abs(hi))
    hwc = e.graph.tensors[node.output].shape
    if 2 * bound + 3 >= FLOAT32_EXACT:
        e.int32_view(node.inputs[0])
        int16_form._threshold_act(e, node)
        return
    theta = _clamped_thresholds(node, bound)
    weight = 2.0 * node.direction.astype(np.float64)
    signs = _signs(e, node.output, e.float_view(node.inputs[0]), hwc, weight, 1.0 - 2.0 * theta)
    _sum_signs(e, node, signs, hwc)


def _relu(e: _FastEmit, node: Relu) -> None:
    """RELU in float32 (XNNPACK takes no int8 RELU; DEQUANTIZE/QUANTIZE around it are exact
    and delegated); nothing when a fused op applied it already (:func:`_fused_op`)."""
    if node.output in e.int8s:
        return
    out = e.b.add_tensor(node.output, e.shape(node.output), "float32")
    e.b.add_operator("RELU", [e.float_view(node.inputs[0])], [out])
    e.floats[node.output] = out


def _add(e: _FastEmit, node: Add) -> None:
    """ADD in int8 (scales 1, zero points 0: XNNPACK's requantization multiplies by exactly 1)
    when both summands are int8 already and the sum fits int8, else in float32 (exact: the
    sums are integers far below 2**24)."""
    if all(n in e.int8s for n in node.inputs) and _fits_int8(e.graph, node.output):
        relu = rectifier(e.graph, node.output)  # fused as above: exactly max(sum, 0)
        name = node.output if relu is None else relu.output
        out = e.int8_tensor(name, e.shape(node.output))
        e.b.add_operator(
            "ADD",
            [e.int8s[n] for n in node.inputs],
            [out],
            **({} if relu is None else {"fused_activation": "RELU"}),
        )
        e.int8s[name] = out
        return
    out = e.b.add_tensor(node.output, e.shape(node.output), "float32")
    e.b.add_operator("ADD", [e.float_view(n) for n in node.inputs], [out])
    e.floats[node.output] = out


def _float_exact(graph: Graph, name: str) -> bool:
    lo, hi = _bound(graph, name)
    return max(-lo, hi) < FLOAT32_EXACT


def _max_pool(e: _FastEmit, node: MaxPool) -> None:
    """MAX_POOL_2D (explicit pad, :func:`~.pooling.max_pool_2d`) in int8 where the values fit
    int8 and the input is int8 already or has no float view, else in float32 (exact below
    2**24); wider values are the int16 form's to refuse (:func:`~.pooling.pool_dtype`)."""
    x = node.inputs[0]
    if _fits_int8(e.graph, x) and (x in e.int8s or x not in e.floats):
        view, dtype, held = e.int8_view(x), "int8", e.int8s
    elif _float_exact(e.graph, x):
        view, dtype, held = e.float_view(x), "float32", e.floats
    else:
        e.int32_view(x)
        int16_form._max_pool(e, node)
        return
    held[node.output] = max_pool_2d(e.b, e.graph, node, view, dtype, e.batch, node.output)


def _concat(e: _FastEmit, node: Concat) -> None:
    """CONCATENATION along channels: int8 where the result fits int8 and an input is int8
    already (the others QUANTIZEd, exactly), else float32 (exact below 2**24), else int32."""
    ins, t = node.inputs, e.graph
    if _fits_int8(t, node.output) and any(n in e.int8s for n in ins):
        views, dtype, held = [e.int8_view(n) for n in ins], "int8", e.int8s
    elif _float_exact(t, node.output):
        views, dtype, held = [e.float_view(n) for n in ins], "float32", e.floats
    else:
        for n in ins:
            e.int32_view(n)
        int16_form._concat(e, node)
        return
    quant = {"scale": 1.0, "zero_point": 0} if dtype == "int8" else {}
    out = e.b.add_tensor(node.output, e.shape(node.output), dtype, **quant)
    e.b.add_operator("CONCATENATION", views, [out], axis=3)
    held[node.output] = out


def _global_sum_pool(e: _FastEmit, node: GlobalSumPool) -> None:
    out = e.b.add_tensor(node.output, e.shape(node.output), "float32")
    axes = e.const(f"{node.output}/axes", np.array([1, 2]), "int32")
    e.b.add_operator("SUM", [e.float_view(node.inputs[0]), axes], [out], keep_dims=False)
    e.floats[node.output] = out


def _linear(e: _FastEmit, node: Linear) -> None:
    """Float head on the (exact) float pool sums: MUL by their unit, FULLY_CONNECTED."""
    b = e.b
    unit = e.graph.tensors[node.inputs[0]].scale
    scaled = b.add_tensor(f"{node.output}/scaled", e.shape(node.inputs[0]), "float32")
    b.add_operator(
        "MUL",
        [e.float_view(node.inputs[0]), e.const(f"{node.output}/unit", np.array(unit), "float32")],
        [scaled],
    )
    w = e.const(f"{node.output}/weight", node.weight, "float32")
    bias = e.const(f"{node.output}/bias", node.bias, "float32")
    out = b.add_tensor("logits", e.shape(node.output), "float32")
    b.add_operator("FULLY_CONNECTED", [scaled, w, bias], [out])
    e.index[node.output] = out
    e.outputs = [out]


def _input(e: _FastEmit, node: InputQuant) -> None:
    """The model input: the uint8 image (:func:`~.export.image_input`, ``I`` in int32), or
    ``I`` itself, int16 (int32 when wider); other views are made on demand."""
    if e.input_form == "uint8":
        int16_form.image_input(e, node)
        return
    wide = input_type(e.graph) != "int16"
    x = e.b.add_tensor(
        "input",
        e.shape(node.output),
        "int32" if wide else "int16",
        **({} if wide else {"scale": 1.0, "zero_point": 0}),
    )
    (e.index if wide else e.int16_of)[node.output] = x
    e.inputs = [x]


FAST_EMITTERS = {
    InputQuant: _input,
    ConvLayer: _conv_layer,
    ThresholdAct: _threshold_act,
    Relu: _relu,
    Add: _add,
    MaxPool: _max_pool,
    Concat: _concat,
    GlobalSumPool: _global_sum_pool,
    Linear: _linear,
}
"""Layer class -> the function writing it in the fast forms."""
