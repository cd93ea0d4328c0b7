"""One training epoch of ResNet-20 on CIFAR-10-LT (gamma 50, the authors' list), ours vs the
authors' PyTorch code on this machine's CPU.

What is timed is exactly what ``climbq train`` runs: :func:`climbq_deploy.train.loop.train` for
one epoch, batch 128, SGD as in the paper, followed by the balanced 10,000-image test pass
(eval batch 100). ``seconds`` (training steps only) and ``test_seconds`` come from the run's own
``history.jsonl``; an epoch is their sum. Variants, each from the same seed:

- ``fp32``: full precision; ``climbq+ w4a4`` / ``w2a2``: ClimbQ+ QAT (HomoVar loss, class
  scaling);
- precision ``fp32`` (default) or ``bf16`` (autocast convs/linear, quantizers stay fp32).

``torch.compile`` is measured apart, as the median step time over ``--compile-steps`` training
steps against the same eager loop; a model it fails to compile is recorded with the error.

The reference figures are the authors' code, measured on this machine type (2026-11-28,
torch 2.13, 2 threads; see the training-side issue): full precision ~55 s per epoch, 4-bit
~95 s (~70 s training + ~26 s test pass), 2-bit ~108 s. Goal: at most half of each.

Usage::

    .venv/bin/python -m bench.train_speed [--data DIR] [--out bench/results]

Without ``--data`` the dataset is built from ``../shared/data/cifar10-jpg.zip`` and the
authors' split into ``runs/bench/cifar10-lt-g50`` (reused when present).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from bench._common import (
    DEFAULT_OUT,
    REPO_ROOT,
    markdown_table,
    provenance_markdown,
    run_header,
    summarize,
    warn_if_busy,
    write_results,
)
from climbq_deploy.data.dataset import load_dataset, save_dataset
from climbq_deploy.data.pipeline import Augment, ShuffleSampler
from climbq_deploy.losses import make_loss
from climbq_deploy.models import build_model
from climbq_deploy.train.config import TrainConfig
from climbq_deploy.train.loop import dataset_loader, train

NAME = "train_speed"
SHARED = REPO_ROOT.parent / "shared"
AUTHORS_EPOCH_SECONDS = {"fp32": 55.0, "climbq+ w4a4": 95.0, "climbq+ w2a2": 108.0}
AUTHORS_4BIT_SPLIT = {"train": 70.0, "test": 26.0}
VARIANTS: list[tuple[str, str, int, str]] = [
    ("fp32", "fp32", 32, "fp32"),
    ("fp32", "fp32", 32, "bf16"),
    ("climbq+ w4a4", "climbq+", 4, "fp32"),
    ("climbq+ w4a4", "climbq+", 4, "bf16"),
    ("climbq+ w2a2", "climbq+", 2, "fp32"),
]


def ensure_dataset(data: Path | None) -> Path:
    if data is not None:
        return data
    out = REPO_ROOT / "runs" / "bench" / "cifar10-lt-g50"
    if not (out / "meta.json").is_file():
        from climbq_deploy.data.imagefolder import build_image_dataset

        splits = SHARED / "data" / "climbq-splits"
        dataset = build_image_dataset(
            SHARED / "data" / "cifar10-jpg.zip",
            None,
            split_csv=splits / "cifar10_train50.csv",
            test_csv=splits / "cifar10_test.csv",
            name="cifar10-lt",
        )
        save_dataset(dataset, out)
    return out


def one_epoch(data: Path, method: str, bits: int, precision: str) -> dict[str, Any]:
    config = TrainConfig(
        str(data), method=method, wbits=bits, abits=bits, epochs=1, precision=precision
    )
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train(config, tmp, progress=False)
        record = json.loads((Path(tmp) / "history.jsonl").read_text().splitlines()[-1])
    return {
        "train_seconds": record["seconds"],
        "test_seconds": record["test_seconds"],
        "epoch_seconds": record["seconds"] + record["test_seconds"],
        "test_top1_after_1_epoch": metrics["top1"],
        "loss": metrics["loss"],
    }


def step_times(data: Path, method: str, bits: int, compiled: bool, steps: int) -> list[float]:
    """Seconds per training step (first two dropped: warm-up / compilation)."""
    return timed_steps(data, method, bits, compiled, steps)[0]


def timed_steps(
    data: Path, method: str, bits: int, compiled: bool, steps: int
) -> tuple[list[float], torch.nn.Module]:
    """``steps + 2`` ResNet-20 training steps from seed 0: the seconds of each but the first
    two (warm-up / compilation), and the model after them."""
    dataset = load_dataset(data)
    torch.manual_seed(0)
    model = build_model(
        "resnet20", 10, TrainConfig(str(data), method=method, wbits=bits, abits=bits).quant_spec
    ).to(memory_format=torch.channels_last)
    loss_name = "homovar" if method == "climbq+" else "ce"
    criterion = make_loss(loss_name, dataset.counts("train"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.04, momentum=0.9, weight_decay=1e-4)
    run = torch.compile(model) if compiled else model
    sampler = ShuffleSampler(len(dataset.train_labels), 0)
    augment = Augment.from_name("crop_flip")
    loader = dataset_loader(dataset, "train", 128, augment=augment, sampler=sampler, seed=0)
    model.train()
    times = []
    for step, (x, y) in enumerate(loader.epoch(0)):
        began = time.perf_counter()
        logits, feats = run(x, y, return_features=True)
        loss = criterion(logits, y, feats)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - began)
        if step + 1 == steps + 2:
            break
    return times[2:], model


def compile_probe(data: Path, method: str, bits: int, steps: int) -> dict[str, Any]:
    eager = statistics.median(step_times(data, method, bits, False, steps))
    try:
        compiled = statistics.median(step_times(data, method, bits, True, steps))
    except Exception as exc:  # torch.compile failures are data here, not a crash
        lines = "".join(traceback.format_exception_only(exc)).splitlines()
        named = [line.strip() for line in lines if "Error" in line] or lines or ["?"]
        return {
            "eager_step_ms": 1000 * eager,
            "compiled_step_ms": None,
            "error": f"{type(exc).__name__}: {named[0][:200]}",
        }
    finally:
        torch._dynamo.reset()
    return {
        "eager_step_ms": 1000 * eager,
        "compiled_step_ms": 1000 * compiled,
        "ratio_compiled_over_eager": compiled / eager,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--compile-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="epochs per variant (median)")
    args = parser.parse_args()
    data = ensure_dataset(args.data)
    load = warn_if_busy()
    runs: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(VARIANTS))}
    for repeat in range(args.repeats):  # round-robin: machine noise hits every variant alike
        for i, (label, method, bits, precision) in enumerate(VARIANTS):
            print(f"[{repeat + 1}/{args.repeats}] {label} ({precision}) ...", flush=True)
            runs[i].append(one_epoch(data, method, bits, precision))
            print(runs[i][-1], flush=True)
    rows, results = [], []
    for i, (label, method, bits, precision) in enumerate(VARIANTS):
        result: dict[str, Any] = {
            "variant": label,
            "method": method,
            "bits": bits,
            "precision": precision,
            "runs": runs[i],
        }
        for key in ("train_seconds", "test_seconds", "epoch_seconds"):
            result[key] = summarize([r[key] for r in runs[i]])
        result["test_top1_after_1_epoch"] = [r["test_top1_after_1_epoch"] for r in runs[i]]
        epoch = result["epoch_seconds"]["median"]
        result["authors_epoch_seconds"] = AUTHORS_EPOCH_SECONDS[label]
        result["ratio_to_authors"] = epoch / AUTHORS_EPOCH_SECONDS[label]
        results.append(result)
        rows.append(
            (
                label,
                precision,
                f"{result['train_seconds']['median']:.1f}",
                f"{result['test_seconds']['median']:.1f}",
                f"{epoch:.1f}",
                f"{result['epoch_seconds']['min']:.1f}-{result['epoch_seconds']['max']:.1f}",
                f"{AUTHORS_EPOCH_SECONDS[label]:.0f}",
                f"{result['ratio_to_authors']:.2f}x",
                f"{runs[i][0]['test_top1_after_1_epoch']:.2f}",
            )
        )
    compiles = {}
    for label, method, bits in (("fp32", "fp32", 32), ("climbq+ w4a4", "climbq+", 4)):
        print(f"torch.compile probe: {label} ...", flush=True)
        compiles[label] = compile_probe(data, method, bits, args.compile_steps)
        print(compiles[label], flush=True)
    header = run_header(load)
    payload = {
        **header,
        "dataset": str(data),
        "batch_size": 128,
        "eval_batch_size": 100,
        "authors_epoch_seconds": AUTHORS_EPOCH_SECONDS,
        "authors_4bit_split_seconds": AUTHORS_4BIT_SPLIT,
        "epochs": results,
        "torch_compile": compiles,
    }
    compile_rows = [
        (
            label,
            f"{c['eager_step_ms']:.0f}",
            f"{c['compiled_step_ms']:.0f}" if c["compiled_step_ms"] else "failed",
            f"{c['ratio_compiled_over_eager']:.2f}x" if c["compiled_step_ms"] else c["error"],
        )
        for label, c in compiles.items()
    ]
    markdown = (
        "# Training speed: one ResNet-20 epoch on CIFAR-10-LT gamma 50 (13,988 images, "
        f"batch 128) + the 10,000-image test pass; medians of {args.repeats} runs\n\n"
        + markdown_table(
            (
                "variant",
                "precision",
                "train s",
                "test pass s",
                "epoch s",
                "epoch s min-max",
                "authors s",
                "ours / authors",
                "test top-1 after 1 epoch %",
            ),
            rows,
        )
        + "\n\nAuthors' figures: their PyTorch code on this machine type's CPU (torch 2.13, "
        "2 threads), from the training-side issue. Every variant starts from the same seed; "
        "the 1-epoch top-1 shows bf16 autocast does not cost accuracy at this point (one "
        "epoch, one seed: a sanity check, not a study).\n\n"
        "## torch.compile (median training step, ms)\n\n"
        + markdown_table(("model", "eager", "compiled", "compiled / eager"), compile_rows)
        + "\n\n"
        + provenance_markdown(header)
    )
    write_results(args.out, NAME, payload, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
