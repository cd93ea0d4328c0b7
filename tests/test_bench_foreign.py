"""``climbq bench`` on models this toolkit did not write (an .onnx made with onnx.helper, a
.tflite made with the flatbuffer builder and no climbq metadata), and several models as one
table (md, csv, json), each measured in its own process."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

import climbq_deploy
from climbq_deploy.cli import main
from climbq_deploy.errors import ConfigError
from climbq_deploy.foreign import is_climbq_model
from tests.conftest import make_random_run, tiny_dataset

TIMING = ["--warmup", "1", "--repeats", "3"]


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> dict[str, Path]:
    """A foreign conv+relu .onnx (open batch axis) and a foreign 1x4 -> 3 .tflite (FC)."""
    import onnx
    from onnx import TensorProto, helper

    from climbq_deploy.targets.tflite.builder import ModelBuilder

    root = tmp_path_factory.mktemp("foreign")
    rng = np.random.default_rng(0)
    weight = helper.make_tensor(
        "w", TensorProto.FLOAT, [4, 3, 3, 3], rng.standard_normal(108).tolist()
    )
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4, 6, 6])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_path = root / "foreign.onnx"
    onnx.save(model, onnx_path)

    b = ModelBuilder(description="someone else's converter")
    x = b.add_tensor("x", [1, 4], "float32")
    w = b.add_tensor("w", [3, 4], "float32", data=rng.standard_normal((3, 4)).astype(np.float32))
    y = b.add_tensor("y", [1, 3], "float32")
    b.add_operator("FULLY_CONNECTED", [x, w, -1], [y])
    b.set_io([x], [y])
    tflite_path = root / "foreign.tflite"
    tflite_path.write_bytes(b.build())
    return {"onnx": onnx_path, "tflite": tflite_path}


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> Path:
    from climbq_deploy.data.dataset import save_dataset

    root = tmp_path_factory.mktemp("ours")
    data = save_dataset(tiny_dataset(size=16), root / "data")
    run = make_random_run(root / "run", data, "climbq+", 4)
    return climbq_deploy.export(run, "tflite", root / "model.tflite", golden=0)


@pytest.mark.parametrize("kind", ["onnx", "tflite"])
def test_a_foreign_model_is_timed_as_it_is(foreign, kind: str) -> None:
    path = foreign[kind]
    assert not is_climbq_model(path)
    record = climbq_deploy.bench(path, warmup=1, repeats=5, batch=2 if kind == "onnx" else 1)
    assert record["foreign"] is True and record["reference_agreement"] is None
    assert record["file_bytes"] == path.stat().st_size
    assert record["batch"] == (2 if kind == "onnx" else 1) and record["repeats"] == 5
    assert record["load_ms"] > 0 and record["first_invoke_ms"] > 0
    assert 0 < record["latency_ms"]["p50"] <= record["latency_ms"]["p99"]
    assert record["peak_rss_mb"] > 10  # a Python process with a runtime loaded
    with pytest.raises(ConfigError, match="not written by climbq_deploy"):
        climbq_deploy.bench(path, data=path.parent)


def test_our_models_carry_the_same_new_fields(ours) -> None:
    assert is_climbq_model(ours)
    record = climbq_deploy.bench(ours, warmup=1, repeats=3)
    assert record["foreign"] is False and record["file_bytes"] == ours.stat().st_size
    assert record["load_ms"] > 0 and record["first_invoke_ms"] > 0 and record["peak_rss_mb"] > 10


def test_several_models_make_one_table(foreign, ours, capsys) -> None:
    models = [str(ours), str(foreign["onnx"]), str(foreign["tflite"])]
    assert main(["bench", *models, *TIMING, "--format", "md"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| model | runtime | ours | batch |") and len(lines) == 5
    assert lines[2].startswith("| model.tflite | xnnpack | True |")
    assert lines[3].startswith("| foreign.onnx | onnxruntime-cpu | False |")
    assert lines[4].startswith("| foreign.tflite | xnnpack | False |")

    assert main(["bench", *models, *TIMING, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["model"] for r in rows] == ["model.tflite", "foreign.onnx", "foreign.tflite"]
    assert all(float(r["p50_ms"]) > 0 and float(r["peak_rss_mb"]) > 10 for r in rows)
    assert [r["agreement"] for r in rows] == ["", "", ""]  # no --data: no accuracy pass

    assert main(["bench", *models, *TIMING, "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["foreign"] for r in records] == [False, True, True]


def test_a_failing_model_leaves_an_error_row_and_a_non_zero_exit(foreign, tmp_path, capsys):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    assert main(["bench", str(foreign["onnx"]), str(broken), *TIMING, "--format", "md"]) == 2
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].endswith("| error |") and len(lines) == 4
    assert "broken.onnx: ONNX Runtime cannot load it" in lines[3]
    assert "1 of 2 models failed" in captured.err
