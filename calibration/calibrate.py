"""``climbq calibrate``: a trained full-precision run to a quantized run, without training.

Recipes (:data:`PRESETS`):

- ``ptq-int8`` / ``ptq-w4a4``: post-training quantization as users first try it — per-channel
  symmetric weights (``method="ptq"``, from the weights alone), per-tensor symmetric
  activations with ranges observed on the full-precision model over the calibration set
  (``minmax`` or ``percentile``, :mod:`.ranges`), residual operands tied to one scale,
  BatchNorm as trained (folded by the lowering like any run's).
- ``climbq-ptq``: the ClimbQ quantizers (``method="climbq"``, 4 bits) on the trained weights,
  BatchNorm statistics re-estimated on the calibration set (:mod:`.batchnorm`); the grids are
  fixed by ``Phi``, so there are no ranges to observe.

The result is an ordinary run folder — ``checkpoint.pt`` (config + weights + calibrated
buffers), ``metrics.json`` (final test metrics as ``climbq train`` writes them, ``epochs`` 0)
— so ``load_run``, ``climbq export`` and ``climbq check`` treat it like a trained run. Its
config is the full-precision run's with the method and bits replaced and ``init`` set to that
run; ``metrics.json`` and the exported artifact's provenance carry a ``calibration`` record
(recipe, range rule, the calibration set's mode, seed, counts and indices).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.calibration.batchnorm import reestimate_batchnorm
from climbq_deploy.calibration.calibset import CALIBRATION_MODES, draw_calibration_set
from climbq_deploy.calibration.ranges import (
    DEFAULT_PERCENTILE,
    RangeRule,
    observe_ranges,
    residual_groups,
    tie_ranges,
)
from climbq_deploy.data.dataset import ImageDataset, load_dataset
from climbq_deploy.errors import ArtifactError, ConfigError, DataError
from climbq_deploy.export import CHECKPOINT, TrainedRun, load_run
from climbq_deploy.fileio import write_json
from climbq_deploy.models import build_model
from climbq_deploy.models.common import QuantModel, QuantSpec
from climbq_deploy.quant.layers import ActQuant
from climbq_deploy.quant.quantizers import PTQActivation
from climbq_deploy.runfolder import guard_output_run
from climbq_deploy.train.checkpoint import save_checkpoint
from climbq_deploy.train.loop import dataset_loader, predict
from climbq_deploy.train.metrics import long_tail_metrics

# recipe -> (method, wbits, abits)
PRESETS: dict[str, tuple[str, int, int]] = {
    "ptq-int8": ("ptq", 8, 8),
    "ptq-w4a4": ("ptq", 4, 4),
    "climbq-ptq": ("climbq", 4, 4),
}


@dataclass(frozen=True)
class CalibrateConfig:
    """One calibration of a full-precision run.

    Attributes:
        fp_run: the full-precision run folder (``climbq train --method fp32``).
        recipe: one of :data:`PRESETS`.
        calib: ``natural`` (follows the long tail) or ``balanced`` (equal per class).
        calib_size: images in the calibration set (drawn from the training split).
        range_rule: ``minmax`` or ``percentile`` (ptq recipes; None means minmax); must be
            None for ``climbq-ptq``, whose grid has no range.
        percentile: ``p`` of the percentile rule (%).
        seed: seed of the calibration set draw.
        batch_size: images per forward pass while calibrating.
        data: dataset folder (default: the one the run was trained on).
        wbits, abits: override the recipe's bit widths (None: the recipe's).
    """

    fp_run: str
    recipe: str = "ptq-int8"
    calib: str = "natural"
    calib_size: int = 500
    range_rule: str | None = None
    percentile: float = DEFAULT_PERCENTILE
    seed: int = 0
    batch_size: int = 250
    data: str | None = None
    wbits: int | None = None
    abits: int | None = None

    def __post_init__(self) -> None:
        if self.recipe not in PRESETS:
            raise ConfigError(f"recipe must be one of {', '.join(PRESETS)}, got {self.recipe!r}")
        if self.calib not in CALIBRATION_MODES:
            raise ConfigError(
                f"calibration mode must be one of {CALIBRATION_MODES}, got {self.calib!r}"
            )
        if self.calib_size < 1 or self.batch_size < 1 or self.seed < 0:
            raise ConfigError(
                f"calib_size and batch_size must be >= 1 and seed >= 0, got "
                f"{self.calib_size}, {self.batch_size}, {self.seed}"
            )
        if self.method != "ptq" and self.range_rule is not None:
            raise ConfigError(
                f"{self.recipe} has no activation ranges (its grid is fixed by "
                f"Phi); drop --range {self.range_rule}"
            )
        self.rule()  # validates the rule and the percentile
        self.spec()  # validates the bits

    @property
    def method(self) -> str:
        return PRESETS[self.recipe][0]

    def spec(self) -> QuantSpec:
        method, wbits, abits = PRESETS[self.recipe]
        wbits = wbits if self.wbits is None else self.wbits
        abits = abits if self.abits is None else self.abits
        return QuantSpec(method, wbits, abits, "off")

    def rule(self) -> RangeRule:
        return RangeRule(self.range_rule or "minmax", self.percentile)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_fp_run(run: TrainedRun) -> None:
    spec = run.config
    if spec.method != "fp32" or spec.wbits != 32 or spec.abits != 32:
        raise ConfigError(
            f"{run.folder} is a {spec.method} w{spec.wbits}a{spec.abits} run; "
            "calibrate starts from a full-precision run (--method fp32)"
        )


def _quantized_model(run: TrainedRun, spec: QuantSpec, num_classes: int) -> QuantModel:
    """The run's architecture with ``spec``'s quantizers and the run's trained weights."""
    model = build_model(
        run.config.arch,
        num_classes,
        spec,
        run.config.faithful_mbv2,
        run.config.model,
        run.image_shape,
    )
    missing, unexpected = model.load_state_dict(run.model.state_dict(), strict=False)
    stray = [k for k in missing if not k.endswith(".range")] + list(unexpected)
    if stray:  # pragma: no cover - same architecture on both sides
        raise ArtifactError(f"{run.folder}: weights do not fit the quantized model ({stray[:3]})")
    return model.eval()


def _set_ranges(model: QuantModel, ranges: dict[str, float]) -> None:
    for name, module in model.named_modules():
        if isinstance(module, ActQuant) and isinstance(module.quantizer, PTQActivation):
            try:
                module.quantizer.set_range(ranges[name])
            except ConfigError as exc:  # e.g. a slot that only ever saw zeros
                raise DataError(
                    f"activation quantizer {name!r}: {exc} (observed on the calibration set)"
                ) from None


def _calibrated_model(
    config: CalibrateConfig, run: TrainedRun, dataset: ImageDataset, indices: np.ndarray
) -> tuple[QuantModel, dict[str, Any]]:
    """The quantized model and what calibration found (ranges or BatchNorm passes)."""

    def batches() -> Any:
        loader = dataset_loader(dataset, "train", config.batch_size, indices)
        return (x for x, _ in loader.epoch(0))

    model = _quantized_model(run, config.spec(), dataset.num_classes)
    if config.method == "ptq":
        observed = observe_ranges(run.model, batches(), len(indices), config.rule())
        ranges = tie_ranges(observed, residual_groups(model, run.image_shape))
        _set_ranges(model, ranges)
        return model.eval(), {
            "range_rule": config.rule().label(),
            "observed_ranges": observed,
            "ranges": ranges,
        }
    passes = reestimate_batchnorm(model, batches())
    return model, {"batchnorm_reestimated": True, "batchnorm_batches": passes}


def calibrate(config: CalibrateConfig, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Calibrate ``config.fp_run`` into run folder ``out``; return the metrics written there.

    ``out`` may not be the full-precision run, nor a folder holding a run unless
    ``overwrite`` (:func:`~climbq_deploy.runfolder.guard_output_run`)."""
    guard_output_run(out, {"full-precision": config.fp_run}, overwrite=overwrite)
    began = time.perf_counter()
    run = load_run(config.fp_run, config.data)
    _check_fp_run(run)
    dataset = load_dataset(config.data or run.config.data)
    calib = draw_calibration_set(
        dataset.train_labels, config.calib_size, config.calib, config.seed, dataset.num_classes
    )
    model, found = _calibrated_model(config, run, dataset, calib.indices)
    spec = config.spec()
    counts = dataset.counts("train")
    test = long_tail_metrics(
        predict(model, dataset, run.config.eval_batch_size), dataset.test_labels, counts
    )
    train_config = dataclasses.replace(
        run.config,
        method=spec.method,
        wbits=spec.wbits,
        abits=spec.abits,
        act_scaling="off",
        init=str(Path(config.fp_run).resolve()),
    )
    fp_sha = hashlib.sha256((Path(config.fp_run) / CHECKPOINT).read_bytes()).hexdigest()
    record = {
        "recipe": config.recipe,
        **found,
        "set": calib.provenance(),
        "fp_run": str(Path(config.fp_run).resolve()),
        "fp_checkpoint_sha256": fp_sha,
        "fp_top1": run.metrics.get("top1"),
        "options": config.as_dict(),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        out / CHECKPOINT,
        {"config": train_config.as_dict(), "model": model.state_dict(), "calibration": record},
    )
    metrics = {
        **test.as_dict(),
        "method": spec.method,
        "recipe": config.recipe,
        "arch": train_config.arch,
        "wbits": spec.wbits,
        "abits": spec.abits,
        "loss": train_config.loss_name,
        "epochs": 0,
        "dataset": dataset.name,
        "seconds": time.perf_counter() - began,
        "train_counts": counts,
        "calibration": record,
        "config": train_config.as_dict(),
    }
    write_json(out / "metrics.json", metrics)
    return metrics
