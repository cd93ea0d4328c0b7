"""Post-hoc logit adjustment (``climbq adjust-logits``): the bias it folds in, the run folder it
writes, that the adjusted run lowers exactly, and its refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from climbq_deploy.check import check_run
from climbq_deploy.cli import main
from climbq_deploy.data.dataset import load_dataset
from climbq_deploy.errors import ArtifactError, ConfigError
from climbq_deploy.export import load_run, provenance
from climbq_deploy.train.checkpoint import load_checkpoint
from climbq_deploy.train.loop import dataset_loader, predict
from climbq_deploy.train.metrics import long_tail_metrics
from climbq_deploy.train.posthoc import RECORD, adjust_logits, logit_offsets


def test_offsets_by_hand() -> None:
    # counts (3, 1): priors 3/4 and 1/4
    np.testing.assert_array_equal(logit_offsets([3, 1], 1.0), [-math.log(0.75), -math.log(0.25)])
    np.testing.assert_array_equal(
        logit_offsets([3, 1], 0.5), [-0.5 * math.log(0.75), -0.5 * math.log(0.25)]
    )
    # equal counts: a constant shift, which changes no decision
    assert np.ptp(logit_offsets([7, 7, 7], 1.0)) == 0


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_tau_must_be_finite_and_positive(tau: float) -> None:
    with pytest.raises(ConfigError, match="--tau must be a finite number > 0"):
        logit_offsets([3, 1], tau)


def test_a_class_without_training_images_is_named() -> None:
    with pytest.raises(ConfigError, match=r"class\(es\) \[1\] have no training images"):
        logit_offsets([3, 0, 2], 1.0)


def test_adjusted_run_changes_the_bias_only_and_is_measured_on_the_test_set(
    trained_syndigits, tmp_path
) -> None:
    data, _, q4, q4_metrics = trained_syndigits
    out = tmp_path / "pla"
    metrics = adjust_logits(q4, out, 1.0)
    before, after = load_checkpoint(q4 / "checkpoint.pt"), load_checkpoint(out / "checkpoint.pt")
    offsets = logit_offsets(q4_metrics["fit_counts"], 1.0)
    changed = [k for k in before["model"] if not torch.equal(before["model"][k], after["model"][k])]
    assert changed == ["fc.bias"]
    expected = (before["model"]["fc.bias"].double() + torch.from_numpy(offsets)).float()
    assert torch.equal(after["model"]["fc.bias"], expected)
    assert after[RECORD]["offsets"] == offsets.tolist() and after[RECORD]["tau"] == 1.0
    assert after["config"] == before["config"] and after["epoch"] == before["epoch"]
    # the figures are the adjusted model's, re-measured; the unadjusted ones are kept
    run = load_run(out)
    dataset = load_dataset(data)
    test = long_tail_metrics(
        predict(run.model, dataset, 100), dataset.test_labels, dataset.counts("train")
    )
    assert metrics["top1"] == test.top1 and metrics["per_class"] == test.per_class
    assert metrics["unadjusted"]["top1"] == q4_metrics["top1"]
    assert metrics[RECORD]["source_run"] == str(q4.resolve())
    assert provenance(run)["metrics"][RECORD]["tau"] == 1.0
    # the same decisions as adding the offsets to the source model's logits (up to ties of
    # the float rounding that folding into the bias moves)
    source = load_run(q4)
    with torch.no_grad():
        logits = torch.cat(
            [source.model(x) for x, _ in dataset_loader(dataset, "test", 100).epoch(0)]
        ).double()
    by_hand = (logits + torch.from_numpy(offsets)).argmax(1).numpy()
    agree = (by_hand == predict(run.model, dataset, 100)).mean()
    assert agree >= 0.995


def test_adjusted_run_lowers_and_the_integer_program_matches_it_exactly(
    trained_syndigits, tmp_path
) -> None:
    data, _, q4, _ = trained_syndigits
    adjust_logits(q4, tmp_path / "pla", 1.0)
    record = check_run(tmp_path / "pla", target="numpy", progress=False)
    assert record["code_agreement"] == 1.0 and record["first_divergent_layer"] is None
    assert record["top1_agreement"] == 1.0  # (its inputs are the program's 8-bit ones)
    assert record["n_images"] == len(load_dataset(data).test_labels)  # the whole test set


def test_refusals(trained_syndigits, tmp_path) -> None:
    _, _, q4, _ = trained_syndigits
    with pytest.raises(ConfigError, match="is the source run"):
        adjust_logits(q4, q4, 1.0)
    adjust_logits(q4, tmp_path / "pla", 1.0)
    with pytest.raises(ArtifactError, match="already logit-adjusted"):
        adjust_logits(tmp_path / "pla", tmp_path / "twice", 1.0)
    with pytest.raises(ArtifactError, match="is not a training run"):
        adjust_logits(tmp_path / "nothing", tmp_path / "x", 1.0)
    done = (tmp_path / "pla" / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"already holds a run.*pass --overwrite"):
        adjust_logits(q4, tmp_path / "pla", 0.5)
    assert (tmp_path / "pla" / "checkpoint.pt").read_bytes() == done
    adjust_logits(q4, tmp_path / "pla", 0.5, overwrite=True)
    assert (tmp_path / "pla" / "checkpoint.pt").read_bytes() != done


def test_cli_prints_before_and_after_and_exits_non_zero_on_bad_tau(
    trained_syndigits, tmp_path, capsys
) -> None:
    _, _, q4, q4_metrics = trained_syndigits
    assert main(["adjust-logits", str(q4), "--out", str(tmp_path / "a")]) == 0
    assert f"top-1 {q4_metrics['top1']:.2f} -> " in capsys.readouterr().out
    assert main(["adjust-logits", str(q4), "--out", str(tmp_path / "b"), "--tau", "-2"]) != 0
    assert "--tau must be a finite number > 0, got -2.0" in capsys.readouterr().err
