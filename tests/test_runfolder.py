"""Run folders work from any working directory: new runs store absolute paths, older runs'
relative ones are found again (run-relative, then absolute, then the working directory), and a
dataset that is gone is one error naming the field, the stored value and the paths tried."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from climbq_deploy.cli import main
from climbq_deploy.data.dataset import save_dataset
from climbq_deploy.errors import DataError
from climbq_deploy.export import load_run
from climbq_deploy.runfolder import locate_run_path, run_path_candidates
from climbq_deploy.train.checkpoint import load_checkpoint
from tests.conftest import make_random_run, tiny_dataset


def test_candidates_are_run_relative_then_above_the_run_then_the_working_directory(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path / "..")
    run = tmp_path / "proj" / "runs" / "r1"
    above = [tmp_path / "proj" / "runs", tmp_path / "proj", tmp_path, *tmp_path.parents]
    expected = [run / "data/syn", *(base / "data/syn" for base in above)]
    expected.append(Path.cwd() / "data/syn")  # already listed (a parent): tried once
    assert run_path_candidates(run, "data/syn") == list(dict.fromkeys(expected))
    assert run_path_candidates(run, tmp_path / "abs") == [tmp_path / "abs"]


def test_locate_names_the_field_the_stored_value_and_every_path_tried(tmp_path) -> None:
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "data").mkdir()
    assert locate_run_path(run, "data", "data") == run / "data"  # run-relative first
    with pytest.raises(DataError) as caught:
        locate_run_path(run, "data", "gone/syn", "give --data")
    text = str(caught.value)
    assert "data folder 'gone/syn'" in text and text.endswith("give --data")
    for tried in (run / "gone/syn", tmp_path / "gone/syn", Path.cwd() / "gone/syn"):
        assert str(tried.resolve()) in text


def test_an_old_run_with_cwd_relative_paths_loads_from_elsewhere(tmp_path, monkeypatch) -> None:
    """A run of an older version, trained in proj/ with ``--data data/tiny --out runs/old``,
    stored ``data/tiny``: found above the run folder; gone, the error says where it looked,
    and ``data=`` (``--data``) takes its place."""
    proj = tmp_path / "proj"
    save_dataset(tiny_dataset(), proj / "data" / "tiny")
    monkeypatch.chdir(proj)
    make_random_run(Path("runs/old"), Path("data/tiny"), "climbq", 4)
    assert load_checkpoint("runs/old/checkpoint.pt")["config"]["data"] == "data/tiny"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = load_run(proj / "runs" / "old")
    assert run.config.data == str((proj / "data" / "tiny").resolve())
    (proj / "data" / "tiny").rename(tmp_path / "moved")
    with pytest.raises(
        DataError, match=r"its data folder 'data/tiny' is not there \(tried .*--data"
    ):
        load_run(proj / "runs" / "old")
    assert load_run(proj / "runs" / "old", data=tmp_path / "moved").num_classes == 2
    assert main(["export", str(proj / "runs" / "old")]) == 2
    assert main(["export", str(proj / "runs" / "old"), "--data", str(tmp_path / "moved")]) == 0
    assert (proj / "runs" / "old" / "model.climbq").is_file()


def test_climbq_export_works_from_another_directory(tmp_path, monkeypatch, capsys) -> None:
    """Issue 42's must-show: train with relative paths in one directory, export from another."""
    proj = tmp_path / "proj"
    save_dataset(tiny_dataset(), proj / "data" / "tiny")
    monkeypatch.chdir(proj)
    train = ["train", "--data", "data/tiny", "--out", "runs/r1", "--epochs", "1"]
    quantized = ["--method", "climbq", "--wbits", "4", "--abits", "4", "--batch-size", "4"]
    assert main([*train, *quantized]) == 0
    config = load_checkpoint("runs/r1/checkpoint.pt")["config"]
    assert os.path.isabs(config["data"]) and Path(config["data"]) == (proj / "data/tiny").resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["export", str(proj / "runs" / "r1")]) == 0, capsys.readouterr().err
    assert (proj / "runs" / "r1" / "model.climbq").is_file()
    assert main(["export", "../proj/runs/r1", "--out", "here.climbq"]) == 0
    assert (elsewhere / "here.climbq").is_file()
    capsys.readouterr()
    assert main(["check", "../proj/runs/r1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["n_images"] == 4 and record["code_agreement"] == 1.0
