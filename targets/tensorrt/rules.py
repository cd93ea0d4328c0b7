"""``tensorrt_rules``: lint an ONNX model against TensorRT's explicit-quantization rules.

Run by the exporter on every model it writes (a violation is an :class:`ArtifactError`), and
usable on any ONNX file. Rules (TensorRT 10 ONNX parser, explicit quantization):

- opset: the default domain's opset in ``[13, 21]`` (per-axis Q/DQ needs 13, INT4 needs 21);
  no other domains (custom ops are not parsed).
- ops: only :data:`SUPPORTED_OPS` (what this exporter emits and TensorRT parses; e.g.
  ``ConvInteger``, ``MatMulInteger``, ``QLinearConv`` are ONNX Runtime forms, not TensorRT's).
- Q/DQ symmetry: every ``QuantizeLinear`` / ``DequantizeLinear`` has a zero point that is a
  constant initializer of all zeros (TensorRT's quantization is symmetric) and a constant,
  finite, positive float scale.
- axis: a per-channel scale (rank 1, more than one value) needs an explicit ``axis``
  attribute; activations (a Q/DQ input that is not an initializer) are per tensor.
- types: ``DequantizeLinear`` reads INT8 or INT4 (no int32 biases); INT4 only for weights
  (an initializer) feeding ``MatMul`` / ``Gemm``, block-quantized (``block_size``), scale of
  rank <= 2, opset >= 21.
- uint8: only a graph input or output is uint8 (TensorRT 10's ONNX parser refuses uint8
  intermediate tensors), and a uint8 tensor feeds only ``Cast`` to float32 or float16
  (TensorRT converts uint8 only to and from those: no uint8 arithmetic, no uint8 to int32
  cast).
- ``Gather`` reads int32 (or int64) indices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from climbq_deploy.errors import ArtifactError

MIN_OPSET, MAX_OPSET = 13, 21
SUPPORTED_OPS = frozenset(
    {
        "Add",
        "Cast",
        "Concat",
        "Conv",
        "DequantizeLinear",
        "Div",
        "Floor",
        "Gather",
        "Gemm",
        "GreaterOrEqual",
        "MatMul",
        "MaxPool",
        "Mul",
        "QuantizeLinear",
        "ReduceSum",
        "Relu",
        "Reshape",
        "Sub",
        "Transpose",
        "Unsqueeze",
    }
)
QDQ = ("QuantizeLinear", "DequantizeLinear")
WEIGHT_TYPES = (TensorProto.INT8, TensorProto.INT4)


def tensorrt_rules(model: onnx.ModelProto) -> list[str]:
    """Every rule the model breaks, one line each naming the node (empty: it passes)."""
    problems: list[str] = []
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    opset = opsets.get("ai.onnx", 0)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        problems.append(f"opset {opset} outside [{MIN_OPSET}, {MAX_OPSET}]")
    problems += [
        f"custom domain {d!r} (TensorRT parses only the default domain)"
        for d in opsets
        if d != "ai.onnx"
    ]
    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in model.graph.node:
        where = f"{node.op_type} {node.name or node.output[0]!r}"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: custom domain {node.domain!r}")
        elif node.op_type not in SUPPORTED_OPS:
            problems.append(f"{where}: op not supported by the TensorRT target")
        if node.op_type in QDQ:
            problems += [f"{where}: {p}" for p in _qdq(node, inits, consumers, opset)]
    types = _elem_types(model)
    problems += _uint8(model, types, consumers)
    problems += _gather(model, types)
    return problems


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """The element type of every tensor ONNX's type inference (or the file) gives: graph
    inputs and outputs, value_info, initializers, ``Cast`` outputs (their ``to``). A model
    whose inference fails (it fails ``onnx.checker`` too) keeps the types it states."""
    with contextlib.suppress(onnx.shape_inference.InferenceError, ValueError):
        model = onnx.shape_inference.infer_shapes(model)  # else: the stated types
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*model.graph.input, *model.graph.output, *model.graph.value_info)
    }
    types.update({i.name: i.data_type for i in model.graph.initializer})
    for node in model.graph.node:
        if node.op_type == "Cast":
            types[node.output[0]] = _attribute(node, "to") or 0
    return types


def _uint8(
    model: onnx.ModelProto, types: dict[str, int], consumers: dict[str, list[onnx.NodeProto]]
) -> list[str]:
    """uint8 only at the graph's inputs and outputs, and only cast to float32/float16
    (TensorRT's uint8 conversions)."""
    problems = []
    outputs = {o.name for o in model.graph.output}
    producers = {name: node for node in model.graph.node for name in node.output}
    for name, kind in types.items():
        if kind != TensorProto.UINT8:
            continue
        node = producers.get(name)
        if node is not None and name not in outputs:
            problems.append(
                f"{node.op_type} {node.name or name!r}: writes the uint8 tensor {name!r} "
                "(TensorRT allows uint8 only as a graph input or output)"
            )
        for node in consumers.get(name, []):
            to = _attribute(node, "to") if node.op_type == "Cast" else None
            if to not in (TensorProto.FLOAT, TensorProto.FLOAT16):
                what = f"Cast to {TensorProto.DataType.Name(to)}" if to else node.op_type
                problems.append(
                    f"{node.op_type} {node.name or node.output[0]!r}: reads uint8 {name!r} "
                    f"({what}); TensorRT converts uint8 only to float32/float16"
                )
    return problems


def _gather(model: onnx.ModelProto, types: dict[str, int]) -> list[str]:
    """``Gather`` indices of a known type other than int32/int64."""
    problems = []
    for node in model.graph.node:
        if node.op_type != "Gather" or len(node.input) < 2:
            continue
        kind = types.get(node.input[1])
        if kind is not None and kind not in (TensorProto.INT32, TensorProto.INT64):
            problems.append(
                f"Gather {node.name or node.output[0]!r}: indices of type "
                f"{TensorProto.DataType.Name(kind)} (int32 or int64 only)"
            )
    return problems


def check_tensorrt_rules(model: onnx.ModelProto, path: object = "model") -> None:
    """Raise :class:`ArtifactError` listing the broken rules (first five)."""
    problems = tensorrt_rules(model)
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ArtifactError(f"{path}: breaks TensorRT rules: {'; '.join(problems[:5])}{more}")


def _attribute(node: onnx.NodeProto, name: str) -> int | None:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return None


def _qdq(
    node: onnx.NodeProto,
    inits: dict[str, onnx.TensorProto],
    consumers: dict[str, list[onnx.NodeProto]],
    opset: int,
) -> Iterable[str]:
    if len(node.input) < 3 or not node.input[2]:
        yield "no zero point (TensorRT needs an explicit all-zero one)"
    elif node.input[2] not in inits:
        yield f"zero point {node.input[2]!r} is not a constant"
    elif np.any(numpy_helper.to_array(inits[node.input[2]]).astype(np.int64) != 0):
        yield "non-zero zero point (TensorRT quantization is symmetric)"
    scale_name = node.input[1] if len(node.input) > 1 else ""
    if scale_name not in inits:
        yield f"scale {scale_name!r} is not a constant"
        return
    scale = numpy_helper.to_array(inits[scale_name]).astype(np.float64)
    if scale.size == 0 or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        yield "scale must be finite and positive"
    block = _attribute(node, "block_size")
    weight = node.input[0] in inits
    if scale.ndim == 1 and scale.size > 1 and _attribute(node, "axis") is None:
        yield "per-channel scale without an explicit axis"
    if not weight and scale.size > 1:
        yield "activation quantization must be per tensor"
    if block is not None and scale.ndim > 2:
        yield f"block-quantized scale of rank {scale.ndim} (TensorRT allows <= 2)"
    if node.op_type == "DequantizeLinear" and weight:
        dtype = inits[node.input[0]].data_type
        if dtype not in WEIGHT_TYPES:
            yield f"dequantizes {TensorProto.DataType.Name(dtype)} (INT8 or INT4 only)"
        if dtype == TensorProto.INT4:
            if opset < 21:
                yield "INT4 weights need opset >= 21"
            if block is None:
                yield "INT4 weights need block quantization (block_size)"
            users = {c.op_type for c in consumers.get(node.output[0], [])}
            if not users or not users <= {"MatMul", "Gemm"}:
                yield "INT4 weights only feed MatMul/Gemm in TensorRT (no INT4 convolution)"
