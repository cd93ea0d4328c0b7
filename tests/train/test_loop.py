import json
import subprocess
import sys

import pytest

from climbq_deploy.calibration.dataset import save_dataset
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
        [sys.executable, "-m", "climbq_deploy", "train", "--data", data_dir,
         "--method", "climbq+", "--wbits", "4", "--abits", "4", "--epochs", "1",
         "--batch-size", "32", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
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


def test_bad_config() -> None:
    with pytest.raises(ConfigError, match="unknown arch"):
        TrainConfig("d", arch="vgg")
    with pytest.raises(ConfigError, match="unknown loss"):
        TrainConfig("d", loss="focal")
    with pytest.raises(ConfigError, match="bits"):
        TrainConfig("d", method="climbq", wbits=1)
