"""From a training run folder to the integer program: ``export_run(RUN, target=...)``.

A run folder (``climbq train --out RUN``) holds ``checkpoint.pt`` (config + weights) and
``metrics.json``. Export rebuilds the model, captures it (:mod:`climbq_deploy.ir.capture`),
lowers it (:func:`climbq_deploy.ir.passes.lower`) and hands the program to a target, which
writes its artifact (the NumPy target: ``RUN/model.climbq``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from climbq_deploy import __version__
from climbq_deploy.calibration.dataset import read_meta
from climbq_deploy.errors import ArtifactError, ConfigError
from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.graph import Graph
from climbq_deploy.ir.passes import lower
from climbq_deploy.models import build_model
from climbq_deploy.models.common import QuantModel
from climbq_deploy.train.checkpoint import load_checkpoint
from climbq_deploy.train.config import TrainConfig

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainedRun:
    """A run folder's model (eval mode, float32), config, metrics and dataset normalisation."""

    folder: Path
    config: TrainConfig
    model: QuantModel
    metrics: dict[str, Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_shape: tuple[int, int, int]
    num_classes: int


def load_run(folder: str | Path, data: str | Path | None = None) -> TrainedRun:
    """Load ``folder/checkpoint.pt``; ``data`` overrides the dataset folder it was trained on."""
    folder = Path(folder)
    if not (folder / CHECKPOINT).is_file():
        raise ArtifactError(f"{folder} is not a training run (no {CHECKPOINT})")
    state = load_checkpoint(folder / CHECKPOINT)
    try:
        config = TrainConfig(**state["config"])
    except TypeError as exc:
        raise ArtifactError(f"{folder / CHECKPOINT}: unreadable config ({exc})") from None
    data_dir = Path(data) if data is not None else Path(config.data)
    meta = read_meta(data_dir)
    norm = meta.get("info", {}).get("normalization", {})
    mean = tuple(norm.get("mean", (0.5, 0.5, 0.5)))
    std = tuple(norm.get("std", (0.5, 0.5, 0.5)))
    num_classes = len(meta["class_names"])
    model = build_model(config.arch, num_classes, config.quant_spec, config.faithful_mbv2)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ArtifactError(f"{folder / CHECKPOINT}: weights do not fit {config.arch} "
                            f"with {num_classes} classes ({first})") from None  # fmt: skip
    metrics_path = folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    size = meta.get("image_shape") or meta["arrays"]["test_images"]["shape"][1:]
    return TrainedRun(folder, config, model.eval(), metrics, mean, std,
                      tuple(int(v) for v in size), num_classes)  # fmt: skip


def provenance(run: TrainedRun) -> dict[str, Any]:
    """What the artifact records about where it came from."""
    # "calibration": the record of runs made by `climbq calibrate` (post-training quantization)
    keep = ("top1", "many", "medium", "few", "per_class", "epochs", "dataset", "train_counts",
            "calibration")  # fmt: skip
    return {
        "climbq_deploy": __version__,
        "run": run.folder.name,
        "arch": run.config.arch,
        "method": run.config.method,
        "wbits": run.config.wbits,
        "abits": run.config.abits,
        "loss": run.config.loss_name,
        "dataset_folder": run.config.data,
        "normalization": {"mean": list(run.mean), "std": list(run.std)},
        "metrics": {k: run.metrics[k] for k in keep if k in run.metrics},
        "config": run.config.as_dict(),
        "checkpoint_sha256": hashlib.sha256((run.folder / CHECKPOINT).read_bytes()).hexdigest(),
    }


def lower_run(run: TrainedRun, head: str = "float", input_bits: int = 32) -> Graph:
    """The lowered integer program of a run (``input_bits=16`` for int16-input targets)."""
    if run.config.method == "fp32" or 32 in (run.config.wbits, run.config.abits):
        spec = f"{run.config.method}, w{run.config.wbits}a{run.config.abits}"
        raise ConfigError(
            f"run {run.folder} is full precision ({spec}); export needs a quantized run"
        )
    graph = capture(run.model, run.mean, run.std, run.image_shape, provenance(run), input_bits)
    return lower(graph, head=head)
