"""Training a user's own CNN: ``climbq train --model FILE.py:FACTORY``, what the run records,
``load_run`` rebuilding the same model, a file changed since, and the errors."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from climbq_deploy.api import train
from climbq_deploy.cli import main
from climbq_deploy.data.dataset import ImageDataset, load_dataset, save_dataset
from climbq_deploy.errors import ArtifactError, ConfigError
from climbq_deploy.export import load_run
from climbq_deploy.quant.convert import quantize
from climbq_deploy.train.checkpoint import load_checkpoint
from climbq_deploy.train.loop import predict

REPO = Path(__file__).resolve().parents[2]
USER_CNN = REPO / "tests" / "models" / "user_cnn.py"
TINY = {"epochs": 1, "batch_size": 4, "progress": False}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Two classes of random 12 x 20 images (not square, not 32 x 32), crop-and-flip
    augmentation."""
    rng = np.random.default_rng(0)
    dataset = ImageDataset(
        name="tiny-12x20",
        class_names=("a", "b"),
        train_images=rng.integers(0, 256, (8, 12, 20, 3), dtype=np.uint8),
        train_labels=np.array([0, 0, 0, 0, 0, 1, 1, 1], dtype=np.int64),
        test_images=rng.integers(0, 256, (4, 12, 20, 3), dtype=np.uint8),
        test_labels=np.array([0, 0, 1, 1], dtype=np.int64),
        info={"augment": "crop_flip"},
    )
    return save_dataset(dataset, tmp_path_factory.mktemp("user") / "data")


def _user_cnn():
    spec = importlib.util.spec_from_file_location("user_cnn_for_train_tests", USER_CNN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_trains_a_user_model_and_load_run_rebuilds_it(data_dir, tmp_path) -> None:
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "climbq_deploy",
            "train",
            "--data",
            str(data_dir),
            "--model",
            "tests/models/user_cnn.py:small_cnn",
            "--method",
            "climbq+",
            "--wbits",
            "4",
            "--abits",
            "4",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    saved = load_checkpoint(out / "checkpoint.pt")
    config = saved["config"]
    assert config["arch"] == "custom" and config["model"] == f"{USER_CNN}:small_cnn"
    assert config["model_sha256"] == hashlib.sha256(USER_CNN.read_bytes()).hexdigest()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["arch"] == "custom" and metrics["loss"] == "homovar"

    run = load_run(out)
    assert run.image_shape == (12, 20, 3) and run.num_classes == 2
    assert run.model.net.classifier.out_features == 2
    # the same module, built independently, with the checkpoint's weights
    ours = quantize(_user_cnn().small_cnn(2), "climbq+", 4, 4)
    ours.load_state_dict(saved["model"])
    x = torch.randn(3, 3, 12, 20)
    with torch.no_grad():
        assert torch.equal(run.model(x), ours.eval()(x))
    predicted = predict(run.model, load_dataset(data_dir), batch_size=4)
    top1 = 100 * float(np.mean(predicted == load_dataset(data_dir).test_labels))
    assert top1 == pytest.approx(metrics["top1"])


def test_fp32_pretraining_then_qat_with_distillation(data_dir, tmp_path) -> None:
    """--init from a full-precision run of the user model and --distill from it (the teacher
    is rebuilt from its run's own config)."""
    spec = f"{USER_CNN}:small_cnn"
    fp = train(data_dir, tmp_path / "fp", model=spec, **TINY)
    q4 = train(
        data_dir,
        tmp_path / "q4",
        model=spec,
        method="climbq+",
        wbits=4,
        abits=4,
        init=str(fp),
        distill=0.5,
        **TINY,
    )
    start = load_checkpoint(fp / "checkpoint.pt")["model"]
    assert set(start) == set(load_checkpoint(q4 / "checkpoint.pt")["model"])
    assert load_run(q4).config.distill == 0.5


def test_a_changed_model_file_warns_or_refuses(data_dir, tmp_path) -> None:
    mine = tmp_path / "mine.py"
    shutil.copy(USER_CNN, mine)
    run = train(data_dir, tmp_path / "run", model=f"{mine}:small_cnn", **TINY)
    mine.write_text(mine.read_text() + "\n# a comment changes no weight\n")
    with pytest.warns(UserWarning, match=r"mine\.py changed \(sha256 .*still fit"):
        load_run(run)
    with pytest.raises(ConfigError, match=r"model_sha256: '"):
        train(data_dir, run, model=f"{mine}:small_cnn", resume=True, **{**TINY, "epochs": 2})
    mine.write_text(mine.read_text().replace("width: int = 8", "width: int = 6"))
    with pytest.raises(ArtifactError, match=r"do not fit .*mine\.py:small_cnn.* changed \(sha"):
        load_run(run)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("tests/models/no_such.py:make", r"model file .*tests/models/no_such\.py does not exist"),
        ("tests/models/user_cnn.py:nope", r"user_cnn\.py has no 'nope'"),
        ("tests/models/user_cnn.py:broken_factory", r"broken_factory\(num_classes=2\) raised"),
        ("tests/models/user_cnn.py:not_a_module", r"returned dict, not a torch\.nn\.Module"),
        ("tests/models/user_cnn.py:Gated", r"torch\.fx cannot trace Gated in gate \(Gate\)"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(
    data_dir, tmp_path, monkeypatch, capsys, model, message
) -> None:
    monkeypatch.chdir(REPO)
    args = ["train", "--data", str(data_dir), "--model", model, "--out", str(tmp_path / "r")]
    assert main([*args, "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("climbq: error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_arch_and_model_are_exclusive(data_dir, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["train", "--data", str(data_dir), "--arch", "resnet20", "--model", "x.py:f"])
    assert stop.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
