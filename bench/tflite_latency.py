"""Batch-1 latency of the exported ClimbQ TFLite model (exact int16 form) under LiteRT, beside
torch fp32 eager ResNet-20 at batch 1 (same threads), same process.

Usage::

    .venv/bin/python bench/tflite_latency.py --model RUN/model.tflite
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _common import (
    DEFAULT_OUT,
    markdown_table,
    provenance_markdown,
    run_header,
    warn_if_busy,
    write_results,
)

from climbq_deploy.bench import bench_tflite
from climbq_deploy.models import build_model
from climbq_deploy.models.common import QuantSpec

NAME = "tflite_latency"


def torch_p50(threads: int, repeats: int) -> float:
    torch.set_num_threads(threads)
    model = build_model("resnet20", 10, QuantSpec("fp32", 32, 32)).eval()
    x = torch.randn(1, 3, 32, 32)
    times = []
    with torch.no_grad():
        for _ in range(10):
            model(x)
        for _ in range(repeats):
            began = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    load = warn_if_busy()
    records, rows = [], []
    for threads in (1, 2):
        reference = torch_p50(threads, args.repeats)
        for kernels in ("xnnpack", "optimized"):
            record = bench_tflite(args.model, threads=threads, kernels=kernels,
                                  repeats=args.repeats)  # fmt: skip
            record["torch_fp32_resnet20_p50_ms"] = reference
            records.append(record)
            lat = record["latency_ms"]
            rows.append((threads, kernels, f"{lat['p50']:.2f}", f"{lat['p90']:.2f}",
                         f"{lat['p99']:.2f}", f"{reference:.2f}",
                         f"{lat['p50'] / reference:.1f}x"))  # fmt: skip
    header = run_header(load)
    markdown = (
        "# ClimbQ 4-bit ResNet-20 as TFLite (exact int16 form), batch 1\n\n"
        f"Model `{args.model}`; {args.repeats} timed invokes after 10 warm-up; torch = "
        "full-precision ResNet-20 eager at batch 1 with the same thread count.\n\n"
        + markdown_table(("threads", "LiteRT kernels", "p50 ms", "p90 ms", "p99 ms",
                          "torch fp32 p50 ms", "p50 / torch"), rows)
        + "\n\nThe issue's goal compares against a plain int8 ResNet-20 from the same writer "
        "(not written yet); against torch fp32 this exact int16 form is far slower.\n\n"
        + provenance_markdown(header)
    )  # fmt: skip
    write_results(args.out, NAME, {**header, "records": records}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
