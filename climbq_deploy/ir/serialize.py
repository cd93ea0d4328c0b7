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
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.errors import ArtifactError
from climbq_deploy.ir.artifact import read_artifact, write_artifact
from climbq_deploy.ir.graph import OPS, Graph, IntConv, Node, TensorSpec, ThresholdAct

PROGRAM_VERSION = 1


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
    if planes.dtype != np.uint8 or planes.shape != (kind.itemsize, int(np.prod(shape))):
        raise ArtifactError(f"threshold steps of shape {planes.shape} do not decode to {shape}")
    return np.ascontiguousarray(planes.T).view(kind).reshape(shape).astype(dtype)


def save_program(
    graph: Graph, path: str | Path, provenance: dict[str, Any] | None = None, pack: bool = True
) -> Path:
    """Write ``graph`` atomically as one artifact file; return its path."""
    arrays: dict[str, np.ndarray] = {}
    packed: dict[str, int] = {}
    nodes = []
    for node in graph.nodes:
        entry: dict[str, Any] = {"op": node.op, **node.attributes(), "arrays": {}}
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
        {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "channel_axis": t.channel_axis,
         "scale": t.scale, "bounds": list(t.bounds) if t.bounds else None}
        for t in graph.tensors.values()
    ]  # fmt: skip
    manifest = {
        "program": {"version": PROGRAM_VERSION, "input": graph.input, "output": graph.output,
                    "tensors": tensors, "nodes": nodes},
        "provenance": dict(provenance or graph.meta),
    }  # fmt: skip
    return write_artifact(path, manifest, arrays, packed)


def load_program(path: str | Path) -> tuple[Graph, dict[str, Any]]:
    """``(graph, manifest)`` of an artifact; version, hashes and structure checked."""
    manifest, arrays = read_artifact(path)
    try:
        program = manifest["program"]
        if program.get("version") != PROGRAM_VERSION:
            raise ArtifactError(f"{path}: program version {program.get('version')!r} is not "
                                f"{PROGRAM_VERSION}")  # fmt: skip
        tensors = {
            t["name"]: TensorSpec(t["name"], t["dtype"], tuple(t["shape"]), t["channel_axis"],
                                  t["scale"], tuple(t["bounds"]) if t["bounds"] else None)
            for t in program["tensors"]
        }  # fmt: skip
        nodes = [_node(entry, arrays, path) for entry in program["nodes"]]
        graph = Graph(tuple(nodes), tensors, program["input"], program["output"],
                      manifest.get("provenance", {}))  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: malformed program in manifest ({exc!r})") from None
    return graph.validate(), manifest


def _node(entry: dict[str, Any], arrays: dict[str, np.ndarray], path: str | Path) -> Node:
    op = entry["op"]
    if op not in OPS:
        raise ArtifactError(f"{path}: unknown op {op!r} in node {entry.get('name')!r}")
    cls = OPS[op]
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in entry.items():
        if key in names:
            values[key] = tuple(value) if isinstance(value, list) else value
    for field, array_name in entry["arrays"].items():
        array = np.asarray(arrays[array_name])
        if op == "int_conv" and field == "weight" and entry.get("weight_storage") == "codes":
            mult, offset = entry["weight_grid"]
            array = array.astype(np.int16) * mult + offset
            array = array.astype(np.int8 if np.abs(array).max(initial=0) <= 127 else np.int16)
        if op == "threshold_act" and field == "thresholds":
            spec = entry["threshold_steps"]
            encoded = _from_byte_planes(array, spec["dtype"], tuple(spec["shape"]))
            array, values["direction"] = _delta_decode(encoded)
        values[field] = array
    return cls(**values)


def program_bytes(graph: Graph) -> bytes:
    """The ``.climbq`` artifact of ``graph`` as bytes (what targets embed in their models)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return save_program(graph, Path(tmp) / "program.climbq").read_bytes()


def load_program_bytes(data: bytes) -> tuple[Graph, dict[str, Any]]:
    """:func:`load_program` of an artifact held in memory (embedded in a target's model)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "program.climbq"
        path.write_bytes(data)
        return load_program(path)
