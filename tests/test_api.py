"""The Python API: ``climbq_deploy.quantize / train / export / check / bench / load_run /
ReferenceModel``, loaded lazily (no torch on import), the same functions the CLI calls; a user's
CNN from training to a checked integer artifact."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import climbq_deploy
import climbq_deploy.api
from climbq_deploy.cli import main
from climbq_deploy.data.dataset import load_dataset, save_dataset
from climbq_deploy.errors import ConfigError
from tests.conftest import tiny_dataset

API = ("quantize", "train", "export", "check", "bench", "load_run", "ReferenceModel")
USER_CNN = Path(__file__).resolve().parent / "models" / "user_cnn.py"


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def _train_user(
    tmp_path: Path, factory: str, method: str = "climbq+", bits: int = 4, batch_size: int = 4
) -> tuple[Path, Path]:
    """``(dataset folder, run folder)``: ``tests/models/user_cnn.py:factory`` trained one epoch
    through the API on a tiny 16 x 16 dataset."""
    data = save_dataset(tiny_dataset(size=16), tmp_path / "data")
    run = climbq_deploy.train(
        data,
        tmp_path / "run",
        model=f"{USER_CNN}:{factory}",
        method=method,
        wbits=bits,
        abits=bits,
        epochs=1,
        batch_size=batch_size,
        progress=False,
    )
    return data, run


def test_import_loads_no_torch_and_the_device_side_needs_none() -> None:
    result = _python(
        "import sys, climbq_deploy as c\n"
        "print('torch' in sys.modules)\n"
        "c.bench, c.ReferenceModel, c.__version__\n"
        "print('torch' in sys.modules, callable(c.bench), sorted(set(c.__all__) & set(dir(c))))"
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first == "False"
    assert second.startswith("False True") and all(name in second for name in API)


@pytest.mark.parametrize("name", API)
def test_every_name_resolves_to_a_documented_callable(name: str) -> None:
    obj = getattr(climbq_deploy, name)
    assert callable(obj)
    function = getattr(climbq_deploy.api, name, obj)  # the modules call the api's function
    assert len(inspect.getdoc(function) or "") > 80
    assert name in climbq_deploy.__all__


def test_module_names_stay_modules_and_call_the_api() -> None:
    import climbq_deploy.export as export_module
    from climbq_deploy.export import load_run

    assert climbq_deploy.export is export_module and export_module.load_run is load_run
    assert climbq_deploy.load_run is load_run
    assert "run_or_model" in inspect.signature(climbq_deploy.export).parameters
    assert "artifact" in inspect.signature(climbq_deploy.bench).parameters
    assert list(inspect.signature(climbq_deploy.train).parameters)[:2] == ["data", "out"]
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        climbq_deploy.nothing  # noqa: B018


def test_train_refuses_an_unknown_option(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"unknown training option\(s\) epoch; expected some"):
        climbq_deploy.train(tmp_path, tmp_path / "run", epoch=1)


def test_a_user_cnn_from_training_to_a_checked_artifact(tmp_path) -> None:
    data, run = _train_user(tmp_path, "exportable_cnn")
    assert run == tmp_path / "run" and (run / "metrics.json").is_file()
    path = climbq_deploy.export(run)
    assert path == run / "model.climbq"
    record = climbq_deploy.check(run)
    layers = {layer["layer"]: layer["mismatches"] for layer in record["layers"]}
    assert set(layers) == {
        f"net.{name}.act"
        for name in ("stem_bn", "block.1", "block.4", "branches.left", "branches.right_bn", "down")
    }
    assert record["top1_agreement"] == 1.0
    # Every code equal but at ties: ClimbQ's middle threshold is exactly 0, and a conv with no
    # BatchNorm after it ('down') gives an exact 0 where its window holds only zeros; the
    # integer sum is 0 (>= 0), float64 torch sums to about -1e-15 (measured: 2 of 1024 codes).
    assert all(n == 0 for name, n in layers.items() if name != "net.down.act")
    assert layers["net.down.act"] <= 4

    # a quantized model in memory exports to the same program
    trained = climbq_deploy.load_run(run)
    again = climbq_deploy.export(trained.model, out=tmp_path / "again.climbq", data=data)
    images = load_dataset(data).test_images
    np.testing.assert_array_equal(
        climbq_deploy.ReferenceModel.load(again).predict(images),
        climbq_deploy.ReferenceModel.load(path).predict(images),
    )
    with pytest.raises(ConfigError, match=r"needs out= .* and data="):
        climbq_deploy.export(trained.model)

    # bench on the device side: no torch
    timed = _python(
        "import sys, json, climbq_deploy as c\n"
        f"r = c.bench({str(path)!r}, warmup=0, repeats=2)\n"
        "print(json.dumps([r['repeats'], 'torch' in sys.modules]))"
    )
    assert timed.returncode == 0, timed.stderr
    assert json.loads(timed.stdout) == [2, False]


def test_the_cli_export_is_the_api_export(tmp_path, capsys) -> None:
    data, run = _train_user(tmp_path, "exportable_cnn", method="climbq", bits=2, batch_size=8)
    assert main(["export", str(run), "--out", str(tmp_path / "cli.climbq"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    api = climbq_deploy.export(run, out=tmp_path / "api.climbq")
    images = load_dataset(data).test_images
    np.testing.assert_array_equal(
        climbq_deploy.ReferenceModel.load(summary["artifact"]).predict(images),
        climbq_deploy.ReferenceModel.load(api).predict(images),
    )


def test_a_user_cnn_fx_cannot_trace_trains_exports_and_checks(tmp_path) -> None:
    """A forward that branches on the input size (torch.export traces it for the data's size)
    with a conv bias and no BatchNorm after it: trained, exported and checked like any run."""
    _, run = _train_user(tmp_path, "shape_branching_cnn")
    climbq_deploy.export(run)
    record = climbq_deploy.check(run)
    layers = {layer["layer"]: layer["mismatches"] for layer in record["layers"]}
    assert set(layers) == {"net.stem_bn.act", "net.body.1.act", "net.side.act"}
    assert layers == dict.fromkeys(layers, 0) and record["top1_agreement"] == 1.0


def test_a_user_cnn_with_local_average_pools_is_exact_on_every_target(tmp_path) -> None:
    """``AvgPool2d`` and ``avg_pool2d`` in a plain torch CNN: trained, exported, and checked
    on the NumPy reference, TFLite (builtin forms and the fused op) and the TensorRT-bound
    ONNX under ONNX Runtime, every code equal (the pools are folded into the convs after
    them)."""
    _, run = _train_user(tmp_path, "pooled_cnn")
    reference = climbq_deploy.check(run)
    layers = {layer["layer"]: layer["mismatches"] for layer in reference["layers"]}
    assert set(layers) == {
        f"net.{name}.1.act" for name in ("stem", "body", "pool_branch", "conv_branch", "tail")
    }
    assert layers == dict.fromkeys(layers, 0) and reference["top1_agreement"] == 1.0
    for target, options in (
        ("tflite", {"ops": "builtin"}),
        ("tflite", {"ops": "climbq"}),
        ("tensorrt", {}),
    ):
        record = climbq_deploy.check(run, target, **options)
        assert record["exact_match"] is True, (target, options, record.get("first_divergent"))
        assert record["top1_agreement"] == 1.0, (target, options)
