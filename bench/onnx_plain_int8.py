"""A plain int8 QDQ ONNX model with the shape of a lowered program: the ONNX Runtime yardstick.

The ONNX twin of :func:`bench.plain_int8.write_plain_int8` (the LiteRT yardstick): what an
ordinary int8 deployment of the same network looks like in the QDQ format that ONNX Runtime's
quantization tool writes and that ONNX Runtime fuses into ``QLinearConv`` / ``QLinearAdd`` /
``QLinearGlobalAveragePool`` / ``QLinearMatMul``:

- input: float32 NCHW, ``QuantizeLinear`` to int8 (scale 1/32, zero point 0);
- each ``IntConv`` (+ its activation): ``DequantizeLinear`` of the int8 input,
  ``DequantizeLinear`` of the program's integer filter (int8, per output channel, scale
  ``s_w[c] = M_c s_out / s_in``), float ``Conv`` (no bias), the ``Relu`` when the activation's
  only consumers are ReLUs (fused, as the converter does), ``QuantizeLinear`` to int8 (scale 1,
  zero point 0): the requantization ``y = round(M_c acc)`` *is* the uniform activation
  quantizer (``M_c`` spreads the channel's threshold range over the int8 range, as in
  :func:`bench.plain_int8._conv_output_multipliers`);
- ``Add``: DQ both inputs, ``Add`` (ReLU fused when it is the only consumer), Q; any other
  ``Relu``: DQ, ``Relu``, Q;
- ``MaxPool``: DQ, ``MaxPool`` (torch's kernel, strides and pads), Q at the input's zero point;
  ``Concat``: DQ each input, ``Concat`` on channels, Q (ONNX Runtime's ``QLinearConcat``);
- ``GlobalSumPool``: DQ, ``GlobalAveragePool``, Q (int8); the head: DQ of int8 per-channel
  weights, ``MatMul``, float logits.

The numbers are realistic in range but meaningless as a classifier: it exists to time the
ClimbQ ONNX forms against (``bench/onnx_latency.py``). A benchmark's yardstick, not product
code.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.plain_int8 import INPUT_SCALE, _conv_output_multipliers
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
from climbq_deploy.targets.tensorrt.export import conv_attributes

OPSET = 17


def write_plain_int8_onnx(graph: Graph) -> onnx.ModelProto:
    """The plain int8 QDQ ONNX model with ``graph``'s shape (module docstring); input
    ``input`` float32 ``(N, C, H, W)``, output ``logits`` float32 ``(N, classes)``."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    t = graph.tensors
    producers = {n.output: n for n in graph.nodes}
    consumers: dict[str, list] = {}
    for node in graph.nodes:
        for name in node.inputs:
            consumers.setdefault(name, []).append(node)

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(op_type: str, inputs: list[str], output: str, **attrs: object) -> str:
        nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    zero = const("zero", np.array(128, np.uint8))  # uint8 activations, ORT's default
    low = const("relu_zero", np.array(0, np.uint8))  # after a ReLU: [0, 255]
    unit = const("unit_scale", np.array(1.0, np.float32))
    q8: dict[str, tuple[str, str, str]] = {}  # IR tensor -> (its int8 tensor, scale, zero)

    dq_count: dict[str, int] = {}

    def dq(name: str) -> str:
        """A DequantizeLinear of ``name``'s int8 tensor for one consumer (as ONNX Runtime's
        quantization tool writes them: every QDQ node unit owns its DQ)."""
        quantized, scale, zp = q8[name]
        k = dq_count[quantized] = dq_count.get(quantized, -1) + 1
        return op("DequantizeLinear", [quantized, scale, zp], f"{quantized}/dq{k}")

    def quantize(name: str, value: str, relu: bool = False) -> None:
        """``Q(value, 1, z)``; ``relu``: ``z = -128``, so the saturation at -128 (real 0) *is*
        the ReLU (what ONNX Runtime's ReluQuantFusion leaves of ``Relu -> Q``)."""
        zp = low if relu else zero
        q8[name] = (op("QuantizeLinear", [value, unit, zp], f"{name}/q"), unit, zp)

    def relu_only(name: str) -> bool:
        users = consumers.get(name, [])
        return bool(users) and all(isinstance(u, Relu) for u in users)

    def alias_relus(name: str) -> None:
        for user in consumers.get(name, []):
            q8[user.output] = q8[name]

    for node in graph.nodes:
        if isinstance(node, InputQuant):
            in_h, in_w, in_c = t[node.output].shape
            scale = const("input_scale", np.array(INPUT_SCALE, np.float32))
            q8[node.output] = (
                op("QuantizeLinear", ["input", scale, zero], "input/q"),
                scale,
                zero,
            )
        elif isinstance(node, IntConv):
            continue  # written with its activation
        elif isinstance(node, ThresholdAct):
            conv = producers[node.inputs[0]]
            if not isinstance(conv, IntConv):  # e.g. after an Add: the Add requantizes itself
                q8[node.output] = q8[node.inputs[0]]
                continue
            in_scale = float(numpy_helper.to_array(_init(inits, q8[conv.inputs[0]][1])))
            w_scale = (_conv_output_multipliers(node) / in_scale).astype(np.float32)
            weight = np.transpose(conv.weight, (0, 3, 1, 2)).astype(np.int8)
            cout = weight.shape[0]
            name = node.output
            w = op(
                "DequantizeLinear",
                [
                    const(f"{name}/weight_int8", weight),
                    const(f"{name}/weight_scale", w_scale),
                    const(f"{name}/weight_zero", np.zeros(cout, np.int8)),
                ],
                f"{name}/weight",
                axis=0,
            )
            y = op("Conv", [dq(conv.inputs[0]), w], f"{name}/conv", **conv_attributes(conv))
            fused = relu_only(name)
            quantize(name, y, fused)
            if fused:
                alias_relus(name)
        elif isinstance(node, Relu):
            if node.output not in q8:
                quantize(node.output, dq(node.inputs[0]), relu=True)
        elif isinstance(node, Add):
            y = op("Add", [dq(n) for n in node.inputs], f"{node.output}/add")
            fused = relu_only(node.output)
            quantize(node.output, y, fused)
            if fused:
                alias_relus(node.output)
        elif isinstance(node, MaxPool):
            k, s, p = node.kernel, node.stride, node.padding
            pooled = op(
                "MaxPool",
                [dq(node.inputs[0])],
                f"{node.output}/pool",
                kernel_shape=[k, k],
                strides=[s, s],
                pads=[p] * 4,
            )
            quantize(node.output, pooled, relu=q8[node.inputs[0]][2] == low)
        elif isinstance(node, Concat):
            joined = op("Concat", [dq(n) for n in node.inputs], f"{node.output}/concat", axis=1)
            quantize(node.output, joined, relu=all(q8[n][2] == low for n in node.inputs))
        elif isinstance(node, GlobalSumPool):
            pooled = op("GlobalAveragePool", [dq(node.inputs[0])], f"{node.output}/pool")
            quantize(node.output, pooled)
        elif isinstance(node, Linear):
            weight = node.weight.astype(np.float64)
            scale = np.maximum(np.abs(weight).max(axis=1), 1e-8) / 127.0
            w_int = np.clip(np.rint(weight / scale[:, None]), -127, 127).astype(np.int8)
            k = len(scale)
            w = op(
                "DequantizeLinear",
                [
                    const("fc/weight_int8", w_int.T.copy()),
                    const("fc/weight_scale", scale.astype(np.float32)),
                    const("fc/weight_zero", np.zeros(k, np.int8)),
                ],
                "fc/weight",
                axis=1,
            )
            shape = const("fc/shape", np.array([0, -1], np.int64))
            flat = op("Reshape", [dq(node.inputs[0]), shape], "fc/flat")
            op("MatMul", [flat, w], "logits")
        else:
            raise LoweringError(f"op {node.op!r} ({node.source!r}) has no plain int8 form")
    classes = next(n.weight.shape[0] for n in graph.nodes if isinstance(n, Linear))
    onnx_graph = helper.make_graph(
        nodes,
        "plain_int8_qdq",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", in_c, in_h, in_w])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        inits,
    )
    model = helper.make_model(
        onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bench"
    )
    model.ir_version = 8
    return model


def _init(inits: list[onnx.TensorProto], name: str) -> onnx.TensorProto:
    return next(i for i in inits if i.name == name)
