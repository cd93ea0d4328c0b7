"""The integer program as a LiteRT (TFLite) model, exactly.

Mapping of each IR op (NHWC; the file stores batch 1, the batch axis is open: reshapes take
``-1``, the input and the logits carry ``shape_signature`` ``[-1, ...]``):

- input (``input_form="uint8"``, the default model contract of
  :mod:`~climbq_deploy.targets.contract`): the uint8 image, and the program's integer input
  ``I`` (int32) computed from it inside the model, exactly (:func:`image_input`: a GATHER from
  the table of the reference's own ``input_quant``). With ``input_form="int32"`` (the earlier
  form) the model input is ``I`` itself, int16, or int32 when it is wider (the target lowers
  with ``capture(..., input_bits=20)``: at 16 bits the input step moves 2-bit codes), which the
  host quantizes from uint8 images with the manifest's mean/std/step. Only the stem reads
  ``I`` (digit split, :func:`_stem_layer`).
- ``IntConv`` + ``ThresholdAct``: a 16x8 ``CONV_2D`` / ``DEPTHWISE_CONV_2D`` (int16 input of
  scale 1, int8 weights ``d_c W_int`` with per-channel scale ``2**-s_c``, int64 zero bias of
  scale ``1 * 2**-s_c``, int16 output of scale 1). The per-channel requantization multiplier
  is exactly ``2**-s_c``, so the output is ``(d_c acc + 2**(s_c-1)) >> s_c`` (``d_c acc`` for
  ``s_c = 0``) saturated to int16, the flavour's ``shift`` (:mod:`.flavour`, which records
  LiteRT's measured rounding). Saturation keeps every count exact as long as the thresholds
  lie in ``[-32767, 32767]`` (a saturated value sits beyond every threshold, on the right
  side); layers whose thresholds do not are refused. Then compare and count with builtin ops:
  RESHAPE to ``(H W, C, 1)``, GREATER_EQUAL against the int16 ``(C, n)`` thresholds
  (broadcast), CAST to int32, SUM over the levels, MUL ``mult``, ADD ``offset``: ``X_int``.
  Dilation and groups are LiteRT's own (:func:`dilation_options`, :func:`conv_filter`:
  the conv's dilation factors, a grouped ``CONV_2D``, a depth multiplier): no extra work.
- a layer whose thresholds leave int16 (8-bit activations, e.g. int8 PTQ) but whose partial
  sums stay below 2**24: a float32 conv on the integer input, CAST to int32, and the count
  against int32 thresholds (exact: float32 holds every partial sum). Only where partial sums
  reach 2**24 does the int16 conv requantize with a per-channel shift (the "tflite flavour").
- ``Relu``: MAXIMUM with 0; ``Add``: int32 ADD; both exact.
- ``MaxPool``: LiteRT has no int32 MAX_POOL_2D, so CAST to int8 / int16 (scale 1, zero point
  0) / float32, whichever first holds the input's bounds exactly
  (:func:`~.pooling.pool_dtype`), an explicit pad then a VALID MAX_POOL_2D
  (:func:`~.pooling.max_pool_2d`), CAST back to int32. TFLite's SAME padding is not torch's
  (k3 s2 on an even input pads only the bottom/right there, both sides in torch), so the pad
  is written out: zeros when the input's lower bound is ``lo >= 0``, else the edge row and
  column repeated; neither changes a window's max.
- ``Concat``: int32 CONCATENATION along channels (equal scales: the integers as they are).
- ``GlobalSumPool``: SUM over H, W in int32; float head: CAST to float32, MUL by the pool
  unit, FULLY_CONNECTED float32.

Every integer tensor is exact: the TFLite program computes the IR's integers bit for bit (the
NumPy reference on the same program is the oracle); only the float head differs (float32
here, float64 there).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from climbq_deploy.errors import ArtifactError, LoweringError
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
    conv_padding,
    count_plan,
    int16_digit_plan,
    nhwc_pads,
    signed_weight,
)
from climbq_deploy.ir.layers import ConvLayer, iter_layers, op_entry
from climbq_deploy.targets.contract import (
    CONTRACT_KEY,
    IMAGE_INPUT,
    check_input_form,
    contract,
    contract_json,
    input_table,
)
from climbq_deploy.targets.tflite.builder import ModelBuilder
from climbq_deploy.targets.tflite.flavour import (
    INT16_LIMIT,
    float_conv_is_exact,
    input_type,
    input_width,
    thresholds_fit_int16,
)
from climbq_deploy.targets.tflite.pooling import max_pool_2d, pool_dtype
from climbq_deploy.targets.tflite.reader import METADATA_NAME, read_program_bytes

__all__ = [
    "METADATA_NAME",
    "TFLITE_EMITTERS",
    "WEIGHT_FORMS",
    "int4_split",
    "read_program_bytes",
    "write_tflite",
]

WEIGHT_FORMS = ("int8", "int4")
TFLITE_NOTES = {
    "batch": "the file holds batch 1; for N images call ResizeInputTensor(0, {N, H, W, C}) "
    "and AllocateTensors() (Python: resize_tensor_input, allocate_tensors)",
    "runtime": "stock LiteRT/TFLite builtin ops, except files exported with --ops climbq "
    "(custom op CLIMBQ_CONV_COUNT, registered by climbq_deploy's runner)",
}


class _Emit:
    """What the emitters share while one model is written: the builder, the program, the
    batch, and which TFLite tensor holds each IR tensor (int32 unless noted)."""

    def __init__(self, graph: Graph, batch: int, weights: str, input_form: str = "uint8") -> None:
        check_input_form(input_form)
        self.b = ModelBuilder("climbq_deploy integer program")
        self.graph = graph
        self.batch = batch
        self.weights = weights
        self.input_form = input_form
        self.index: dict[str, int] = {}  # IR tensor -> TFLite tensor holding it
        self.int16_of: dict[str, int] = {}  # IR tensor -> its int16 copy (a conv input)
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    def shape(self, name: str) -> tuple[int, ...]:
        return (self.batch, *self.graph.tensors[name].shape)

    def as_int16(self, name: str) -> int:
        if name not in self.int16_of:
            spec = self.graph.tensors[name]
            lo, hi = spec.bounds or (-(2**31), 2**31 - 1)
            if lo < -INT16_LIMIT - 1 or hi > INT16_LIMIT:
                raise LoweringError(
                    f"tensor {name!r} range [{lo}, {hi}] does not fit int16, the TFLite conv input"
                )
            out = self.b.add_tensor(
                f"{name}/int16", self.shape(name), "int16", scale=1.0, zero_point=0
            )
            self.b.add_operator("CAST", [self.index[name]], [out])
            self.int16_of[name] = out
        return self.int16_of[name]

    def stem_input(self, name: str) -> int:
        """The program input ``I`` as the stem reads it: int16 where ``I`` fits, else int32."""
        return self.as_int16(name) if input_type(self.graph) == "int16" else self.index[name]

    def finish(self, program: bytes | None) -> bytes:
        """The file: inputs and outputs (batch axis open), the contract and the program."""
        b = self.b
        b.set_io(self.inputs, self.outputs)
        b.open_batch([*self.inputs, *self.outputs])
        record = contract(
            self.graph,
            form=self.input_form,
            input_name=IMAGE_INPUT if self.input_form == "uint8" else "input",
            input_dtype=b.dtype(self.inputs[0]),
            layout="NHWC",
            notes=TFLITE_NOTES,
        )
        b.add_metadata(CONTRACT_KEY, contract_json(record).encode())
        if program is not None:
            b.add_metadata(METADATA_NAME, program)
        return b.build()


def write_tflite(
    graph: Graph,
    batch: int = 1,
    program: bytes | None = None,
    weights: str = "int8",
    input_form: str = "uint8",
) -> bytes:
    """The ``.tflite`` bytes of a lowered program (see module docstring); ``program`` (the
    ``model.climbq`` bytes of the same program) travels in the metadata ``climbq_program``,
    the model contract (:mod:`~climbq_deploy.targets.contract`) in ``climbq_contract``.
    ``weights="int4"`` stores conv filters as packed INT4 wherever that is exact
    (:func:`int4_split`); the outputs are the same as with int8 filters. ``input_form``:
    ``"uint8"`` (images in, :func:`image_input`) or ``"int32"`` (the host-quantized ``I``).
    Each layer (:func:`~climbq_deploy.ir.layers.iter_layers`) is written by its entry of
    :data:`TFLITE_EMITTERS`."""
    if weights not in WEIGHT_FORMS:
        raise ArtifactError(f"weights must be one of {WEIGHT_FORMS}, got {weights!r}")
    e = _Emit(graph, batch, weights, input_form)
    for layer in iter_layers(graph):
        emit = op_entry(TFLITE_EMITTERS, layer)
        if emit is None:
            raise LoweringError(f"op {layer.op!r} ({layer.source!r}) has no TFLite form yet")
        emit(e, layer)
    return e.finish(program)


def image_input(e: _Emit, node: InputQuant) -> None:
    """The uint8 image input ``p`` ``(N, H, W, C)`` and the program input ``I`` (int32, named
    ``node.output``) computed from it exactly: ``I = T[p C + c]`` with CAST (uint8 to int32),
    MUL by ``C``, ADD of the channel index ``[0, 1, .., C - 1]`` (broadcast on the last axis)
    and GATHER from the int32 table ``T`` of ``256 C`` entries
    (:func:`~climbq_deploy.targets.contract.input_table`: the reference's ``input_quant`` of
    every pixel value and channel). Indices lie in ``[0, 256 C)``; every op is integer."""
    b = e.b
    shape = e.shape(node.output)
    c = shape[-1]
    image = b.add_tensor(IMAGE_INPUT, shape, "uint8")
    pixel = b.add_tensor(f"{node.output}/pixel", shape, "int32")
    b.add_operator("CAST", [image], [pixel])
    channels = b.add_tensor(f"{node.output}/channels", (), "int32", data=np.array(c, np.int32))
    scaled = b.add_tensor(f"{node.output}/pixel_times_channels", shape, "int32")
    b.add_operator("MUL", [pixel, channels], [scaled])
    which = b.add_tensor(
        f"{node.output}/channel_index", (c,), "int32", data=np.arange(c, dtype=np.int32)
    )
    index = b.add_tensor(f"{node.output}/table_index", shape, "int32")
    b.add_operator("ADD", [scaled, which], [index])
    values = input_table(e.graph)
    table = b.add_tensor(f"{node.output}/table", values.shape, "int32", data=values)
    out = b.add_tensor(node.output, shape, "int32")
    b.add_operator("GATHER", [table, index], [out], axis=0)
    e.index[node.output] = out
    e.inputs = [image]


def _input(e: _Emit, node: InputQuant) -> None:
    """The model input: the uint8 image (:func:`image_input`); or, for ``input_form="int32"``,
    ``I`` itself as int16 (then CAST to int32), or int32 when ``I`` is wider."""
    if e.input_form == "uint8":
        image_input(e, node)
        return
    b = e.b
    if input_type(e.graph) == "int16":
        x = b.add_tensor("input", e.shape(node.output), "int16", scale=1.0, zero_point=0)
        e.int16_of[node.output] = x
        cast = b.add_tensor(f"{node.output}/int32", e.shape(node.output), "int32")
        b.add_operator("CAST", [x], [cast])
        e.index[node.output] = cast
    else:  # wider than int16: only the stem reads it, by digits
        x = b.add_tensor("input", e.shape(node.output), "int32")
        e.index[node.output] = x
    e.inputs = [x]


def _conv_layer(e: _Emit, layer: ConvLayer) -> None:
    """The stem by digits, a layer beyond int16 as an exact float32 conv, any other as the
    16x8 conv (then compare and count)."""
    conv, act = layer.conv, layer.act
    if layer.stem:
        _stem_layer(e.b, e.graph, conv, act, e.stem_input(conv.inputs[0]), e.batch, e.index)
    elif act.shift is None and not thresholds_fit_int16(act):
        # thresholds beyond int16, partial sums below 2**24 (see int16_flavour)
        _float_conv_layer(e.b, e.graph, conv, act, e.index[conv.inputs[0]], e.batch, e.index)
    else:
        x16 = e.as_int16(conv.inputs[0])
        _threshold_layer(e.b, e.graph, conv, act, x16, e.batch, e.index, e.weights)


def _threshold_act(e: _Emit, node: ThresholdAct) -> None:
    """A count of a non-conv value (e.g. a residual sum): multiply by ``d``, then count."""
    hwc = e.graph.tensors[node.output].shape
    _count(e.b, node, e.index[node.inputs[0]], "int32", hwc, e.batch, e.index, folded=False)


def _relu(e: _Emit, node: Relu) -> None:
    out = e.b.add_tensor(node.output, e.shape(node.output), "int32")
    zero = e.b.add_tensor(f"{node.output}/zero", (), "int32", data=np.array(0, np.int32))
    e.b.add_operator("MAXIMUM", [e.index[node.inputs[0]], zero], [out])
    e.index[node.output] = out


def _add(e: _Emit, node: Add) -> None:
    out = e.b.add_tensor(node.output, e.shape(node.output), "int32")
    e.b.add_operator("ADD", [e.index[n] for n in node.inputs], [out])
    e.index[node.output] = out


def _max_pool(e: _Emit, node: MaxPool) -> None:
    """CAST the int32 input to :func:`pool_dtype`, :func:`max_pool_2d`, CAST back to int32."""
    dtype = pool_dtype(e.graph, node)
    quant = {"scale": 1.0, "zero_point": 0} if dtype != "float32" else {}
    x = e.b.add_tensor(f"{node.output}/input_{dtype}", e.shape(node.inputs[0]), dtype, **quant)
    e.b.add_operator("CAST", [e.index[node.inputs[0]]], [x])
    pooled = max_pool_2d(e.b, e.graph, node, x, dtype, e.batch, f"{node.output}/{dtype}")
    out = e.b.add_tensor(node.output, e.shape(node.output), "int32")
    e.b.add_operator("CAST", [pooled], [out])
    e.index[node.output] = out


def _concat(e: _Emit, node: Concat) -> None:
    """int32 CONCATENATION along channels (axis 3 of NHWC)."""
    out = e.b.add_tensor(node.output, e.shape(node.output), "int32")
    e.b.add_operator("CONCATENATION", [e.index[n] for n in node.inputs], [out], axis=3)
    e.index[node.output] = out


def _global_sum_pool(e: _Emit, node: GlobalSumPool) -> None:
    out = e.b.add_tensor(node.output, e.shape(node.output), "int32")
    axes = e.b.add_tensor(f"{node.output}/axes", (2,), "int32", data=np.array([1, 2], np.int32))
    e.b.add_operator("SUM", [e.index[node.inputs[0]], axes], [out], keep_dims=False)
    e.index[node.output] = out


def _linear(e: _Emit, node: Linear) -> None:
    """Float head: CAST the pool sums to float32, MUL by their unit, FULLY_CONNECTED."""
    b = e.b
    unit = e.graph.tensors[node.inputs[0]].scale
    pooled = e.index[node.inputs[0]]
    as_float = b.add_tensor(f"{node.output}/float", e.shape(node.inputs[0]), "float32")
    b.add_operator("CAST", [pooled], [as_float])
    scaled = b.add_tensor(f"{node.output}/scaled", e.shape(node.inputs[0]), "float32")
    unit_t = b.add_tensor(f"{node.output}/unit", (), "float32", data=np.array(unit, np.float32))
    b.add_operator("MUL", [as_float, unit_t], [scaled])
    w = b.add_tensor(
        f"{node.output}/weight", node.weight.shape, "float32", data=node.weight.astype(np.float32)
    )
    bias = b.add_tensor(
        f"{node.output}/bias", node.bias.shape, "float32", data=node.bias.astype(np.float32)
    )
    out = b.add_tensor("logits", e.shape(node.output), "float32")
    b.add_operator("FULLY_CONNECTED", [scaled, w, bias], [out])
    e.index[node.output] = out
    e.outputs = [out]


TFLITE_EMITTERS: dict[type, Callable[[_Emit, object], None]] = {
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
"""Layer class -> the function writing it (:class:`~climbq_deploy.ir.layers.ConvLayer` or a
node class); a layer without an entry is refused as having no TFLite form."""


def _stem_layer(
    b: ModelBuilder,
    graph: Graph,
    conv: IntConv,
    act: ThresholdAct,
    x16: int,
    batch: int,
    index: dict[str, int],
) -> None:
    """The first conv, exactly in int32 although TFLite convs return int16.

    ``I`` (int16 or int32 holding ``B``-bit integers, ``B`` from the input's bounds) is
    zero-padded, offset to ``u = I + 2**(B-1)`` in ``[0, 2**B)`` and split into b-bit digits
    ``u = sum_k 2**(b k) u_k`` (FLOOR_DIV / FLOOR_MOD), b the largest width with
    ``max_c sum |W_c| (2**b - 1) < 2**15`` (6 bits for a 4-bit 3x3x3 stem): each digit goes
    through the 16x8 conv with multiplier 1, whose int16 output is then its exact
    accumulator. ``d acc = sum_k 2**(b k) A_k - 2**(B-1) sum W`` in int32 (``|conv(u)| <
    2**B max sum |W|`` is checked to fit), and the pure program's thresholds are compared in
    int32. The numbers are :func:`~climbq_deploy.ir.integer_forms.int16_digit_plan`'s.
    """
    t = graph.tensors
    n_, h_, w_, c_in = (batch, *t[conv.inputs[0]].shape)
    width = input_width(graph)
    wide_input = width > 16
    ho, wo, c = t[conv.output].shape
    weight = signed_weight(conv.weight, act.direction, np.int32)
    plan = int16_digit_plan(weight, width, conv.source)
    bases = plan.bases  # most significant first
    p = conv.padding
    hp, wp = h_ + 2 * p, w_ + 2 * p
    padded = (
        b.add_tensor(f"{conv.output}/padded", (n_, hp, wp, c_in), "int32")
        if wide_input
        else b.add_tensor(
            f"{conv.output}/padded", (n_, hp, wp, c_in), "int16", scale=1.0, zero_point=0
        )
    )
    b.add_operator(
        "PAD",
        [x16, b.add_tensor(f"{conv.output}/pads", (4, 2), "int32", data=nhwc_pads(p))],
        [padded],
    )
    full = (n_, hp, wp, c_in)
    if wide_input:
        wide = padded
    else:
        wide = b.add_tensor(f"{conv.output}/u", full, "int32")
        b.add_operator("CAST", [padded], [wide])
    offset = b.add_tensor(
        f"{conv.output}/u_offset", (), "int32", data=np.array(plan.offset, np.int32)
    )
    u = b.add_tensor(f"{conv.output}/u_plus", full, "int32")
    b.add_operator("ADD", [wide, offset], [u])

    def const(name: str, value: int) -> int:
        return b.add_tensor(f"{conv.output}/{name}", (), "int32", data=np.array(value, np.int32))

    digits: list[int] = []
    rest = u
    for k, base in enumerate(bases[:-1]):
        high = b.add_tensor(f"{conv.output}/digit{k}", full, "int32")
        b.add_operator("FLOOR_DIV", [rest, const(f"base{k}", base)], [high])
        low = b.add_tensor(f"{conv.output}/rest{k}", full, "int32")
        b.add_operator("FLOOR_MOD", [rest, const(f"mod{k}", base)], [low])
        digits.append(high)
        rest = low
    digits.append(rest)  # most significant digit first
    op, filt, extra = conv_filter(conv, weight)
    w = b.add_tensor(
        f"{conv.output}/weight",
        filt.shape,
        "int8",
        data=filt.astype(np.int8),
        scale=[1.0] * c,
        zero_point=[0] * c,
        **({"quantized_dimension": 3} if op == "DEPTHWISE_CONV_2D" else {}),
    )
    bias = b.add_tensor(
        f"{conv.output}/bias",
        (c,),
        "int64",
        data=np.zeros(c, np.int64),
        scale=[1.0] * c,
        zero_point=[0] * c,
    )
    total = None
    for k, (digit, factor) in enumerate(zip(digits, bases, strict=True)):
        d16 = b.add_tensor(f"{conv.output}/digit16_{k}", full, "int16", scale=1.0, zero_point=0)
        b.add_operator("CAST", [digit], [d16])
        part16 = b.add_tensor(
            f"{conv.output}/part16_{k}", (n_, ho, wo, c), "int16", scale=1.0, zero_point=0
        )
        b.add_operator(
            op,
            [d16, w, bias],
            [part16],
            padding="VALID",
            stride_h=conv.stride,
            stride_w=conv.stride,
            **dilation_options(conv),
            **extra,
        )
        part = b.add_tensor(f"{conv.output}/part_{k}", (n_, ho, wo, c), "int32")
        b.add_operator("CAST", [part16], [part])
        if factor != 1:
            scaled = b.add_tensor(f"{conv.output}/part_scaled_{k}", (n_, ho, wo, c), "int32")
            b.add_operator("MUL", [part, const(f"factor{k}", factor)], [scaled])
            part = scaled
        if total is not None:
            summed = b.add_tensor(f"{conv.output}/sum_{k}", (n_, ho, wo, c), "int32")
            b.add_operator("ADD", [total, part], [summed])
            part = summed
        total = part
    corr = b.add_tensor(
        f"{conv.output}/offset_correction", (c,), "int32", data=plan.correction.astype(np.int32)
    )
    acc = b.add_tensor(f"{conv.output}/acc32", (n_, ho, wo, c), "int32")
    b.add_operator("ADD", [total, corr], [acc])
    _count(b, act, acc, "int32", (ho, wo, c), batch, index)


INT4_MIN, INT4_MAX = -8, 7


def int4_split(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | None:
    """An exact INT4 encoding of one layer's (direction-folded) integer filter, or None.

    - every value in ``[-8, 7]`` (2- and 3-bit grids): ``(weight, None)``, stored as is;
    - every output channel either all odd in ``[-15, 15]`` (the 4-bit ClimbQ grid
      ``W = 2q + 1``) or all zero (a constant channel): ``(q, e)`` with
      ``W[o] = 2 q[o] + e[o]``, ``q`` in ``[-8, 7]`` and ``e[o]`` 1 (odd) or 0 (zero), so
      ``acc_o = 2 conv(q)_o + e_o S`` with ``S`` the window sum of the input (a separate
      sum term, the same for every output channel);
    - anything else (5-8-bit grids): None (the layer keeps int8 filters).
    """
    w = weight.astype(np.int64)
    if w.size == 0 or (w.min() >= INT4_MIN and w.max() <= INT4_MAX):
        return w, None
    rows = w.reshape(len(w), -1)
    odd = np.all(rows % 2 == 1, axis=1)
    zero = np.all(rows == 0, axis=1)
    if not np.all(odd | zero) or np.abs(w).max() > 2 * INT4_MAX + 1:
        return None
    e = odd.astype(np.int64)
    q = (w - e[:, None, None, None]) // 2
    return q, e


def _int4_sum_term_groups(
    graph: Graph, conv: IntConv, act: ThresholdAct
) -> list[np.ndarray] | None:
    """Input-channel groups whose window sums fit int16, or None when the split layer could
    miscount.

    ``A = conv(q)`` is an int16 conv output (saturating). Exactness: while ``A`` is not
    saturated, ``2 A + e S`` is the accumulator. When ``A`` saturates high, ``2 A' + e S >=
    65534 + min(0, S_lo)`` must still pass every threshold (and the true value is larger);
    when it saturates low, ``-65536 + max(0, S_hi)`` must stay below every threshold. ``S``
    itself is summed from int16 group sums (each at most 32767 in magnitude), exactly.
    """
    lo, hi = graph.tensors[conv.inputs[0]].bounds or (-(2**31), 2**31 - 1)
    taps = conv.weight.shape[1] * conv.weight.shape[2]
    c_in = conv.weight.shape[3]
    peak = max(abs(lo), abs(hi))
    s_lo, s_hi = taps * c_in * min(lo, 0), taps * c_in * max(hi, 0)
    theta = act.thresholds.astype(np.int64)
    if np.any(act.channel_shifts()) or (
        theta.size and (65534 + s_lo < theta.max() or -65536 + s_hi >= theta.min())
    ):
        return None  # the split sums 2 conv(q) + e S exactly: no requantization between
    per_group = max(1, INT16_LIMIT // max(1, taps * peak))
    if taps * peak > INT16_LIMIT:
        return None
    return [np.arange(i, min(i + per_group, c_in)) for i in range(0, c_in, per_group)]


def _threshold_layer(
    b: ModelBuilder,
    graph: Graph,
    conv: IntConv,
    act: ThresholdAct,
    x16: int,
    batch: int,
    index: dict[str, int],
    weights: str = "int8",
) -> None:
    """Conv (16x8, per-channel output ``(d_c acc + 2**(s_c-1)) >> s_c``) then
    compare-and-count; with ``weights="int4"`` the filter is INT4 where :func:`int4_split` and
    the saturation bounds allow. The shift is carried by the per-channel weight (and bias)
    scales ``2**-s_c``; input and output scales are 1."""
    t = graph.tensors
    theta = act.thresholds.astype(np.int64)
    if theta.size and (theta.min() < -INT16_LIMIT or theta.max() > INT16_LIMIT):
        raise LoweringError(
            f"layer {act.source!r}: thresholds in [{theta.min()}, {theta.max()}] "
            "leave int16; the exact TFLite form needs them inside"
        )
    ho, wo, c = t[conv.output].shape
    weight = signed_weight(conv.weight, act.direction, np.int16)
    if np.abs(weight).max(initial=0) > 127:
        raise LoweringError(
            f"conv {conv.source!r}: weights beyond int8 (8-bit odd grid) are not "
            "supported by the TFLite target yet"
        )
    padding = conv_padding(conv)
    if padding == "PAD":
        p, (n_, h_, w_, c_) = conv.padding, (batch, *t[conv.inputs[0]].shape)
        padded = b.add_tensor(
            f"{conv.output}/padded",
            (n_, h_ + 2 * p, w_ + 2 * p, c_),
            "int16",
            scale=1.0,
            zero_point=0,
        )
        amounts = b.add_tensor(f"{conv.output}/pads", (4, 2), "int32", data=nhwc_pads(p))
        b.add_operator("PAD", [x16, amounts], [padded])
        x16, padding = padded, "VALID"
    options = {
        "padding": padding,
        "stride_h": conv.stride,
        "stride_w": conv.stride,
        **dilation_options(conv),
    }
    scales = _requantization_scales(act)
    zeros = [0] * c
    split = int4_split(weight) if weights == "int4" and conv.groups == 1 else None
    groups = _int4_sum_term_groups(graph, conv, act) if split and split[1] is not None else []
    if split is not None and groups is not None:
        _int4_conv(b, conv, act, x16, split, groups, (batch, ho, wo, c), options, index)
        return
    op, filt, extra = conv_filter(conv, weight)
    options.update(extra)
    w = b.add_tensor(
        f"{conv.output}/weight",
        filt.shape,
        "int8",
        data=filt.astype(np.int8),
        scale=scales,
        zero_point=zeros,
        **({"quantized_dimension": 3} if op == "DEPTHWISE_CONV_2D" else {}),
    )
    bias = b.add_tensor(
        f"{conv.output}/bias",
        (c,),
        "int64",
        data=np.zeros(c, np.int64),
        scale=scales,
        zero_point=zeros,
    )
    acc = b.add_tensor(f"{conv.output}/acc16", (batch, ho, wo, c), "int16", scale=1.0, zero_point=0)
    b.add_operator(op, [x16, w, bias], [acc], **options)
    _count(b, act, acc, "int16", (ho, wo, c), batch, index)


def _float_conv_layer(
    b: ModelBuilder,
    graph: Graph,
    conv: IntConv,
    act: ThresholdAct,
    x32: int,
    batch: int,
    index: dict[str, int],
) -> None:
    """A layer whose thresholds leave int16 (e.g. 8-bit PTQ): CAST the int32 input to float32,
    float32 ``CONV_2D`` / ``DEPTHWISE_CONV_2D`` with the integer filter ``d_c W_int`` as float32
    and zero bias, CAST the (integer-valued) output to int32, count against the int32
    thresholds. Exact: every partial sum is an integer below 2**24 in magnitude
    (:func:`~.flavour.float_conv_is_exact`, checked), which float32 holds in any summation
    order, FMA included. Costs float32 filters (4x int8) in those layers; XNNPACK runs them."""
    t = graph.tensors
    if not float_conv_is_exact(graph, conv):
        raise LoweringError(
            f"conv {conv.source!r}: partial sums reach 2**24, a float32 conv would not be exact"
        )
    theta = act.thresholds.astype(np.int64)
    if theta.size and (theta.min() < -(2**31) or theta.max() > 2**31 - 1):
        raise LoweringError(f"layer {act.source!r}: thresholds beyond int32")
    ho, wo, c = t[conv.output].shape
    weight = signed_weight(conv.weight, act.direction, np.float32)  # keeps -0.0 (bytes)
    x = b.add_tensor(f"{conv.output}/input_float", (batch, *t[conv.inputs[0]].shape), "float32")
    b.add_operator("CAST", [x32], [x])
    out = float_conv(b, graph, conv, weight, x, batch, acc_name="acc_float")
    acc = b.add_tensor(f"{conv.output}/acc32", (batch, ho, wo, c), "int32")
    b.add_operator("CAST", [out], [acc])
    _count(b, act, acc, "int32", (ho, wo, c), batch, index)


def float_conv(
    b: ModelBuilder,
    graph: Graph,
    conv: IntConv,
    weight: np.ndarray,
    x: int,
    batch: int,
    tag: str = "",
    acc_name: str = "acc",
) -> int:
    """A float32 ``CONV_2D`` / ``DEPTHWISE_CONV_2D`` of ``x`` (float32 NHWC integers) with the
    float32 filter ``weight`` ((O, kh, kw, I), direction folded) and zero bias, explicit PAD
    where "SAME" is not the conv's padding: the exact accumulators while every partial sum
    stays below 2**24 (the caller checks). Tensors are named ``{conv.output}/{tag}...``."""
    t = graph.tensors
    n_, h_, w_, c_in = (batch, *t[conv.inputs[0]].shape)
    ho, wo, c = t[conv.output].shape
    padding = conv_padding(conv)
    if padding == "PAD":
        p = conv.padding
        padded = b.add_tensor(
            f"{conv.output}/{tag}padded", (n_, h_ + 2 * p, w_ + 2 * p, c_in), "float32"
        )
        pads = b.add_tensor(f"{conv.output}/{tag}pads", (4, 2), "int32", data=nhwc_pads(p))
        b.add_operator("PAD", [x, pads], [padded])
        x, padding = padded, "VALID"
    options: dict[str, object] = {
        "padding": padding,
        "stride_h": conv.stride,
        "stride_w": conv.stride,
        **dilation_options(conv),
    }
    op, filt, extra = conv_filter(conv, weight)
    options.update(extra)
    w = b.add_tensor(
        f"{conv.output}/{tag}weight", filt.shape, "float32", data=np.ascontiguousarray(filt)
    )
    bias = b.add_tensor(f"{conv.output}/{tag}bias", (c,), "float32", data=np.zeros(c, np.float32))
    acc = b.add_tensor(f"{conv.output}/{tag}{acc_name}", (batch, ho, wo, c), "float32")
    b.add_operator(op, [x, w, bias], [acc], **options)
    return acc


def dilation_options(conv: IntConv) -> dict[str, int]:
    """The ``dilation_h`` / ``dilation_w`` options of a LiteRT conv: LiteRT's ``CONV_2D`` and
    ``DEPTHWISE_CONV_2D`` take the dilation themselves (tap ``i`` reads ``d i`` rows on; every
    kernel, 16x8, int8 and float32, measured exact against the reference), so no zeros are
    multiplied. Empty for ``d = 1`` (the field's default: the file is the same)."""
    d = conv.dilation
    return {} if d == 1 else {"dilation_h": d, "dilation_w": d}


def conv_filter(conv: IntConv, weight: np.ndarray) -> tuple[str, np.ndarray, dict[str, int]]:
    """``(op, filter, options)`` of a LiteRT conv with the OHWI filter ``weight`` (``(O, kh,
    kw, C / G)``, direction folded), every grouping native, no extra multiply-adds:

    - ``G = 1``: ``CONV_2D``, the filter as is;
    - depthwise, ``G = C`` with ``O = m C`` (``m = 1``: plain depthwise; torch's output
      channel ``c m + j`` reads input channel ``c``, as LiteRT's depth multiplier does):
      ``DEPTHWISE_CONV_2D`` with filter ``(1, kh, kw, O)`` and ``depth_multiplier = m``;
    - any other ``G``: ``CONV_2D`` with the ``(O, kh, kw, C / G)`` filter, which LiteRT runs
      as a grouped conv (it infers ``G = C / (C / G)``; output channel block ``g`` of ``O / G``
      reads input channels ``g C / G ..``, torch's order; measured exact for 16x8, int8 and
      float32 on every kernel path)."""
    groups, per_group = conv.groups, weight.shape[3]
    if groups > 1 and per_group == 1:
        depthwise = np.transpose(weight, (3, 1, 2, 0))  # (1, kh, kw, O)
        return "DEPTHWISE_CONV_2D", depthwise, {"depth_multiplier": weight.shape[0] // groups}
    return "CONV_2D", weight, {}


def _requantization_scales(act: ThresholdAct) -> list[float]:
    """Per-channel weight (and bias) scales ``2**-s_c``: with input and output scale 1 the
    conv's multiplier is exactly ``2**-s_c`` (float32 holds it for ``s_c <= 31``)."""
    return [float(2.0 ** -int(s)) for s in act.channel_shifts()]


def _int4_conv(
    b: ModelBuilder,
    conv: IntConv,
    act: ThresholdAct,
    x16: int,
    split: tuple[np.ndarray, np.ndarray | None],
    groups: list[np.ndarray],
    nhwc: tuple[int, int, int, int],
    options: dict,
    index: dict[str, int],
) -> None:
    """The layer with INT4 filters: ``acc = conv(W)`` directly, or ``2 conv(q) + e S``."""
    q, e = split
    c = nhwc[3]
    scales, zeros = _requantization_scales(act), [0] * c
    if e is not None and any(s != 1.0 for s in scales):  # pragma: no cover - refused before
        raise LoweringError(f"conv {conv.source!r}: the INT4 split sum cannot requantize")
    w = b.add_tensor(
        f"{conv.output}/weight_int4", q.shape, "int4", data=q, scale=scales, zero_point=zeros
    )
    bias = b.add_tensor(
        f"{conv.output}/bias",
        (c,),
        "int64",
        data=np.zeros(c, np.int64),
        scale=scales,
        zero_point=zeros,
    )
    if e is None:  # the values fit int4 as they are (shifted per channel like int8 filters)
        acc = b.add_tensor(f"{conv.output}/acc16", nhwc, "int16", scale=1.0, zero_point=0)
        b.add_operator("CONV_2D", [x16, w, bias], [acc], **options)
        _count(b, act, acc, "int16", nhwc[1:], nhwc[0], index)
        return
    half = b.add_tensor(f"{conv.output}/half16", nhwc, "int16", scale=1.0, zero_point=0)
    b.add_operator("CONV_2D", [x16, w, bias], [half], **options)
    half32 = b.add_tensor(f"{conv.output}/half32", nhwc, "int32")
    b.add_operator("CAST", [half], [half32])
    doubled = b.add_tensor(f"{conv.output}/doubled", nhwc, "int32")
    b.add_operator("ADD", [half32, half32], [doubled])
    # S: the window sum of the input, one int16 output channel per input-channel group
    mask = np.zeros((len(groups), *q.shape[1:]), np.int64)
    for g, members in enumerate(groups):
        mask[g, :, :, members] = 1
    gs = [1.0] * len(groups)
    ones_w = b.add_tensor(
        f"{conv.output}/window_ones",
        mask.shape,
        "int4",
        data=mask,
        scale=gs,
        zero_point=[0] * len(groups),
    )
    zero_b = b.add_tensor(
        f"{conv.output}/window_bias",
        (len(groups),),
        "int64",
        data=np.zeros(len(groups), np.int64),
        scale=gs,
        zero_point=[0] * len(groups),
    )
    part_shape = (*nhwc[:3], len(groups))
    parts16 = b.add_tensor(
        f"{conv.output}/window_sums16", part_shape, "int16", scale=1.0, zero_point=0
    )
    b.add_operator("CONV_2D", [x16, ones_w, zero_b], [parts16], **options)
    parts = b.add_tensor(f"{conv.output}/window_sums", part_shape, "int32")
    b.add_operator("CAST", [parts16], [parts])
    if len(groups) > 1:
        axis = b.add_tensor(
            f"{conv.output}/window_axis", (1,), "int32", data=np.array([3], np.int32)
        )
        total = b.add_tensor(f"{conv.output}/window_sum", (*nhwc[:3], 1), "int32")
        b.add_operator("SUM", [parts, axis], [total], keep_dims=True)
        parts = total
    if not np.all(e == 1):
        odd = b.add_tensor(f"{conv.output}/odd_rows", (c,), "int32", data=e.astype(np.int32))
        masked = b.add_tensor(f"{conv.output}/window_term", nhwc, "int32")
        b.add_operator("MUL", [parts, odd], [masked])
        parts = masked
    acc = b.add_tensor(f"{conv.output}/acc32", nhwc, "int32")
    b.add_operator("ADD", [doubled, parts], [acc])
    _count(b, act, acc, "int32", nhwc[1:], nhwc[0], index)


def _count(
    b: ModelBuilder,
    act: ThresholdAct,
    value: int,
    dtype: str,
    hwc: tuple[int, ...],
    batch: int,
    index: dict[str, int],
    folded: bool = True,
) -> None:
    """Compare and count: ``X = mult * #{t : d value >= theta_t} + offset`` (int32 out), the
    numbers of :func:`~climbq_deploy.ir.integer_forms.count_plan`.

    ``folded``: the value already carries the direction (conv weights times d); else a MUL by
    ``d`` comes first."""
    ho, wo, c = hwc
    plan = count_plan(act, folded)
    theta = plan.thresholds
    if plan.direction is not None:
        signed = b.add_tensor(f"{act.output}/signed", (batch, ho, wo, c), "int32")
        d = b.add_tensor(
            f"{act.output}/direction", (c,), "int32", data=plan.direction.astype(np.int32)
        )
        b.add_operator("MUL", [value, d], [signed])
        value = signed
    rows = batch * ho * wo
    quant = {"scale": 1.0, "zero_point": 0} if dtype == "int16" else {}
    levels = theta.shape[1]
    flat = b.add_tensor(f"{act.output}/rows", (rows, c, 1), dtype, **quant)
    b.add_operator("RESHAPE", [value], [flat], new_shape=[-1, c, 1])
    th = b.add_tensor(
        f"{act.output}/thresholds", (c, levels), dtype, data=theta.astype(dtype), **quant
    )
    passed = b.add_tensor(f"{act.output}/passed", (rows, c, levels), "bool")
    b.add_operator("GREATER_EQUAL", [flat, th], [passed])
    ints = b.add_tensor(f"{act.output}/passed_int", (rows, c, levels), "int32")
    b.add_operator("CAST", [passed], [ints])
    axis = b.add_tensor(f"{act.output}/axis", (1,), "int32", data=np.array([2], np.int32))
    count = b.add_tensor(f"{act.output}/count", (rows, c), "int32")
    b.add_operator("SUM", [ints, axis], [count], keep_dims=False)
    mult = b.add_tensor(f"{act.output}/mult", (), "int32", data=np.array(plan.mult, np.int32))
    offset = b.add_tensor(f"{act.output}/offset", (), "int32", data=np.array(plan.offset, np.int32))
    scaled = b.add_tensor(f"{act.output}/scaled", (rows, c), "int32")
    b.add_operator("MUL", [count, mult], [scaled])
    shifted = b.add_tensor(f"{act.output}/shifted", (rows, c), "int32")
    b.add_operator("ADD", [scaled, offset], [shifted])
    out = b.add_tensor(act.output, (batch, ho, wo, c), "int32")
    b.add_operator("RESHAPE", [shifted], [out], new_shape=[-1, ho, wo, c])
    index[act.output] = out
