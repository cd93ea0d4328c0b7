"""``climbq bench`` on a small exported model: latency record and accuracy on a dataset."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from climbq_deploy.bench import bench_tflite
from climbq_deploy.calibration.dataset import save_dataset
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
    record = bench_tflite(path, threads=2, kernels="ref", warmup=1, repeats=5, data=data)
    lat = record["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and record["batch"] == 1
    assert record["threads"] == 2 and record["kernels"] == "ref" and record["n_images"] == 100
    expected = ReferenceModel(int16_flavour(graph)).predict(dataset.test_images).argmax(1)
    assert record["top1"] == pytest.approx(100 * np.mean(expected == dataset.test_labels))


def test_bench_cli_json_and_bad_options(exported) -> None:
    path = exported[0]
    result = subprocess.run(
        [sys.executable, "-m", "climbq_deploy", "bench", str(path), "--repeats", "3", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["latency_ms"]) == {"p50", "p90", "p99"}
    with pytest.raises(ConfigError, match="kernels"):
        bench_tflite(path, kernels="gpu")
