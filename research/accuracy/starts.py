"""The fp32 starts of the accuracy grid, kept across sessions: records in git, weights not.

Every QAT run of the grid starts from (and the ``kd`` variants learn from) a shared fp32 run,
and a fresh checkout has no ``runs/accuracy/`` (it is git-ignored): without a kept copy, each
new session would first retrain the start (ResNet-20 on CIFAR-10-LT: ~40 min on 2 cores), and
its QAT rows would no longer share one start with the rows before.

A kept start is the folder ``research/accuracy/starts/<name>/``: the run's ``result.json``,
``metrics.json`` and ``history.jsonl`` (small text, committed: ``collect`` reads them to know
which starts are at hand) and a slim ``checkpoint.pt`` (model and config, no optimizer state:
1.1 MB for ResNet-20), which is git-ignored. Checkpoints do not go into git any more; they are
published as a release artifact, and the six kept before that rule are recovered from git
history (:func:`restore_from_git`: ``git show ARCHIVE_REV:bench/accuracy/starts/<name>/<file>``).

``save`` copies every finished fp32 run into its kept folder. ``restore`` puts a kept start
back into ``runs/accuracy/<name>/`` where that folder holds no result and no checkpoint of its
own (a local retraining in progress is never overwritten). ``runner run`` and ``runner list``
restore before they plan (first from the kept folder, then from git history for a start whose
checkpoint is not there); ``runner keep-starts`` saves; ``runner restore-starts`` restores from
git history.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

from climbq_deploy.errors import ClimbQError
from research import REPO
from research.accuracy import grid

HERE = Path(__file__).resolve().parent
STARTS = Path(os.environ.get("CLIMBQ_ACC_STARTS", HERE / "starts"))  # tests use another
RECORDS = ("metrics.json", "history.jsonl", "result.json")  # result.json last: the done mark
CHECKPOINT = "checkpoint.pt"
MiB = 1 << 20
# The last commit whose tree holds the kept starts' checkpoints (`git log -1 --format=%H --
# bench/accuracy/starts` before they left the tree), and their folder in that commit.
ARCHIVE_REV = "bff11da6be822cb1d0522cfe2bfd82d615792ea7"
ARCHIVE_PATH = "bench/accuracy/starts"


class StartsError(ClimbQError):
    """The kept starts cannot be restored from git (no git, no such commit, a git failure)."""


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


def lacking_weights(runs: list[grid.Run]) -> list[str]:
    """Kept starts of ``runs`` (records here) whose checkpoint is not in the kept folder and
    whose run folder has no result of its own: what ``restore`` cannot put back yet."""
    return [
        run.name
        for run in runs
        if run.is_fp
        and (STARTS / run.name / "result.json").is_file()
        and not (STARTS / run.name / CHECKPOINT).is_file()
        and not (run.path / "result.json").is_file()
    ]


def restore(runs: list[grid.Run]) -> list[str]:
    """Copy each kept start of ``runs`` into its run folder where that folder has no result
    and no checkpoint other than the kept one (left by a restore cut short); a kept start
    without its checkpoint here (:func:`lacking_weights`) is left out. Returns the names
    restored."""
    restored = []
    for run in runs:
        kept = STARTS / run.name
        if not run.is_fp or not (kept / "result.json").is_file():
            continue
        if (run.path / "result.json").is_file() or not (kept / CHECKPOINT).is_file():
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


def _git(repo: Path, *args: str) -> bytes:
    """``git -C repo ARGS`` stdout; :class:`StartsError` naming the command if it fails."""
    try:
        result = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, check=False, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise StartsError(f"git {' '.join(args)} in {repo} failed: {exc}") from exc
    if result.returncode != 0:
        why = result.stderr.decode(errors="replace").strip() or f"exit {result.returncode}"
        raise StartsError(f"git {' '.join(args)} in {repo} failed: {why}")
    return result.stdout


def _ls_tree(repo: Path, rev: str, path: str) -> list[str]:
    """Names directly under ``path`` in commit ``rev``."""
    out = _git(repo, "ls-tree", "--name-only", f"{rev}:{path}")
    return [line for line in out.decode().splitlines() if line]


def restore_from_git(
    rev: str = ARCHIVE_REV,
    names: list[str] | None = None,
    *,
    repo: Path | None = None,
    path: str = ARCHIVE_PATH,
    force: bool = False,
) -> tuple[list[str], list[str]]:
    """Write the kept starts of commit ``rev`` (``<path>/<name>/<file>`` there; all of them,
    or only ``names``) into :data:`STARTS`, with ``git show``. A file already here is kept
    (``force``: the checkpoint is rewritten); a start whose ``result.json`` here differs from
    the one in ``rev`` is left out (its records are of another training, so the checkpoint in
    ``rev`` is not its weights). Returns (names whose checkpoint is now here, 'name: why' for
    those left out). Refuses (:class:`StartsError`) without git, outside a git work tree, or
    when ``rev`` is not a commit there (a shallow clone, a copy without ``.git``). ``repo``:
    the repository to read (default :data:`research.REPO`)."""
    repo = REPO if repo is None else repo
    if shutil.which("git") is None:
        raise StartsError(
            "git is not installed: restore-starts reads the kept checkpoints from git history "
            f"(commit {rev}); install git or unpack the starts' release artifact into {STARTS}"
        )
    try:
        _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except StartsError as exc:
        raise StartsError(
            f"commit {rev} is not in the git history of {repo} (a shallow clone, or a copy "
            "without .git?): `git fetch --unshallow`, name another commit with --rev, or "
            f"unpack the starts' release artifact into {STARTS} ({exc})"
        ) from exc
    available = _ls_tree(repo, rev, path)
    if names is not None:
        unknown = sorted(set(names) - set(available))
        if unknown:
            raise StartsError(f"commit {rev} keeps no start {', '.join(unknown)} under {path}")
        available = [n for n in available if n in names]
    done, left = [], []
    for name in available:
        files = _ls_tree(repo, rev, f"{path}/{name}")
        if CHECKPOINT not in files:
            left.append(f"{name}: no {CHECKPOINT} in {rev}")
            continue
        folder = STARTS / name
        if "result.json" in files and (folder / "result.json").is_file():
            theirs = _git(repo, "show", f"{rev}:{path}/{name}/result.json")
            if theirs != (folder / "result.json").read_bytes():
                left.append(
                    f"{name}: its result.json here differs from {rev}'s (another training): "
                    "get its checkpoint from the release artifact"
                )
                continue
        for file in files:
            target = folder / file
            if target.is_file() and not (force and file == CHECKPOINT):
                continue
            _write(target, _git(repo, "show", f"{rev}:{path}/{name}/{file}"))
        done.append(name)
    return done, left
