"""``climbq adjust-logits``: post-hoc logit adjustment of a finished run (no training).

A classifier trained on a long-tailed set scores classes by their training-set frequency as
well as by the image: its softmax estimates ``p(y | x)`` under the training prior
``pi_y = n_y / sum_k n_k``. The decision that minimises the *balanced* error (the balanced test
set's top-1) is ``argmax_y  f_y(x) - tau * log(pi_y)`` with ``tau = 1`` (Menon et al., "Long-tail
learning via logit adjustment", ICLR 2021, post-hoc form). It is a per-class constant, so it
folds into the classifier's bias::

    b_y  <-  b_y - tau * log(pi_y)        (float64, cast once to the bias dtype)

with ``n_y`` the images of class y the run was fit on (``fit_counts`` in its metrics.json: the
training split less any validation hold-out). Nothing else changes: the result is an ordinary
run folder (the same checkpoint with that bias, ``metrics.json`` re-measured on the test set),
so ``climbq export`` / ``check`` lower and verify it like any run; the integer program carries
the adjustment in its head's bias.

``tau`` is a fixed rule, not a knob to tune on the test set: 1 undoes exactly the prior the
model was fit under (the same ``tau = 1`` as the logit-adjusted loss of the fp32 recipe).
The run's own ``metrics.json`` keeps its unadjusted figures under ``unadjusted``.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from climbq_deploy.data.dataset import load_dataset
from climbq_deploy.errors import ArtifactError, ConfigError
from climbq_deploy.export import CHECKPOINT, load_run
from climbq_deploy.fileio import atomic_write, write_json
from climbq_deploy.runfolder import guard_output_run
from climbq_deploy.train.checkpoint import load_checkpoint, save_checkpoint
from climbq_deploy.train.loop import predict
from climbq_deploy.train.metrics import long_tail_metrics

RECORD = "posthoc_logit_adjustment"
GROUPS = ("top1", "many", "medium", "few", "per_class")


def logit_offsets(counts: list[int] | np.ndarray, tau: float) -> np.ndarray:
    """``-tau * log(n_y / sum n)`` per class, float64 (>= 0: rarer classes get more)."""
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ConfigError(f"--tau must be a finite number > 0, got {tau!r}")
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size < 2:
        raise ConfigError(f"class counts must list >= 2 classes, got shape {counts.shape}")
    empty = np.flatnonzero(~(counts > 0)).tolist()
    if empty:
        raise ConfigError(
            f"class(es) {empty} have no training images: their prior is 0 and log(0) has no "
            "adjustment"
        )
    return -tau * np.log(counts / counts.sum())


def _prior_counts(metrics: dict[str, Any], source: Path, num_classes: int) -> list[int]:
    counts = metrics.get("fit_counts") or metrics.get("train_counts")
    if not isinstance(counts, list) or len(counts) != num_classes:
        raise ArtifactError(
            f"{source / 'metrics.json'}: needs fit_counts (or train_counts) with one count per "
            f"class ({num_classes}), found {counts!r}"
        )
    return [int(c) for c in counts]


def adjust_logits(
    source: str | Path, out: str | Path, tau: float = 1.0, overwrite: bool = False
) -> dict[str, Any]:
    """Fold ``-tau log(prior)`` into ``source``'s classifier bias and write run folder ``out``;
    return the metrics written there (final-epoch model of ``source``, adjusted). ``out`` may
    not be the source run, nor a folder holding a run unless ``overwrite``."""
    began = time.perf_counter()
    source = Path(source)
    out = guard_output_run(out, {"source": source}, overwrite=overwrite)
    run = load_run(source)
    state = load_checkpoint(source / CHECKPOINT)
    if RECORD in state:
        raise ArtifactError(
            f"{source / CHECKPOINT} is already logit-adjusted; adjusting twice "
            "would subtract the prior twice"
        )
    if "top1" not in run.metrics:
        raise ArtifactError(f"{source} has no finished metrics.json: train it to the end first")
    counts = _prior_counts(run.metrics, source, run.num_classes)
    offsets = logit_offsets(counts, tau)
    bias = run.model.fc.bias
    with torch.no_grad():
        bias.copy_((bias.double() + torch.from_numpy(offsets)).to(bias.dtype))
    dataset = load_dataset(run.config.data)
    predictions = predict(
        run.model, dataset, run.config.eval_batch_size, precision=run.config.precision
    )
    test = long_tail_metrics(predictions, dataset.test_labels, dataset.counts("train"))
    record = {
        "tau": float(tau),
        "prior_counts": counts,
        "offsets": offsets.tolist(),
        "source_run": str(source.resolve()),
        "source_checkpoint_sha256": hashlib.sha256((source / CHECKPOINT).read_bytes()).hexdigest(),
        "seconds": time.perf_counter() - began,
    }
    out.mkdir(parents=True, exist_ok=True)
    # (load_run has already loaded these weights strictly into a model with ``fc``)
    model_state = {**state["model"], "fc.bias": bias.detach().clone()}
    save_checkpoint(
        out / CHECKPOINT,
        {
            **{k: v for k, v in state.items() if k != "checkpoint_version"},
            "config": run.config.as_dict(),  # its folders as found from here: absolute
            "model": model_state,
            RECORD: record,
        },
    )
    if (source / "history.jsonl").is_file():
        with atomic_write(out / "history.jsonl", "w") as handle:
            handle.write((source / "history.jsonl").read_text())
    metrics = {
        **run.metrics,
        **test.as_dict(),
        RECORD: record,
        "unadjusted": {k: run.metrics.get(k) for k in GROUPS},
    }
    write_json(out / "metrics.json", metrics)
    return metrics
