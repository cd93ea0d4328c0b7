"""Reading a ``.tflite`` back: a bounds-checked flatbuffer walk that trusts nothing in the file.

The generated flatbuffer accessors (``schema_py_generated``) index the file wherever its
offsets point: a corrupt file raises ``IndexError``, ``struct.error`` or ``UnicodeDecodeError``
from deep inside, or returns garbage. This module reads only the parts of the ``Model`` table
the toolkit needs (schema ``schema.fbs``, version 3), checking every offset, vtable and vector
length against the file, and raises :class:`ArtifactError` naming the file and the field.

Flatbuffer layout relied on (little-endian): bytes 0-3 hold the root table's offset, bytes 4-7
the file identifier ``TFL3``. A table at ``t`` starts with an int32 ``soffset``; its vtable at
``t - soffset`` holds uint16 ``vtable_size``, ``table_size`` and one uint16 offset per field
(0: absent, default). Reference fields hold a uint32 offset relative to their own position;
a vector or string starts with its uint32 element count.

:func:`read_tflite` is what the TFLite runner calls before LiteRT sees the file: the embedded
``climbq_program`` (loaded and validated as a ``.climbq``), then :func:`check_model`, which
walks every subgraph, tensor, buffer and operator (indices in range, constant data as long as
its shape says, operators in data-flow order writing each tensor once, the int16 input and
float32 logits matching the program).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

from climbq_deploy.errors import ArtifactError
from climbq_deploy.ir.graph import Graph
from climbq_deploy.ir.serialize import load_program_bytes
from climbq_deploy.targets.tflite.custom_op import CUSTOM_CODE, parse_conv_count_options
from climbq_deploy.targets.tflite.flavour import input_type

__all__ = [
    "METADATA_NAME",
    "check_model",
    "read_contract",
    "read_metadata",
    "read_program_bytes",
    "read_tflite",
]

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
METADATA_NAME = "climbq_program"

# Field slots (vtable index) of the schema.fbs tables read here.
MODEL_VERSION, MODEL_OPCODES, MODEL_SUBGRAPHS, MODEL_BUFFERS, MODEL_METADATA = 0, 1, 2, 4, 6
BUFFER_DATA, BUFFER_OFFSET, BUFFER_SIZE = 0, 1, 2
METADATA_NAME_SLOT, METADATA_BUFFER = 0, 1
SUBGRAPH_TENSORS, SUBGRAPH_INPUTS, SUBGRAPH_OUTPUTS, SUBGRAPH_OPERATORS = 0, 1, 2, 3
TENSOR_SHAPE, TENSOR_TYPE, TENSOR_BUFFER, TENSOR_NAME, TENSOR_QUANTIZATION = 0, 1, 2, 3, 4
TENSOR_IS_VARIABLE = 5
QUANT_SCALE, QUANT_ZERO_POINT, QUANT_DIMENSION = 2, 3, 6
OPERATOR_OPCODE, OPERATOR_INPUTS, OPERATOR_OUTPUTS = 0, 1, 2
OPERATOR_OPTIONS_TYPE, OPERATOR_OPTIONS, OPERATOR_CUSTOM = 3, 4, 5
OPCODE_DEPRECATED, OPCODE_CUSTOM, OPCODE_VERSION, OPCODE_BUILTIN = 0, 1, 2, 3

# TensorType -> bits per element of constant data (None: no fixed size, data not checked)
TENSOR_BITS: dict[int, int | None] = {
    0: 32,
    1: 16,
    2: 32,
    3: 8,
    4: 64,
    5: None,
    6: 8,
    7: 16,
    8: 64,
    9: 8,
    10: 64,
    11: 128,
    12: 64,
    13: None,
    14: None,
    15: 32,
    16: 16,
    17: 4,
    18: 16,
    19: 2,
    20: 4,
    21: 8,
    22: 8,
}
FLOAT32, INT32, UINT8, INT16 = 0, 2, 3, 7
# The builtin operators the toolkit's writers emit (export.py, forms.py, bench/plain_int8.py):
# code -> (name, fewest and most inputs, input positions that may be -1 "absent"). Anything
# else is refused before LiteRT sees it (LiteRT 2.3's XNNPACK delegate segfaults on e.g. an
# ADD with an absent input). A writer that starts using another operator adds it here.
WRITTEN_OPS: dict[int, tuple[str, int, int, tuple[int, ...]]] = {
    0: ("ADD", 2, 2, ()),
    2: ("CONCATENATION", 1, 2**16, ()),
    3: ("CONV_2D", 3, 3, (2,)),
    6: ("DEQUANTIZE", 1, 1, ()),
    8: ("FLOOR", 1, 1, ()),
    4: ("DEPTHWISE_CONV_2D", 3, 3, (2,)),
    9: ("FULLY_CONNECTED", 3, 3, (2,)),
    17: ("MAX_POOL_2D", 1, 1, ()),
    18: ("MUL", 2, 2, ()),
    19: ("RELU", 1, 1, ()),
    22: ("RESHAPE", 1, 2, ()),
    34: ("PAD", 2, 2, ()),
    40: ("MEAN", 2, 2, ()),
    41: ("SUB", 2, 2, ()),
    114: ("QUANTIZE", 1, 1, ()),
    53: ("CAST", 1, 1, ()),
    55: ("MAXIMUM", 2, 2, ()),
    65: ("SLICE", 3, 3, ()),
    36: ("GATHER", 2, 2, ()),
    62: ("GREATER_EQUAL", 2, 2, ()),
    74: ("SUM", 2, 2, ()),
    90: ("FLOOR_DIV", 2, 2, ()),
    95: ("FLOOR_MOD", 2, 2, ()),
}
CUSTOM = 32  # BuiltinOperator.CUSTOM: the name is the operator code's custom_code
INT8 = 9
# Custom-op data is wrapped as LiteRT host tensor buffers, which must be 64-byte aligned.
CUSTOM_DATA_ALIGNMENT = 64


class _File:
    """The raw bytes with bounds-checked little-endian reads."""

    def __init__(self, content: bytes, where: str) -> None:
        self.data = bytes(content)
        self.size = len(self.data)
        self.where = where

    def fail(self, message: str) -> ArtifactError:
        return ArtifactError(f"{self.where}: not a readable .tflite: {message}")

    def unpack(self, fmt: str, pos: int, what: str) -> Any:
        width = struct.calcsize(fmt)
        if pos < 0 or pos + width > self.size:
            raise self.fail(f"{what} at byte {pos} lies outside the {self.size}-byte file")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def table(self, pos: int, what: str) -> _Table:
        soffset = self.unpack("<i", pos, f"{what} table")
        vtable = pos - soffset
        vsize = self.unpack("<H", vtable, f"{what} vtable")
        tsize = self.unpack("<H", vtable + 2, f"{what} vtable")
        if vsize < 4 or vsize % 2 or vtable + vsize > self.size or tsize < 4:
            raise self.fail(
                f"{what} vtable at byte {vtable} is malformed (size {vsize}, table size {tsize})"
            )
        if pos + tsize > self.size:
            raise self.fail(f"{what} table at byte {pos} runs past the end of the file")
        return _Table(self, pos, vtable, vsize, tsize, what)


@dataclass
class _Table:
    file: _File
    pos: int
    vtable: int
    vsize: int
    tsize: int
    what: str

    def _field(self, slot: int, width: int) -> int | None:
        """Absolute position of field ``slot`` (None when absent), checked inside the table."""
        entry = 4 + 2 * slot
        if entry + 2 > self.vsize:
            return None
        offset = self.file.unpack("<H", self.vtable + entry, f"{self.what} vtable")
        if offset == 0:
            return None
        if offset < 4 or offset + width > self.tsize:
            raise self.file.fail(
                f"{self.what} field {slot} at offset {offset} lies outside its "
                f"{self.tsize}-byte table"
            )
        return self.pos + offset

    def scalar(self, slot: int, fmt: str, default: int) -> int:
        pos = self._field(slot, struct.calcsize(fmt))
        return default if pos is None else self.file.unpack(fmt, pos, f"{self.what} field")

    def _target(self, slot: int) -> int | None:
        pos = self._field(slot, 4)
        if pos is None:
            return None
        return pos + self.file.unpack("<I", pos, f"{self.what} offset")

    def table(self, slot: int, what: str) -> _Table | None:
        target = self._target(slot)
        return None if target is None else self.file.table(target, what)

    def vector(self, slot: int, width: int, what: str) -> tuple[int, int]:
        """``(start, count)`` of a vector field (``(0, 0)`` when absent), inside the file."""
        target = self._target(slot)
        if target is None:
            return 0, 0
        count = self.file.unpack("<I", target, f"{what} length")
        if target + 4 + count * width > self.file.size:
            raise self.file.fail(
                f"{what} of {count} elements at byte {target} runs past the end of the file"
            )
        return target + 4, count

    def ints(self, slot: int, fmt: str, what: str) -> list[int]:
        width = struct.calcsize(fmt)
        start, count = self.vector(slot, width, what)
        return list(struct.unpack_from(f"<{count}{fmt[-1]}", self.file.data, start))

    def data(self, slot: int, what: str) -> bytes:
        start, count = self.vector(slot, 1, what)
        return self.file.data[start : start + count]

    def string(self, slot: int, what: str) -> str | None:
        target = self._target(slot)
        if target is None:
            return None
        raw = self.data(slot, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.file.fail(f"{what} is not UTF-8: {raw[:40]!r}") from None

    def tables(self, slot: int, what: str) -> list[_Table]:
        start, count = self.vector(slot, 4, what)
        out = []
        for i in range(count):
            pos = start + 4 * i
            out.append(self.file.table(pos + self.file.unpack("<I", pos, what), f"{what}[{i}]"))
        return out


def _model(content: bytes, where: str) -> _Table:
    file = _File(content, where)
    if file.size < 8 or file.data[4:8] != FILE_IDENTIFIER:
        raise file.fail(f"file identifier {file.data[4:8]!r} is not {FILE_IDENTIFIER!r}")
    model = file.table(file.unpack("<I", 0, "root offset"), "Model")
    version = model.scalar(MODEL_VERSION, "<I", 0)
    if version != SCHEMA_VERSION:
        raise file.fail(f"schema version {version} is not {SCHEMA_VERSION}")
    return model


def _buffer_bytes(model: _Table, index: int, buffers: list[_Table], what: str) -> bytes:
    if not 0 <= index < len(buffers):
        raise model.file.fail(f"{what} names buffer {index} of {len(buffers)}")
    buffer = buffers[index]
    offset = buffer.scalar(BUFFER_OFFSET, "<Q", 0)
    if offset > 1:  # data outside the flatbuffer (models over 2 GB): offset from file start
        size = buffer.scalar(BUFFER_SIZE, "<Q", 0)
        if offset + size > model.file.size:
            raise model.file.fail(
                f"buffer {index} spans bytes {offset}..{offset + size} of a "
                f"{model.file.size}-byte file"
            )
        return model.file.data[offset : offset + size]
    return buffer.data(BUFFER_DATA, f"buffer {index} data")


def read_metadata(content: bytes, name: str, path: object = "model") -> bytes | None:
    """The bytes of the ``Model.metadata`` entry ``name`` of a ``.tflite`` (bounds-checked),
    None when the file has none; ArtifactError for two entries of that name."""
    where = str(path)
    model = _model(content, where)
    entries = model.tables(MODEL_METADATA, "Model.metadata")
    found = [e for e in entries if e.string(METADATA_NAME_SLOT, "metadata name") == name]
    if not found:
        return None
    if len(found) > 1:
        raise ArtifactError(f"{where}: {len(found)} {name} metadata entries, expected 1")
    buffers = model.tables(MODEL_BUFFERS, "Model.buffers")
    index = found[0].scalar(METADATA_BUFFER, "<I", 0)
    return _buffer_bytes(model, index, buffers, f"metadata {name}")


def read_program_bytes(content: bytes, path: object = "model") -> bytes:
    """The ``climbq_program`` metadata (the ``.climbq`` bytes) of a ``.tflite`` written by
    :func:`climbq_deploy.targets.tflite.export.write_tflite`."""
    program = read_metadata(content, METADATA_NAME, path)
    if program is None:
        raise ArtifactError(f"{path}: no {METADATA_NAME} metadata (not exported by climbq_deploy)")
    if not program:
        raise ArtifactError(f"{path}: the {METADATA_NAME} metadata is empty")
    return program


def read_contract(content: bytes, path: object = "model") -> dict[str, Any] | None:
    """The model contract (``climbq_contract``, JSON; :mod:`~climbq_deploy.targets.contract`)
    of a ``.tflite``, or None for a file written before the contract travelled in it."""
    from climbq_deploy.targets.contract import CONTRACT_KEY, parse_contract

    text = read_metadata(content, CONTRACT_KEY, path)
    return None if text is None else parse_contract(text, path)


def check_model(content: bytes, path: object, graph: Graph | None) -> None:
    """Walk the whole model: every subgraph, tensor, buffer, operator and operator code in
    bounds, indices in range, only the operators of :data:`WRITTEN_OPS` (and the custom
    ``CLIMBQ_CONV_COUNT`` with valid options, :func:`_check_conv_count`) with their numbers of
    inputs, data-flow order, constant data of the size its shape and type give, and one input
    ``(1, H, W, C)`` (uint8 images, or the integer input as int16, int32 when wider) and one
    float32 output ``(1, classes)`` matching
    ``graph`` (``graph=None``: the structure only, for files without an embedded program)."""
    where = str(path)
    model = _model(content, where)
    fail = model.file.fail
    buffers = model.tables(MODEL_BUFFERS, "Model.buffers")
    codes: list[int] = []
    for i, code in enumerate(model.tables(MODEL_OPCODES, "Model.operator_codes")):
        builtin = code.scalar(OPCODE_BUILTIN, "<i", 0)
        deprecated = code.scalar(OPCODE_DEPRECATED, "<b", 0)
        version = code.scalar(OPCODE_VERSION, "<i", 1)
        custom = code.string(OPCODE_CUSTOM, f"operator code {i} custom name")
        if custom is not None:
            # The one custom operator climbq_deploy writes (custom_op.py); any other is refused.
            if custom != CUSTOM_CODE or builtin != CUSTOM or deprecated != CUSTOM or version != 1:
                raise fail(
                    f"operator code {i} is the custom operator {custom[:40]!r} (builtin "
                    f"{builtin}, version {version}); climbq_deploy writes only {CUSTOM_CODE} "
                    "version 1"
                )
            codes.append(CUSTOM)
            continue
        # LiteRT runs max(builtin_code, deprecated_builtin_code): the two must agree.
        if builtin not in WRITTEN_OPS or deprecated != min(builtin, 127) or version < 1:
            raise fail(
                f"operator code {i}: builtin {builtin}, deprecated {deprecated}, version "
                f"{version} is not an operator climbq_deploy writes"
            )
        codes.append(builtin)
    subgraphs = model.tables(MODEL_SUBGRAPHS, "Model.subgraphs")
    if len(subgraphs) != 1:
        raise fail(f"{len(subgraphs)} subgraphs; climbq_deploy writes one")
    subgraph = subgraphs[0]
    tensors = subgraph.tables(SUBGRAPH_TENSORS, "SubGraph.tensors")
    described = [_tensor(t, i, buffers, model) for i, t in enumerate(tensors)]
    inputs = subgraph.ints(SUBGRAPH_INPUTS, "<i", "SubGraph.inputs")
    # Data flow: operators in execution order, each reading a model input, a constant or an
    # earlier operator's output, and writing tensors nothing else writes (LiteRT 2.3 crashes
    # in invoke on a tensor read but never written).
    written = {i for i in inputs if 0 <= i < len(tensors)}
    fixed = {i for i, (_, _, constant) in enumerate(described) if constant}
    for i, op in enumerate(subgraph.tables(SUBGRAPH_OPERATORS, "SubGraph.operators")):
        code = op.scalar(OPERATOR_OPCODE, "<I", 0)
        if not 0 <= code < len(codes):
            raise fail(f"operator {i} names operator code {code} of {len(codes)}")
        if codes[code] == CUSTOM:
            name, fewest, most, optional = CUSTOM_CODE, 3, 3, ()
        else:
            name, fewest, most, optional = WRITTEN_OPS[codes[code]]
        reads = op.ints(OPERATOR_INPUTS, "<i", f"operator {i} inputs")
        if not fewest <= len(reads) <= most:
            raise fail(f"operator {i} ({name}) has {len(reads)} inputs, not {fewest}..{most}")
        for position, index in enumerate(reads):
            if index == -1 and position in optional:
                continue
            if not 0 <= index < len(tensors):
                raise fail(f"operator {i} ({name}) reads tensor {index} of {len(tensors)}")
            if index not in written and index not in fixed:
                raise fail(
                    f"operator {i} ({name}) reads tensor {index} before any operator writes it"
                )
        outputs = op.ints(OPERATOR_OUTPUTS, "<i", f"operator {i} outputs")
        if len(outputs) != 1:
            raise fail(f"operator {i} ({name}) has {len(outputs)} outputs, not 1")
        for index in outputs:
            if not 0 <= index < len(tensors) or index in written or index in fixed:
                raise fail(
                    f"operator {i} writes tensor {index}, which is out of range, a "
                    "constant, a model input or written before"
                )
            written.add(index)
        if op.scalar(OPERATOR_OPTIONS_TYPE, "<B", 0):
            op.table(OPERATOR_OPTIONS, f"operator {i} options")
        custom_options = op.data(OPERATOR_CUSTOM, f"operator {i} custom options")
        if codes[code] == CUSTOM:
            _check_conv_count(model, i, reads, outputs, custom_options, tensors, described, fixed)
        elif custom_options:
            raise fail(f"operator {i} ({name}) is builtin but has custom options")
    if graph is None:
        return
    given = inputs[0] if len(inputs) == 1 and 0 <= inputs[0] < len(tensors) else None
    image = given is not None and described[given][0] == UINT8  # the uint8 image contract
    expected = {
        "input": (
            SUBGRAPH_INPUTS,
            UINT8 if image else INT16 if input_type(graph) == "int16" else INT32,
            (1, *graph.tensors[graph.input].shape),
        ),
        "output": (SUBGRAPH_OUTPUTS, FLOAT32, (1, *graph.tensors[graph.output].shape)),
    }
    for label, (slot, kind, shape) in expected.items():
        indices = subgraph.ints(slot, "<i", f"SubGraph.{label}s")
        if len(indices) != 1 or not 0 <= indices[0] < len(tensors):
            raise fail(f"the model's {label}s {indices[:4]} are not one tensor of {len(tensors)}")
        if label == "output" and indices[0] not in written:
            raise fail(f"the model's output tensor {indices[0]} is never written")
        got = described[indices[0]][:2]
        if got != (kind, shape):
            raise fail(
                f"the model's {label} is type {got[0]} shape {got[1]}, the embedded "
                f"program needs type {kind} shape {shape}"
            )


def _check_conv_count(
    model: _Table,
    i: int,
    reads: list[int],
    outputs: list[int],
    options: bytes,
    tensors: list[_Table],
    described: list[tuple[int, tuple[int, ...], bool]],
    fixed: set[int],
) -> None:
    """One CLIMBQ_CONV_COUNT operator: valid options, x ``(N, in_h, in_w, in_c)`` int8 (int32
    when the options' ``input_type`` is 1), constant int8 weight ``(out_c, kh, kw, in_c /
    groups)`` and int32 thresholds ``(out_c, levels)`` whose data start 64-byte aligned, output
    int8 ``(N, out_h, out_w, out_c)``."""
    where = f"{model.file.where}: operator {i}"
    p = parse_conv_count_options(options, where)
    cin = p["in_c"] if p["groups"] == 1 else 1
    batch = described[reads[0]][1][:1]
    expected = {
        "input x": (
            reads[0],
            INT32 if p["input_type"] == 1 else INT8,
            (*batch, p["in_h"], p["in_w"], p["in_c"]),
        ),
        "weight": (reads[1], INT8, (p["out_c"], p["kernel_h"], p["kernel_w"], cin)),
        "thresholds": (reads[2], INT32, (p["out_c"], p["levels"])),
        "output": (outputs[0], INT8, (*batch, p["out_h"], p["out_w"], p["out_c"])),
    }
    for role, (index, kind, shape) in expected.items():
        if described[index][:2] != (kind, shape):
            raise model.file.fail(
                f"operator {i} ({CUSTOM_CODE}) {role} is type {described[index][0]} shape "
                f"{described[index][1]}; its options need type {kind} shape {shape}"
            )
    buffers = model.tables(MODEL_BUFFERS, "Model.buffers")
    for role, index in (("weight", reads[1]), ("thresholds", reads[2])):
        if index not in fixed:
            raise model.file.fail(f"operator {i} ({CUSTOM_CODE}) {role} is not a constant")
        buffer = buffers[tensors[index].scalar(TENSOR_BUFFER, "<I", 0)]
        start = buffer.vector(BUFFER_DATA, 1, f"tensor {index} data")[0]
        if buffer.scalar(BUFFER_OFFSET, "<Q", 0) > 1 or start % CUSTOM_DATA_ALIGNMENT:
            raise model.file.fail(
                f"operator {i} ({CUSTOM_CODE}) {role} data starts at byte {start}, not a "
                f"multiple of {CUSTOM_DATA_ALIGNMENT} (LiteRT refuses it at run time)"
            )


def _tensor(
    tensor: _Table, i: int, buffers: list[_Table], model: _Table
) -> tuple[int, tuple[int, ...], bool]:
    """``(type, shape, constant)`` of one tensor, after checking its fields and constant data
    (``constant``: it has data or is a variable, so no operator may write it)."""
    fail = model.file.fail
    shape = tuple(tensor.ints(TENSOR_SHAPE, "<i", f"tensor {i} shape"))
    kind = tensor.scalar(TENSOR_TYPE, "<b", 0)
    if kind not in TENSOR_BITS or any(d < 0 for d in shape):
        raise fail(f"tensor {i}: type {kind}, shape {shape}")
    tensor.string(TENSOR_NAME, f"tensor {i} name")
    quantization = tensor.table(TENSOR_QUANTIZATION, f"tensor {i} quantization")
    if quantization is not None:
        scales = quantization.vector(QUANT_SCALE, 4, f"tensor {i} scales")[1]
        zeros = quantization.vector(QUANT_ZERO_POINT, 8, f"tensor {i} zero points")[1]
        axis = quantization.scalar(QUANT_DIMENSION, "<i", 0)
        if scales != zeros or (
            scales > 1 and not (0 <= axis < len(shape) and shape[axis] == scales)
        ):
            raise fail(
                f"tensor {i}: {scales} scales and {zeros} zero points on axis {axis} of "
                f"shape {shape}"
            )
    data = _buffer_bytes(model, tensor.scalar(TENSOR_BUFFER, "<I", 0), buffers, f"tensor {i}")
    bits = TENSOR_BITS[kind]
    if data and bits is not None and len(data) != (math.prod(shape) * bits + 7) // 8:
        raise fail(
            f"tensor {i}: {len(data)} bytes of constant data for shape {shape} of type {kind}"
        )
    return kind, shape, bool(data) or bool(tensor.scalar(TENSOR_IS_VARIABLE, "<B", 0))


def read_tflite(content: bytes, path: object = "model") -> tuple[Graph, dict[str, Any]]:
    """``(graph, manifest)`` of the program embedded in a ``.tflite``, after checking the whole
    file (:func:`check_model`): what must pass before the file goes to LiteRT's interpreter."""
    program = read_program_bytes(content, path)
    graph, manifest = load_program_bytes(program, f"{path} ({METADATA_NAME})")
    check_model(content, path, graph)
    return graph, manifest
