"""Training-batch throughput: ``BatchLoader`` against a naive per-sample (torchvision-style) loop.

Both sides produce the same thing for every epoch: shuffled batches of 128 float32 images
``(x / 255 - mean) / std`` after a zero-padded (4 px) random 32x32 crop and a random horizontal
flip, plus int64 labels.

- ours: :class:`climbq_deploy.data.pipeline.BatchLoader` with
  ``Augment.from_name("crop_flip")``, :class:`ShuffleSampler` and channels_last output.
- baseline: what ``DataLoader(num_workers=0)`` over a torchvision ``CIFAR10``-style dataset does,
  written out here (torchvision is not installed): per sample ``PIL.Image.fromarray``, pad 4 with
  zero fill, random crop, random flip, ``ToTensor`` (CHW float / 255), ``Normalize``; then
  ``torch.stack`` of the batch and ``torch.tensor`` of its labels.

Data: the train split of ``--data DIR`` (a dataset folder, via ``load_dataset``), or by default
seeded random uint8 images of CIFAR-10-LT (gamma 50) size, 13,988 x 32 x 32 x 3.

Usage::

    .venv/bin/python -m bench.data_pipeline [--data DIR] [--epochs 5] [--out bench/results]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from bench._common import (
    DEFAULT_OUT,
    fmt,
    markdown_table,
    provenance_markdown,
    run_header,
    summarize,
    warn_if_busy,
    write_results,
)
from climbq_deploy.data.dataset import load_dataset
from climbq_deploy.data.imagefolder import CIFAR10_MEAN, CIFAR10_STD
from climbq_deploy.data.pipeline import Augment, BatchLoader, ShuffleSampler

NAME = "data_pipeline"
CIFAR10_LT_TRAIN = 13_988  # CIFAR-10-LT gamma 50 (the authors' cifar10_train50.csv)
Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


class NaiveLoader:
    """A per-sample PIL pipeline, as torchvision's CIFAR10 + transforms + DataLoader would run it.

    ``RandomCrop(32, padding=4)`` (zero fill), ``RandomHorizontalFlip()``, ``ToTensor()``,
    ``Normalize(mean, std)``, default collate; randomness from torch's global generator, as in
    torchvision.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        pad: int = 4,
    ) -> None:
        self.images, self.labels = images, [int(y) for y in labels]
        self.batch_size, self.pad = batch_size, pad
        self.height, self.width = int(images.shape[1]), int(images.shape[2])
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def transform(self, array: np.ndarray) -> torch.Tensor:
        """One training sample: pad, random crop, random flip, to tensor, normalise."""
        image = Image.fromarray(array)
        # RandomCrop(32, padding=4): pad with fill 0, then crop at a random offset.
        padded = ImageOps.expand(image, border=self.pad, fill=0)
        top = int(torch.randint(0, 2 * self.pad + 1, size=(1,)).item())
        left = int(torch.randint(0, 2 * self.pad + 1, size=(1,)).item())
        image = padded.crop((left, top, left + self.width, top + self.height))
        # RandomHorizontalFlip(p=0.5)
        if torch.rand(1) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        # ToTensor(): HWC uint8 -> CHW float in [0, 1]
        tensor = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
        tensor = tensor.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        # Normalize(mean, std)
        return tensor.sub_(self.mean).div_(self.std)

    def epoch(self, epoch: int = 0) -> Batches:
        """Yield one shuffled epoch of ``(images, labels)`` batches (last batch may be short)."""
        order = torch.randperm(len(self.labels)).tolist()
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            samples = [(self.transform(self.images[i]), self.labels[i]) for i in index]
            yield (
                torch.stack([x for x, _ in samples]),
                torch.tensor([y for _, y in samples], dtype=torch.int64),
            )


def time_epoch(make_batches: Callable[[], Batches], limit: int | None = None) -> dict[str, Any]:
    """Drain one epoch (or its first ``limit`` batches); return images, batches and seconds."""
    images = batches = 0
    start = time.perf_counter()
    for x, y in make_batches():
        images += x.shape[0]
        batches += 1
        if y.shape[0] != x.shape[0]:
            raise AssertionError("labels and images out of step")
        if limit is not None and batches >= limit:
            break
    seconds = time.perf_counter() - start
    return {
        "images": images,
        "batches": batches,
        "seconds": seconds,
        "images_per_s": images / seconds,
    }


def load_images(data: str | None, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Training images, labels and a description of where they came from."""
    if data is None:
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, size=(CIFAR10_LT_TRAIN, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=CIFAR10_LT_TRAIN, dtype=np.int64)
        source = {
            "kind": "random",
            "description": f"seeded random uint8 images (numpy default_rng({seed})), "
            "CIFAR-10-LT gamma-50 size",
            "mean": list(CIFAR10_MEAN),
            "std": list(CIFAR10_STD),
        }
        return images, labels, source
    dataset = load_dataset(data)
    images, labels = dataset.split("train")
    norm = dataset.info.get("normalization", {})
    source = {
        "kind": "dataset",
        "description": f"train split of dataset folder {data} ({dataset.name})",
        "path": str(Path(data).resolve()),
        "name": dataset.name,
        "mean": list(norm.get("mean", CIFAR10_MEAN)),
        "std": list(norm.get("std", CIFAR10_STD)),
    }
    return images, labels, source


def batch_layout(batch: torch.Tensor) -> dict[str, Any]:
    """Shape, dtype and memory format of a batch (to show both sides make the same thing)."""
    return {
        "shape": list(batch.shape),
        "dtype": str(batch.dtype),
        "channels_last": batch.is_contiguous(memory_format=torch.channels_last),
        "contiguous_nchw": batch.is_contiguous(),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset folder to load (default: random images)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="results folder (bench/results)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs of BatchLoader")
    parser.add_argument(
        "--baseline-epochs", type=int, default=5, help="timed epochs of the baseline at most"
    )
    parser.add_argument(
        "--baseline-min-epochs", type=int, default=3, help="timed baseline epochs at least"
    )
    parser.add_argument(
        "--baseline-budget-s",
        type=float,
        default=90.0,
        help="stop timing further baseline epochs once this many seconds are spent "
        "(after --baseline-min-epochs)",
    )
    parser.add_argument(
        "--baseline-batches",
        type=int,
        default=None,
        help="time this many baseline batches per repeat instead of whole epochs",
    )
    parser.add_argument(
        "--no-single-thread-check",
        dest="single_thread_check",
        action="store_false",
        help="skip the supplementary timing of ours with torch.set_num_threads(1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads first")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.baseline_min_epochs < 1:
        parser.error("--epochs and --baseline-min-epochs must be >= 1")
    if args.baseline_epochs < args.baseline_min_epochs:
        parser.error("--baseline-epochs must be >= --baseline-min-epochs")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    images, labels, source = load_images(args.data, args.seed)
    mean, std = source["mean"], source["std"]
    print(f"data: {source['description']}: {images.shape} {images.dtype}")
    print(f"torch.get_num_threads() = {torch.get_num_threads()}")
    load_before = warn_if_busy()

    start = time.perf_counter()
    ours = BatchLoader(
        images,
        labels,
        args.batch_size,
        mean=mean,
        std=std,
        augment=Augment.from_name("crop_flip"),
        sampler=ShuffleSampler(len(images), seed=args.seed),
        seed=args.seed,
        channels_last=True,
    )
    ours_setup_s = time.perf_counter() - start
    naive = NaiveLoader(images, labels, args.batch_size, mean, std, pad=4)

    layouts = {
        "ours": batch_layout(next(iter(ours.epoch(0)))[0]),
        "baseline": batch_layout(next(iter(naive.epoch(0)))[0]),
    }

    # Warm-up (untimed in the medians, kept in the JSON): one epoch of ours, a few baseline batches.
    ours_warmup = time_epoch(lambda: ours.epoch(0))
    base_warmup = time_epoch(lambda: naive.epoch(0), limit=10)

    ours_runs = []
    for e in range(1, args.epochs + 1):
        run = time_epoch(lambda e=e: ours.epoch(e))
        ours_runs.append(run)
        print(f"ours     epoch {e}: {fmt(run['images_per_s'])} images/s ({run['seconds']:.3f} s)")

    # Supplementary (not in the headline ratio): ours again with one intra-op thread, since the
    # baseline is single-threaded Python and torch's thread pool suffers when cores are shared.
    ours_1t_runs: list[dict[str, Any]] = []
    threads = torch.get_num_threads()
    if args.single_thread_check and threads != 1:
        torch.set_num_threads(1)
        try:
            for e in range(1, args.epochs + 1):
                ours_1t_runs.append(time_epoch(lambda e=e: ours.epoch(e)))
        finally:
            torch.set_num_threads(threads)
        print(
            "ours, 1 thread: median "
            f"{fmt(statistics.median(r['images_per_s'] for r in ours_1t_runs))} images/s"
        )

    base_runs: list[dict[str, Any]] = []
    spent = 0.0
    while len(base_runs) < args.baseline_epochs:
        if len(base_runs) >= args.baseline_min_epochs and spent >= args.baseline_budget_s:
            break
        run = time_epoch(lambda: naive.epoch(), limit=args.baseline_batches)
        base_runs.append(run)
        spent += run["seconds"]
        print(
            f"baseline run {len(base_runs)}: {fmt(run['images_per_s'])} images/s "
            f"({run['seconds']:.3f} s, {run['batches']} batches)"
        )

    ours_ips = summarize([r["images_per_s"] for r in ours_runs])
    base_ips = summarize([r["images_per_s"] for r in base_runs])
    ratio = ours_ips["median"] / base_ips["median"]
    print(
        f"median: ours {fmt(ours_ips['median'])} images/s, baseline {fmt(base_ips['median'])} "
        f"images/s, ratio {ratio:.1f}x"
    )

    header = run_header(load_before)
    payload: dict[str, Any] = {
        "benchmark": NAME,
        **header,
        "data": {**source, "images": len(images), "shape": list(images.shape[1:])},
        "settings": {
            "batch_size": args.batch_size,
            "augment": "crop_flip (zero pad 4, random 32x32 crop, horizontal flip p=0.5)",
            "sampler": "ShuffleSampler (ours) / torch.randperm (baseline)",
            "drop_last": False,
            "seed": args.seed,
            "epochs_ours": args.epochs,
            "baseline_epochs_max": args.baseline_epochs,
            "baseline_epochs_min": args.baseline_min_epochs,
            "baseline_budget_s": args.baseline_budget_s,
            "baseline_batches_per_run": args.baseline_batches,
        },
        "torch_num_threads": torch.get_num_threads(),
        "batch_layout": layouts,
        "ours": {
            "what": "climbq_deploy.data.pipeline.BatchLoader (channels_last)",
            "setup_seconds": ours_setup_s,
            "warmup": ours_warmup,
            "runs": ours_runs,
            "images_per_s": ours_ips,
        },
        "ours_single_thread": {
            "what": "same BatchLoader and epochs with torch.set_num_threads(1) (supplementary)",
            "runs": ours_1t_runs,
            "images_per_s": summarize([r["images_per_s"] for r in ours_1t_runs])
            if ours_1t_runs
            else None,
        },
        "baseline": {
            "what": "per-sample PIL fromarray/pad/crop/flip, ToTensor, Normalize, torch.stack",
            "warmup": base_warmup,
            "runs": base_runs,
            "images_per_s": base_ips,
        },
        "median_images_per_s": {"ours": ours_ips["median"], "baseline": base_ips["median"]},
        "ratio_ours_over_baseline": ratio,
    }

    def row(label: str, runs: list[dict[str, Any]]) -> list[str]:
        ips = summarize([r["images_per_s"] for r in runs])
        unit = "epochs" if all(r["images"] == len(images) for r in runs) else "runs"
        return [
            label,
            f"{ips['n']} {unit}",
            fmt(statistics.median(r["seconds"] for r in runs), 3),
            f"**{fmt(ips['median'])}**",
            f"{fmt(ips['min'])} – {fmt(ips['max'])}",
        ]

    md = [
        "# Training-batch throughput: BatchLoader vs per-sample PIL baseline",
        "",
        f"Data: {source['description']}, {len(images):,} images "
        f"{'x'.join(map(str, images.shape[1:]))} uint8. Batch {args.batch_size}, crop_flip "
        "(zero pad 4, random 32x32 crop, flip p=1/2), shuffled, last batch kept. "
        f"torch.get_num_threads() = {torch.get_num_threads()}; baseline runs in the main "
        "process (like DataLoader num_workers=0).",
        "",
        markdown_table(
            ["pipeline", "timed repeats", "median s / repeat", "median images/s", "range images/s"],
            [
                row(f"ours: BatchLoader (channels_last), {threads} threads", ours_runs),
                row("baseline: per-sample PIL + torch.stack", base_runs),
            ]
            + (
                [row("(supplementary) ours with torch.set_num_threads(1)", ours_1t_runs)]
                if ours_1t_runs
                else []
            ),
        ),
        "",
        f"**Ratio ours / baseline (medians): {ratio:.1f}x**",
        "",
        "Raw per-repeat timings (images/s): ours "
        + ", ".join(fmt(r["images_per_s"]) for r in ours_runs)
        + "; baseline "
        + ", ".join(fmt(r["images_per_s"]) for r in base_runs)
        + f". Warm-up (excluded): ours one epoch {fmt(ours_warmup['images_per_s'])} images/s, "
        f"baseline {base_warmup['batches']} batches {fmt(base_warmup['images_per_s'])} images/s.",
        "",
        provenance_markdown(header),
    ]
    write_results(args.out, NAME, payload, "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
