"""How much the HomoVar bounds' order changes ClimbQ+'s class weights on real training batches.

The authors' code takes the bounds ``n_L = |(p - r) / 2a|``, ``n_U = |(p + r) / 2a|`` unsorted
(method card §5, corrected 2026-12-07); before that date ``climbq_deploy.losses.homovar``
sorted them, so every ClimbQ+ row trained before then used ``bounds="sorted"``. The two differ
only in batches where some class has ``p = 2 zbar S_k + C_k < 0``. This study runs one epoch of
training batches (the loop's own loader: crop, flip, shuffle seed 0, batch 128) through a model
in train mode, without updating it, and compares the two weight vectors batch by batch: the
share of batches whose weights differ, and the largest relative change of a class weight.

Models: the kept CIFAR-10-LT gamma-50 fp32 start (200 epochs) as it is, and as the start of the
2-bit and 4-bit ClimbQ+ rows that the issue's bars count (``--init-bn-gamma 2`` for 2 bits, as
the ``bn2-*`` recipes; ClimbQ's class scaling on, as in training). The weights of later epochs
depend on the trained model; this measures the start of QAT, not a whole run.

Usage::

    .venv/bin/python -m research.accuracy.runner restore-starts
    .venv/bin/python -m research.studies.homovar_bounds --data DATA_DIR [--start RUN]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench._common import markdown_table, provenance_markdown, run_header, write_results
from climbq_deploy.data.dataset import load_dataset
from climbq_deploy.data.pipeline import Augment, ShuffleSampler
from climbq_deploy.losses.homovar import homovar_bounds
from climbq_deploy.models import build_model
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.train.bn_init import rescale_batchnorm
from climbq_deploy.train.checkpoint import load_checkpoint
from climbq_deploy.train.loop import dataset_loader
from research import RESULTS

NAME = "homovar_bounds"
START = (
    Path(__file__).resolve().parents[1] / "accuracy/starts/cifar10-lt-g50-resnet20-fp32-200ep-bf16"
)
MODELS = (
    ("fp32 start", "fp32", 32, None),
    ("ClimbQ+ 2-bit start, bn2", "climbq+", 2, 2.0),
    ("ClimbQ+ 4-bit start", "climbq+", 4, None),
)


def compare(data: Path, start: Path, method: str, bits: int, bn_gamma: float | None) -> dict:
    """One epoch of batches: authors' against sorted bounds, per batch."""
    dataset = load_dataset(data)
    counts = np.bincount(dataset.train_labels, minlength=dataset.num_classes)
    spec = QuantSpec(method, bits, bits)
    model = build_model("resnet20", dataset.num_classes, spec)
    model.load_state_dict(load_checkpoint(start / "checkpoint.pt")["model"], strict=False)
    if bn_gamma is not None:
        rescale_batchnorm(model, bn_gamma)
    model.train()
    loader = dataset_loader(
        dataset,
        "train",
        128,
        augment=Augment.from_name(dataset.info.get("augment", "none")),
        sampler=ShuffleSampler(len(dataset.train_labels), 0),
        seed=0,
    )
    differ, largest, per_batch = 0, 0.0, []
    with torch.no_grad():
        for x, y in loader.epoch(0):
            _, features = model(x, labels=y, return_features=True)
            stats = {
                order: homovar_bounds(features, y, counts, bounds=order)
                for order in ("authors", "sorted")
            }
            a, s = stats["authors"].weights, stats["sorted"].weights
            change = float(((a - s).abs() / s).max())
            negative = int(
                (2 * stats["authors"].zbar * stats["authors"].s_k + stats["authors"].c_k < 0).sum()
            )
            per_batch.append({"max_relative_change": change, "classes_with_p_below_0": negative})
            differ += change > 1e-6
            largest = max(largest, change)
    changes = [b["max_relative_change"] for b in per_batch if b["max_relative_change"] > 1e-6]
    return {
        "batches": len(per_batch),
        "batches_that_differ": differ,
        "largest_relative_change": largest,
        "median_change_where_differ": float(np.median(changes)) if changes else 0.0,
        "per_batch": per_batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10-LT gamma 50 folder")
    parser.add_argument("--start", type=Path, default=START, help="fp32 start run folder")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows, results = [], {}
    for label, method, bits, gamma in MODELS:
        found = compare(args.data, args.start, method, bits, gamma)
        results[label] = found
        rows.append(
            [
                label,
                found["batches"],
                found["batches_that_differ"],
                f"{100 * found['largest_relative_change']:.2f} %",
                f"{100 * found['median_change_where_differ']:.2f} %",
            ]
        )
        print(rows[-1], flush=True)
    header = run_header()
    table = markdown_table(
        [
            "model",
            "batches",
            "batches whose weights differ",
            "largest change of a class weight",
            "median largest change (differing batches)",
        ],
        rows,
    )
    text = (
        f"# HomoVar bounds: the authors' order against sorted\n\n{__doc__.split('Usage')[0]}\n"
        f"Dataset: `{args.data}`; start: `{args.start.name}`.\n\n{table}\n\n"
        f"{provenance_markdown(header)}"
    )
    payload: dict[str, Any] = {"header": header, "data": str(args.data), "results": results}
    write_results(args.out, NAME, payload, text)


if __name__ == "__main__":
    main()
