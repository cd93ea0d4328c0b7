"""The fp32 starts of the accuracy grid, kept in the repository across sessions.

Every QAT run of the grid starts from (and the ``kd`` variants learn from) a shared fp32 run,
and a fresh checkout has no ``runs/accuracy/`` (it is git-ignored): without a kept copy, each
new session would first retrain the start (ResNet-20 on CIFAR-10-LT: ~40 min on 2 cores), and
its QAT rows would no longer share one start with the rows before.

``save`` copies every finished fp32 run into ``bench/accuracy/starts/<name>/``: a slim
checkpoint (model and config, no optimizer state: 1.1 MB for ResNet-20) and the run's
result.json, metrics.json and history.jsonl. ``restore`` puts them back into
``runs/accuracy/<name>/`` where that folder holds no result and no checkpoint of its own (a
local retraining in progress is never overwritten). The runner restores before it plans a
grid; ``runner.py keep-starts`` saves.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import grid

HERE = Path(__file__).resolve().parent
STARTS = Path(os.environ.get("CLIMBQ_ACC_STARTS", HERE / "starts"))  # tests use another
RECORDS = ("metrics.json", "history.jsonl", "result.json")  # result.json last: the done mark
CHECKPOINT = "checkpoint.pt"
MiB = 1 << 20


def slim_checkpoint(path: Path) -> bytes:
    """A finished run's checkpoint without the optimizer state (half the size): enough to
    export, check, or start QAT from (``--init``), not to train further."""
    import torch

    from climbq_deploy.train.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    state.pop("optimizer", None)
    state["slim"] = True
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    from climbq_deploy.fileio import atomic_write

    with atomic_write(path, "wb") as handle:
        handle.write(data)


def save(runs: list[grid.Run], max_mib: float = 4.0) -> tuple[list[str], list[str]]:
    """Keep every finished fp32 run of ``runs`` under :data:`STARTS` (replacing an older copy);
    a slim checkpoint over ``max_mib`` is not kept (MobileNetV2's is ~9 MiB). Returns (names
    kept, 'name: why' for those left out)."""
    kept, left = [], []
    for run in runs:
        if not run.is_fp or not (run.path / "result.json").is_file():
            continue
        data = slim_checkpoint(run.path / CHECKPOINT)
        if len(data) > max_mib * MiB:
            left.append(f"{run.name}: slim checkpoint {len(data) / MiB:.1f} MiB > {max_mib} MiB")
            continue
        folder = STARTS / run.name
        _write(folder / CHECKPOINT, data)
        for name in RECORDS:
            if (run.path / name).is_file():
                _write(folder / name, (run.path / name).read_bytes())
        kept.append(run.name)
    return kept, left


def restore(runs: list[grid.Run]) -> list[str]:
    """Copy each kept start of ``runs`` into its run folder where that folder has no result
    and no checkpoint other than the kept one (left by a restore cut short); returns the
    names restored."""
    restored = []
    for run in runs:
        kept = STARTS / run.name
        if not run.is_fp or not (kept / "result.json").is_file():
            continue
        if (run.path / "result.json").is_file():
            continue
        local = run.path / CHECKPOINT
        if local.is_file() and local.read_bytes() != (kept / CHECKPOINT).read_bytes():
            continue  # a run of its own in progress here
        _write(local, (kept / CHECKPOINT).read_bytes())
        for name in RECORDS:
            if (kept / name).is_file():
                _write(run.path / name, (kept / name).read_bytes())
        restored.append(run.name)
    return restored
