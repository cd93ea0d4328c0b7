"""Crash safety with real processes: ``kill -9`` inside a write (the ``CLIMBQ_TEST_PAUSE_IN_WRITE``
hook of :mod:`climbq_deploy.fileio` stops a write after its temporary file is complete and before
``os.replace``) or at a random moment, then check what a reader finds, resume or re-export."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from climbq_deploy import fileio
from climbq_deploy.data.dataset import save_dataset
from climbq_deploy.errors import ArtifactError
from climbq_deploy.fileio import TEST_MARKER_ENV, TEST_PAUSE_ENV, atomic_write, remove_stale_temps
from climbq_deploy.train.checkpoint import load_checkpoint, save_checkpoint

EPOCHS = 3
METRIC_KEYS = ("top1", "per_class", "many", "medium", "few")
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "test_top1")
# One thread per process: identical float reductions in every run, and kind to a shared CPU.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ENV.pop(TEST_PAUSE_ENV, None)


def climbq(*args: str, pause: str | None = None, marker: Path | None = None) -> subprocess.Popen:
    """Start ``climbq ARGS`` (optionally paused inside the write matching ``pause``). Its
    output goes to a temporary file: a pipe nobody reads could fill up and stall it."""
    env = dict(ENV)
    if pause is not None and marker is not None:
        env[TEST_PAUSE_ENV], env[TEST_MARKER_ENV] = pause, str(marker)
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (lives as long as the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "climbq_deploy", *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.log = log  # type: ignore[attr-defined]
    return proc


def output(proc: subprocess.Popen) -> str:
    log = proc.log  # type: ignore[attr-defined]
    log.seek(0)
    return log.read()[-3000:]


def finish(proc: subprocess.Popen) -> None:
    """Wait for ``proc`` to exit successfully."""
    proc.wait(timeout=300)
    assert proc.returncode == 0, output(proc)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` (no handler, no cleanup can run) and reap it (it may just have ended
    by itself)."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode in (-signal.SIGKILL, 0), output(proc)


def kill_inside_write(args: list[str], pause: str, marker: Path) -> Path:
    """Run ``climbq ARGS`` until it is inside the write matching ``pause``, SIGKILL it there and
    return the temporary file it was about to move into place."""
    proc = climbq(*args, pause=pause, marker=marker)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(
                    f"climbq {args[0]} ended ({proc.returncode}) before {pause}: {output(proc)}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"climbq {args[0]} never reached the write of {pause}")
            time.sleep(0.05)
        tmp = Path(marker.read_text())
        assert tmp.is_file(), "the paused write has its complete temporary file"
    finally:
        if proc.poll() is None:
            kill(proc)
    marker.unlink()
    return tmp


def temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def history(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def assert_same_training(run: Path, reference: Path) -> None:
    """Same final metrics, per-epoch history (seconds aside) and weights, bit for bit, as the
    uninterrupted run: the loop seeds all randomness by (seed, epoch), so resumes are exact."""
    got, want = (json.loads((r / "metrics.json").read_text()) for r in (run, reference))
    assert {k: got[k] for k in METRIC_KEYS} == {k: want[k] for k in METRIC_KEYS}
    got_h, want_h = (
        [{k: r[k] for k in HISTORY_KEYS} for r in history(x)] for x in (run, reference)
    )
    assert got_h == want_h
    assert [r["epoch"] for r in got_h] == list(range(1, EPOCHS + 1))
    mine, theirs = (load_checkpoint(r / "checkpoint.pt")["model"] for r in (run, reference))
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine), "weights differ bit for bit"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, small_syndigits: Any) -> str:
    return str(save_dataset(small_syndigits, tmp_path_factory.mktemp("crash") / "syn"))


@pytest.fixture(scope="module")
def train_args(data_dir: str) -> list[str]:
    return [
        "train",
        "--data",
        data_dir,
        "--method",
        "climbq",
        "--wbits",
        "4",
        "--abits",
        "4",
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "32",
    ]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory, train_args: list[str]) -> Path:
    """An uninterrupted run: the reference of every resume, and the run exported below."""
    run = tmp_path_factory.mktemp("straight") / "run"
    finish(climbq(*train_args, "--out", str(run)))
    return run


def test_stale_temps_of_dead_writers_only_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removed: ``.<name>.<pid>.<random>.tmp`` of a dead pid, older than this process. Kept:
    live or own pids, other names, files still being written (touched after we started)."""
    target = tmp_path / "model.climbq"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".model.climbq.{dead.pid}.abc123.tmp"
    live = tmp_path / f".model.climbq.{os.getppid()}.abc123.tmp"  # a running process
    mine = tmp_path / f".model.climbq.{os.getpid()}.abc123.tmp"
    other = [
        tmp_path / f".other.{dead.pid}.abc123.tmp",
        tmp_path / ".model.climbq.x.tmp",
        tmp_path / f".model.climbq.{dead.pid}.tmp",
    ]
    for path in [stale, live, mine, *other]:
        path.write_bytes(b"partial")
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    fresh = tmp_path / f".model.climbq.{dead.pid}.fresh1.tmp"  # touched after we started
    fresh.write_bytes(b"partial")
    with atomic_write(target) as handle:
        handle.write(b"complete")
    assert target.read_bytes() == b"complete"
    assert not stale.exists()
    assert all(p.exists() for p in [live, mine, fresh, *other])
    assert remove_stale_temps(target) == []
    # a long-running process: a dead writer's file untouched for STALE_AFTER_SECONDS goes too
    monkeypatch.setattr(fileio, "_STARTED", time.time() - 7200)
    os.utime(fresh, (time.time() - fileio.STALE_AFTER_SECONDS + 60,) * 2)
    assert remove_stale_temps(target) == []
    os.utime(fresh, (time.time() - fileio.STALE_AFTER_SECONDS - 60,) * 2)
    assert remove_stale_temps(target) == [fresh]


def test_atomic_write_gives_plain_file_permissions(tmp_path: Path) -> None:
    """mkstemp's 0600 is not kept: a new file gets 0666 less the umask, a replaced one keeps its
    mode (artifacts must be readable by the account that serves them)."""
    mask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.json", "w") as handle:
            handle.write("{}")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask
    (tmp_path / "a.json").chmod(0o640)
    with atomic_write(tmp_path / "a.json", "w") as handle:
        handle.write("[]")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640


def test_every_truncation_of_a_checkpoint_is_refused_clearly(tmp_path: Path) -> None:
    """A torn checkpoint (what a kill mid-write leaves in the temporary file) is an
    ArtifactError at every length, never an OSError or other traceback from torch's reader."""
    save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.arange(1000.0)}, "epoch": 1})
    data = (tmp_path / "c.pt").read_bytes()
    torn = tmp_path / "torn.pt"
    for cut in [*range(0, len(data), 13), len(data) - 1]:
        torn.write_bytes(data[:cut])
        with pytest.raises(ArtifactError, match="corrupt, truncated"):
            load_checkpoint(torn)


@pytest.mark.slow
def test_kill_inside_checkpoint_then_metrics_write_resumes_exactly(
    tmp_path: Path, train_args: list[str], straight_run: Path
) -> None:
    run, marker = tmp_path / "run", tmp_path / "paused"
    args = [*train_args, "--out", str(run)]
    # 1. killed while the epoch-2 checkpoint is written: the epoch-1 one stays, complete
    tmp = kill_inside_write(args, "checkpoint.pt@2", marker)
    assert tmp.parent == run and tmp.name.startswith(".checkpoint.pt.") and tmp.exists()
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    assert [r["epoch"] for r in history(run)] == [1]
    assert not (run / "metrics.json").exists()
    assert temps(run) == [tmp]
    # 2. resumed, then killed while metrics.json is written: the stale temp file is gone
    metrics_tmp = kill_inside_write([*args, "--resume"], "metrics.json", marker)
    assert not tmp.exists() and temps(run) == [metrics_tmp]
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == EPOCHS
    assert not (run / "metrics.json").exists()
    # 3. resumed to the end: the same run as one never interrupted, nothing left over
    finish(climbq(*args, "--resume"))
    assert temps(run) == []
    assert_same_training(run, straight_run)


@pytest.mark.slow
def test_kill_inside_last_history_write_is_repaired_by_resume(
    tmp_path: Path, train_args: list[str], straight_run: Path
) -> None:
    run, marker = tmp_path / "run", tmp_path / "paused"
    args = [*train_args, "--out", str(run)]
    kill_inside_write(args, f"history.jsonl@{EPOCHS}", marker)
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == EPOCHS
    assert len(history(run)) == EPOCHS - 1
    finish(climbq(*args, "--resume"))
    assert_same_training(run, straight_run)


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_random_kills_leave_loadable_files_and_resume_completes(
    tmp_path: Path, train_args: list[str], straight_run: Path
) -> None:
    """Without the hook: killed as soon as a checkpoint's temporary file appears (mid
    ``torch.save``, a truly partial file) or at a random moment after a new checkpoint."""
    rng = random.Random(9)
    run, checkpoint = tmp_path / "run", tmp_path / "run" / "checkpoint.pt"
    args = [*train_args, "--out", str(run), "--resume"]
    for kind in ("temp", "random"):
        before = _signature(checkpoint)
        proc = climbq(*args)
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if kind == "temp" and any(_size(p) for p in run.glob(f".checkpoint.pt.{proc.pid}.*")):
                break
            if kind == "random" and _signature(checkpoint) != before:
                time.sleep(rng.uniform(0.0, 1.0))
                break
            time.sleep(0.001 if kind == "temp" else 0.02)
        if proc.poll() is not None:  # finished before the kill: nothing more to test
            finish(proc)
            break
        kill(proc)
        complete = (straight_run / "checkpoint.pt").stat().st_size
        for partial in run.glob(f".checkpoint.pt.{proc.pid}.*.tmp"):
            if _size(partial) < 0.9 * complete:  # a torn file is refused, never half-read
                with pytest.raises(ArtifactError, match="corrupt, truncated"):
                    load_checkpoint(partial)
        if checkpoint.exists():
            state = load_checkpoint(checkpoint)
            done = [r["epoch"] for r in history(run)]
            assert done in (list(range(1, state["epoch"] + 1)), list(range(1, state["epoch"])))
        if (run / "metrics.json").exists():
            assert json.loads((run / "metrics.json").read_text())["epochs"] == EPOCHS
    finish(climbq(*args))
    assert temps(run) == []
    assert_same_training(run, straight_run)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["numpy", "tflite"])
def test_kill_inside_export_write_never_leaves_a_partial_artifact(
    tmp_path: Path, straight_run: Path, target: str
) -> None:
    from climbq_deploy.targets import get_target

    backend = get_target(target)
    out, marker = tmp_path / f"model{backend.suffix}", tmp_path / "paused"
    args = ["export", str(straight_run), "--target", target, "--out", str(out)]
    # no previous artifact: nothing at the final path
    tmp = kill_inside_write(args, out.name, marker)
    assert not out.exists() and tmp.exists()
    # re-running succeeds (and removes the killed export's temporary file)
    finish(climbq(*args))
    assert temps(tmp_path) == []
    first = out.read_bytes()
    # a previous artifact: it stays, byte for byte, and loads and runs
    kill_inside_write(args, out.name, marker)
    assert out.read_bytes() == first
    if backend.unavailable() is None:
        runner = backend.load(out)
        images = np.zeros((2, 32, 32, 3), np.uint8)
        assert runner.run(images).logits.shape == (2, 10)
