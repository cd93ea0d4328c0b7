"""The training loop: epochs over the in-memory pipeline, per-epoch history, atomic
checkpoints every epoch, exact resume, final-epoch long-tail metrics on the balanced test set,
and best-epoch selection on an optional validation split held out of train."""

from __future__ import annotations

import json
import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from climbq_deploy.calibration.dataset import ImageDataset, load_dataset
from climbq_deploy.calibration.pipeline import Augment, BatchLoader, ShuffleSampler
from climbq_deploy.errors import ConfigError
from climbq_deploy.fileio import atomic_write, write_json
from climbq_deploy.losses import make_loss
from climbq_deploy.models import build_model
from climbq_deploy.train.checkpoint import load_checkpoint, save_checkpoint
from climbq_deploy.train.config import TrainConfig
from climbq_deploy.train.metrics import LongTailMetrics, long_tail_metrics
from climbq_deploy.train.validation import balanced_accuracy, split_validation

CHECKPOINT = "checkpoint.pt"
BEST_CHECKPOINT = "best.pt"


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


def autocast(precision: str) -> torch.autocast:
    """bf16 autocast of convs and linears on CPU for ``precision == "bf16"``, else a no-op."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    dataset: ImageDataset,
    batch_size: int,
    split: str = "test",
    indices: np.ndarray | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Predicted class ids of a split (eval mode: sigma = 2, BatchNorm running statistics)."""
    loader = dataset_loader(dataset, split, batch_size, indices)
    model.eval()
    with autocast(precision):
        return torch.cat([model(x).argmax(1) for x, _ in loader.epoch(0)]).numpy()


def train(
    config: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train as configured into folder ``out``; return the metrics written to metrics.json.

    Headline numbers are those of the final epoch on the test set. With ``val_fraction > 0``
    the epoch with the best balanced validation accuracy is kept in ``best.pt`` and its test
    metrics are reported under ``best_val``; nothing is ever selected on the test set.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    dataset = load_dataset(config.data)
    counts = dataset.counts("train")  # shot groups: the dataset's training counts
    train_idx, val_idx = split_validation(dataset.train_labels, config.val_fraction, config.seed)
    fit_counts = np.bincount(dataset.train_labels[train_idx], minlength=dataset.num_classes)
    model = build_model(config.arch, dataset.num_classes, config.quant_spec, config.faithful_mbv2)
    model = model.to(memory_format=torch.channels_last)
    criterion = make_loss(config.loss_name, fit_counts.tolist(), **config.loss_options)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    start_epoch, history, seconds, best = 0, [], 0.0, None
    if resume and (out / CHECKPOINT).is_file():
        state = load_checkpoint(out / CHECKPOINT)
        same = {k: v for k, v in config.as_dict().items() if k != "epochs"}
        if {k: v for k, v in state["config"].items() if k != "epochs"} != same:
            raise ConfigError(f"{out / CHECKPOINT} was made with another configuration")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history, seconds = state["epoch"], state["history"], state["seconds"]
        best = state.get("best")
    elif config.init:
        init = load_checkpoint(Path(config.init) / CHECKPOINT)
        missing, _ = model.load_state_dict(init["model"], strict=False)
        if any(not k.endswith(("step", "initialized")) for k in missing):
            raise ConfigError(f"--init {config.init}: its model lacks {missing[:3]}")
    loader = dataset_loader(
        dataset,
        "train",
        config.batch_size,
        train_idx if len(val_idx) else None,
        augment=Augment.from_name(dataset.info.get("augment", "none")),
        sampler=ShuffleSampler(len(train_idx), config.seed),
        seed=config.seed,
    )
    steps = len(loader)
    test: LongTailMetrics | None = None
    evaluate = partial(predict, batch_size=config.eval_batch_size, precision=config.precision)
    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        model.train()
        total, correct, loss_sum = 0, 0, 0.0
        bar = tqdm(loader.epoch(epoch), total=steps, desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not progress or None, leave=False)  # fmt: skip
        for step, (x, y) in enumerate(bar):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, epoch, step, steps)
            with autocast(config.precision):
                logits, feats = model(x, y, return_features=True)
            loss = criterion(logits.float(), y, feats.float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(y)
            total += len(y)
            correct += int((logits.argmax(1) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / total:.3f}", acc=f"{100 * correct / total:.1f}")
        seconds += time.perf_counter() - began
        began = time.perf_counter()
        test = long_tail_metrics(evaluate(model, dataset), dataset.test_labels, counts)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / total, "seconds": seconds,
                  "train_acc": 100 * correct / total, "test_top1": test.top1,
                  "test_seconds": time.perf_counter() - began}  # fmt: skip
        if len(val_idx):
            val_pred = evaluate(model, dataset, split="train", indices=val_idx)
            record["val_balanced_top1"] = balanced_accuracy(val_pred, dataset.train_labels[val_idx])
            if best is None or record["val_balanced_top1"] > best["val_balanced_top1"]:
                best = {"epoch": epoch + 1, "val_balanced_top1": record["val_balanced_top1"],
                        "test": test.as_dict()}  # fmt: skip
                save_checkpoint(out / BEST_CHECKPOINT, {"config": config.as_dict(),
                                "model": model.state_dict(), "best": best})  # fmt: skip
        history.append(record)
        save_checkpoint(out / CHECKPOINT, {"config": config.as_dict(), "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                        "history": history, "seconds": seconds, "best": best})  # fmt: skip
        with atomic_write(out / "history.jsonl", "w") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in history)
    if test is None:  # resumed a finished run: nothing trained, evaluate the loaded weights
        test = long_tail_metrics(evaluate(model, dataset), dataset.test_labels, counts)
    final = test
    metrics = {**final.as_dict(), "method": config.method, "arch": config.arch,
               "wbits": config.wbits, "abits": config.abits, "loss": config.loss_name,
               "epochs": config.epochs, "seconds": seconds, "dataset": dataset.name,
               "test_seconds": history[-1].get("test_seconds") if history else None,
               "train_counts": counts, "fit_counts": fit_counts.tolist(),
               "val_images": len(val_idx), "best_val": best,
               "config": config.as_dict()}  # fmt: skip
    write_json(out / "metrics.json", metrics)
    return metrics
