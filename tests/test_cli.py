"""The CLI end to end, as a user runs it (real processes, real files)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from climbq_deploy import __version__
from tests.conftest import SHARED, make_tree_files


def climbq(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "climbq_deploy", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def test_version_and_entry_point() -> None:
    result = climbq("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"climbq_deploy {__version__}"
    assert (Path(sys.executable).parent / "climbq").exists()


@pytest.mark.slow
def test_syndigits_twice_gives_identical_hashes_and_a_preview(tmp_path) -> None:
    first = climbq(
        "data", "syndigits", "--gamma", "50", "--out", tmp_path / "a", "--seed", "0", "--preview"
    )
    second = climbq("data", "syndigits", "--gamma", "50", "--out", tmp_path / "b", "--seed", "0")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    meta_a = json.loads((tmp_path / "a/meta.json").read_text())
    meta_b = json.loads((tmp_path / "b/meta.json").read_text())
    assert meta_a["arrays"] == meta_b["arrays"]
    assert (tmp_path / "a/data.npz").read_bytes() == (tmp_path / "b/data.npz").read_bytes()
    assert meta_a["counts"]["train"] == [1000, 647, 418, 270, 174, 112, 72, 46, 29, 18]
    assert meta_a["sizes"] == {"train": 2786, "test": 2000}
    assert meta_a["counts"]["test"] == [200] * 10
    assert len(meta_a["info"]["fonts"]) >= 20 and meta_a["info"]["seed"] == 0
    preview = Image.open(tmp_path / "a/preview.png")
    assert preview.format == "PNG" and preview.height >= 10 * 64
    assert "sha256 train_images: " + meta_a["arrays"]["train_images"]["sha256"] in first.stdout
    other = climbq("data", "syndigits", "--gamma", "50", "--out", tmp_path / "c", "--seed", "1")
    meta_c = json.loads((tmp_path / "c/meta.json").read_text())
    assert other.returncode == 0
    assert meta_c["arrays"]["train_images"]["sha256"] != meta_a["arrays"]["train_images"]["sha256"]


CIFAR_ZIP = SHARED / "data/cifar10-jpg.zip"


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_ZIP.is_file(), reason="../shared/data/cifar10-jpg.zip not present")
def test_cifar10_lt_from_the_authors_list(tmp_path) -> None:
    split = SHARED / "data/climbq-splits/cifar10_train50.csv"
    result = climbq(
        "data", "cifar10", "--source", CIFAR_ZIP, "--split-csv", split, "--out", tmp_path
    )
    assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["sizes"] == {"train": 13_988, "test": 10_000}
    assert meta["counts"]["train"] == [5000, 3237, 2095, 1356, 877, 567, 367, 237, 153, 99]
    assert meta["counts"]["test"] == [1000] * 10
    shown = climbq("data", "show", tmp_path, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["sizes"]["train"] == 13_988


def test_digits_and_show(tmp_path) -> None:
    result = climbq("data", "digits", "--gamma", "10", "--out", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["counts"]["test"] == [50] * 10
    shown = climbq("data", "show", tmp_path)
    assert shown.returncode == 0 and "digits-lt" in shown.stdout


def _tree(root: Path, spec: dict) -> Path:
    for rel, data in make_tree_files(spec).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_skip_bad_reports_the_count(tmp_path) -> None:
    root = _tree(tmp_path / "src", {"train": {"a": 4, "b": 4}, "test": {"a": 1, "b": 1}})
    (root / "train/a/0001.png").write_bytes(b"garbage")
    args = (
        "data",
        "folder",
        "--source",
        root,
        "--gamma",
        "1",
        "--n-max",
        "3",
        "--out",
        tmp_path / "o",
    )
    failed = climbq(*args)
    assert failed.returncode == 2 and "train/a/0001.png" in failed.stderr
    result = climbq(*args, "--skip-bad")
    assert result.returncode == 0, result.stderr
    assert "skipped 1 unreadable image" in result.stderr
    meta = json.loads((tmp_path / "o/meta.json").read_text())
    assert meta["name"] == "src-lt" and meta["info"]["skipped"]["count"] == 1


def _bad_cases(tmp: Path) -> list[tuple[list, str]]:
    good = _tree(tmp / "good", {"train": {"a": 3, "b": 3}, "test": {"a": 1, "b": 1}})
    unknown = _tree(tmp / "unknown", {"train": {"a": 2}, "test": {"a": 1, "zz": 1}})
    empty = tmp / "empty"
    empty.mkdir()
    (tmp / "notzip.zip").write_text("plain text")
    import zipfile

    with zipfile.ZipFile(tmp / "evil.zip", "w") as archive:
        archive.writestr("train/a/../../../etc/x.png", b"x")
    nan = tmp / "nan"
    return [
        (
            ["data", "cifar10", "--source", tmp / "missing", "--gamma", "50", "--out", nan],
            "does not exist",
        ),
        (["data", "cifar10", "--source", empty, "--gamma", "50", "--out", nan], "no train/ folder"),
        (
            ["data", "cifar10", "--source", tmp / "notzip.zip", "--gamma", "5", "--out", nan],
            "neither",
        ),
        (
            ["data", "cifar10", "--source", tmp / "evil.zip", "--gamma", "5", "--out", nan],
            "refusing zip",
        ),
        (["data", "cifar10", "--source", unknown, "--gamma", "1", "--out", nan], "zz"),
        (
            ["data", "folder", "--source", good, "--gamma", "1", "--n-max", "9", "--out", nan],
            "not enough",
        ),
        (["data", "folder", "--source", good, "--out", nan], "--split-csv"),
        (
            ["data", "folder", "--source", good, "--split-csv", tmp / "no.csv", "--out", nan],
            "no.csv",
        ),
        (["data", "syndigits", "--gamma", "0.5", "--out", nan], "gamma must be"),
        (["data", "syndigits", "--gamma", "nan", "--out", nan], "gamma must be"),
        (["data", "syndigits", "--gamma", "50", "--size", "4", "--out", nan], "size"),
        (["data", "show", empty], "meta.json is missing"),
        (["data", "show", tmp / "missing"], "does not exist"),
    ]


def test_bad_inputs_give_one_clear_line_and_exit_2(tmp_path) -> None:
    for args, needle in _bad_cases(tmp_path):
        result = climbq(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert needle in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr, (args, result.stderr)


def test_debug_shows_the_traceback(tmp_path) -> None:
    result = climbq("--debug", "data", "show", tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr and "DataError" in result.stderr


def test_show_detects_a_tampered_dataset(tmp_path) -> None:
    assert climbq("data", "digits", "--gamma", "5", "--out", tmp_path).returncode == 0
    data = dict(np.load(tmp_path / "data.npz"))
    data["test_images"][0, 0, 0, 0] ^= 1
    np.savez(tmp_path / "data.npz", **data)
    result = climbq("data", "show", tmp_path)
    assert result.returncode == 2 and "fails its sha256 check" in result.stderr


def test_run_folders_are_never_replaced_unasked(trained_syndigits, tmp_path) -> None:
    """calibrate/adjust-logits/train refuse their input run and a finished run as --out
    (exit 2, one clear line, every file unchanged) unless --overwrite."""
    import shutil

    data, fp, q4, _ = trained_syndigits
    fp_copy = tmp_path / "fp"
    shutil.copytree(fp, fp_copy)

    def files(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}

    before = files(fp_copy)
    out = climbq(
        "calibrate", fp_copy, "--method", "ptq-w4a4", "--calib-size", "10", "--out", fp_copy
    )
    assert out.returncode == 2 and "is the full-precision run" in out.stderr
    out = climbq("train", "--data", data, "--epochs", "1", "--out", fp_copy)
    assert (
        out.returncode == 2 and "already holds a run" in out.stderr and "--overwrite" in out.stderr
    )
    assert files(fp_copy) == before
    assert climbq("adjust-logits", q4, "--out", tmp_path / "pla").returncode == 0
    adjusted = files(tmp_path / "pla")
    out = climbq("adjust-logits", q4, "--out", tmp_path / "pla", "--tau", "0.5")
    assert out.returncode == 2 and "already holds a run" in out.stderr
    assert files(tmp_path / "pla") == adjusted
    out = climbq("adjust-logits", q4, "--out", tmp_path / "pla", "--tau", "0.5", "--overwrite")
    assert out.returncode == 0, out.stderr
    assert files(tmp_path / "pla")["checkpoint.pt"] != adjusted["checkpoint.pt"]


def test_a_full_disk_is_one_clear_line_and_leaves_the_file(tmp_path, monkeypatch, capsys) -> None:
    """ENOSPC while writing (monkeypatched: the rename into place fails) is ``cannot write
    PATH: No space left on device``, exit 2, and the file already there keeps its bytes."""
    import errno
    import os

    from climbq_deploy.cli import main

    data = tmp_path / "data"
    assert (
        main(["data", "digits", "--gamma", "5", "--test-per-class", "5", "--out", str(data)]) == 0
    )
    before = (data / "meta.json").read_bytes()

    def full(src, dst, **_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    capsys.readouterr()
    assert (
        main(["data", "digits", "--gamma", "5", "--test-per-class", "5", "--out", str(data)]) == 2
    )
    err = capsys.readouterr().err
    assert err == f"climbq: error: cannot write {data / 'data.npz'}: No space left on device\n"
    assert (data / "meta.json").read_bytes() == before
    assert sorted(p.name for p in data.iterdir()) == ["data.npz", "meta.json"]  # no temp left


def test_a_closed_stdout_ends_quietly(tmp_path) -> None:
    """``climbq data show D --json | head -1``: the reader goes away before the output is
    written (here: the pipe's read end is closed before climbq starts, so the write always
    fails); no traceback, no 'internal error', exit 141 like a tool killed by SIGPIPE."""
    import os

    assert climbq("data", "digits", "--gamma", "5", "--out", tmp_path / "d").returncode == 0
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "climbq_deploy", "data", "show", str(tmp_path / "d"), "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=600,
        )
    finally:
        os.close(write_end)
    assert result.stderr == "" and result.returncode == 141
    piped = subprocess.run(  # as a user types it
        f"{sys.executable} -m climbq_deploy data show {tmp_path / 'd'} --json | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert piped.stdout == "{\n" and piped.stderr == ""
