"""``climbq calibrate``: a full-precision run folder to an ordinary quantized run folder.

The full-precision "run" here is made without training (ResNet-20 at its initialisation with
BatchNorm statistics estimated on training images): calibration only runs forward passes.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from climbq_deploy.calibration import CalibrateConfig, calibrate
from climbq_deploy.calibration.batchnorm import reestimate_batchnorm
from climbq_deploy.calibration.calibset import draw_calibration_set
from climbq_deploy.cli import main
from climbq_deploy.data.dataset import load_dataset, save_dataset
from climbq_deploy.errors import ConfigError, DataError
from climbq_deploy.export import load_run, lower_run, provenance
from climbq_deploy.fileio import write_json
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.models import build_model
from climbq_deploy.quant.functional import climbq_weight_unit
from climbq_deploy.train.checkpoint import save_checkpoint
from climbq_deploy.train.config import TrainConfig
from climbq_deploy.train.loop import dataset_loader
from tests.conftest import codes_and_logits


@pytest.fixture(scope="module")
def fp_run(tmp_path_factory) -> Path:
    """``RUN`` folder of an untrained full-precision ResNet-20 on a small 16-pixel SynDigits-LT."""
    from climbq_deploy.data.syndigits import build_syndigits

    root = tmp_path_factory.mktemp("ptq")
    dataset = build_syndigits(10, seed=3, size=16, head_count=40, test_per_class=4, progress=False)
    data = str(save_dataset(dataset, root / "syn"))
    config = TrainConfig(data, epochs=1)
    torch.manual_seed(0)
    model = build_model("resnet20", dataset.num_classes)
    loader = dataset_loader(dataset, "train", 64)
    reestimate_batchnorm(model, (x for x, _ in loader.epoch(0)))
    run = root / "fp"
    save_checkpoint(
        run / "checkpoint.pt", {"config": config.as_dict(), "model": model.state_dict()}
    )
    write_json(run / "metrics.json", {"top1": 10.0, "method": "fp32", "config": config.as_dict()})
    return run


def calibration_images(run: Path, size: int, mode: str, seed: int) -> torch.Tensor:
    dataset = load_dataset(load_run(run).config.data)
    calib = draw_calibration_set(dataset.train_labels, size, mode, seed, dataset.num_classes)
    loader = dataset_loader(dataset, "train", size, calib.indices)
    return next(iter(loader.epoch(0)))[0]


def assert_reference_equals_torch(run_dir: Path) -> None:
    run = load_run(run_dir)
    graph = lower_run(run)
    images = load_dataset(run.config.data).test_images[:6]
    values = ReferenceModel(graph).run(images, keep=True)
    codes, _ = codes_and_logits(run.model, graph, images)
    for node in graph.nodes:
        if node.op == "threshold_act":
            np.testing.assert_array_equal(values[node.output], codes[node.source], node.source)


def test_ptq_w4a4_balanced_is_an_ordinary_run(fp_run: Path, tmp_path: Path) -> None:
    config = CalibrateConfig(str(fp_run), "ptq-w4a4", "balanced", 30, "percentile", seed=2)
    metrics = calibrate(config, tmp_path / "q")
    saved = json.loads((tmp_path / "q" / "metrics.json").read_text())
    assert saved["top1"] == metrics["top1"] and saved["epochs"] == 0
    assert {"many", "medium", "few", "per_class", "train_counts"} <= set(saved)
    record = saved["calibration"]
    labels = load_dataset(load_run(fp_run).config.data).train_labels
    expected = draw_calibration_set(labels, 30, "balanced", 2, 10)
    assert record["set"]["indices"] == expected.indices.tolist()
    # train counts 40 30 23 17 13 10 7 5 3 2: class 9 gives its 2, the spare image goes to class 0
    assert record["set"]["counts"] == [4, 3, 3, 3, 3, 3, 3, 3, 3, 2]
    assert record["set"]["mode"] == "balanced"
    assert record["range_rule"] == "percentile 99.99"
    run = load_run(tmp_path / "q")
    assert (run.config.method, run.config.wbits, run.config.abits) == ("ptq", 4, 4)
    assert run.config.init == str(fp_run.resolve())
    assert provenance(run)["metrics"]["calibration"]["set"]["seed"] == 2
    assert_reference_equals_torch(tmp_path / "q")


def test_minmax_ranges_are_the_calibration_maxima(fp_run: Path, tmp_path: Path) -> None:
    metrics = calibrate(CalibrateConfig(str(fp_run), "ptq-int8", "natural", 40), tmp_path / "q")
    x = calibration_images(fp_run, 40, "natural", 0)
    fp = load_run(fp_run).model
    with torch.no_grad():  # golden: what enters the stem's quantizer slot, by hand
        stem = fp.bn1(fp.conv1(x))
        block = fp.layers[0]
        inner = block.bn1(block.conv1(stem.relu()))
    observed = metrics["calibration"]["observed_ranges"]
    assert observed["act1"] == float(stem.abs().max())
    assert observed["layers.0.act1"] == float(inner.abs().max())
    ranges = metrics["calibration"]["ranges"]
    stage1 = ["act1", "layers.0.act2", "layers.1.act2", "layers.2.act2"]
    assert {ranges[n] for n in stage1} == {max(observed[n] for n in stage1)}
    assert ranges["layers.0.act1"] == observed["layers.0.act1"]  # not in a residual group
    assert_reference_equals_torch(tmp_path / "q")


def test_climbq_ptq_reestimates_batchnorm_on_the_calibration_set(fp_run, tmp_path) -> None:
    calibrate(CalibrateConfig(str(fp_run), "climbq-ptq", "balanced", 20, seed=1), tmp_path / "q")
    run, fp = load_run(tmp_path / "q"), load_run(fp_run)
    assert (run.config.method, run.config.wbits, run.config.abits) == ("climbq", 4, 4)
    x = calibration_images(fp_run, 20, "balanced", 1)
    with torch.no_grad():  # golden: the 4-bit ClimbQ stem conv on the calibration images
        z = torch.nn.functional.conv2d(x, climbq_weight_unit(fp.model.conv1.weight, 4), padding=1)
    torch.testing.assert_close(run.model.bn1.running_mean, z.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(run.model.bn1.running_var, z.var((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(run.model.bn1.running_mean, fp.model.bn1.running_mean)
    torch.testing.assert_close(run.model.conv1.weight, fp.model.conv1.weight)  # weights as trained
    assert_reference_equals_torch(tmp_path / "q")


def test_bad_requests_are_refused(fp_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no activation ranges"):
        CalibrateConfig(str(fp_run), "climbq-ptq", range_rule="percentile")
    with pytest.raises(ConfigError, match="recipe"):
        CalibrateConfig(str(fp_run), "ptq-int4")
    with pytest.raises(DataError, match="only"):
        calibrate(CalibrateConfig(str(fp_run), "ptq-w4a4", calib_size=10**6), tmp_path / "a")
    calibrate(CalibrateConfig(str(fp_run), "ptq-w4a4", calib_size=10), tmp_path / "q")
    with pytest.raises(ConfigError, match="starts from a full-precision run"):
        calibrate(CalibrateConfig(str(tmp_path / "q"), "ptq-w4a4"), tmp_path / "b")


def test_the_full_precision_run_and_finished_runs_are_never_overwritten(
    fp_run: Path, tmp_path: Path
) -> None:
    before = (fp_run / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match="is the full-precision run"):
        calibrate(CalibrateConfig(str(fp_run), "ptq-w4a4", calib_size=10), fp_run)
    assert (fp_run / "checkpoint.pt").read_bytes() == before
    config = CalibrateConfig(str(fp_run), "ptq-w4a4", calib_size=10)
    calibrate(config, tmp_path / "q")
    done = (tmp_path / "q" / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"already holds a run.*pass --overwrite"):
        calibrate(CalibrateConfig(str(fp_run), "ptq-int8", calib_size=10), tmp_path / "q")
    assert (tmp_path / "q" / "checkpoint.pt").read_bytes() == done
    calibrate(CalibrateConfig(str(fp_run), "ptq-int8", calib_size=10), tmp_path / "q", True)
    assert load_run(tmp_path / "q").config.wbits == 8


def test_cli_calibrate(fp_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "q"
    argv = [
        "calibrate",
        str(fp_run),
        "--method",
        "ptq-w4a4",
        "--calib",
        "balanced",
        "--calib-size",
        "20",
        "--range",
        "minmax",
        "--out",
        str(out),
        "--json",
    ]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["calibration"]["set"]["counts"] == [2] * 10
    assert (out / "checkpoint.pt").is_file()
    bad = [
        "calibrate",
        str(fp_run),
        "--method",
        "climbq-ptq",
        "--range",
        "minmax",
        "--out",
        str(tmp_path / "bad"),
    ]
    assert main(bad) == 2
    assert "no activation ranges" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ptq-w4a4", "ptq-int8"])
@pytest.mark.parametrize("target", ["tflite", "tensorrt"])
def test_ptq_runs_deploy_like_trained_runs(
    fp_run: Path, tmp_path: Path, target: str, method: str
) -> None:
    """Exact on both targets; int8 PTQ exercises the float32-conv forms (thresholds beyond
    int16 in TFLite, residual sums beyond int8 in the ONNX model)."""
    from climbq_deploy.check import check_run
    from climbq_deploy.targets import get_target

    client = get_target(target, "ref" if target == "tflite" else None)
    reason = client.unavailable()
    if reason:
        pytest.skip(f"{target}: {reason}")
    run = tmp_path / "q"
    calibrate(CalibrateConfig(str(fp_run), method, "balanced", 20), run)
    graph = lower_run(load_run(run), input_bits=client.input_bits)
    artifact = client.export(graph, tmp_path / f"model{client.suffix}")
    record = check_run(run, target=client, artifact=artifact, limit=8, progress=False)
    assert record["exact_match"] is True
    assert record["top1_agreement"] == 1.0 and record["code_agreement"] == 1.0
    if target == "tensorrt":
        import onnx

        nodes = onnx.load(artifact).graph.node
        dequantized = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
        float_convs = [n for n in nodes if n.op_type == "Conv" and n.input[0] not in dequantized]
        stems = [n for n in float_convs if "digit" in n.input[0]]  # the stem's two digit convs
        # int8: the 8 block inputs after the first and the 2 stride-2 shortcuts read a
        # residual sum of two 8-bit activations, beyond int8
        assert len(float_convs) - len(stems) == (0 if method == "ptq-w4a4" else 10)
    else:
        uses_float = b"/acc_float" in artifact.read_bytes()  # tensor names of the float form
        assert uses_float == (method == "ptq-int8")


def test_a_user_model_run_calibrates_and_lowers_exactly(tmp_path: Path) -> None:
    """A full-precision run of a user's CNN (concat, max pool, convs with and without
    BatchNorm) calibrates to a 4-bit PTQ run whose integer program matches torch."""
    from climbq_deploy.data.syndigits import build_syndigits

    dataset = build_syndigits(10, seed=3, size=16, head_count=40, test_per_class=4, progress=False)
    data = str(save_dataset(dataset, tmp_path / "syn"))
    model_file = Path(__file__).resolve().parents[1] / "models" / "user_cnn.py"
    config = TrainConfig(data, epochs=1, model=f"{model_file}:exportable_cnn").pinned()
    torch.manual_seed(0)
    model = build_model(config.arch, dataset.num_classes, model=config.model)
    loader = dataset_loader(dataset, "train", 64)
    reestimate_batchnorm(model, (x for x, _ in loader.epoch(0)))
    run = tmp_path / "fp"
    save_checkpoint(
        run / "checkpoint.pt", {"config": config.as_dict(), "model": model.state_dict()}
    )
    write_json(run / "metrics.json", {"top1": 10.0, "method": "fp32", "config": config.as_dict()})
    calibrate(CalibrateConfig(str(run), "ptq-w4a4", "balanced", 30), tmp_path / "q")
    assert load_run(tmp_path / "q").config.model == config.model
    assert_reference_equals_torch(tmp_path / "q")
