"""``climbq bench`` on a small exported model: latency record and accuracy on a dataset."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from climbq_deploy.bench import bench_artifact
from climbq_deploy.data.dataset import save_dataset
from climbq_deploy.errors import ConfigError
from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.passes import lower
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.resnet import CifarResNet
from climbq_deploy.targets.tflite import TfliteTarget
from climbq_deploy.targets.tflite.flavour import int16_flavour
from tests.conftest import MEAN, STD, randomize_batchnorm

pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, small_syndigits):
    root = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    model = CifarResNet(8, 10, QuantSpec("climbq", 4, 4))
    randomize_batchnorm(model, 0)
    graph = lower(capture(model, MEAN, STD, (32, 32, 3), input_bits=16))
    path = TfliteTarget().export(graph, root / "m.tflite")
    return path, graph, str(save_dataset(small_syndigits, root / "syn")), small_syndigits


def test_bench_record_and_accuracy(exported) -> None:
    path, graph, data, dataset = exported
    record = bench_artifact(
        path, threads=2, warmup=1, repeats=5, data=data, options={"kernels": "ref"}
    )
    lat = record["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and record["batch"] == 1
    assert record["threads"] == 2 and record["kernels"] == "ref" and record["n_images"] == 100
    expected = ReferenceModel(int16_flavour(graph)).predict(dataset.test_images).argmax(1)
    assert record["top1"] == pytest.approx(100 * np.mean(expected == dataset.test_labels))


def test_bench_cli_json_and_bad_options(exported) -> None:
    path = exported[0]
    result = subprocess.run(
        [sys.executable, "-m", "climbq_deploy", "bench", str(path), "--repeats", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["latency_ms"]) == {"p50", "p90", "p99"}
    with pytest.raises(ConfigError, match="kernels"):
        bench_artifact(path, options={"kernels": "gpu"})


SHAPE_KEYS = {
    "model",
    "target",
    "kernels",
    "threads",
    "batch",
    "latency_ms",
    "images_per_second",
    "cpu",
    "cores",
    "top1",
    "reference_agreement",
}


def test_bench_artifact_numpy_and_tflite_share_one_record_shape(exported, tmp_path) -> None:
    from climbq_deploy.ir.serialize import save_program

    path, graph, data, dataset = exported
    program = save_program(graph, tmp_path / "m.climbq")
    numpy_record = bench_artifact(program, batch=4, warmup=1, repeats=3, data=data)
    tflite_record = bench_artifact(path, kernels="ref", warmup=1, repeats=3, data=data)
    for record in (numpy_record, tflite_record):
        assert set(record) >= SHAPE_KEYS
        assert record["n_images"] == len(dataset.test_labels)
    assert numpy_record["target"] == "numpy" and numpy_record["batch"] == 4
    assert numpy_record["reference_agreement"] is None  # it is the reference
    expected = ReferenceModel(graph).predict(dataset.test_images).argmax(1)
    assert numpy_record["top1"] == pytest.approx(100 * np.mean(expected == dataset.test_labels))
    # LiteRT against the reference of its own (int16-flavour) program: exact, so agreement 1
    assert tflite_record["target"] == "tflite" and tflite_record["reference_agreement"] == 1.0


def test_bench_artifact_refuses_unknown_files(tmp_path) -> None:
    from climbq_deploy.errors import DataError

    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"m\.bin.*unknown artifact kind"):
        bench_artifact(tmp_path / "m.bin")
    with pytest.raises(DataError, match="no artifact"):
        bench_artifact(tmp_path / "missing.tflite")


def test_bench_text_of_the_numpy_target_never_says_none(exported, tmp_path) -> None:
    """NumPy's BLAS keeps its own thread pool (the record's ``threads`` is None); the line
    says so instead of 'None thread(s)'."""
    from climbq_deploy.ir.serialize import save_program

    program = save_program(exported[1], tmp_path / "m.climbq")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "climbq_deploy",
            "bench",
            str(program),
            "--threads",
            "2",
            "--warmup",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "None" not in result.stdout and "(numpy, its own threads, " in result.stdout


def test_bench_refuses_more_threads_than_16_per_core(exported, monkeypatch) -> None:
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"--threads 33 is more than 16 per core .*at most 32"):
        bench_artifact(exported[0], threads=33, warmup=0, repeats=1)
    assert bench_artifact(exported[0], threads=32, warmup=0, repeats=1)["threads"] == 32


def test_bench_refuses_a_batch_beyond_memory_before_running(exported, tmp_path, monkeypatch):
    """``--batch 100000`` (the issue's) on a machine with 1 GiB available: refused by the
    estimate (8 bytes x largest tensor x (thresholds + 1) per image) before any allocation;
    a batch that fits still runs."""
    import climbq_deploy.bench as bench_module
    from climbq_deploy.ir.serialize import save_program

    graph = exported[1]
    program = save_program(graph, tmp_path / "m.climbq")
    per_image = 8 * 32 * 32 * 16 * (15 + 1)  # 32x32x16 stem output, 4-bit: 15 thresholds
    assert bench_module.batch_bytes(graph, 1) == per_image
    monkeypatch.setattr(bench_module, "available_memory", lambda: 2**30)
    with pytest.raises(ConfigError, match=r"--batch 100000 needs about 195\.3 GiB"):
        bench_artifact(program, batch=100_000, warmup=0, repeats=1)
    most = 2**30 // per_image
    with pytest.raises(ConfigError, match=f"use --batch {most} or less"):
        bench_artifact(program, batch=most + 1, warmup=0, repeats=1)
    assert bench_artifact(program, batch=4, warmup=0, repeats=1)["batch"] == 4
