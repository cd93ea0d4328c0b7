"""ThresholdAct's per-channel requantization ``shift``: stored, loaded (also from older files
that hold one scalar per layer) and validated."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from climbq_deploy.errors import ArtifactError
from climbq_deploy.ir.artifact import read_artifact, write_artifact
from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.graph import Graph, ThresholdAct
from climbq_deploy.ir.passes import lower
from climbq_deploy.ir.serialize import load_program, save_program
from climbq_deploy.ir.validate import validate_program
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.resnet import CifarResNet
from tests.conftest import MEAN, STD, randomize_batchnorm


@pytest.fixture(scope="module")
def program() -> Graph:
    torch.manual_seed(0)
    model = CifarResNet(8, 10, QuantSpec("climbq", 4, 4))
    randomize_batchnorm(model, 0)
    return lower(capture(model, MEAN, STD, (8, 8, 3)))


def with_shifts(graph: Graph, shifts: dict[int, Any]) -> Graph:
    """``graph`` with ``shift`` of its k-th ThresholdAct set to ``shifts[k]`` (no validation)."""
    acts = [n.name for n in graph.nodes if isinstance(n, ThresholdAct)]
    by_name = {acts[k]: value for k, value in shifts.items()}
    nodes = [replace(n, shift=by_name[n.name]) if n.name in by_name else n for n in graph.nodes]
    return graph.replace_nodes(nodes)


def rewrite(path: Path, out: Path, edit) -> Path:
    """The artifact at ``path`` with its manifest edited by ``edit(manifest, arrays)``."""
    manifest, arrays = read_artifact(path)
    packed = {k: e["packed_bits"] for k, e in manifest["arrays"].items() if e["packed_bits"]}
    manifest = {
        k: v for k, v in manifest.items() if k not in ("arrays", "format", "schema_version")
    }
    arrays = dict(arrays)
    edit(manifest, arrays)
    return write_artifact(out, manifest, arrays, packed)


def act_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in manifest["program"]["nodes"] if e["op"] == "threshold_act"]


def test_per_channel_shift_round_trips_and_runs_identically(program: Graph, tmp_path) -> None:
    channels = program.nodes[[n.op for n in program.nodes].index("threshold_act")].thresholds
    c = channels.shape[0]
    shift = np.arange(c, dtype=np.int8) % 4
    shift[-1] = 31
    graph = with_shifts(program, {1: shift})
    path = save_program(graph, tmp_path / "shifted.climbq")
    loaded, manifest = load_program(path)
    entries = act_entries(manifest)
    assert entries[0]["shift"] == 0 and "shift" not in entries[0]["arrays"]  # None: scalar 0
    assert "shift" not in entries[1] and entries[1]["arrays"]["shift"].endswith(".shift")
    acts = [n for n in loaded.nodes if isinstance(n, ThresholdAct)]
    assert acts[0].shift is None
    assert acts[1].shift.dtype == np.int8 and acts[1].shift.tolist() == shift.tolist()
    assert acts[1].channel_shifts().tolist() == shift.tolist()
    assert acts[0].channel_shifts().tolist() == [0] * acts[0].thresholds.shape[0]
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        ReferenceModel(loaded).predict(images), ReferenceModel(graph).predict(images)
    )


def test_pure_program_stores_scalar_zero_as_program_version_1_did(program, tmp_path) -> None:
    _, manifest = load_program(save_program(program, tmp_path / "pure.climbq"))
    assert manifest["program"]["version"] == 1
    assert all(e["shift"] == 0 and "shift" not in e["arrays"] for e in act_entries(manifest))


def test_old_scalar_shifts_load_per_channel(program: Graph, tmp_path) -> None:
    """Older files: ``"shift": s`` per layer. 0 reads as None, s > 0 as s on every channel."""
    path = save_program(program, tmp_path / "pure.climbq")

    def layer_shift(manifest, _arrays) -> None:
        act_entries(manifest)[2]["shift"] = 3

    old, _ = load_program(rewrite(path, tmp_path / "old.climbq", layer_shift))
    acts = [n for n in old.nodes if isinstance(n, ThresholdAct)]
    assert acts[0].shift is None and acts[1].shift is None
    assert acts[2].shift.tolist() == [3] * acts[2].thresholds.shape[0]


@pytest.mark.parametrize("value", [-1, 32, 1.5, True, None, "2", [1, 2]])
def test_bad_scalar_shift_is_refused(program: Graph, tmp_path, value) -> None:
    path = save_program(program, tmp_path / "pure.climbq")

    def bad(manifest, _arrays) -> None:
        act_entries(manifest)[1]["shift"] = value

    with pytest.raises(ArtifactError, match=r"shift is .*expected an int in 0\.\.31"):
        load_program(rewrite(path, tmp_path / "bad.climbq", bad))


def test_shift_as_scalar_and_array_is_refused(program: Graph, tmp_path) -> None:
    c = program.nodes[[n.op for n in program.nodes].index("threshold_act")].thresholds.shape[0]
    path = save_program(with_shifts(program, {0: np.ones(c, np.int8)}), tmp_path / "s.climbq")

    def both(manifest, _arrays) -> None:
        act_entries(manifest)[0]["shift"] = 1

    with pytest.raises(ArtifactError, match="both as a scalar and as an array"):
        load_program(rewrite(path, tmp_path / "both.climbq", both))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda c: np.zeros(c + 1, np.int8), r"shift must be None or \(\d+,\) integers"),
        (lambda c: np.zeros((c, 1), np.int8), r"shift must be a non-empty 1-d array"),
        (lambda c: np.full(c, 32, np.int16), r"values in \[32, 32\]"),
        (lambda c: np.full(c, -1, np.int8), r"values in \[-1, -1\]"),
        (lambda c: np.zeros(c, np.float64), r"shift must be an integer array"),
        (lambda c: 2, r"shift must be an integer array, got int"),
    ],
)
def test_validate_refuses_bad_shift_shapes_and_ranges(program: Graph, make, message) -> None:
    c = program.nodes[[n.op for n in program.nodes].index("threshold_act")].thresholds.shape[0]
    validate_program(with_shifts(program, {0: np.full(c, 31, np.int8)}))  # the edge passes
    with pytest.raises(ArtifactError, match=message):
        validate_program(with_shifts(program, {0: make(c)}), "f.climbq")
