"""The TensorRT engine runner where TensorRT is missing (one clear line, exit code 3), the CLI
paths of the tensorrt target (export --weights, bench under ONNX Runtime, polygraphy), and a
check on the trained model."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from climbq_deploy.cli import main
from climbq_deploy.errors import TargetUnavailableError
from climbq_deploy.targets import get_target
from climbq_deploy.targets.tensorrt.engine import EXIT_UNAVAILABLE, tensorrt_unavailable
from tests.conftest import resnet8_onnx

pytest.importorskip("onnxruntime")
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    return resnet8_onnx(tmp_path_factory.mktemp("trt") / "m.onnx")


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_missing_tensorrt_is_one_clear_line_and_exit_code_3(onnx_model, capsys) -> None:
    reason = tensorrt_unavailable()
    assert reason is not None and "tensorrt" in reason and "\n" not in reason
    assert EXIT_UNAVAILABLE == 3
    with pytest.raises(TargetUnavailableError, match="TensorRT cannot run here"):
        get_target("tensorrt", "tensorrt").load(onnx_model)
    assert main(["bench", str(onnx_model), "--runtime", "tensorrt"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("climbq: error: target 'tensorrt' cannot run here: the tensorrt")
    # check refuses before touching the run folder
    assert main(["check", "no-such-run", "--target", "tensorrt", "--runtime", "tensorrt"]) == 3
    assert "cannot run here" in capsys.readouterr().err


def test_bench_under_onnxruntime(onnx_model, capsys) -> None:
    assert (
        main(
            ["bench", str(onnx_model), "--batch", "4", "--repeats", "3", "--warmup", "1", "--json"]
        )
        == 0
    )
    record = json.loads(capsys.readouterr().out)
    assert record["kernels"] == "onnxruntime" and record["batch"] == 4
    assert 0 < record["latency_ms"]["p50"] <= record["latency_ms"]["p99"]


def test_weights_option_is_only_for_tensorrt() -> None:
    from climbq_deploy.errors import ConfigError

    with pytest.raises(ConfigError, match="tensorrt"):
        get_target("numpy", weights="int4")
    with pytest.raises(ConfigError, match="weights must be one of"):
        get_target("tensorrt", weights="int2")
    assert get_target("tensorrt", weights="int4").suffix == ".int4.onnx"


@pytest.mark.slow
def test_polygraphy_runs_the_exported_model_under_onnxruntime(onnx_model, tmp_path) -> None:
    polygraphy = shutil.which("polygraphy", path=str(Path(sys.executable).parent))
    if polygraphy is None:
        pytest.skip("polygraphy is not installed (pip install climbq-deploy[onnx])")
    result = subprocess.run(
        [polygraphy, "run", str(onnx_model), "--onnxrt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "PASSED" in result.stdout + result.stderr


@pytest.mark.slow
def test_tensorrt_check_and_export_on_the_trained_model(trained_syndigits, tmp_path) -> None:
    """ONNX Runtime computes the trained 4-bit program exactly (300 images; the whole test sets
    of the runs in runs/lowering are in bench/results/onnx_check.md)."""
    from climbq_deploy.check import check_run

    _, _, q4, _ = trained_syndigits
    record = check_run(q4, target="tensorrt", limit=300, progress=False, artifact=None)
    assert record["exact_match"] is True and record["kernels"] == "onnxruntime"
    assert record["code_agreement"] == 1.0 and record["ref_top1"] == record["torch_top1"]
    out = tmp_path / "m.int4.onnx"
    assert (
        main(
            [
                "export",
                str(q4),
                "--target",
                "tensorrt",
                "--weights",
                "int4",
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    record4 = check_run(q4, target="tensorrt", artifact=out, limit=300, progress=False)
    assert record4["exact_match"] is True  # against the reference of its own (INT4-head) program
