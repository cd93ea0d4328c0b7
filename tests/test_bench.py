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
