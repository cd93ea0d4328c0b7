"""Seeded mutators and a tally for the fuzz tests (:mod:`tests.test_fuzz`).

Every mutator takes ``(data, rng)`` and returns new file bytes; ``rng`` is a
:class:`random.Random` seeded per case, so a case is reproduced from its kind and seed alone.
A case's outcome is one of: rejected with the toolkit's :class:`ClimbQError` (the expected
answer to a corrupt file), accepted (a mutation that changed the meaning but stayed valid), or
foreign (any other exception, or a hang): the bugs the fuzz tests exist to find.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import signal
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from climbq_deploy.errors import ClimbQError

Json = Any
Path_ = tuple[str | int, ...]

CASE_TIME_LIMIT_S = 5.0
_RAW = "\x00raw{}\x00"  # placeholder for raw JSON text json.dumps cannot write


class Hang(Exception):  # noqa: N818 - a verdict, not an error the code under test raises
    """A case ran past :data:`CASE_TIME_LIMIT_S`."""


@dataclass
class Tally:
    """Per mutation kind: cases tried, rejected (ClimbQError) and accepted; foreign failures
    as ``(kind, seed, repr)`` so that each can be replayed."""

    tried: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    foreign: list[tuple[str, int, str]] = field(default_factory=list)
    slowest: float = 0.0

    def run(self, kind: str, seed: int, case: Callable[[], object]) -> None:
        """Run one case under the time guard and record its outcome."""
        self.tried[kind] = self.tried.get(kind, 0) + 1
        start = time.perf_counter()
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, CASE_TIME_LIMIT_S)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                case()
        except ClimbQError:
            self.rejected[kind] = self.rejected.get(kind, 0) + 1
        except Exception as exc:  # the verdict: anything else is a finding
            self.foreign.append((kind, seed, repr(exc)[:300]))
        else:
            self.accepted[kind] = self.accepted.get(kind, 0) + 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        self.slowest = max(self.slowest, time.perf_counter() - start)

    def table(self) -> str:
        lines = [f"{'kind':<26}{'tried':>7}{'rejected':>10}{'accepted':>10}"]
        for kind, tried in self.tried.items():
            lines.append(
                f"{kind:<26}{tried:>7}{self.rejected.get(kind, 0):>10}"
                f"{self.accepted.get(kind, 0):>10}"
            )
        total = sum(self.tried.values())
        lines.append(
            f"{'total':<26}{total:>7}{sum(self.rejected.values()):>10}"
            f"{sum(self.accepted.values()):>10}"
        )
        lines.append(f"foreign: {len(self.foreign)}; slowest case {self.slowest:.3f} s")
        return "\n".join(lines)

    def failure(self) -> str:
        shown = "\n".join(f"  {kind} seed={seed}: {text}" for kind, seed, text in self.foreign[:8])
        return f"{len(self.foreign)} foreign outcomes, first ones:\n{shown}\n{self.table()}"


def _on_alarm(signum: int, frame: object) -> None:
    raise Hang(f"case ran past {CASE_TIME_LIMIT_S} s")


# -- bytes -------------------------------------------------------------------------------------


def flip_bits(data: bytes, rng: random.Random, low: int = 1, high: int = 8) -> bytes:
    """``low..high`` random single-bit flips anywhere in ``data``."""
    out = bytearray(data)
    for _ in range(rng.randint(low, high)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    """``data`` cut at a random length (0 .. len - 1), biased to both ends."""
    pick = rng.random()
    if pick < 0.2:
        return data[: rng.randrange(min(64, len(data)))]
    if pick < 0.4:
        return data[: len(data) - 1 - rng.randrange(min(64, len(data)))]
    return data[: rng.randrange(len(data))]


def overwrite_word(data: bytes, rng: random.Random, position: int | None = None) -> bytes:
    """A 4-byte little-endian word replaced by an edge value (offset corruption)."""
    out = bytearray(data)
    if position is None:
        position = rng.randrange(0, max(1, len(out) - 4)) & ~3
    current = int.from_bytes(out[position : position + 4], "little")
    value = rng.choice(
        [
            0,
            1,
            4,
            0xFFFFFFFF,
            0x7FFFFFFF,
            0x80000000,
            len(data),
            len(data) - 4,
            len(data) + 4,
            rng.randrange(2**32),
            position,
            position + 4,
            current ^ (1 << rng.randrange(32)),
        ]
    )
    out[position : position + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(out[: len(data)])


# -- zip containers ----------------------------------------------------------------------------


def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def rezip(members: list[tuple[str, bytes]]) -> bytes:
    """A fresh zip of ``members`` in order (duplicates allowed), deflated."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we want
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, content in members:
                archive.writestr(
                    zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), content, zipfile.ZIP_DEFLATED
                )
    return buffer.getvalue()


def mutate_members(data: bytes, rng: random.Random) -> bytes:
    """Swap two members' contents, remove, duplicate, rename or add a member."""
    members = list(unzip(data).items())
    action = rng.choice(["swap", "remove", "duplicate", "add", "rename", "reorder", "empty"])
    if action == "swap":
        i, j = rng.sample(range(len(members)), 2)
        (a, da), (b, db) = members[i], members[j]
        members[i], members[j] = (a, db), (b, da)
    elif action == "remove":
        members.pop(rng.randrange(len(members)))
    elif action == "duplicate":
        members.insert(rng.randrange(len(members) + 1), rng.choice(members))
    elif action == "add":
        name = rng.choice(
            [
                "extra.bin",
                "arrays/extra.bin",
                "../evil",
                "arrays/x/../../y.bin",
                "manifest.json/",
                "/abs.bin",
                "arrays/conv2.bin.bak",
            ]
        )
        members.append((name, rng.randbytes(rng.randrange(64))))
    elif action == "rename":
        i = rng.randrange(len(members))
        members[i] = (members[i][0] + rng.choice([".x", "/", "~"]), members[i][1])
    elif action == "reorder":
        rng.shuffle(members)
    else:
        i = rng.randrange(len(members))
        members[i] = (members[i][0], b"")
    return rezip(members)


# -- JSON manifests ----------------------------------------------------------------------------


def json_paths(value: Json, prefix: Path_ = ()) -> Iterator[Path_]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_paths(item, (*prefix, index))


def _parent(root: Json, path: Path_) -> Json:
    for key in path[:-1]:
        root = root[key]
    return root


def _edge_value(rng: random.Random, current: Json, names: list[str], raws: list[str]) -> Json:
    """A value of another type or an edge value of the same type."""
    deep = rng.randint(200, 20000)
    options: list[Json] = [
        -1,
        0,
        1,
        -(2**31) - 1,
        2**31,
        2**63,
        2**70,
        -(2**70),
        1.5,
        -0.0,
        float("nan"),
        float("inf"),
        float("-inf"),
        1e308,
        5e-324,
        "",
        "x",
        "int8",
        "float64",
        "uint8",
        "codes",
        "int",
        "../up",
        None,
        True,
        False,
        [],
        [1],
        [1, 2, 3],
        [-1, 2**40],
        [[1]],
        {},
        {"a": 1},
        [None],
        ["a", "b"],
        {"a": {"b": {"c": [1, {"d": None}]}}},
    ]
    if names:
        options += [rng.choice(names), [rng.choice(names)], [rng.choice(names)] * 2]
    if isinstance(current, bool):
        options += [not current]
    elif isinstance(current, int):
        options += [current + 1, current - 1, -current, current * 2, current + 2**31, 2**62]
    elif isinstance(current, float):
        options += [current * 2, -current, 0.0, current + 1e-9, current * 1e300]
    elif isinstance(current, list) and current:
        shuffled = list(current)
        rng.shuffle(shuffled)
        options += [shuffled, current[:-1], [*current, current[-1]], current[::-1]]
    elif isinstance(current, dict) and current:
        dropped = dict(current)
        dropped.pop(rng.choice(list(dropped)))
        options += [dropped, list(current.values())]
    choice = rng.randrange(len(options) + 2)
    if choice < len(options):
        return options[choice]
    raws.append(
        ("[" * deep + "]" * deep) if choice == len(options) else "9" * rng.randint(4400, 9000)
    )
    return _RAW.format(len(raws) - 1)


def mutate_json(manifest: Json, rng: random.Random) -> tuple[Json, list[str]]:
    """Change, delete or add one value at a random path; returns the new manifest and the raw
    texts its placeholders stand for. Paths under ``program`` are drawn most often."""
    paths = [p for p in json_paths(manifest) if p]
    program = [p for p in paths if p[0] == "program"]
    path = rng.choice(program if program and rng.random() < 0.8 else paths)
    names = [v for p in program if p and p[-1] in ("name", "output") for v in [_get(manifest, p)]]
    raws: list[str] = []
    parent = _parent(manifest, path)
    action = rng.random()
    if action < 0.12:
        del parent[path[-1]]
    elif action < 0.18 and isinstance(parent, dict):
        parent[rng.choice(["extra", "arrays", "op", "shape", "name", "bits"])] = _edge_value(
            rng, None, names, raws
        )
    else:
        parent[path[-1]] = _edge_value(rng, parent[path[-1]], names, raws)
    return manifest, raws


def _get(root: Json, path: Path_) -> Json:
    for key in path:
        root = root[key]
    return root


def dump_json(manifest: Json, raws: list[str]) -> bytes:
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(_RAW.format(i)), raw)
    return (text + "\n").encode()


def rehash(manifest: Json, members: dict[str, bytes]) -> None:
    """Set every array entry's ``bytes`` and ``sha256`` to those of the member it names (when
    both are still there), so that the mutation reaches the deeper program checks."""
    arrays = manifest.get("arrays") if isinstance(manifest, dict) else None
    if not isinstance(arrays, dict):
        return
    for entry in arrays.values():
        if isinstance(entry, dict) and isinstance(entry.get("member"), str):
            content = members.get(entry["member"])
            if content is not None:
                entry["bytes"] = len(content)
                entry["sha256"] = hashlib.sha256(content).hexdigest()


def mutate_manifest(data: bytes, rng: random.Random, recompute_hashes: bool) -> bytes:
    members = unzip(data)
    manifest, raws = mutate_json(json.loads(members["manifest.json"]), rng)
    if recompute_hashes:
        rehash(manifest, members)
    members["manifest.json"] = dump_json(manifest, raws)
    return rezip(sorted(members.items()))


# -- array payloads ----------------------------------------------------------------------------


def _extreme(dtype: np.dtype, rng: random.Random) -> Any:
    if dtype.kind == "f":
        return rng.choice([np.nan, np.inf, -np.inf, np.finfo(dtype).max, 0.0, -1e30])
    if dtype.kind == "b":
        return rng.choice([True, False])
    info = np.iinfo(dtype)
    return rng.choice([info.min, info.max, 0, -1 if info.min < 0 else 1, info.max // 2])


def mutate_payload(data: bytes, rng: random.Random) -> bytes:
    """Change one array's content (or its declared shape/dtype consistently with the content)
    and recompute the hashes: only the program's own validation can catch it."""
    members = unzip(data)
    manifest = json.loads(members["manifest.json"])
    name = rng.choice(sorted(manifest["arrays"]))
    entry = manifest["arrays"][name]
    content = members[entry["member"]]
    dtype = np.dtype(entry["dtype"]).newbyteorder("<")
    action = rng.choice(
        [
            "element",
            "element",
            "bytes",
            "reshape",
            "retype",
            "grow",
            "shrink",
            "bits",
            "unsort",
            "unsort",
        ]
    )
    if action == "unsort" and ".thresholds" in name:
        content = _unsort_thresholds(manifest, name, content, rng)
    elif action == "element" and entry["packed_bits"] is None and len(content) >= dtype.itemsize:
        values = np.frombuffer(content, dtype).copy()
        values[rng.randrange(values.size)] = _extreme(dtype, rng)
        content = values.tobytes()
    elif action == "reshape":
        size = math.prod(entry["shape"])
        entry["shape"] = rng.choice(
            [[size], [1, size], [*entry["shape"], 1], entry["shape"][::-1], [size, 1, 1, 1]]
        )
    elif action == "retype" and entry["packed_bits"] is None:
        other = rng.choice(
            ["int8", "int16", "int32", "int64", "uint8", "float32", "float64", "bool"]
        )
        width = np.dtype(other).itemsize
        if len(content) % width == 0:
            entry["dtype"], entry["shape"] = other, [len(content) // width]
    elif action == "grow" and entry["shape"]:
        row = len(content) // max(1, entry["shape"][0]) if entry["packed_bits"] is None else 1
        content += rng.randbytes(max(1, row))
        entry["shape"] = [entry["shape"][0] + 1, *entry["shape"][1:]]
    elif action == "shrink" and entry["shape"] and entry["shape"][0] > 0:
        entry["shape"] = [entry["shape"][0] - 1, *entry["shape"][1:]]
        if entry["packed_bits"] is None:
            content = content[: math.prod(entry["shape"]) * dtype.itemsize]
        else:
            content = content[: (math.prod(entry["shape"]) * entry["packed_bits"] + 7) // 8]
    elif action == "bits" and entry["packed_bits"] is not None:
        entry["packed_bits"] = rng.choice([1, 2, 3, 4, 5, 8])
        total = len(content) * 8 // entry["packed_bits"]
        entry["shape"] = [total]
        content = content[: (total * entry["packed_bits"] + 7) // 8]
    else:
        content = flip_bits(content, rng, 1, 3) if content else content
    members[entry["member"]] = content
    rehash(manifest, members)
    members["manifest.json"] = dump_json(manifest, [])
    return rezip(sorted(members.items()))


def _unsort_thresholds(manifest: Json, name: str, content: bytes, rng: random.Random) -> bytes:
    """Re-encode one ThresholdAct's thresholds with two levels swapped, a level pushed beyond
    int32, or a direction outside {-1, 0, 1}."""

    def change(thresholds: np.ndarray, direction: np.ndarray) -> None:
        c = rng.randrange(thresholds.shape[0])
        action = rng.choice(["swap", "huge", "direction"])
        if action == "swap" and thresholds.shape[1] > 1:
            t = rng.randrange(thresholds.shape[1] - 1)
            thresholds[c, t], thresholds[c, t + 1] = thresholds[c, t + 1] - 1, thresholds[c, t]
        elif action == "huge":
            level = rng.randrange(thresholds.shape[1])
            thresholds[c, level] = rng.choice([2**31, -(2**31) - 1, 2**40])
            thresholds[c] = np.sort(thresholds[c])
        else:
            direction[c] = rng.choice([2, -2, 127, -128])

    return recode_thresholds(manifest, name, content, change)


def recode_thresholds(
    manifest: Json,
    name: str,
    content: bytes,
    change: Callable[[np.ndarray, np.ndarray], None],
) -> bytes:
    """The thresholds member ``name`` decoded to ``(thresholds, direction)`` (int64, int8),
    changed in place by ``change`` and encoded again; the node's ``threshold_steps`` and the
    manifest entry's shape follow (hashes are the caller's)."""
    from climbq_deploy.ir.serialize import (
        _byte_planes,
        _delta_decode,
        _delta_encode,
        _from_byte_planes,
    )

    node = next(
        n for n in manifest["program"]["nodes"] if n.get("arrays", {}).get("thresholds") == name
    )
    spec = node["threshold_steps"]
    planes = np.frombuffer(content, np.uint8).reshape(manifest["arrays"][name]["shape"])
    thresholds, direction = _delta_decode(
        _from_byte_planes(planes, spec["dtype"], tuple(spec["shape"]))
    )
    thresholds, direction = thresholds.astype(np.int64), direction.copy()
    change(thresholds, direction)
    steps = _delta_encode(thresholds, direction)
    planes = _byte_planes(steps)
    spec.update(dtype=steps.dtype.name, shape=list(steps.shape))
    manifest["arrays"][name]["shape"] = list(planes.shape)
    return planes.tobytes()


def edit_artifact(data: bytes, change: Callable[[Json, dict[str, bytes]], None]) -> bytes:
    """``data`` with ``change(manifest, members)`` applied and the hashes recomputed."""
    members = unzip(data)
    manifest = json.loads(members["manifest.json"])
    change(manifest, members)
    rehash(manifest, members)
    members["manifest.json"] = dump_json(manifest, [])
    return rezip(sorted(members.items()))
