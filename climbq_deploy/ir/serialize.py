"""A lowered :class:`Graph` to and from the ``model.climbq`` artifact.

Manifest layout (inside the container of :mod:`climbq_deploy.ir.artifact`):
``{"program": {"input", "output", "tensors": [...], "nodes": [...]}, "provenance": {...}}``.
Each node is ``{"op", "name", "inputs", "output", "source", <scalar attributes>,
"arrays": {field: array name}}``; each tensor lists dtype, shape, channel_axis, scale, bounds
and, for conv weights, the bit width.

Conv weights are stored as their unsigned codes ``(W_int - offset) / mult`` bit-packed at the
weight bit width (``pack=True``, the default) or as plain ``W_int`` (``pack=False``, used to
measure what packing saves). Thresholds are stored delta-encoded with their direction (per
channel: direction, first threshold, then the steps between neighbours, mirrored halves
subtracted) in the narrowest integer type, split into byte planes (all low bytes, then all
high bytes) so that deflate compresses them well. Everything else is stored as is.

Program versions: 1, and 2 for a program with a dilated conv (``"dilation"`` in its node;
:data:`NEWER_FIELDS`). The writer writes the lowest version that holds the program, so every
undilated program is written exactly as version 1 files were; the reader reads both.

A ThresholdAct's per-channel requantization ``shift`` (only in a runtime's flavour of the
program, e.g. the one a ``.tflite`` embeds) is an int8 array member; the pure program's
``shift=None`` is written as the scalar ``"shift": 0``, as before per-channel shifts existed.
Loading also accepts older files' scalar shift ``s`` (one shift per layer): 0 reads as None,
``s > 0`` as ``s`` for every channel (the same counts).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.errors import ArtifactError
from climbq_deploy.ir.artifact import read_artifact, read_artifact_bytes, write_artifact
from climbq_deploy.ir.graph import (
    INT_DTYPES,
    OPS,
    Graph,
    IntConv,
    Node,
    TensorSpec,
    ThresholdAct,
)
from climbq_deploy.ir.validate import validate_program

PROGRAM_VERSION = 2
NEWER_FIELDS: dict[str, tuple[Any, int]] = {"dilation": (1, 2)}
"""Node fields newer than program version 1: name -> (default, the version that added it).
A field at its default is not written, so a program using none of them is written as
version 1, byte for byte as before; one that does is written as that field's version, which
an older reader refuses ("program version 2 is not 1") instead of dropping the field it does
not know (it would read a dilated conv as an undilated one: its output shape can even agree,
e.g. ``(9 - 5) // 4 == (9 - 3) // 4``)."""


def _weight_codes(node: IntConv) -> np.ndarray:
    mult, offset = node.weight_grid
    return ((node.weight.astype(np.int16) - offset) // mult).astype(np.uint8)


def _narrowest(values: np.ndarray) -> np.ndarray:
    for dtype in (np.int8, np.int16, np.int32, np.int64):
        info = np.iinfo(dtype)
        if values.size == 0 or (values.min() >= info.min and values.max() <= info.max):
            return values.astype(dtype)
    raise ArtifactError("threshold steps exceed int64")  # pragma: no cover - int64 input


def _mirror_index(steps: int) -> tuple[int, np.ndarray]:
    """First mirrored column and, for each mirrored column i, its mirror ``steps - 1 - i``."""
    half = (steps + 1) // 2
    return half, steps - 1 - np.arange(half, steps)


def _delta_encode(thresholds: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """``(C, n + 1)`` integers per channel: direction, first threshold, then the steps between
    neighbouring thresholds, the upper half of them minus their mirror image in the lower half.

    Quantizer grids are symmetric (ClimbQ's ``sigma PhiInv((t - 1/2) / n)``, uniform, LSQ's
    even spacing), so mirrored steps differ by at most a rounding unit: small numbers that
    deflate compresses well. Exact for any input; narrowest integer type."""
    wide = thresholds.astype(np.int64)
    steps = np.diff(wide, axis=1)
    half, mirror = _mirror_index(steps.shape[1])
    steps[:, half:] -= steps[:, mirror]
    columns = [direction.astype(np.int64)[:, None], wide[:, :1], steps]
    return _narrowest(np.concatenate(columns, axis=1))


def _delta_decode(encoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`_delta_encode`: ``(thresholds, direction)``, exact integer sums."""
    wide = encoded.astype(np.int64)
    steps = wide[:, 2:].copy()
    half, mirror = _mirror_index(steps.shape[1])
    steps[:, half:] += steps[:, mirror]
    thresholds = np.cumsum(np.concatenate([wide[:, 1:2], steps], axis=1), axis=1)
    return _narrowest(thresholds), wide[:, 0].astype(np.int8)


def _byte_planes(values: np.ndarray) -> np.ndarray:
    """uint8 ``(itemsize, size)``: byte k of every little-endian element in row k (the
    "shuffle" filter of HDF5/Blosc: high bytes, mostly 0, compress to almost nothing)."""
    little = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
    return little.view(np.uint8).reshape(-1, values.dtype.itemsize).T.copy()


def _from_byte_planes(planes: np.ndarray, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`_byte_planes`."""
    kind = np.dtype(dtype).newbyteorder("<")
    if planes.dtype != np.uint8 or planes.shape != (kind.itemsize, math.prod(shape)):
        raise ArtifactError(f"threshold steps of shape {planes.shape} do not decode to {shape}")
    return np.ascontiguousarray(planes.T).view(kind).reshape(shape).astype(dtype)


def save_program(
    graph: Graph, path: str | Path, provenance: dict[str, Any] | None = None, pack: bool = True
) -> Path:
    """Write ``graph`` atomically as one artifact file; return its path."""
    arrays: dict[str, np.ndarray] = {}
    packed: dict[str, int] = {}
    nodes = []
    version = 1
    for node in graph.nodes:
        entry: dict[str, Any] = {"op": node.op, **node.attributes(), "arrays": {}}
        for key, (default, since) in NEWER_FIELDS.items():
            if key in entry and entry[key] == default:
                del entry[key]
            elif key in entry:
                version = max(version, since)
        if isinstance(node, ThresholdAct) and node.shift is None:
            entry["shift"] = 0  # no requantization: the scalar of program version 1 files
        for field, value in node.arrays().items():
            if isinstance(node, IntConv) and field == "weight":
                name = f"weights/{node.name}"  # stored uncompressed (dense codes)
                if pack:
                    arrays[name] = _weight_codes(node)
                    packed[name] = node.weight_bits
                    entry["weight_storage"] = "codes"
                else:
                    arrays[name] = node.weight
                    entry["weight_storage"] = "int"
            elif isinstance(node, ThresholdAct) and field in ("thresholds", "direction"):
                if field == "direction":  # stored as column 0 of the thresholds member
                    continue
                name = f"{node.name}.thresholds"
                steps = _delta_encode(value, node.direction)
                arrays[name] = _byte_planes(steps)
                entry["threshold_steps"] = {"dtype": steps.dtype.name, "shape": list(steps.shape)}
            else:
                name = f"{node.name}.{field}"
                arrays[name] = value
            entry["arrays"][field] = name
        nodes.append(entry)
    tensors = [
        {
            "name": t.name,
            "dtype": t.dtype,
            "shape": list(t.shape),
            "channel_axis": t.channel_axis,
            "scale": t.scale,
            "bounds": list(t.bounds) if t.bounds else None,
        }
        for t in graph.tensors.values()
    ]
    manifest = {
        "program": {
            "version": version,
            "input": graph.input,
            "output": graph.output,
            "tensors": tensors,
            "nodes": nodes,
        },
        "provenance": dict(provenance or graph.meta),
    }
    return write_artifact(path, manifest, arrays, packed)


def load_program(path: str | Path) -> tuple[Graph, dict[str, Any]]:
    """``(graph, manifest)`` of an artifact; version, hashes, structure and every value the
    kernels rely on checked (:func:`climbq_deploy.ir.validate.validate_program`)."""
    manifest, arrays = read_artifact(path)
    return _program(manifest, arrays, str(path)), manifest


def load_program_bytes(data: bytes, name: str = "embedded program") -> tuple[Graph, dict[str, Any]]:
    """:func:`load_program` of an artifact held in memory (embedded in a target's model);
    ``name`` (e.g. the model file and where in it) starts error messages."""
    manifest, arrays = read_artifact_bytes(data, name)
    return _program(manifest, arrays, name), manifest


def _program(manifest: dict[str, Any], arrays: dict[str, np.ndarray], path: str) -> Graph:
    program = manifest.get("program")
    if not isinstance(program, dict):
        raise ArtifactError(f"{path}: manifest has no 'program' object")
    version = program.get("version")
    if type(version) is not int or not 1 <= version <= PROGRAM_VERSION:
        raise ArtifactError(
            f"{path}: program version {version!r} is not one of 1..{PROGRAM_VERSION} "
            "(a newer climbq_deploy wrote it)"
        )
    specs = _field(program, "tensors", list, f"{path}: program")
    tensors: dict[str, TensorSpec] = {}
    for i, entry in enumerate(specs):
        spec = _tensor(entry, f"{path}: program tensor {i}")
        if spec.name in tensors:
            raise ArtifactError(f"{path}: tensor {spec.name!r} is listed twice")
        tensors[spec.name] = spec
    entries = _field(program, "nodes", list, f"{path}: program")
    nodes = [
        _node(entry, arrays, f"{path}: program node {i}", version)
        for i, entry in enumerate(entries)
    ]
    provenance = manifest.get("provenance", {})
    if not isinstance(provenance, dict):
        raise ArtifactError(f"{path}: provenance must be an object, got {provenance!r}")
    graph = Graph(
        tuple(nodes),
        tensors,
        _field(program, "input", str, f"{path}: program"),
        _field(program, "output", str, f"{path}: program"),
        provenance,
    )
    return validate_program(graph, path)


def _field(entry: dict[str, Any], key: str, kind: type, where: str) -> Any:
    """``entry[key]``, which must be of type ``kind`` (bool is not an int here)."""
    if key not in entry:
        raise ArtifactError(f"{where} has no {key!r}")
    value = entry[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ArtifactError(f"{where}: {key} must be a {kind.__name__}, got {value!r}")
    return value


def _number(value: object) -> bool:
    """A JSON number that converts to float64 (an int of 400 digits does not)."""
    return type(value) is float or (type(value) is int and abs(value) < 2**1000)


def _tensor(entry: object, where: str) -> TensorSpec:
    if not isinstance(entry, dict):
        raise ArtifactError(f"{where} must be an object, got {entry!r}")
    name = _field(entry, "name", str, where)
    where = f"{where} ({name!r})"
    shape = _field(entry, "shape", list, where)
    if not all(type(d) is int for d in shape):
        raise ArtifactError(f"{where}: shape {shape!r} must be a list of ints")
    scale, bounds = entry.get("scale"), entry.get("bounds")
    if scale is not None and not _number(scale):
        raise ArtifactError(f"{where}: scale {scale!r} must be a number or null")
    if bounds is not None and (
        not isinstance(bounds, list) or len(bounds) != 2 or not all(type(b) is int for b in bounds)
    ):
        raise ArtifactError(f"{where}: bounds {bounds!r} must be [lo, hi] ints or null")
    return TensorSpec(
        name,
        _field(entry, "dtype", str, where),
        tuple(shape),
        _field(entry, "channel_axis", int, where),
        None if scale is None else float(scale),
        None if bounds is None else (bounds[0], bounds[1]),
    )


_ATTRIBUTE_TYPES: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: type(v) is int,
    "float": _number,
    "tuple[str, ...]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "tuple[float, ...]": lambda v: isinstance(v, list) and all(_number(x) for x in v),
    "tuple[int, int]": lambda v: (
        isinstance(v, list) and len(v) == 2 and all(type(x) is int for x in v)
    ),
    "np.ndarray | None": lambda v: v is None,
}


def _attribute(value: object, annotation: str, where: str) -> Any:
    """A scalar node attribute of JSON type checked against its dataclass annotation."""
    check = _ATTRIBUTE_TYPES.get(annotation)
    if check is None or not check(value):
        raise ArtifactError(f"{where} is {value!r}, expected {annotation}")
    if annotation == "float":
        return float(value)
    if annotation == "tuple[float, ...]":
        return tuple(float(x) for x in value)
    return tuple(value) if isinstance(value, list) else value


def _node(entry: object, arrays: dict[str, np.ndarray], where: str, version: int) -> Node:
    """One node of the manifest: typed attributes, its arrays decoded (weight codes, threshold
    steps); a field newer than the file's program ``version`` (:data:`NEWER_FIELDS`) is
    refused. Value and shape checks are :func:`validate_program`'s."""
    if not isinstance(entry, dict):
        raise ArtifactError(f"{where} must be an object, got {type(entry).__name__}")
    for key, (_, since) in NEWER_FIELDS.items():
        if key in entry and since > version:
            raise ArtifactError(
                f"{where} ({entry.get('name')!r}): {key} needs program version {since}, "
                f"the file says {version}"
            )
    op = entry.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise ArtifactError(f"{where}: unknown op {op!r} in node {entry.get('name')!r}")
    where = f"{where} ({entry.get('name')!r}, {op})"
    cls = OPS[op]
    annotations = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    stored = _field(entry, "arrays", dict, where)
    values: dict[str, Any] = {}
    for key in ("name", "inputs", "output"):
        _field(entry, key, list if key == "inputs" else str, where)
    for key, annotation in annotations.items():
        if op == "threshold_act" and key == "shift":
            continue  # a scalar or an array: :func:`_layer_shift`
        if key in entry and annotation != "np.ndarray":
            values[key] = _attribute(entry[key], annotation, f"{where}: {key}")
    for field, array_name in stored.items():
        if annotations.get(field, "").split(" |")[0] != "np.ndarray" or (
            op == "threshold_act" and field == "direction"
        ):
            raise ArtifactError(f"{where}: {field!r} is not an array field of {op}")
        if not isinstance(array_name, str) or array_name not in arrays:
            raise ArtifactError(f"{where}: array {array_name!r} of {field} is not in the file")
        array = arrays[array_name]
        if op == "int_conv" and field == "weight":
            array = _weights(entry, array, values, f"{where}: weight {array_name!r}")
        if op == "threshold_act" and field == "thresholds":
            array, values["direction"] = _thresholds(entry, array, f"{where}: {array_name!r}")
        values[field] = array
    required = [k for k, a in annotations.items() if a == "np.ndarray" and k not in values]
    if required:
        raise ArtifactError(f"{where} lacks its arrays {required}")
    if op == "threshold_act" and "shift" not in values:
        values["shift"] = _layer_shift(entry.get("shift", 0), values["thresholds"], where)
    elif op == "threshold_act" and "shift" in entry:
        raise ArtifactError(f"{where}: shift is given both as a scalar and as an array")
    return cls(**values)


def _layer_shift(value: object, thresholds: np.ndarray, where: str) -> np.ndarray | None:
    """A scalar ``shift`` (older files: one per layer) as the per-channel field: None for 0
    (no requantization), else ``s`` for every channel."""
    if type(value) is not int or not 0 <= value <= 31:
        raise ArtifactError(f"{where}: shift is {value!r}, expected an int in 0..31 or an array")
    return None if value == 0 else np.full(thresholds.shape[0], value, np.int8)


def _weights(
    entry: dict[str, Any], array: np.ndarray, values: dict[str, Any], where: str
) -> np.ndarray:
    """``W_int`` of a conv: stored as is (``weight_storage`` "int") or as unsigned codes
    (``"codes"``: ``W = mult * code + offset``, code below ``2**weight_bits``)."""
    storage = entry.get("weight_storage", "int")
    if storage == "int":
        return array
    if storage != "codes":
        raise ArtifactError(f"{where}: weight_storage {storage!r} is not 'codes' or 'int'")
    bits = values.get("weight_bits")
    mult, offset = values.get("weight_grid", (0, 0))
    if (
        array.dtype != np.uint8
        or not isinstance(bits, int)
        or not 1 <= bits <= 8
        or not 1 <= mult <= 2**8
        or abs(offset) > 2**15
    ):
        raise ArtifactError(
            f"{where}: codes of dtype {array.dtype} with weight_bits {bits!r} "
            f"and weight_grid {values.get('weight_grid')!r} cannot be decoded "
            "(uint8 codes, 1..8 bits, 1 <= mult <= 256, "
            "|offset| <= 2**15)"
        )
    if array.size and int(array.max()) > 2**bits - 1:
        raise ArtifactError(f"{where}: code {int(array.max())} exceeds {bits} bits")
    weight = array.astype(np.int32) * mult + offset
    if weight.size and np.abs(weight).max() > 2**15 - 1:
        raise ArtifactError(f"{where}: weights on the grid {mult} * code + {offset} leave int16")
    return weight.astype(np.int8 if np.abs(weight).max(initial=0) <= 127 else np.int16)


def _thresholds(
    entry: dict[str, Any], planes: np.ndarray, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(thresholds, direction)`` of a ThresholdAct from its delta-encoded byte planes."""
    spec = entry.get("threshold_steps")
    if (
        not isinstance(spec, dict)
        or spec.get("dtype") not in INT_DTYPES
        or not isinstance(spec.get("shape"), list)
        or len(spec["shape"]) != 2
        or not all(type(d) is int and 1 <= d <= 2**20 for d in spec["shape"])
        or spec["shape"][1] < 2
    ):
        raise ArtifactError(
            f"{where}: threshold_steps {spec!r} must be an int dtype and a shape "
            "[C, levels + 1] with levels >= 1"
        )
    try:
        encoded = _from_byte_planes(planes, spec["dtype"], tuple(spec["shape"]))
    except ArtifactError as exc:
        raise ArtifactError(f"{where}: {exc}") from None
    wide = encoded.astype(np.int64)
    if wide[:, 0].min() < -1 or wide[:, 0].max() > 1:
        raise ArtifactError(
            f"{where}: directions {np.unique(wide[:, 0])[:8].tolist()} are not all in {{-1, 0, 1}}"
        )
    steps = wide[:, 1:]
    if steps.min() < -(2**40) or steps.max() > 2**40:  # keeps the running sums in int64
        raise ArtifactError(
            f"{where}: threshold steps in [{steps.min()}, {steps.max()}] reach "
            "beyond any int32 threshold"
        )
    return _delta_decode(encoded)


def program_bytes(graph: Graph) -> bytes:
    """The ``.climbq`` artifact of ``graph`` as bytes (what targets embed in their models)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return save_program(graph, Path(tmp) / "program.climbq").read_bytes()
