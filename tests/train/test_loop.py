import json
import subprocess
import sys

import pytest

from climbq_deploy.data.dataset import save_dataset
from climbq_deploy.errors import ConfigError
from climbq_deploy.train.config import TrainConfig
from climbq_deploy.train.loop import train

KEYS = {
    "top1",
    "per_class",
    "many",
    "medium",
    "few",
    "method",
    "arch",
    "wbits",
    "abits",
    "epochs",
    "seconds",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, small_syndigits):
    return str(save_dataset(small_syndigits, tmp_path_factory.mktemp("d") / "syn"))


def test_cli_one_epoch_writes_metrics_and_history(data_dir, tmp_path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "climbq_deploy",
            "train",
            "--data",
            data_dir,
            "--method",
            "climbq+",
            "--wbits",
            "4",
            "--abits",
            "4",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) >= KEYS and len(metrics["per_class"]) == 10
    assert metrics["loss"] == "homovar" and metrics["epochs"] == 1
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 1


def test_resume_continues_exactly(data_dir, tmp_path) -> None:
    config = TrainConfig(data_dir, method="lsq", wbits=4, abits=4, epochs=2, batch_size=32)
    straight = train(config, tmp_path / "a", progress=False)
    train(TrainConfig(**{**config.as_dict(), "epochs": 1}), tmp_path / "b", progress=False)
    resumed = train(config, tmp_path / "b", resume=True, progress=False)
    assert resumed["per_class"] == straight["per_class"]
    assert resumed["top1"] == straight["top1"]
    other = TrainConfig(**{**config.as_dict(), "lr": 0.01})
    with pytest.raises(ConfigError, match="another configuration"):
        train(other, tmp_path / "b", resume=True, progress=False)


def test_a_finished_run_is_never_replaced_unasked(data_dir, tmp_path) -> None:
    config = TrainConfig(data_dir, epochs=1, batch_size=64)
    first = train(config, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"already holds a run.*--resume.*--overwrite"):
        train(config, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before
    again = train(config, tmp_path / "run", progress=False, overwrite=True)
    assert again["top1"] == first["top1"]
    qat = TrainConfig(
        data_dir, method="climbq", wbits=4, abits=4, epochs=1, init=str(tmp_path / "run")
    )
    with pytest.raises(ConfigError, match="is the --init run"):
        train(qat, tmp_path / "run", overwrite=True, progress=False)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() != b""


def test_resume_refuses_fewer_epochs_than_trained(data_dir, tmp_path) -> None:
    config = TrainConfig(data_dir, epochs=2, batch_size=64)
    train(config, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "metrics.json").read_bytes()
    shorter = TrainConfig(**{**config.as_dict(), "epochs": 1})
    with pytest.raises(ConfigError, match=r"has 2 epochs trained; --epochs 1.*--epochs 2 or more"):
        train(shorter, tmp_path / "run", resume=True, progress=False)
    assert (tmp_path / "run" / "metrics.json").read_bytes() == before


def test_resume_compares_folders_not_spellings_and_names_what_differs(
    data_dir, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").symlink_to(data_dir)
    config = TrainConfig("data", epochs=1, batch_size=64)
    first = train(config, "run", progress=False)
    absolute = TrainConfig(**{**config.as_dict(), "data": str(tmp_path / "data")})
    resumed = train(absolute, "run", resume=True, progress=False)  # finished: evaluated again
    assert resumed["top1"] == first["top1"]
    other = TrainConfig(**{**config.as_dict(), "lr": 0.01, "seed": 3})
    with pytest.raises(
        ConfigError, match=r"another configuration \(lr: 0.04 -> 0.01; seed: 0 -> 3\)"
    ):
        train(other, "run", resume=True, progress=False)


def test_bad_config() -> None:
    with pytest.raises(ConfigError, match="unknown arch"):
        TrainConfig("d", arch="vgg")
    with pytest.raises(ConfigError, match="unknown loss"):
        TrainConfig("d", loss="focal")
    with pytest.raises(ConfigError, match="bits"):
        TrainConfig("d", method="climbq", wbits=1)
    for wbits, abits in ((32, 4), (4, 32), (32, 32)):  # trains, but no target could lower it
        with pytest.raises(ConfigError, match=r"leaves the weights or the activations in float"):
            TrainConfig("d", method="climbq", wbits=wbits, abits=abits)


def test_same_seed_same_metrics_and_best_on_validation(data_dir, tmp_path) -> None:
    config = TrainConfig(
        data_dir,
        method="climbq+",
        wbits=2,
        abits=2,
        epochs=2,
        batch_size=32,
        val_fraction=0.25,
        loss_options={"variant": "corrected"},
    )
    first = train(config, tmp_path / "a", progress=False)
    second = train(config, tmp_path / "b", progress=False)
    assert first["per_class"] == second["per_class"] and first["best_val"] == second["best_val"]
    # 25% of counts [40, 30, 23, 17, 13, 10, 7, 5, 3, 2], at least one left for training
    assert first["val_images"] == 10 + 7 + 5 + 4 + 3 + 2 + 1 + 1
    assert sum(first["fit_counts"]) == 150 - first["val_images"]
    best = first["best_val"]
    history = [json.loads(line) for line in (tmp_path / "a" / "history.jsonl").open()]
    assert best["val_balanced_top1"] == max(r["val_balanced_top1"] for r in history)
    assert best["test"]["top1"] == history[best["epoch"] - 1]["test_top1"]
    assert (tmp_path / "a" / "best.pt").is_file()


def test_cli_loss_options_precision_and_bad_option(data_dir, tmp_path) -> None:
    base = [
        sys.executable,
        "-m",
        "climbq_deploy",
        "train",
        "--data",
        data_dir,
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--method",
        "climbq",
        "--wbits",
        "4",
        "--abits",
        "4",
    ]
    ok = subprocess.run(
        [
            *base,
            "--loss",
            "cb",
            "--loss-option",
            "beta=0.99",
            "--precision",
            "bf16",
            "--out",
            str(tmp_path / "ok"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ok.returncode == 0, ok.stderr
    metrics = json.loads((tmp_path / "ok" / "metrics.json").read_text())
    assert metrics["config"]["loss_options"] == {"beta": 0.99}
    assert metrics["config"]["precision"] == "bf16" and metrics["best_val"] is None
    bad = subprocess.run(
        [*base, "--loss", "cb", "--loss-option", "tau=1", "--out", str(tmp_path / "bad")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2 and "has no option tau" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_four_bit_climbq_plus_learns_syndigits_lt(trained_syndigits) -> None:
    """fp32 pretraining then 4-bit ClimbQ+ QAT (the paper's recipe, shortened) on the default
    SynDigits-LT gamma 50. Measured 2026-11-28: fp32 48.4%, then 4-bit ClimbQ+ 40.5% top-1
    (chance 10%); the floor leaves margin for seed and platform."""
    metrics = trained_syndigits[3]
    assert metrics["top1"] >= 25.0, metrics
    assert metrics["many"] > 30.0 and metrics["loss"] == "homovar"
    assert metrics["method"] == "climbq+" and metrics["wbits"] == 4 and metrics["epochs"] == 2
