"""Training progress outside a terminal: one line per epoch with the metrics, the time elapsed
and an estimate of the time left; tqdm's bar on a terminal."""

from __future__ import annotations

import io
import re

import pytest

from climbq_deploy.data.dataset import save_dataset
from climbq_deploy.train.config import TrainConfig
from climbq_deploy.train.loop import train
from climbq_deploy.train.progress import EpochProgress, duration_text, is_terminal
from tests.conftest import tiny_dataset


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (60, "1m00s"), (725, "12m05s"), (3600 * 3 + 7 * 60 + 5, "3h07m")],
)
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_a_terminal_gets_the_bar_and_a_log_gets_lines(monkeypatch) -> None:
    monkeypatch.setattr("sys.stderr", Terminal())
    on_terminal = EpochProgress(3, 0, enabled=True)
    assert on_terminal.bar and not on_terminal.lines
    assert on_terminal.line({"epoch": 1, "train_loss": 1.0, "train_acc": 50.0}) is None
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not is_terminal(io.StringIO())
    quiet = EpochProgress(3, 0, enabled=False)
    assert not quiet.bar and not quiet.lines


def test_the_estimate_is_the_mean_epoch_time_times_the_epochs_left(monkeypatch) -> None:
    """A run resumed after epoch 2 of 10: 30 s for its first two epochs (3 and 4) leaves
    6 epochs at 15 s each, 1m30s."""
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    clock = iter([100.0, 130.0])
    report = EpochProgress(10, 2, enabled=True, clock=lambda: next(clock))
    record = {"epoch": 4, "train_loss": 0.5, "train_acc": 80.0, "test_top1": 70.0}
    text = report.line({**record, "val_balanced_top1": 65.5})
    assert text == (
        "epoch 4/10, loss 0.5000, train acc 80.00%, test top-1 70.00%, "
        "val balanced top-1 65.50%, elapsed 30s, ETA 1m30s"
    )
    assert log.getvalue() == text + "\n"


def test_training_outside_a_terminal_prints_one_line_per_epoch(tmp_path, capsys) -> None:
    data = save_dataset(tiny_dataset(), tmp_path / "tiny")
    config = TrainConfig(str(data), epochs=3, batch_size=4, eval_every=2)
    metrics = train(config, tmp_path / "run", progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout keeps the command's result alone
    lines = captured.err.splitlines()
    pattern = r"epoch (\d)/3, loss \d+\.\d{4}, train acc \d+\.\d\d%, (test top-1 \d+\.\d\d%, )?"
    pattern += r"elapsed \d+s, ETA \d+s"
    matches = [re.fullmatch(pattern, line) for line in lines]
    assert all(matches), lines
    assert [m.group(1) for m in matches] == ["1", "2", "3"]
    assert [m.group(2) is not None for m in matches] == [False, True, True]  # eval_every 2
    assert lines[-1].endswith("ETA 0s") and metrics["epochs"] == 3
    train(config, tmp_path / "quiet", progress=False)
    assert capsys.readouterr().err == ""
