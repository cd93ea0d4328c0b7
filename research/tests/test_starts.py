"""The kept fp32 starts (``research/accuracy/starts.py``): records in git, checkpoints
git-ignored and restored from git history (``runner restore-starts``). Every test keeps its
starts in ``tmp_path``; none needs a kept checkpoint in this checkout."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

NAME = "digits-lt-g50-resnet20-fp32"  # an fp32 run of the grid
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture
def mods(accuracy):
    """``grid`` and ``starts`` imported anew, runs and kept starts in tmp (conftest.py)."""
    return accuracy("grid"), accuracy("starts")


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _archive(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, str]:
    """A git repository whose one commit keeps ``files`` under bench/accuracy/starts/."""
    repo = tmp_path / "repo"
    for rel, data in files.items():
        path = repo / "bench" / "accuracy" / "starts" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "starts")
    return repo, _git(repo, "rev-parse", "HEAD")


RESULT = json.dumps({"name": NAME, "top1": 97.0}).encode()
FILES = {
    f"{NAME}/checkpoint.pt": b"weights",
    f"{NAME}/result.json": RESULT,
    f"{NAME}/metrics.json": b"{}",
    "other-fp32/checkpoint.pt": b"other weights",
}


@needs_git
def test_restore_from_git_writes_each_start_of_the_commit_and_keeps_what_is_here(
    mods, tmp_path
) -> None:
    _, starts = mods
    repo, rev = _archive(tmp_path, FILES)
    assert starts.restore_from_git(rev, repo=repo) == ([NAME, "other-fp32"], [])
    kept = starts.STARTS / NAME
    assert (kept / "checkpoint.pt").read_bytes() == b"weights"
    assert (kept / "result.json").read_bytes() == RESULT
    assert (starts.STARTS / "other-fp32" / "checkpoint.pt").read_bytes() == b"other weights"
    (kept / "checkpoint.pt").write_bytes(b"retrained here")
    assert starts.restore_from_git(rev, [NAME], repo=repo) == ([NAME], [])
    assert (kept / "checkpoint.pt").read_bytes() == b"retrained here"  # kept without --force
    starts.restore_from_git(rev, [NAME], repo=repo, force=True)
    assert (kept / "checkpoint.pt").read_bytes() == b"weights"
    # records of another training here: the commit's checkpoint is not their weights
    (kept / "result.json").write_text('{"top1": 12.0}')
    done, left = starts.restore_from_git(rev, [NAME], repo=repo, force=True)
    assert done == [] and left[0].startswith(f"{NAME}: its result.json here differs")
    with pytest.raises(starts.StartsError, match="keeps no start nope"):
        starts.restore_from_git(rev, ["nope"], repo=repo)


@needs_git
def test_restore_from_git_refuses_a_commit_that_is_not_there(mods, tmp_path) -> None:
    _, starts = mods
    repo, _ = _archive(tmp_path, FILES)
    with pytest.raises(starts.StartsError, match=r"commit 0{40} is not in the git history"):
        starts.restore_from_git("0" * 40, repo=repo)
    with pytest.raises(starts.StartsError, match="is not in the git history"):
        starts.restore_from_git("HEAD", repo=tmp_path / "not-a-repo")


def test_restore_from_git_refuses_without_git(mods, monkeypatch) -> None:
    _, starts = mods
    monkeypatch.setattr(starts.shutil, "which", lambda name: None)
    with pytest.raises(starts.StartsError, match="git is not installed"):
        starts.restore_from_git()


def test_restore_starts_command_says_why_it_refuses(mods, monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # main() changes to the repository root; put it back after
    runner = importlib.import_module("research.accuracy.runner")
    assert runner.main(["restore-starts", "--rev", "0" * 40]) == 2
    assert "restore-starts: " in capsys.readouterr().err


@needs_git
def test_run_takes_a_kept_start_from_the_folder_first_then_from_git(
    mods, monkeypatch, tmp_path
) -> None:
    grid, starts = mods
    runner = importlib.import_module("research.accuracy.runner")
    repo, rev = _archive(tmp_path, FILES)
    monkeypatch.setattr(starts, "REPO", repo)
    monkeypatch.setattr(starts, "ARCHIVE_REV", rev)
    kept = starts.STARTS / NAME
    kept.mkdir(parents=True)
    (kept / "result.json").write_bytes(RESULT)  # the committed records, no checkpoint
    assert starts.lacking_weights(grid.grid()) == [NAME]
    assert starts.restore(grid.grid()) == []  # nothing to restore without the weights
    runner.restore_starts(grid.grid())
    run = grid.RUNS / NAME
    assert (run / "checkpoint.pt").read_bytes() == b"weights"
    assert (run / "result.json").read_bytes() == RESULT
    # a checkpoint in the kept folder is used as it is, git not asked
    shutil.rmtree(grid.RUNS)
    (kept / "checkpoint.pt").write_bytes(b"published artifact")
    monkeypatch.setattr(starts, "restore_from_git", lambda *a, **k: pytest.fail("git asked"))
    runner.restore_starts(grid.grid())
    assert (run / "checkpoint.pt").read_bytes() == b"published artifact"


def test_run_goes_on_when_git_cannot_restore_a_start(mods, monkeypatch, capsys) -> None:
    grid, starts = mods
    runner = importlib.import_module("research.accuracy.runner")
    kept = starts.STARTS / NAME
    kept.mkdir(parents=True)
    (kept / "result.json").write_bytes(RESULT)

    def refuse(*args, **kwargs):
        raise starts.StartsError("no git here")

    monkeypatch.setattr(starts, "restore_from_git", refuse)
    runner.restore_starts(grid.grid())
    assert f"kept start without its checkpoint here: {NAME}: no git here" in capsys.readouterr().out
    assert not (grid.RUNS / NAME).exists()


def test_the_archive_commit_holds_the_checkpoints_of_the_committed_records() -> None:
    """ARCHIVE_REV is a commit of this repository whose kept starts are the ones whose records
    are committed in research/accuracy/starts/ (the same result.json), each with a checkpoint."""
    from research import REPO
    from research.accuracy import starts

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    check = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{starts.ARCHIVE_REV}^{{commit}}"],
        capture_output=True,
    )
    if check.returncode != 0:
        pytest.skip(f"{starts.ARCHIVE_REV} is not in this checkout's history (a shallow clone?)")
    committed = Path(starts.__file__).parent / "starts"
    names = sorted(p.parent.name for p in committed.glob("*/result.json"))
    assert len(names) == 6
    listing = _git(REPO, "ls-tree", "-r", "--name-only", starts.ARCHIVE_REV, starts.ARCHIVE_PATH)
    at_rev = {tuple(line.split("/")[-2:]) for line in listing.splitlines()}
    for name in names:
        assert (name, "checkpoint.pt") in at_rev, name
        theirs = _git(
            REPO, "show", f"{starts.ARCHIVE_REV}:{starts.ARCHIVE_PATH}/{name}/result.json"
        )
        assert theirs == (committed / name / "result.json").read_text().strip(), name
