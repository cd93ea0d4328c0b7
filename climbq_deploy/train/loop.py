"""The training loop: epochs over the in-memory pipeline, per-epoch history, atomic
checkpoints every epoch, exact resume, final-epoch long-tail metrics on the balanced test set,
and best-epoch selection on an optional validation split held out of train.

Under ``torchrun`` (``WORLD_SIZE > 1``) it trains data-parallel (:mod:`climbq_deploy.distributed`):
each process takes a slice of every global batch, statistics and the loss are those of the global
batch, and process 0 alone evaluates and writes; the same ``--batch-size`` gives the same run.

On CUDA (``device="cuda"`` or ``"auto"``) the uint8 dataset sits on the GPU and batches are
made there (:class:`BatchLoader`), running sums stay on the device (no per-step host sync), and
checkpoints hold CPU tensors, so a run started on a GPU resumes or exports on a CPU-only machine.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from climbq_deploy.data.dataset import ImageDataset, load_dataset, read_meta
from climbq_deploy.data.pipeline import Augment, BatchLoader, ShuffleSampler
from climbq_deploy.distributed import (
    DistInfo,
    broadcast_object,
    finish_distributed,
    gather_batch,
    init_distributed,
    use_global_batchnorm,
)
from climbq_deploy.errors import ClimbQError, ConfigError
from climbq_deploy.fileio import atomic_write, remove_stale_temps, write_json
from climbq_deploy.losses import distillation_loss, make_loss
from climbq_deploy.models import build_model
from climbq_deploy.models.user import source_changed
from climbq_deploy.runfolder import guard_output_run
from climbq_deploy.train.bn_init import rescale_batchnorm
from climbq_deploy.train.checkpoint import load_checkpoint, save_checkpoint
from climbq_deploy.train.config import PATH_FIELDS, TrainConfig
from climbq_deploy.train.metrics import LongTailMetrics, long_tail_metrics
from climbq_deploy.train.progress import EpochProgress
from climbq_deploy.train.validation import balanced_accuracy, split_validation

CHECKPOINT = "checkpoint.pt"
BEST_CHECKPOINT = "best.pt"
# Config fields that may differ between a checkpoint and the run that resumes it (evaluation
# runs in eval mode and draws no random numbers, so its batch size and frequency change no
# trained weight).
_RESUMABLE_CHANGES = ("epochs", "device", "eval_batch_size", "eval_every")


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (cuda if torch sees one, else cpu) as a torch device.

    Raises:
        ConfigError: ``cuda`` asked for but this torch has no usable CUDA device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = torch.version.cuda or "none (a CPU-only build)"
        raise ConfigError(
            f"device 'cuda' asked for, but torch {torch.__version__} sees no CUDA device "
            f"(CUDA build: {build}); use --device cpu or auto"
        )
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu, cuda or auto, got {name!r}")
    return torch.device(name)


def to_cpu(value: Any) -> Any:
    """``value`` with every tensor inside (dicts, lists, tuples) moved to the CPU, so that a
    checkpoint written on a GPU loads anywhere; CPU tensors are returned as they are."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_cpu(v) for v in value)
    return value


def _same_folder(field: str, a: object, b: object) -> bool:
    """Whether two values of a config field naming a folder (:data:`PATH_FIELDS`) name the same
    one: they resolve to one folder (a relative and an absolute path to one folder are one
    run), or, for the dataset, its arrays hash alike."""
    if a == b:
        return True
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    if Path(a).resolve() == Path(b).resolve():
        return True
    if field != "data":
        return False
    try:
        hashes = [
            {k: v.get("sha256") for k, v in read_meta(x).get("arrays", {}).items()} for x in (a, b)
        ]
    except ClimbQError:  # a folder that is gone or unreadable is not the same dataset
        return False
    return bool(hashes[0]) and hashes[0] == hashes[1]


def config_differences(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """The fields in which a checkpoint's config differs from ``config``'s run, as
    ``"field: saved -> given"``; :data:`_RESUMABLE_CHANGES` may differ, fields the checkpoint
    predates count as their defaults, and path fields compare by the folder they name."""
    defaults = TrainConfig(data=config.data).as_dict()
    theirs = {**defaults, **saved}
    differ = []
    for key, value in config.as_dict().items():
        if key in _RESUMABLE_CHANGES:
            continue
        same = _same_folder(key, theirs[key], value) if key in PATH_FIELDS else theirs[key] == value
        if not same:
            differ.append(f"{key}: {theirs[key]!r} -> {value!r}")
    return differ


def _first_problem(exc: RuntimeError) -> str:
    """The first problem line of torch's ``load_state_dict`` error (its first line is a
    header), e.g. ``size mismatch for fc.weight: ...``."""
    lines = str(exc).splitlines()
    return (lines[1:2] or lines[:1] or ["?"])[0].strip()


def _teacher(
    config: TrainConfig,
    num_classes: int,
    device: torch.device,
    image_shape: tuple[int, int, int] | None = None,
) -> torch.nn.Module:
    """The distillation teacher (``config.teacher``, else the ``--init`` run): its model,
    frozen in eval mode, built with its own configuration (a quantized run teaches with its
    quantizers on)."""
    folder = Path(str(config.teacher or config.init))
    saved = load_checkpoint(folder / CHECKPOINT)
    theirs = {**TrainConfig(data=config.data).as_dict(), **saved["config"]}
    spec = TrainConfig(
        **{**theirs, "init": None, "init_bn_gamma": None, "distill": 0.0, "teacher": None}
    )
    changed = spec.model and source_changed(spec.model, spec.model_sha256)
    if changed:
        warnings.warn(f"teacher {folder}: {changed}", stacklevel=2)
    teacher = build_model(
        spec.arch, num_classes, spec.quant_spec, spec.faithful_mbv2, spec.model, image_shape
    )
    try:
        teacher.load_state_dict(saved["model"])
    except RuntimeError as exc:  # another class count, say
        raise ConfigError(
            f"teacher {folder} cannot teach this run: {_first_problem(exc)}"
        ) from None
    teacher = teacher.to(device=device, memory_format=torch.channels_last).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def learning_rate(config: TrainConfig, epoch: int, step: int, steps: int) -> float:
    """Linear warm-up over ``warmup_epochs``, then constant or cosine to 0 (per step)."""
    t = epoch + step / steps
    if t < config.warmup_epochs:
        return config.lr * t / config.warmup_epochs
    if config.schedule == "cosine":
        span = config.epochs - config.warmup_epochs
        return 0.5 * config.lr * (1 + math.cos(math.pi * (t - config.warmup_epochs) / span))
    return config.lr


def dataset_loader(
    dataset: ImageDataset,
    split: str,
    batch_size: int,
    indices: np.ndarray | None = None,
    **options: Any,
) -> BatchLoader:
    """Batches of one split (or of its ``indices``), normalised with the dataset's own mean/std
    (meta.json)."""
    images, labels = dataset.split(split)
    if indices is not None:
        images, labels = images[indices], labels[indices]
    norm = dataset.info.get("normalization", {})
    mean, std = norm.get("mean", (0.5, 0.5, 0.5)), norm.get("std", (0.5, 0.5, 0.5))
    return BatchLoader(images, labels, batch_size, mean=mean, std=std, **options)


def autocast(precision: str, device_type: str = "cpu") -> torch.autocast:
    """bf16 autocast of convs and linears for ``precision == "bf16"``, else a no-op."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.no_grad()
def predict_loader(
    model: torch.nn.Module, loader: BatchLoader, precision: str = "fp32"
) -> np.ndarray:
    """Predicted class ids of every batch of ``loader`` (on the loader's device), in order."""
    model.eval()
    with autocast(precision, loader.device.type):
        return torch.cat([model(x).argmax(1) for x, _ in loader.epoch(0)]).cpu().numpy()


def predict(
    model: torch.nn.Module,
    dataset: ImageDataset,
    batch_size: int,
    split: str = "test",
    indices: np.ndarray | None = None,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Predicted class ids of a split (eval mode: sigma = 2, BatchNorm running statistics).

    ``model`` must already be on ``device``."""
    loader = dataset_loader(dataset, split, batch_size, indices, device=device)
    return predict_loader(model, loader, precision)


def train(
    config: TrainConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train as configured into folder ``out``; return the metrics written to metrics.json.

    Headline numbers are those of the final epoch on the test set. With ``val_fraction > 0``
    the epoch with the best balanced validation accuracy is kept in ``best.pt`` and its test
    metrics are reported under ``best_val``; nothing is ever selected on the test set.
    ``eval_every = N`` runs the test (and validation) pass only every N epochs and after the
    last; the skipped epochs' history records have ``test_top1: None``. The trained weights do
    not depend on it (evaluation draws no random numbers; tested).

    A folder that already holds a run (``checkpoint.pt``) is continued with ``resume`` (same
    configuration, naming the fields that differ otherwise; ``epochs`` may grow, never shrink)
    and replaced only with ``overwrite``; ``out`` may not be the ``init`` or ``teacher`` run.
    The run stores the dataset, ``init`` and ``teacher`` folders as absolute paths.
    ``progress``: tqdm's bar on a terminal, else one line per epoch with the time elapsed and
    an estimate of the time left (:class:`~climbq_deploy.train.progress.EpochProgress`).

    A user's model (``config.model``) is built from its factory and quantized
    (:func:`climbq_deploy.quantize`); the run records its file's sha256 (``model_sha256``), so a
    resume after the file changed is refused and ``load_run`` can tell.
    """
    if config.method == "ptq":
        raise ConfigError("method 'ptq' has no training: make PTQ runs with `climbq calibrate`")
    config = config.pinned()  # a user model's file: its sha256 as the run begins
    config = config.absolute()  # the run folder then works from any working directory
    out = Path(out)
    guard_output_run(
        out,
        {"--init": config.init, "--teacher": config.teacher},
        overwrite=overwrite,
        resume=resume,
    )
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    parallel = init_distributed(device.type)
    try:
        return _train(config, out, resume, progress, device, parallel)
    finally:
        finish_distributed(parallel)


def _train(
    config: TrainConfig,
    out: Path,
    resume: bool,
    progress: bool,
    device: torch.device,
    parallel: DistInfo,
) -> dict[str, Any]:
    if parallel.enabled and device.type == "cuda":
        device = torch.device("cuda", parallel.local_rank)
    main = parallel.is_main
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv kernels
        if config.precision == "fp32":  # fp32 means fp32: no TF32 convs or matmuls
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(config.seed)
    dataset = load_dataset(config.data)
    counts = dataset.counts("train")  # shot groups: the dataset's training counts
    train_idx, val_idx = split_validation(dataset.train_labels, config.val_fraction, config.seed)
    fit_counts = np.bincount(dataset.train_labels[train_idx], minlength=dataset.num_classes)
    model = build_model(
        config.arch,
        dataset.num_classes,
        config.quant_spec,
        config.faithful_mbv2,
        config.model,
        dataset.image_shape,
    )
    model = model.to(memory_format=torch.channels_last)
    criterion = make_loss(config.loss_name, fit_counts.tolist(), **config.loss_options)
    model, criterion = model.to(device), criterion.to(device)
    forward = model
    if parallel.enabled:
        use_global_batchnorm(model)
        # 1x1 channels_last filters have two valid stride patterns; DDP's bucket view takes the
        # other one and warns about performance on every process (nothing is wrong).
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    start_epoch, history, seconds, best = 0, [], 0.0, None
    if resume and (out / CHECKPOINT).is_file():
        state = load_checkpoint(out / CHECKPOINT)
        differ = config_differences(state["config"], config)
        if differ:
            raise ConfigError(
                f"{out / CHECKPOINT} was made with another configuration ({'; '.join(differ)}); "
                "train into a new folder, or --overwrite to replace it"
            )
        if state["epoch"] > config.epochs:
            raise ConfigError(
                f"{out / CHECKPOINT} has {state['epoch']} epochs trained; --epochs "
                f"{config.epochs} would report a longer-trained model as a {config.epochs}-epoch "
                f"run; give --epochs {state['epoch']} or more"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history, seconds = state["epoch"], state["history"], state["seconds"]
        if main:
            remove_stale_temps(out / BEST_CHECKPOINT)  # best.pt may never be written again
        best = state.get("best")
    elif config.init:
        init = load_checkpoint(Path(config.init) / CHECKPOINT)
        try:
            missing, _ = model.load_state_dict(init["model"], strict=False)
        except RuntimeError as exc:  # another class count or width
            raise ConfigError(
                f"--init {config.init} does not fit this model: {_first_problem(exc)}"
            ) from None
        if any(not k.endswith(("step", "initialized")) for k in missing):
            raise ConfigError(f"--init {config.init}: its model lacks {missing[:3]}")
        if config.init_bn_gamma is not None:
            rescale_batchnorm(model, config.init_bn_gamma)
    teacher = (
        _teacher(config, dataset.num_classes, device, dataset.image_shape)
        if config.distill > 0
        else None
    )
    loader = dataset_loader(
        dataset,
        "train",
        config.batch_size,
        train_idx if len(val_idx) else None,
        augment=Augment.from_name(dataset.info.get("augment", "none")),
        sampler=ShuffleSampler(len(train_idx), config.seed),
        seed=config.seed,
        device=device,
        shard=(parallel.rank, parallel.world_size),
    )
    steps, images_per_epoch = len(loader), len(train_idx)
    test: LongTailMetrics | None = None
    test_loader = (
        dataset_loader(dataset, "test", config.eval_batch_size, device=device) if main else None
    )
    evaluate = partial(
        predict, batch_size=config.eval_batch_size, precision=config.precision, device=device
    )
    report = EpochProgress(config.epochs, start_epoch, progress and main)
    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        model.train()
        # Running sums on the device (float64 / int64: the same figures as Python floats and
        # ints on the CPU), read once per epoch, so a GPU step never waits for the host.
        total = 0
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        bar = tqdm(
            loader.epoch(epoch),
            total=steps,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not report.bar,
            leave=False,
        )
        for step, (x, y) in enumerate(bar):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, epoch, step, steps)
            with autocast(config.precision, device.type):
                logits, feats = forward(x, y, return_features=True)
                if teacher is not None:
                    with torch.no_grad():
                        taught = teacher(x)
            if parallel.enabled:  # the loss of the global batch, on every process
                batch = min(config.batch_size, images_per_epoch - step * config.batch_size)
                logits, feats, y = (gather_batch(t, batch) for t in (logits, feats, y))
                if teacher is not None:
                    taught = gather_batch(taught, batch)
            loss = criterion(logits.float(), y, feats.float())
            if teacher is not None:
                kd = distillation_loss(logits.float(), taught.float(), config.distill_temperature)
                loss = (1 - config.distill) * loss + config.distill * kd
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach().double() * len(y)
            total += len(y)
            correct += (logits.argmax(1) == y).sum()
            if not bar.disable:
                bar.set_postfix(
                    loss=f"{float(loss_sum) / total:.3f}", acc=f"{100 * int(correct) / total:.1f}"
                )
        loss_mean, accuracy = float(loss_sum) / total, 100 * int(correct) / total
        seconds += time.perf_counter() - began
        if not main:  # process 0 evaluates and writes; the others go on to the next epoch
            continue
        began = time.perf_counter()
        evaluated = (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs
        if evaluated:
            test = long_tail_metrics(
                predict_loader(model, test_loader, config.precision), dataset.test_labels, counts
            )
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_mean,
            "seconds": seconds,
            "train_acc": accuracy,
            "test_top1": test.top1 if evaluated else None,
            "test_seconds": time.perf_counter() - began,
        }
        if len(val_idx) and evaluated:
            val_pred = evaluate(model, dataset, split="train", indices=val_idx)
            record["val_balanced_top1"] = balanced_accuracy(val_pred, dataset.train_labels[val_idx])
            if best is None or record["val_balanced_top1"] > best["val_balanced_top1"]:
                best = {
                    "epoch": epoch + 1,
                    "val_balanced_top1": record["val_balanced_top1"],
                    "test": test.as_dict(),
                }
                save_checkpoint(
                    out / BEST_CHECKPOINT,
                    {"config": config.as_dict(), "model": to_cpu(model.state_dict()), "best": best},
                )
        history.append(record)
        save_checkpoint(
            out / CHECKPOINT,
            {
                "config": config.as_dict(),
                "model": to_cpu(model.state_dict()),
                "optimizer": to_cpu(optimizer.state_dict()),
                "epoch": epoch + 1,
                "history": history,
                "seconds": seconds,
                "best": best,
            },
        )
        with atomic_write(out / "history.jsonl", "w") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in history)
        report.line(record)
    if not main:
        return broadcast_object(None)
    if test is None:  # resumed a finished run: nothing trained, evaluate the loaded weights
        with atomic_write(out / "history.jsonl", "w") as handle:  # a kill may have cut it short
            handle.writelines(json.dumps(r) + "\n" for r in history)
        test = long_tail_metrics(
            predict_loader(model, test_loader, config.precision), dataset.test_labels, counts
        )
    final = test
    metrics = {
        **final.as_dict(),
        "method": config.method,
        "arch": config.arch,
        "wbits": config.wbits,
        "abits": config.abits,
        "loss": config.loss_name,
        "epochs": config.epochs,
        "seconds": seconds,
        "dataset": dataset.name,
        "test_seconds": history[-1].get("test_seconds") if history else None,
        "train_counts": counts,
        "fit_counts": fit_counts.tolist(),
        "val_images": len(val_idx),
        "best_val": best,
        "world_size": parallel.world_size,
        "config": config.as_dict(),
    }
    write_json(out / "metrics.json", metrics)
    return broadcast_object(metrics)
