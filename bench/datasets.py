"""Dataset build times: SynDigits-LT rendering and CIFAR-10 JPEG-zip decoding.

(a) ``build_syndigits(50, seed=0)`` renders SynDigits-LT gamma 50 (2,786 train + 2,000 test images);
    target <= 30 s, median of ``--syn-runs`` runs.
(b) ``build_image_dataset(zip, gamma=1.0)`` decodes the whole CIFAR-10 JPEG zip (gamma 1 is
    balanced, so all 50,000 train + 10,000 test images); target <= 90 s, median of
    ``--cifar-runs`` runs. Also timed: the authors' list case
    ``build_image_dataset(zip, split_csv=cifar10_train50.csv)`` (13,988 train + 10,000 test).
    Skipped, with a message, when the zip is absent.

Usage::

    .venv/bin/python -m bench.datasets [--cifar-zip ZIP] [--split-csv CSV] [--out bench/results]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench._common import (
    DEFAULT_OUT,
    REPO_ROOT,
    fmt,
    markdown_table,
    provenance_markdown,
    run_header,
    summarize,
    warn_if_busy,
    write_results,
)
from climbq_deploy.data.dataset import ImageDataset
from climbq_deploy.data.imagefolder import build_image_dataset
from climbq_deploy.data.syndigits import build_syndigits

NAME = "datasets"
DEFAULT_ZIP = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpg.zip"
DEFAULT_CSV = REPO_ROOT.parent / "shared" / "data" / "climbq-splits" / "cifar10_train50.csv"
SYN_TARGET_S = 30.0
CIFAR_TARGET_S = 90.0


def time_builds(label: str, build: Callable[[], ImageDataset], runs: int) -> dict[str, Any]:
    """Build ``runs`` times; return raw seconds, their summary and the dataset's sizes."""
    seconds: list[float] = []
    dataset: ImageDataset | None = None
    for i in range(runs):
        dataset = None  # let the previous run's arrays go before timing the next
        start = time.perf_counter()
        dataset = build()
        seconds.append(time.perf_counter() - start)
        print(f"{label} run {i + 1}/{runs}: {seconds[-1]:.2f} s")
    assert dataset is not None
    train, test = len(dataset.train_labels), len(dataset.test_labels)
    summary = summarize(seconds)
    return {
        "seconds": seconds,
        "seconds_summary": summary,
        "train_images": train,
        "test_images": test,
        "images_per_s_median": (train + test) / summary["median"],
        "train_counts": dataset.counts("train"),
        "image_shape": list(dataset.image_shape),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="results folder (bench/results)")
    parser.add_argument(
        "--cifar-zip",
        default=str(DEFAULT_ZIP),
        help="CIFAR-10 JPEG zip (default ../shared/data/cifar10-jpg.zip from the repo root)",
    )
    parser.add_argument(
        "--split-csv",
        default=str(DEFAULT_CSV),
        help="authors' split list for the list case (default cifar10_train50.csv)",
    )
    parser.add_argument("--syn-runs", type=int, default=3, help="SynDigits builds to time")
    parser.add_argument("--cifar-runs", type=int, default=3, help="builds of each CIFAR case")
    args = parser.parse_args(argv)
    if args.syn_runs < 1 or args.cifar_runs < 1:
        parser.error("--syn-runs and --cifar-runs must be >= 1")
    return args


def verdict(median: float, target: float) -> str:
    return "PASS" if median <= target else "FAIL"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = warn_if_busy()
    results: dict[str, Any] = {}

    syn = time_builds(
        "syndigits gamma 50",
        lambda: build_syndigits(50, seed=0, progress=False),
        args.syn_runs,
    )
    syn.update(
        call="build_syndigits(50, seed=0, progress=False)",
        target_s=SYN_TARGET_S,
        verdict=verdict(syn["seconds_summary"]["median"], SYN_TARGET_S),
    )
    results["syndigits_gamma50"] = syn

    zip_path = Path(args.cifar_zip)
    csv_path = Path(args.split_csv)
    cifar_skipped: str | None = None
    if not zip_path.is_file():
        cifar_skipped = f"CIFAR-10 zip {zip_path} not found; skipped the CIFAR-10 decode timings"
        print(f"SKIP: {cifar_skipped}")
    else:
        full = time_builds(
            "cifar10 full decode (gamma 1)",
            lambda: build_image_dataset(zip_path, gamma=1.0, progress=False),
            args.cifar_runs,
        )
        full.update(
            call=f"build_image_dataset({str(zip_path)!r}, gamma=1.0, progress=False)",
            target_s=CIFAR_TARGET_S,
            verdict=verdict(full["seconds_summary"]["median"], CIFAR_TARGET_S),
        )
        results["cifar10_full_gamma1"] = full
        if csv_path.is_file():
            listed = time_builds(
                "cifar10 split_csv train50",
                lambda: build_image_dataset(zip_path, split_csv=csv_path, progress=False),
                args.cifar_runs,
            )
            listed["call"] = (
                f"build_image_dataset({str(zip_path)!r}, split_csv={str(csv_path)!r}, "
                "progress=False)"
            )
            results["cifar10_split_csv_train50"] = listed
        else:
            print(f"SKIP: split list {csv_path} not found; skipped the list case")
            results["cifar10_split_csv_train50"] = {"skipped": f"{csv_path} not found"}

    header = run_header(load_before)
    payload: dict[str, Any] = {
        "benchmark": NAME,
        **header,
        "inputs": {
            "cifar_zip": str(zip_path.resolve()) if zip_path.is_file() else str(zip_path),
            "cifar_zip_bytes": zip_path.stat().st_size if zip_path.is_file() else None,
            "split_csv": str(csv_path.resolve()) if csv_path.is_file() else str(csv_path),
        },
        "settings": {"syn_runs": args.syn_runs, "cifar_runs": args.cifar_runs},
        "cifar_skipped": cifar_skipped,
        "results": results,
    }

    rows = []
    for key, label in (
        ("syndigits_gamma50", "SynDigits-LT gamma 50, seed 0 (render)"),
        ("cifar10_full_gamma1", "CIFAR-10 zip, gamma 1 (decode all)"),
        ("cifar10_split_csv_train50", "CIFAR-10 zip, split_csv cifar10_train50.csv"),
    ):
        r = results.get(key)
        if r is None or "skipped" in r:
            rows.append([label, "–", "–", "skipped", "–", "–", "–"])
            continue
        s = r["seconds_summary"]
        target = f"<= {r['target_s']:.0f} s: {r['verdict']}" if "target_s" in r else "–"
        rows.append(
            [
                label,
                f"{r['train_images']:,} + {r['test_images']:,}",
                s["n"],
                f"**{s['median']:.2f}**",
                ", ".join(f"{t:.2f}" for t in r["seconds"]),
                fmt(r["images_per_s_median"]),
                target,
            ]
        )
    md = [
        "# Dataset build times",
        "",
        markdown_table(
            [
                "case",
                "train + test images",
                "runs",
                "median s",
                "raw s",
                "images/s (median)",
                "target",
            ],
            rows,
        ),
        "",
        "Calls: " + "; ".join(f"`{r['call']}`" for r in results.values() if "call" in r) + ".",
        "",
    ]
    if cifar_skipped:
        md += [f"**Skipped:** {cifar_skipped}.", ""]
    md.append(provenance_markdown(header))
    write_results(args.out, NAME, payload, "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
