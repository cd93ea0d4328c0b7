"""The integer program as an ONNX model in TensorRT's explicit-quantization (Q/DQ) form.

Layout NCHW inside, batch dynamic (``N``). Mapping of each IR op:

- input (``input_form="uint8"``, the default contract of
  :mod:`~climbq_deploy.targets.contract`): the uint8 image ``image`` ``(N, H, W, C)``, and the
  program's integer input ``I`` (``capture(..., input_bits=20)``) computed from it inside the
  graph, exactly (:func:`_image_input`): ``I = T[p C + c]``, a ``Gather`` from the table of
  the reference's own ``input_quant`` of every pixel value and channel, then ``Transpose`` to
  NCHW. With ``input_form="int32"`` (the earlier form) the model input is ``I`` itself, a
  float32 ``(N, C, H, W)`` tensor the host quantizes from uint8 images with the manifest's
  mean/std/step. Either way every value of ``I`` is an integer below 2**24 (checked), so
  float32 holds it exactly.
- stem ``IntConv`` (reads ``I``): a float32 ``Conv`` with weights ``d_c W_int`` (no Q/DQ: ``I``
  does not fit int8; TensorRT runs it in FP32, TF32 off). Exact because every partial sum is an
  integer below 2**24 (checked at export). A wider input (the default, 20 bits: the input step
  of 16 bits moves 2-bit codes, see the target's ``input_bits``) is split into two digits
  ``I = 2**D h + l``, each convolved exactly in float32, and recombined in int32
  (``Cast``, ``Mul``, ``Add``); that layer's thresholds are compared in int32.
- dilation and groups: ONNX ``Conv``'s own ``dilations`` and ``group``
  (:func:`conv_attributes`), in every form here and in :mod:`.ort_forms`: no extra work.
- other ``IntConv``: ``QuantizeLinear(x, m, 0) -> DequantizeLinear`` on the input (int8,
  per tensor, scale ``m``: the values are multiples of ``m`` with ``x / m`` in [-128, 127],
  so quantization is the identity; ``m = 1`` up to 7-bit codes, 2 for 8-bit codes). An input
  that does not fit int8 even so (the sum of two 8-bit activations, e.g. int8 PTQ) makes that
  conv a float32 ``Conv`` like the stem (exact below 2**24; TensorRT runs it in FP32).
  and ``DequantizeLinear(d_c W_int, ones, 0, axis=0)`` on the weight (int8, per output channel,
  axis stored explicitly), then ``Conv`` with a float output. TensorRT runs an INT8 conv with
  int32 accumulation; the output ``acc * 1 * 1`` is exact in float32 below 2**24. The 2-bit and
  4-bit ClimbQ grids (odd integers up to 15) sit exactly on the int8 grid.
- ``ThresholdAct``: compare and count, ``X = mult * sum_t [d_c acc >= theta_ct] + offset``:
  ``Unsqueeze`` the value to ``(N, C, 1, H, W)``, ``GreaterOrEqual`` against float32 thresholds
  ``(C, n, 1, 1)`` (integers below 2**24, exact), ``Cast`` to float32, ``ReduceSum`` over the
  levels, ``Mul mult``, ``Add offset``. The direction ``d_c`` is folded into conv weights (a
  ``Mul`` by ``d`` where the value is not a conv output).
- ``Relu``: ``Relu``. ``Add``: ``Add`` with each int8-bounded input behind a Q/DQ pair (scale 1;
  TensorRT runs the residual add on int8 inputs). All values stay integers below 2**24.
- ``MaxPool``: ONNX ``MaxPool`` with torch's kernel, strides and explicit symmetric ``pads``
  (ONNX Runtime and TensorRT never pick a padded position: it is -inf, as in torch), the
  input behind a Q/DQ pair where int8-bounded (TensorRT pools int8); a max of integers is
  exact. ``Concat``: ``Concat`` on the channel axis (1 in NCHW), float32 integers as they are.
- ``GlobalSumPool``: ``ReduceSum`` over H, W (float32, exact below 2**24).
- head, ``logits = (P @ W^T) * u + b`` with ``P`` the pool sums and ``u`` their unit:
  ``Linear``: float32 ``MatMul``; ``IntLinear`` (int8 head): ``DequantizeLinear`` of the int8
  ``W_q^T`` per output channel (``axis=1``) into ``MatMul`` (weight-only); the int4 head
  (:func:`int4_head`): ``DequantizeLinear`` of INT4 ``W_q^T`` with block quantization along K
  (opset 21, every block of a column carries that column's scale) into ``MatMul``.

So every integer tensor of the program is exact in this model (float32 holds integers below
2**24 exactly and each op maps integers to integers); only the head differs from the reference
(float32 here, float64 there). The codes are compared exactly by ``climbq check``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from climbq_deploy.errors import ArtifactError, ConfigError, LoweringError
from climbq_deploy.ir.graph import (
    Add,
    Concat,
    GlobalSumPool,
    Graph,
    InputQuant,
    IntConv,
    IntLinear,
    Linear,
    MaxPool,
    Node,
    Relu,
    ThresholdAct,
)
from climbq_deploy.ir.integer_forms import (
    FLOAT32_EXACT,
    DigitPlan,
    count_plan,
    float32_digit_plan,
    partial_sum_bound,
    signed_weight,
    value_steps,
)
from climbq_deploy.ir.layers import ConvLayer, iter_layers, op_entry
from climbq_deploy.ir.passes.quantize_head import per_row_head
from climbq_deploy.targets.contract import (
    CONTRACT_KEY,
    IMAGE_INPUT,
    check_input_form,
    contract,
    contract_json,
    input_table,
)

METADATA_NAME = "climbq_program"
# The INT4 head's contract with ONNX Runtime. ORT fuses ``DequantizeLinear(INT4) -> MatMul``
# into ``MatMulNBits`` and, at its default accuracy level, quantizes the MatMul's activations
# (the pool sums) to int8: the logits then differ from the program (measured: up to 0.01 on
# a 4-bit ResNet-20, 2 of 1000 top-1 moved). Accuracy level 0 keeps the float activations,
# and the logits equal the program's to float32 rounding. The file carries the setting (as
# JSON, in the metadata ``onnxruntime_session_config``); the toolkit's runners apply it, and a
# user's session must too (``SessionOptions.add_session_config_entry(key, value)`` for each).
ORT_SESSION_CONFIG_KEY = "onnxruntime_session_config"
ORT_SESSION_CONFIG_INT4 = {"session.qdq_matmulnbits_accuracy_level": "0"}
WEIGHTS = ("int8", "int4")
# how the conv layers are written: TensorRT's Q/DQ, or an exact ONNX Runtime form (ort_forms)
FORMS = ("qdq", "sign_sum", "int8_dup", "ort")
OPSET = {"int8": 17, "int4": 21}  # INT4 DequantizeLinear needs opset 21
INT8 = (-128, 127)
INT4_MAX = 7  # symmetric INT4: [-7, 7] (TensorRT's zero point is 0; -8 left unused)
ONNX_NOTES = {
    "batch": "the batch axis N is dynamic (dim_param 'N'); TensorRT: an optimization "
    "profile over N (trtexec --minShapes/--optShapes/--maxShapes)",
    "runtime": "forms qdq (TensorRT explicit quantization; ONNX Runtime too) and sign_sum, "
    "int8_dup, ort (ONNX Runtime only); ONNX Runtime sessions apply the "
    "onnxruntime_session_config metadata where present (INT4 head)",
}


def int4_head(graph: Graph) -> Graph:
    """The float ``Linear`` head as an INT4 weight-only head (an :class:`IntLinear`).

    ``weight_scale[o] = max_c |W[o, c]| / 7`` (1 for an all-zero row),
    ``W_q = round_half_even(W / weight_scale[o])`` in ``[-7, 7]``. The reference then computes
    ``logits = (sum_c W_q[o, c] P[c]) * weight_scale[o] * u + b`` (exact integer sum, float64
    scaling), the program this ONNX model runs with INT4 weights. An int8 head (``--head int8``)
    is re-quantized from its dequantized weights the same way.
    """
    nodes: list[Node] = []
    for node in graph.nodes:
        if isinstance(node, Linear | IntLinear):
            weight = (
                node.weight.astype(np.float64) * node.weight_scale[:, None]
                if isinstance(node, IntLinear)
                else node.weight.astype(np.float64)
            )
            node = per_row_head(node, weight, INT4_MAX)
        nodes.append(node)
    return replace(graph.replace_nodes(nodes), meta={**graph.meta, "head_weights": "int4"})


def _block_size(k: int) -> int:
    """The INT4 block length along K: the largest power of two <= 128 dividing ``k`` (at least
    16, TensorRT's and ORT's smallest); ``k`` itself when none divides it."""
    for size in (128, 64, 32, 16):
        if k % size == 0:
            return size
    return k


class _Builder:
    """Accumulates ONNX nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.names: set[str] = set()

    def const(self, name: str, value: np.ndarray) -> str:
        if name in self.names:
            raise ArtifactError(f"duplicate ONNX initializer {name!r}")
        self.names.add(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def int4_const(self, name: str, value: np.ndarray) -> str:
        self.names.add(name)
        flat = value.astype(np.int8).ravel().tolist()
        self.initializers.append(helper.make_tensor(name, TensorProto.INT4, value.shape, flat))
        return name

    def op(self, op_type: str, inputs: list[str], output: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output


class _Emit:
    """What the emitters share while one model is written: the builder, the program, the
    value steps and Q/DQ pairs made so far, the model's input and outputs."""

    def __init__(self, graph: Graph, weights: str, input_form: str = "uint8") -> None:
        self.b = _Builder()
        self.graph = graph
        self.weights = weights
        self.input_form = input_form
        self.qdq_of: dict[str, str] = {}
        self.zero8 = self.b.const("zero_int8", np.array(0, np.int8))
        self.step = value_steps(graph)
        self.input_info: onnx.ValueInfoProto | None = None
        self.outputs: list[onnx.ValueInfoProto] = []

    def qdq(self, name: str) -> str | None:
        """``DQ(Q(x, m, 0), m, 0)`` of an integer tensor whose values are multiples of ``m``
        (:func:`value_steps`) and whose ``x / m`` fits int8: the identity on it (``x / m`` is
        an integer, so no rounding happens); None when ``x / m`` does not fit int8 (e.g. the
        sum of two 8-bit activations, [0, 254] in steps of 1)."""
        if name not in self.qdq_of:
            lo, hi = self.graph.tensors[name].bounds or (-(2**31), 2**31)
            m = self.step.get(name, 1)
            if lo // m < INT8[0] or -(-hi // m) > INT8[1]:
                return None
            b = self.b
            scale = b.const(f"{name}/qdq_scale", np.array(float(m), np.float32))
            q = b.op("QuantizeLinear", [name, scale, self.zero8], f"{name}/q")
            self.qdq_of[name] = b.op("DequantizeLinear", [q, scale, self.zero8], f"{name}/dq")
        return self.qdq_of[name]


def write_onnx(
    graph: Graph,
    weights: str = "int8",
    program: bytes | None = None,
    form: str = "qdq",
    input_form: str = "uint8",
) -> onnx.ModelProto:
    """The ONNX model of a lowered program (see module docstring); ``program`` (the
    ``model.climbq`` bytes of the same program) travels base64-encoded in the metadata
    ``climbq_program``, the model contract in ``climbq_contract`` (JSON). ``weights="int4"``
    expects the head from :func:`int4_head`. Each layer
    (:func:`~climbq_deploy.ir.layers.iter_layers`) is written by its entry of
    :data:`ONNX_EMITTERS`; ``form`` other than ``"qdq"`` (TensorRT's explicit quantization)
    writes the conv layers and adds in one of the exact ONNX Runtime forms of
    :mod:`.ort_forms` (metadata ``form``). ``input_form``: ``"uint8"`` images in (NHWC), or
    ``"int32"``, the host-quantized ``I`` (float32 NCHW)."""
    if weights not in WEIGHTS:
        raise ConfigError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if form not in FORMS:
        raise ConfigError(f"form must be one of {FORMS}, got {form!r}")
    check_input_form(input_form)
    emitters = ONNX_EMITTERS
    if form != "qdq":
        from climbq_deploy.targets.tensorrt.ort_forms import form_emitters

        emitters = form_emitters(form, ONNX_EMITTERS)
    e = _Emit(graph, weights, input_form)
    for layer in iter_layers(graph):
        emit = op_entry(emitters, layer)
        if emit is None:
            raise LoweringError(f"op {layer.op!r} ({layer.source!r}) has no TensorRT form")
        emit(e, layer)
    if e.input_info is None or not e.outputs:
        raise LoweringError("the program needs an InputQuant and a Linear head")
    b = e.b
    used = {name for node in b.nodes for name in node.input}  # e.g. no Q/DQ in an ORT form
    initializers = [i for i in b.initializers if i.name in used]
    onnx_graph = helper.make_graph(
        b.nodes, "climbq_program", [e.input_info], e.outputs, initializers
    )
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET[weights])],
        producer_name="climbq_deploy",
        doc_string="ClimbQ integer program, TensorRT explicit quantization (Q/DQ)",
    )
    model.ir_version = 10 if weights == "int4" else 8
    image = input_form == "uint8"
    record = contract(
        graph,
        form=input_form,
        input_name=e.input_info.name,
        input_dtype="uint8" if image else "float32",
        layout="NHWC" if image else "NCHW",
        notes=ONNX_NOTES,
    )
    props = {
        "weights": weights,
        "form": form,
        "input_layout": "NHWC uint8 image (normalised inside the model)"
        if image
        else "NCHW float32 integer input I (host quantized)",
        CONTRACT_KEY: contract_json(record),
    }
    if weights == "int4":
        props[ORT_SESSION_CONFIG_KEY] = json.dumps(ORT_SESSION_CONFIG_INT4, sort_keys=True)
    if program is not None:
        props[METADATA_NAME] = base64.b64encode(program).decode("ascii")
    helper.set_model_props(model, props)
    return model


def _input(e: _Emit, node: InputQuant) -> None:
    """The model input, batch ``N`` dynamic: the uint8 NHWC image (:func:`_image_input`), or
    for ``input_form="int32"`` the program input ``I`` itself, float32 NCHW."""
    h, w, c = e.graph.tensors[node.output].shape
    if e.input_form == "uint8":
        _image_input(e, node)
        return
    e.input_info = helper.make_tensor_value_info(node.output, TensorProto.FLOAT, ["N", c, h, w])


def _image_input(e: _Emit, node: InputQuant) -> None:
    """``image`` (uint8, ``(N, H, W, C)``) to the program input ``I`` (float32 NCHW, named
    ``node.output``), exactly: ``I[n, c, y, x] = T[p[n, y, x, c] C + c]``.

    ``Cast`` uint8 to float32 then to int32 (TensorRT converts uint8 only to and from
    float32/float16; both casts are exact on 0..255), ``Mul`` by ``C``, ``Add`` the channel
    index ``[0, .., C - 1]`` (int32, broadcast on the last axis), ``Gather`` (axis 0) from the
    float32 table ``T`` of ``256 C`` entries
    (:func:`~climbq_deploy.targets.contract.input_table`: the reference's ``input_quant`` of
    every pixel value and channel; every entry an integer below 2**24 in magnitude, checked,
    so float32 holds it exactly), ``Transpose`` to NCHW."""
    b, name = e.b, node.output
    h, w, c = e.graph.tensors[name].shape
    table = input_table(e.graph)
    if table.size and int(np.abs(table.astype(np.int64)).max()) >= FLOAT32_EXACT:
        raise LoweringError(
            f"input {name!r}: the integer input reaches {int(np.abs(table).max())}, beyond "
            "float32's exact integers (2**24); lower with a coarser input step"
        )
    e.input_info = helper.make_tensor_value_info(IMAGE_INPUT, TensorProto.UINT8, ["N", h, w, c])
    as_float = b.op("Cast", [IMAGE_INPUT], f"{name}/pixel_float", to=TensorProto.FLOAT)
    pixel = b.op("Cast", [as_float], f"{name}/pixel", to=TensorProto.INT32)
    channels = b.const(f"{name}/channels", np.array(c, np.int32))
    scaled = b.op("Mul", [pixel, channels], f"{name}/pixel_times_channels")
    which = b.const(f"{name}/channel_index", np.arange(c, dtype=np.int32))
    index = b.op("Add", [scaled, which], f"{name}/table_index")
    values = b.const(f"{name}/table", table.astype(np.float32))
    nhwc = b.op("Gather", [values, index], f"{name}/nhwc", axis=0)
    b.op("Transpose", [nhwc], name, perm=[0, 3, 1, 2])


def _refuse_shift(act: ThresholdAct) -> None:
    if np.any(act.channel_shifts()):
        raise LoweringError(
            f"layer {act.source!r}: shift "
            f"{act.channel_shifts()[:8].tolist()} (a runtime's "
            "requantization) has no TensorRT form; export the pure "
            "program"
        )


def _conv_layer(e: _Emit, layer: ConvLayer) -> None:
    """The conv writing ``d_c acc`` (:func:`_conv`), then its count (int32 after a digit-split
    stem, float32 otherwise)."""
    plan = _conv(e.b, e.graph, layer.conv, layer.act, layer.stem, e.qdq)
    _refuse_shift(layer.act)
    _count(e.b, layer.act, f"{layer.conv.output}/signed", int32=plan is not None)


def _threshold_act(e: _Emit, node: ThresholdAct) -> None:
    """A count of a non-conv value (e.g. a residual sum): ``Mul`` by ``d``, then count."""
    _refuse_shift(node)
    _count(e.b, node, node.inputs[0], folded=False)


def _relu(e: _Emit, node: Relu) -> None:
    e.b.op("Relu", [node.inputs[0]], node.output)


def _add(e: _Emit, node: Add) -> None:
    """``Add``, each int8-bounded input behind a Q/DQ pair (TensorRT adds int8 inputs)."""
    ins = []
    for name in node.inputs:
        lo, hi = e.graph.tensors[name].bounds or (-(2**31), 2**31)
        ins.append(e.qdq(name) if INT8[0] <= lo and hi <= INT8[1] else name)
    e.b.op("Add", ins, node.output)


def max_pool_op(e: _Emit, node: MaxPool, x: str) -> None:
    """``MaxPool`` of ``x`` (NCHW) written to ``node.output``: kernel ``k x k``, strides
    ``s``, pads ``p`` on each side, floor output size (``ceil_mode`` 0), as torch."""
    k, s, p = node.kernel, node.stride, node.padding
    e.b.op("MaxPool", [x], node.output, kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)


def _max_pool(e: _Emit, node: MaxPool) -> None:
    """``MaxPool``, the input behind a Q/DQ pair where int8-bounded (TensorRT pools int8)."""
    name = node.inputs[0]
    lo, hi = e.graph.tensors[name].bounds or (-(2**31), 2**31)
    x = e.qdq(name) if INT8[0] <= lo and hi <= INT8[1] else None
    max_pool_op(e, node, x or name)


def _concat(e: _Emit, node: Concat) -> None:
    e.b.op("Concat", list(node.inputs), node.output, axis=1)


def _global_sum_pool(e: _Emit, node: GlobalSumPool) -> None:
    axes = e.b.const(f"{node.output}/axes", np.array([2, 3], np.int64))
    e.b.op("ReduceSum", [node.inputs[0], axes], node.output, keepdims=0)


def _linear(e: _Emit, node: Linear | IntLinear) -> None:
    _head(e.b, e.graph, node, e.weights)
    e.outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", node.weight.shape[0]])
    ]


ONNX_EMITTERS: dict[type, Callable[[_Emit, object], None]] = {
    InputQuant: _input,
    ConvLayer: _conv_layer,
    ThresholdAct: _threshold_act,
    Relu: _relu,
    Add: _add,
    MaxPool: _max_pool,
    Concat: _concat,
    GlobalSumPool: _global_sum_pool,
    Linear: _linear,
    IntLinear: _linear,
}
"""Layer class -> the function writing it (:class:`~climbq_deploy.ir.layers.ConvLayer` or a
node class); a layer without an entry is refused as having no TensorRT form."""


def conv_attributes(conv: IntConv) -> dict[str, object]:
    """The ONNX ``Conv`` / ``QLinearConv`` attributes of ``conv``: torch's symmetric ``pads``,
    ``strides``, ``group`` (ONNX groups as torch: output block ``g`` of ``O / G`` channels
    reads input channels ``g C / G ..``, weight ``(O, C / G, k, k)``) and ``dilations``, which
    ONNX Runtime and TensorRT take themselves (no zeros multiplied; written only when not 1,
    the attribute's default, so undilated files are unchanged)."""
    p, d = conv.padding, conv.dilation
    attrs: dict[str, object] = {
        "strides": [conv.stride] * 2,
        "pads": [p, p, p, p],
        "group": conv.groups,
        "kernel_shape": list(conv.weight.shape[1:3]),
    }
    if d != 1:
        attrs["dilations"] = [d, d]
    return attrs


def _stem_digits(b: _Builder, conv: IntConv, weight: np.ndarray, plan: DigitPlan, attrs) -> None:
    """``d acc = 2**D conv(h) + conv(l)`` in int32, from two exact float32 convs of the
    digits ``h = Floor(I / 2**D)`` and ``l = I - 2**D h`` (TensorRT: FP32 convs, INT32
    elementwise; the numbers are :func:`~climbq_deploy.ir.integer_forms.float32_digit_plan`'s).
    The stem's count then compares int32 values with int32 thresholds."""
    name = conv.output
    high_base = plan.bases[0]  # 2**D; the low digit's base is 1, no offset, no correction
    base = b.const(f"{name}/digit_base", np.array(float(high_base), np.float32))
    high = b.op(
        "Floor", [b.op("Div", [conv.inputs[0], base], f"{name}/I_over_base")], f"{name}/digit_high"
    )
    low = b.op(
        "Sub",
        [conv.inputs[0], b.op("Mul", [high, base], f"{name}/high_times_base")],
        f"{name}/digit_low",
    )
    w = b.const(f"{name}/weight", weight.astype(np.float32))
    parts = []
    for digit in (high, low):
        part = b.op("Conv", [digit, w], f"{digit}/conv", **attrs)
        parts.append(b.op("Cast", [part], f"{digit}/conv_int32", to=TensorProto.INT32))
    factor = b.const(f"{name}/digit_factor", np.array(high_base, np.int32))
    scaled = b.op("Mul", [parts[0], factor], f"{name}/high_part")
    b.op("Add", [scaled, parts[1]], f"{name}/signed")


def _conv(
    b: _Builder, graph: Graph, conv: IntConv, act: ThresholdAct, stem: bool, qdq
) -> DigitPlan | None:
    """``Conv`` writing ``d_c acc`` (as ``<acc>/signed``); see module docstring. Returns the
    stem's digit plan where its input is split (its count then runs in int32), else None."""
    t = graph.tensors
    lo, hi = t[conv.inputs[0]].bounds or (-(2**31), 2**31)
    bound = partial_sum_bound(conv.weight, lo, hi)
    plan = float32_digit_plan(conv.weight, lo, hi) if stem else None
    if bound >= FLOAT32_EXACT and plan is None:
        raise LoweringError(
            f"conv {conv.source!r}: partial sums up to {bound} reach 2**24, "
            "beyond float32's exact integers"
        )
    theta = act.thresholds.astype(np.int64)
    if plan is None and theta.size and np.abs(theta).max() >= FLOAT32_EXACT:
        raise LoweringError(f"layer {act.source!r}: thresholds beyond 2**24")
    weight = np.transpose(signed_weight(conv.weight, act.direction, np.int32), (0, 3, 1, 2))
    attrs = conv_attributes(conv)
    name = conv.output
    if plan is not None:
        _stem_digits(b, conv, weight, plan, attrs)
        return plan
    x = None if stem else qdq(conv.inputs[0])
    if x is None:  # the stem, or an input beyond int8: a float32 conv, exact below 2**24
        w = b.const(f"{name}/weight", weight.astype(np.float32))
        b.op("Conv", [conv.inputs[0], w], f"{name}/signed", **attrs)
        return None
    if np.abs(weight).max(initial=0) > INT8[1]:
        raise LoweringError(f"conv {conv.source!r}: weights beyond int8 (8-bit odd grid)")
    c = weight.shape[0]
    w8 = b.const(f"{name}/weight_int8", weight.astype(np.int8))
    ws = b.const(f"{name}/weight_scale", np.ones(c, np.float32))
    wz = b.const(f"{name}/weight_zero", np.zeros(c, np.int8))
    w = b.op("DequantizeLinear", [w8, ws, wz], f"{name}/weight", axis=0)
    b.op("Conv", [x, w], f"{name}/signed", **attrs)
    return None


def _count(
    b: _Builder, act: ThresholdAct, value: str, int32: bool = False, folded: bool = True
) -> None:
    """``X = mult * sum_t [value >= theta_t] + offset`` over the levels axis (float32, exact),
    the numbers of :func:`~climbq_deploy.ir.integer_forms.count_plan`; ``int32``: the value and
    the thresholds are int32 (the digit-split stem); ``folded``: the value already carries the
    direction (a conv's ``d_c acc``), else a ``Mul`` by ``d`` comes first."""
    name = act.output
    plan = count_plan(act, folded)
    if plan.direction is not None:
        d = b.const(f"{name}/direction", plan.direction.astype(np.float32)[None, :, None, None])
        value = b.op("Mul", [value, d], f"{name}/signed")
    c, levels = plan.thresholds.shape
    axis = b.const(f"{name}/level_axis", np.array([2], np.int64))
    wide = b.op("Unsqueeze", [value, axis], f"{name}/wide")
    kind = np.int32 if int32 else np.float32
    theta = b.const(f"{name}/thresholds", plan.thresholds.astype(kind).reshape(c, levels, 1, 1))
    passed = b.op("GreaterOrEqual", [wide, theta], f"{name}/passed")
    as_float = b.op("Cast", [passed], f"{name}/passed_float", to=TensorProto.FLOAT)
    count = b.op("ReduceSum", [as_float, axis], f"{name}/count", keepdims=0)
    mult = b.const(f"{name}/mult", np.array(plan.mult, np.float32))
    scaled = b.op("Mul", [count, mult], f"{name}/scaled")
    offset = b.const(f"{name}/offset", np.array(plan.offset, np.float32))
    b.op("Add", [scaled, offset], name)


def _head(b: _Builder, graph: Graph, node: Linear | IntLinear, weights: str) -> None:
    """``logits = (P @ W^T) * u + b``: float, int8 weight-only or INT4 weight-only MatMul."""
    unit = graph.tensors[node.inputs[0]].scale
    name = node.output
    if weights == "int4":
        if not isinstance(node, IntLinear) or np.abs(node.weight).max(initial=0) > INT4_MAX:
            raise LoweringError(
                f"head {node.source!r}: --weights int4 needs the INT4 head "
                "(int4_head) of the program"
            )
        w_t = node.weight.T  # (K, classes)
        k = w_t.shape[0]
        block = _block_size(k)
        scale = np.tile(node.weight_scale.astype(np.float32)[None, :], (k // block, 1))
        w4 = b.int4_const(f"{name}/weight_int4", w_t)
        ws = b.const(f"{name}/weight_scale", scale)
        zero = helper.make_tensor(
            f"{name}/weight_zero", TensorProto.INT4, scale.shape, [0] * scale.size
        )
        b.initializers.append(zero)
        w = b.op(
            "DequantizeLinear",
            [w4, ws, f"{name}/weight_zero"],
            f"{name}/weight",
            axis=0,
            block_size=block,
        )
    elif isinstance(node, IntLinear):
        w8 = b.const(f"{name}/weight_int8", node.weight.T.astype(np.int8))
        ws = b.const(f"{name}/weight_scale", node.weight_scale.astype(np.float32))
        wz = b.const(f"{name}/weight_zero", np.zeros(node.weight.shape[0], np.int8))
        w = b.op("DequantizeLinear", [w8, ws, wz], f"{name}/weight", axis=1)
    else:
        w = b.const(f"{name}/weight", node.weight.T.astype(np.float32))
    product = b.op("MatMul", [node.inputs[0], w], f"{name}/matmul")
    u = b.const(f"{name}/unit", np.array(unit, np.float32))
    scaled = b.op("Mul", [product, u], f"{name}/scaled")
    bias = b.const(f"{name}/bias", node.bias.astype(np.float32))
    b.op("Add", [scaled, bias], "logits")


def read_program_bytes(model: onnx.ModelProto, path: object = "model") -> bytes:
    """The ``climbq_program`` metadata of a model written by :func:`write_onnx`."""
    for prop in model.metadata_props:
        if prop.key == METADATA_NAME:
            try:
                return base64.b64decode(prop.value, validate=True)
            except ValueError:
                raise ArtifactError(f"{path}: corrupt {METADATA_NAME} metadata") from None
    raise ArtifactError(f"{path}: no {METADATA_NAME} metadata (not exported by climbq_deploy)")


def read_contract(model: onnx.ModelProto, path: object = "model") -> dict | None:
    """The model contract (``climbq_contract`` in ``metadata_props``, JSON;
    :mod:`~climbq_deploy.targets.contract`), or None for a file written before it travelled
    in the file."""
    from climbq_deploy.targets.contract import parse_contract

    for prop in model.metadata_props:
        if prop.key == CONTRACT_KEY:
            return parse_contract(prop.value, path)
    return None


def session_config(model: onnx.ModelProto) -> dict[str, str]:
    """The ONNX Runtime session settings a model written by :func:`write_onnx` needs to
    compute its program exactly (empty for the INT8 files): its
    ``onnxruntime_session_config`` metadata."""
    for prop in model.metadata_props:
        if prop.key == ORT_SESSION_CONFIG_KEY:
            try:
                config = json.loads(prop.value)
            except ValueError:
                config = None
            if not isinstance(config, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in config.items()
            ):
                raise ArtifactError(f"corrupt {ORT_SESSION_CONFIG_KEY} metadata: {prop.value!r}")
            return config
    return {}
