"""Fuzzing the loaders: thousands of mutated ``model.climbq`` and ``.tflite`` files.

Each case mutates a valid file (seeded, see :mod:`tests.fuzzing`) and loads it; a load that
succeeds also runs the NumPy reference on two images. Only the toolkit's own
:class:`ClimbQError` may come out: any other exception, or a case slower than 5 s, is a bug in
the loaders' validation. The counts per mutation kind are printed (``pytest -s``).
"""

from __future__ import annotations

import random
import resource
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch

from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.graph import Graph
from climbq_deploy.ir.passes import lower
from climbq_deploy.ir.passes.quantize_head import quantize_head
from climbq_deploy.ir.serialize import load_program_bytes, program_bytes, save_program
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.resnet import CifarResNet
from tests.conftest import MEAN, STD, randomize_batchnorm
from tests.fuzzing import (
    Tally,
    edit_artifact,
    flip_bits,
    mutate_manifest,
    mutate_members,
    mutate_payload,
    overwrite_word,
    recode_thresholds,
    truncate,
)

SIZE = 8
IMAGES = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
Mutator = Callable[[bytes, random.Random], bytes]

# cases per mutation kind, spread over the base artifacts
CLIMBQ_KINDS: dict[str, tuple[int, Mutator]] = {
    "bit_flips": (1000, flip_bits),
    "truncation": (400, truncate),
    "zip_members": (500, mutate_members),
    "manifest": (700, lambda d, r: mutate_manifest(d, r, recompute_hashes=False)),
    "manifest_rehash": (1400, lambda d, r: mutate_manifest(d, r, recompute_hashes=True)),
    "payload_rehash": (1400, mutate_payload),
}


def small_graph(bits: int, input_bits: int = 32) -> Graph:
    torch.manual_seed(bits)
    model = CifarResNet(8, 10, QuantSpec("climbq", bits, bits))
    randomize_batchnorm(model, bits)
    return lower(capture(model, MEAN, STD, (SIZE, SIZE, 3), input_bits=input_bits))


@pytest.fixture(scope="module")
def climbq_bases(tmp_path_factory) -> dict[str, bytes]:
    """Three valid artifacts: 2-bit packed, 4-bit with plain int weights and an int8 head,
    3-bit packed with an int16 input."""
    root = tmp_path_factory.mktemp("fuzz")
    four = quantize_head(small_graph(4), bits=8)
    return {
        "2bit": program_bytes(small_graph(2)),
        "4bit-int": save_program(four, root / "int.climbq", pack=False).read_bytes(),
        "3bit-in16": program_bytes(small_graph(3, input_bits=16)),
    }


def load_and_run(data: bytes) -> None:
    graph, _ = load_program_bytes(data)
    ReferenceModel(graph).run(IMAGES)


def test_bases_load_and_run(climbq_bases: dict[str, bytes]) -> None:
    for data in climbq_bases.values():
        graph, _ = load_program_bytes(data)
        logits = ReferenceModel(graph).run(IMAGES)[graph.output]
        assert logits.shape == (2, 10) and np.isfinite(logits).all()


def fuzz(
    bases: dict[str, bytes], kinds: dict[str, tuple[int, Mutator]], load: Callable[[bytes], object]
) -> Tally:
    tally = Tally()
    names = sorted(bases)
    for kind, (count, mutate) in kinds.items():
        for seed in range(count):
            base = bases[names[seed % len(names)]]
            data = mutate(base, random.Random(f"{kind}:{seed}"))
            tally.run(kind, seed, lambda data=data: load(data))
    return tally


@pytest.mark.slow
def test_mutated_artifacts_raise_only_climbq_errors(climbq_bases: dict[str, bytes]) -> None:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    tally = fuzz(climbq_bases, CLIMBQ_KINDS, load_and_run)
    print(f"\n.climbq fuzz, {time.perf_counter() - start:.1f} s\n{tally.table()}")
    assert not tally.foreign, tally.failure()
    assert sum(tally.tried.values()) >= 5000
    assert sum(tally.rejected.values()) >= 4000  # most mutations must be caught
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss  # KiB on Linux
    assert grown < 512 * 1024, f"peak memory grew by {grown} KiB: an allocation blowup"


def test_declared_huge_array_is_refused_before_allocation(climbq_bases) -> None:
    """A manifest declaring 2**40 elements (bytes and hash consistent with that claim) is
    refused from the member's real length, not by trying to allocate."""
    import json

    from climbq_deploy.errors import ArtifactError
    from tests.fuzzing import dump_json, rezip, unzip

    members = unzip(climbq_bases["2bit"])
    manifest = json.loads(members["manifest.json"])
    entry = manifest["arrays"]["fc40.weight"]
    entry["shape"], entry["bytes"] = [2**40], 2**40 * 4
    members["manifest.json"] = dump_json(manifest, [])
    with pytest.raises(ArtifactError, match=r"fc40\.weight"):
        load_program_bytes(rezip(sorted(members.items())))


def _tensor(manifest: dict, name: str) -> dict:
    return next(t for t in manifest["program"]["tensors"] if t["name"] == name)


def _node(manifest: dict, name: str) -> dict:
    return next(n for n in manifest["program"]["nodes"] if n["name"] == name)


def _unsorted(manifest: dict, members: dict[str, bytes]) -> None:
    def swap(thresholds: np.ndarray, direction: np.ndarray) -> None:
        thresholds[5, [0, 2]] = thresholds[5, [2, 0]]

    name = "act4.thresholds"
    member = manifest["arrays"][name]["member"]
    members[member] = recode_thresholds(manifest, name, members[member], swap)


def _direction(manifest: dict, members: dict[str, bytes]) -> None:
    def bad(thresholds: np.ndarray, direction: np.ndarray) -> None:
        direction[3] = 2

    name = "act8.thresholds"
    member = manifest["arrays"][name]["member"]
    members[member] = recode_thresholds(manifest, name, members[member], bad)


def _off_grid(manifest: dict, members: dict[str, bytes]) -> None:
    weight = bytearray(members["arrays/weights/conv6.bin"])  # int8, 4-bit odd grid
    weight[7] = 0
    members["arrays/weights/conv6.bin"] = bytes(weight)


TARGETED = {
    "unsorted-thresholds": (
        "2bit",
        _unsorted,
        r"node 'act4': thresholds of channel 5 are not sorted",
    ),
    "direction-2": ("2bit", _direction, r"'act8.thresholds'.*directions \[.*2\] are not all in"),
    "weight-off-grid": (
        "4bit-int",
        _off_grid,
        r"node 'conv6': weight 0 is off the 4-bit grid 2 \* code \+ -15",
    ),
    "stride": (
        "2bit",
        lambda m, _: _node(m, "conv6").update(stride=2),
        r"node 'conv6': output 'bn7' has shape \(8, 8, 16\), the op gives \(4, 4, 16\)",
    ),
    "dilation-in-version-1": (
        "2bit",
        lambda m, _: _node(m, "conv6").update(dilation=2),
        r"program node \d+ \('conv6'\): dilation needs program version 2, the file says 1",
    ),
    "dilation": (
        "2bit",
        lambda m, _: (_node(m, "conv6").update(dilation=2), m["program"].update(version=2)),
        r"node 'conv6': output 'bn7' has shape \(8, 8, 16\), the op gives \(6, 6, 16\)",
    ),
    "narrowed-bounds": (
        "2bit",
        lambda m, _: _tensor(m, "bn7").update(bounds=[-400, 414]),
        r"'bn7' declares bounds \[-400, 414\] but its inputs reach \[-405, 414\]",
    ),
    "accumulator-overflow": (
        "2bit",
        lambda m, _: _tensor(m, "relu5").update(bounds=[0, 2**30], dtype="int32"),
        r"node 'conv6': accumulator bound \d+ exceeds int32",
    ),
    "huge-shape": (
        "2bit",
        lambda m, _: _tensor(m, "bn7").update(shape=[2**40, 8, 16]),
        r"tensor 'bn7': shape .* has more than 2147483647 elements",
    ),
    "image-read-by-conv": (
        "2bit",
        lambda m, _: _node(m, "conv2").update(inputs=["image"]),
        r"node 'conv2': only input_quant reads the image",
    ),
}


@pytest.mark.parametrize("case", sorted(TARGETED))
def test_targeted_corruptions_name_the_node_and_value(climbq_bases, case: str) -> None:
    """Hash-consistent edits that only the program validation can catch, each refused with a
    message naming the node or tensor and the bad value."""
    from climbq_deploy.errors import ArtifactError

    base, change, message = TARGETED[case]
    data = edit_artifact(climbq_bases[base], change)
    with pytest.raises(ArtifactError, match=message) as caught:
        load_program_bytes(data, "m.climbq")
    assert str(caught.value).startswith("m.climbq: ")


def test_decompression_bomb_is_refused(tmp_path) -> None:
    """8 MiB of zeros deflate to ~8 KB: a member inflating that much is refused before it is
    read (the same check stops a 8 GB array hidden in an 8 MB file)."""
    from climbq_deploy.errors import ArtifactError
    from climbq_deploy.ir.artifact import read_artifact, write_artifact

    path = write_artifact(tmp_path / "bomb.climbq", {}, {"zeros": np.zeros(2**23, np.uint8)})
    with pytest.raises(ArtifactError, match=r"arrays/zeros\.bin .*decompression bomb"):
        read_artifact(path)


@pytest.mark.slow
def test_mutated_files_on_disk_and_size_report(climbq_bases: dict[str, bytes], tmp_path) -> None:
    """The path readers (``load_program``, ``artifact_size_report``) on mutated files."""
    from climbq_deploy.ir.artifact import artifact_size_report
    from climbq_deploy.ir.serialize import load_program

    path = tmp_path / "m.climbq"

    def on_disk(read: Callable[[object], object]) -> Callable[[bytes], object]:
        def case(data: bytes) -> object:
            path.write_bytes(data)
            return read(path)

        return case

    kinds: dict[str, tuple[int, Mutator]] = {
        "bit_flips": (150, flip_bits),
        "truncation": (100, truncate),
        "zip_members": (100, mutate_members),
        "manifest": (150, lambda d, r: mutate_manifest(d, r, recompute_hashes=False)),
    }
    tally = Tally()
    for reader, name in ((load_program, "load_program"), (artifact_size_report, "size_report")):
        part = fuzz(climbq_bases, {f"{name}/{k}": v for k, v in kinds.items()}, on_disk(reader))
        tally.tried.update(part.tried)
        tally.rejected.update(part.rejected)
        tally.accepted.update(part.accepted)
        tally.foreign += part.foreign
        tally.slowest = max(tally.slowest, part.slowest)
    print(f"\nfile-path readers\n{tally.table()}")
    assert not tally.foreign, tally.failure()


# -- TFLite ------------------------------------------------------------------------------------


def _metadata_region(content: bytes, program: bytes) -> tuple[int, int]:
    start = content.find(program)
    assert start > 4
    return start, start + len(program)


@pytest.fixture(scope="module")
def tflite_base() -> tuple[bytes, bytes]:
    """A valid ``.tflite`` of a 2-bit ResNet-8 (uint8 image input; int16 program input)
    and its embedded program."""
    pytest.importorskip("ai_edge_litert")
    from climbq_deploy.targets.tflite.export import write_tflite
    from climbq_deploy.targets.tflite.flavour import int16_flavour

    flavour = int16_flavour(small_graph(2, input_bits=16))
    program = program_bytes(flavour)
    return write_tflite(flavour, batch=1, program=program), program


def test_tflite_base_reads_back(tflite_base: tuple[bytes, bytes]) -> None:
    from climbq_deploy.targets.tflite.reader import read_program_bytes, read_tflite

    content, program = tflite_base
    assert read_program_bytes(content, "m.tflite") == program
    graph, _ = read_tflite(content, "m.tflite")
    assert graph.tensors[graph.input].shape == (SIZE, SIZE, 3)


def structural_positions(content: bytes, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Byte positions the reader reads as flatbuffer structure (root offset, soffsets, vtables,
    offsets, vector lengths and elements, scalars): where offset corruption bites."""
    from climbq_deploy.targets.tflite import reader

    seen: set[int] = set()
    unpack, vector = reader._File.unpack, reader._Table.vector

    def record_unpack(self, fmt: str, pos: int, what: str):
        seen.add(pos)
        return unpack(self, fmt, pos, what)

    def record_vector(self, slot: int, width: int, what: str) -> tuple[int, int]:
        start, count = vector(self, slot, width, what)
        if width >= 4:  # index and offset vectors, not byte data
            seen.update(range(start, start + width * min(count, 64), width))
        return start, count

    with monkeypatch.context() as patch:
        patch.setattr(reader._File, "unpack", record_unpack)
        patch.setattr(reader._Table, "vector", record_vector)
        reader.read_tflite(content, "base.tflite")
    return sorted(seen)


@pytest.mark.slow
def test_mutated_tflite_files_raise_only_climbq_errors(
    tflite_base: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    from climbq_deploy.targets.tflite.reader import read_tflite

    content, program = tflite_base
    lo, hi = _metadata_region(content, program)
    positions = structural_positions(content, monkeypatch)
    assert len(positions) > 500

    def metadata(data: bytes, rng: random.Random) -> bytes:
        """Inside the embedded program, its length word, or the metadata's name/index."""
        pick = rng.random()
        if pick < 0.5:
            region = flip_bits(data[lo:hi], rng, 1, 4)
            return data[:lo] + region + data[hi:]
        if pick < 0.7:
            return overwrite_word(data, rng, lo - 4)  # the data vector's length
        name = data.find(b"climbq_program")
        if pick < 0.85 and name > 0:
            return overwrite_word(data, rng, name - 4)  # the name string's length
        return data[:lo] + truncate(data[lo:hi], rng) + bytes(hi - lo)[: rng.randrange(2)]

    def offsets(data: bytes, rng: random.Random) -> bytes:
        """1-3 structural words (offsets, lengths, vtable entries, indices) set to edge values."""
        for _ in range(rng.randint(1, 3)):
            data = overwrite_word(data, rng, min(rng.choice(positions), len(data) - 4))
        return data

    kinds: dict[str, tuple[int, Mutator]] = {
        "tfl_bit_flips": (400, flip_bits),
        "tfl_truncation": (200, truncate),
        "tfl_metadata": (300, metadata),
        "tfl_offsets": (400, offsets),
    }
    start = time.perf_counter()
    tally = fuzz({"tflite": content}, kinds, lambda data: read_tflite(data, "fuzz.tflite"))
    print(f"\n.tflite fuzz, {time.perf_counter() - start:.1f} s\n{tally.table()}")
    assert not tally.foreign, tally.failure()
    assert sum(tally.tried.values()) >= 1000


RUNNER_SCRIPT = """
import sys
import numpy as np
from climbq_deploy.errors import ClimbQError
from climbq_deploy.targets.tflite import TfliteTarget

images = np.random.default_rng(0).integers(0, 256, (1, {size}, {size}, 3), dtype=np.uint8)
for path in sys.argv[1:]:
    print("start", path, flush=True)
    try:
        TfliteTarget("ref").load(path).run(images, with_codes=True)
    except ClimbQError:
        print("rejected", path, flush=True)
    except Exception as exc:
        print("foreign", path, repr(exc)[:200].replace(chr(10), " "), flush=True)
    else:
        print("accepted", path, flush=True)
"""


@pytest.mark.slow
def test_mutated_tflite_files_through_litert_in_a_child_process(
    tflite_base: tuple[bytes, bytes], tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner's whole path, LiteRT's interpreter included, on mutated files the reader
    accepts (plus some it refuses): only ClimbQError, and no crash. LiteRT runs in a child
    process: a crafted flatbuffer can crash its C++ code, which must never take pytest down."""
    import subprocess
    import sys

    from climbq_deploy.errors import ClimbQError
    from climbq_deploy.targets.tflite.reader import read_tflite

    content, _ = tflite_base
    positions = structural_positions(content, monkeypatch)
    paths, passed = [], 0
    for seed in range(2000):
        rng = random.Random(f"litert:{seed}")
        data = flip_bits(content, rng, 1, 4) if seed % 2 else content
        for _ in range(0 if seed % 2 else rng.randint(1, 2)):
            data = overwrite_word(data, rng, min(rng.choice(positions), len(data) - 4))
        try:
            read_tflite(data, "fuzz.tflite")
        except ClimbQError:
            if len(paths) - passed >= 10:
                continue
        else:
            passed += 1
        paths.append(tmp_path / f"{seed}.tflite")
        paths[-1].write_bytes(data)
        if passed >= 40:
            break
    script = RUNNER_SCRIPT.format(size=SIZE)
    child = subprocess.run(
        [sys.executable, "-c", script, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line.split(" ", 2) for line in child.stdout.splitlines()]
    started = [line[1] for line in lines if line[0] == "start"]
    assert child.returncode == 0, f"LiteRT crashed ({child.returncode}) on {started[-1:]}"
    outcomes = {line[1]: line[0] for line in lines if line[0] != "start"}
    foreign = [line for line in lines if line[0] == "foreign"]
    print(
        f"\nLiteRT child: {len(paths)} files ({passed} pass the reader): "
        f"{sum(v == 'rejected' for v in outcomes.values())} rejected, "
        f"{sum(v == 'accepted' for v in outcomes.values())} accepted"
    )
    assert len(outcomes) == len(paths) and not foreign, foreign[:5]
