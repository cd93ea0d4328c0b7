"""Training-step time of the baseline quantizers, fused vs unfused, side by side in one run.

The uniform activation and LSQ quantizers run as fused autograd functions
(:func:`climbq_deploy.quant.functional.uniform_activation`, :func:`~.lsq_quantize`); their
unfused expressions (``*_reference``: autograd through every op) are what they replaced. This
bench times one ResNet-20 W2A2 training step (batch 128 of CIFAR-10-LT gamma 50, crop+flip,
SGD, cross-entropy; the HomoVar loss for ClimbQ+) for each method, fused and unfused, with
ClimbQ+ (fused since the start) beside them for scale, and checks what the fusion must keep:
after the same steps from the same seed, fused and unfused weights are bit-identical.

Round-robin over variants (machine noise hits each alike), ``--repeats`` rounds of ``--steps``
timed steps each (two warm-up steps dropped per round); the figure is the median step.

Usage::

    .venv/bin/python -m bench.quantizer_speed [--data DIR] [--out bench/results]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

import climbq_deploy.quant.quantizers as quantizers
from bench._common import DEFAULT_OUT, markdown_table, provenance_markdown, run_header, warn_if_busy
from bench._common import write_results as write
from bench.train_speed import ensure_dataset, timed_steps
from climbq_deploy.quant.functional import lsq_quantize_reference, uniform_activation_reference

NAME = "quantizer_speed"
VARIANTS: list[tuple[str, bool]] = [
    ("uniform", True),
    ("uniform", False),
    ("lsq", True),
    ("lsq", False),
    ("climbq+", True),
]


@contextmanager
def unfused(enabled: bool) -> Iterator[None]:
    """Swap the quantizers' fused functions for their unfused expressions while enabled."""
    saved = quantizers.uniform_activation, quantizers.lsq_quantize
    if enabled:
        quantizers.uniform_activation = uniform_activation_reference
        quantizers.lsq_quantize = lsq_quantize_reference
    try:
        yield
    finally:
        quantizers.uniform_activation, quantizers.lsq_quantize = saved


def train_steps(data: Path, method: str, fused: bool, steps: int) -> tuple[list[float], dict]:
    """Seconds of each of ``steps + 2`` W2A2 training steps from seed 0 (first two dropped),
    and the model's state after them."""
    with unfused(not fused):
        times, model = timed_steps(data, method, 2, False, steps)
    return times, {k: v.detach().clone() for k, v in model.state_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (round-robin)")
    args = parser.parse_args()
    data = ensure_dataset(args.data)
    load = warn_if_busy()
    times: dict[int, list[float]] = {i: [] for i in range(len(VARIANTS))}
    states: dict[int, dict] = {}
    for repeat in range(args.repeats):
        for i, (method, fused) in enumerate(VARIANTS):
            step_seconds, states[i] = train_steps(data, method, fused, args.steps)
            times[i] += step_seconds
            print(
                f"[{repeat + 1}/{args.repeats}] {method} fused={fused}: "
                f"{1000 * statistics.median(step_seconds):.0f} ms",
                flush=True,
            )
    medians = {i: 1000 * statistics.median(t) for i, t in times.items()}
    results: list[dict[str, Any]] = []
    rows = []
    for i, (method, fused) in enumerate(VARIANTS):
        record: dict[str, Any] = {
            "method": method,
            "fused": fused,
            "median_step_ms": medians[i],
            "steps_timed": len(times[i]),
            "min_step_ms": 1000 * min(times[i]),
            "max_step_ms": 1000 * max(times[i]),
        }
        if not fused:
            j = VARIANTS.index((method, True))
            record["fused_over_unfused"] = medians[j] / medians[i]
            record["identical_weights_after_steps"] = all(
                torch.equal(states[i][k], states[j][k]) for k in states[i]
            )
            if not record["identical_weights_after_steps"]:
                raise SystemExit(f"{method}: fused and unfused training diverged (not bit-exact)")
        results.append(record)
        rows.append(
            (
                method,
                "fused" if fused else "unfused",
                f"{medians[i]:.0f}",
                f"{record['min_step_ms']:.0f}-{record['max_step_ms']:.0f}",
                f"{record['fused_over_unfused']:.2f}x" if not fused else "",
                str(record.get("identical_weights_after_steps", "")),
            )
        )
    header = run_header(load)
    payload = {
        **header,
        "dataset": str(data),
        "arch": "resnet20",
        "bits": "w2a2",
        "batch_size": 128,
        "steps_per_round": args.steps,
        "rounds": args.repeats,
        "variants": results,
    }
    table = markdown_table(
        (
            "method",
            "quantizer",
            "median step ms",
            "min-max ms",
            "fused / unfused",
            f"same weights after {args.steps + 2} steps",
        ),
        rows,
    )
    markdown = (
        "# Baseline quantizers fused vs unfused: one ResNet-20 W2A2 training step "
        f"(batch 128), medians of {args.repeats} x {args.steps} steps\n\n"
        + table
        + "\n\n`same weights`: fused and unfused trained from the same seed on the same batches "
        "give bit-identical weights (torch.equal on every state_dict entry). ClimbQ+ has had a "
        "fused activation since the start; it is here for scale.\n\n" + provenance_markdown(header)
    )
    write(args.out, NAME, payload, markdown)


if __name__ == "__main__":
    main()
