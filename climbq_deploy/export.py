"""From a training run folder to the integer program: ``export_artifact(RUN, target=...)``
(the public :func:`climbq_deploy.export` and ``climbq export``).

A run folder (``climbq train --out RUN``) holds ``checkpoint.pt`` (config + weights) and
``metrics.json``. Export rebuilds the model (:func:`load_run`), captures it
(:mod:`climbq_deploy.ir.capture`), lowers it (:func:`climbq_deploy.ir.passes.lower`) and hands
the program to a target, which writes its artifact (the NumPy target: ``RUN/model.climbq``).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from climbq_deploy import __version__, _make_callable
from climbq_deploy.data.dataset import read_meta
from climbq_deploy.errors import ArtifactError, ConfigError, DataError
from climbq_deploy.golden import DEFAULT_IMAGES, evenly_spaced, write_golden
from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.graph import Graph
from climbq_deploy.ir.passes import lower
from climbq_deploy.models import build_model
from climbq_deploy.models.common import QuantModel
from climbq_deploy.models.user import source_changed
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
    class_names: tuple[str, ...] = ()


def load_run(folder: str | Path, data: str | Path | None = None) -> TrainedRun:
    """Load ``folder/checkpoint.pt``; ``data`` overrides the dataset folder it was trained on.

    The record's ``config`` names folders as found from here (:meth:`TrainConfig.located`):
    ``config.data`` is the absolute dataset folder used, whichever directory the run was
    trained from (DataError naming the paths tried when it is gone and ``data`` is None).

    The model is rebuilt from the run's config (a built-in ``arch``, or a user's ``model``
    factory quantized again as in training) and given the checkpoint's weights. For a user's
    model whose source file changed since training (its sha256 differs): a warning when the
    weights still fit, an ArtifactError that says so when they do not."""
    folder = Path(folder)
    weights, config = _read_checkpoint(folder)
    config = config.located(folder, data)
    data_dir = Path(config.data)
    meta = read_meta(data_dir)
    mean, std, size = _input_description(meta, data_dir)
    names = meta.get("class_names")
    if not isinstance(names, list) or len(names) < 2:
        raise ArtifactError(f"{data_dir}: meta.json class_names must list >= 2 classes")
    num_classes = len(names)
    changed = config.model and source_changed(config.model, config.model_sha256)
    model = build_model(
        config.arch, num_classes, config.quant_spec, config.faithful_mbv2, config.model, size
    )
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:  # torch's first line is a header; the second says what differs
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
        detail = lines[min(1, len(lines) - 1)]
        detail = detail if len(detail) <= 200 else detail[:197] + "..."
        raise ArtifactError(
            f"{folder / CHECKPOINT}: weights do not fit {config.model or config.arch} "
            f"with {num_classes} classes ({detail})" + (f"; {changed}" if changed else "")
        ) from None
    if changed:
        warnings.warn(f"{folder}: {changed}; its weights still fit the model", stacklevel=2)
    metrics_path = folder / "metrics.json"
    metrics = _read_metrics(metrics_path) if metrics_path.is_file() else {}
    return TrainedRun(
        folder, config, model.eval(), metrics, mean, std, size, num_classes, tuple(map(str, names))
    )


def run_config(folder: str | Path) -> TrainConfig:
    """The training configuration of run ``folder`` (method, bits, arch, ...), read from its
    checkpoint without building the model: what ``export`` and ``check`` decide by before
    any lowering."""
    return _read_checkpoint(Path(folder))[1]


def _read_checkpoint(folder: Path) -> tuple[dict[str, Any], TrainConfig]:
    """``(weights, config)`` of ``folder/checkpoint.pt``, checked (ArtifactError otherwise)."""
    if not (folder / CHECKPOINT).is_file():
        raise ArtifactError(f"{folder} is not a training run (no {CHECKPOINT})")
    state = load_checkpoint(folder / CHECKPOINT)
    weights = _checked_state(state, folder / CHECKPOINT)
    try:
        config = TrainConfig(**state["config"])
    except TypeError as exc:
        raise ArtifactError(f"{folder / CHECKPOINT}: unreadable config ({exc})") from None
    return weights, config


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        metrics = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(metrics, dict):
        raise ArtifactError(f"{path} must hold a JSON object, found {type(metrics).__name__}")
    return metrics


def _checked_state(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """The checkpoint's weights, after checking it has a config and finite tensors (a NaN or
    inf weight, statistic or range would otherwise surface as garbage thresholds)."""
    for key in ("config", "model"):
        if not isinstance(state.get(key), dict):
            raise ArtifactError(
                f"{path} has no {key!r} dict; is it a checkpoint of `climbq train`?"
            )
    for name, value in state["model"].items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            raise ArtifactError(
                f"{path}: tensor {name!r} {tuple(value.shape)} holds {bad} NaN/inf value(s); "
                "the run diverged or was not calibrated"
            )
    return state["model"]


def _input_description(
    meta: dict[str, Any], folder: Path
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[int, int, int]]:
    """``(mean, std, (H, W, C))`` of a dataset's meta.json, validated: 3 finite means, 3 finite
    stds > 0 (the input step divides by them), a positive image shape with 3 channels."""
    where = folder / "meta.json"
    info = meta.get("info") if isinstance(meta.get("info"), dict) else {}
    norm = info.get("normalization") or {}
    stats = {}
    for key in ("mean", "std"):
        values = norm.get(key, (0.5, 0.5, 0.5)) if isinstance(norm, dict) else None
        ok = (
            isinstance(values, list | tuple)
            and len(values) == 3
            and all(isinstance(v, int | float) and math.isfinite(v) for v in values)
        )
        if not ok or (key == "std" and min(values) <= 0):
            rule = "finite numbers > 0" if key == "std" else "finite numbers"
            raise DataError(f"{where}: normalization {key} must be 3 {rule}, got {values!r}")
        stats[key] = tuple(float(v) for v in values)
    arrays = meta.get("arrays") if isinstance(meta.get("arrays"), dict) else {}
    size = meta.get("image_shape") or arrays.get("test_images", {}).get("shape", [])[1:]
    if not (
        isinstance(size, list)
        and len(size) == 3
        and size[2] == 3
        and all(type(v) is int and v > 0 for v in size)
    ):
        raise DataError(f"{where}: image_shape must be [H, W, 3] with H, W >= 1, got {size!r}")
    return stats["mean"], stats["std"], (size[0], size[1], size[2])


def provenance(run: TrainedRun) -> dict[str, Any]:
    """What the artifact records about where it came from."""
    # "calibration": the record of runs made by `climbq calibrate` (post-training quantization);
    # "posthoc_logit_adjustment": that of `climbq adjust-logits` (the head's bias adjustment)
    keep = (
        "top1",
        "many",
        "medium",
        "few",
        "per_class",
        "epochs",
        "dataset",
        "train_counts",
        "calibration",
        "posthoc_logit_adjustment",
    )
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
        **({"class_names": list(run.class_names)} if run.class_names else {}),
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


def lower_model(
    model: QuantModel, data: str | Path, head: str = "float", input_bits: int = 32
) -> Graph:
    """The lowered integer program of a quantized model in memory (a built-in model, or
    :func:`climbq_deploy.quantize`'s), for images of dataset folder ``data`` (its normalisation
    and image shape: what the model was trained on)."""
    spec = model.spec
    if spec.method == "fp32" or 32 in (spec.wbits, spec.abits):
        raise ConfigError(
            f"the model is full precision ({spec.method}, w{spec.wbits}a{spec.abits}); export "
            "needs a quantized model"
        )
    data_dir = Path(data)
    dataset_meta = read_meta(data_dir)
    mean, std, size = _input_description(dataset_meta, data_dir)
    names = dataset_meta.get("class_names")
    meta = {
        "climbq_deploy": __version__,
        "arch": type(getattr(model, "net", model)).__name__,
        "method": spec.method,
        "wbits": spec.wbits,
        "abits": spec.abits,
        "dataset_folder": str(data_dir),
        "normalization": {"mean": list(mean), "std": list(std)},
        **({"class_names": [str(n) for n in names]} if isinstance(names, list) else {}),
    }
    was_training = model.training
    try:
        graph = capture(model.eval(), mean, std, size, meta, input_bits)
    finally:
        model.train(was_training)
    return lower(graph, head=head)


@dataclass(frozen=True)
class Exported:
    """What :func:`export_artifact` wrote: the artifact's ``path``, the integer program in
    it (``graph``) and the golden file beside it (``golden``; None when none was asked)."""

    path: Path
    graph: Graph
    golden: Path | None = None


def export_artifact(
    run_or_model: str | Path | TrainedRun | QuantModel,
    target: Any = "numpy",
    out: str | Path | None = None,
    *,
    head: str = "float",
    data: str | Path | None = None,
    golden: int = DEFAULT_IMAGES,
    **options: Any,
) -> Exported:
    """Lower a run (its folder, or :func:`load_run`'s record) or a quantized model in memory
    and write ``target``'s artifact; what ``climbq export`` and :func:`climbq_deploy.export`
    do.

    ``target``: a registered name, with ``options`` its options (``kernels="ref"``), or a
    target object. ``out``: the artifact path, by default ``RUN/model<suffix>`` (required for
    a model). ``data``: the dataset folder whose images the artifact reads (default: the
    run's; required for a model). A run or model the target cannot lower exactly is refused
    before any lowering. ``golden``: also write ``<artifact>.golden.npz`` with that many test
    images and the reference's outputs on them, for ``climbq verify`` on the device
    (:mod:`climbq_deploy.golden`; 0: none).
    """
    if golden < 0:
        raise ConfigError(f"golden must be >= 0 images, got {golden}")
    from climbq_deploy.targets import get_target, refuse_unlowerable

    if isinstance(target, str):
        client = get_target(target, **options)
    elif options:
        raise ConfigError(f"options {sorted(options)} with a target object: set them in it")
    else:
        client = target
    if isinstance(run_or_model, QuantModel):
        if out is None or data is None:
            raise ConfigError("exporting a model in memory needs out= (the file) and data=")
        refuse_unlowerable(client, run_or_model.spec, head)
        out = Path(out)
        _refuse_folder(out)
        graph = lower_model(run_or_model, data, head, client.input_bits)
        path = client.export(graph, out)
        return Exported(path, graph, _golden(graph, path, data, golden))
    if isinstance(run_or_model, TrainedRun):
        folder, config = run_or_model.folder, run_or_model.config
    elif isinstance(run_or_model, str | Path):
        folder, config = Path(run_or_model), None
    else:
        raise ConfigError(
            "export takes a run folder, a TrainedRun (load_run) or a quantized model, got "
            f"{type(run_or_model).__name__}"
        )
    out = Path(out) if out is not None else folder / f"model{client.suffix}"
    _refuse_folder(out)
    refuse_unlowerable(client, config or run_config(folder), head)
    run = run_or_model if isinstance(run_or_model, TrainedRun) else load_run(folder, data)
    graph = lower_run(run, head=head, input_bits=client.input_bits)
    path = client.export(graph, out)
    return Exported(path, graph, _golden(graph, path, data or run.config.data, golden))


def _golden(graph: Graph, artifact: Path, data: str | Path, count: int) -> Path | None:
    """``<artifact>.golden.npz`` on ``count`` evenly spaced test images of ``data`` (None
    when ``count`` is 0)."""
    if count == 0:
        return None
    from climbq_deploy.data.dataset import load_dataset

    dataset = load_dataset(data)
    indices = evenly_spaced(len(dataset.test_images), count)
    images, labels = dataset.test_images[indices], dataset.test_labels[indices]
    return write_golden(graph, artifact, images, labels, indices, str(data))


def _refuse_folder(out: Path) -> None:
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the artifact's file name")


_make_callable(__name__)  # climbq_deploy.export(...) is climbq_deploy.api.export (see the package)
