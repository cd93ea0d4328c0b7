"""Which activation codes a trained model actually uses: per quantizer, the spread of its input
(the BatchNorm output) and the share of each code on evenly spaced test images.

Why: 2-bit ClimbQ+ collapses in our runs while 4-bit works. ClimbQ's activation thresholds
sit at ``sigma * PhiInv((t - 1/2) / n)`` with ``sigma = 2`` (``+-1.93`` and 0 at 2 bits); if the
BatchNorm outputs are much narrower than that, the outer codes go unused.

Usage::

    .venv/bin/python -m research.studies.activation_codes RUN [RUN ...] [--images 500]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench._common import markdown_table, provenance_markdown, run_header, write_results
from climbq_deploy.check import _normalised
from climbq_deploy.data.dataset import load_dataset
from climbq_deploy.export import load_run
from climbq_deploy.quant.layers import ActQuant
from research import RESULTS

NAME = "activation_codes"
GPU_NOTE = (
    "The SynDigits-LT runs were trained on the GPU machine, and their histograms here "
    "use this machine's render of the dataset."
)  # the first file's runs


def code_usage(run_dir: Path, images: int) -> dict[str, Any]:
    """Per activation quantizer: input std, and the share of each output value (a code)."""
    run = load_run(run_dir)
    test = load_dataset(run.config.data).test_images
    chosen = np.unique(np.round(np.linspace(0, len(test) - 1, images)).astype(np.int64))
    layers: list[dict[str, Any]] = []

    def hook(name: str):
        def record(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor):
            values, counts = torch.unique(out.detach().flatten(), return_counts=True)
            share = (counts.double() / out.numel()).tolist()
            codes = {f"{float(v):.3f}": s for v, s in zip(values, share, strict=True)}
            layers.append(
                {
                    "layer": name,
                    "input_std": float(inputs[0].std()),
                    "codes": codes,
                    "levels_over_1pct": sum(s > 0.01 for s in share),
                }
            )

        return record

    handles = [
        m.register_forward_hook(hook(n))
        for n, m in run.model.named_modules()
        if isinstance(m, ActQuant) and m.quantizer is not None
    ]
    with torch.no_grad():
        run.model(_normalised(test[chosen], run))
    for h in handles:
        h.remove()
    top1 = run.metrics.get("top1")
    history = run_dir / "history.jsonl"
    if top1 is None and history.is_file():  # an unfinished run: its last epoch's test top-1
        last = json.loads(history.read_text().splitlines()[-1])
        top1 = f"{last['test_top1']:.2f} (epoch {last['epoch']}/{run.config.epochs})"
    return {
        "run": str(run_dir),
        "abits": run.config.abits,
        "method": run.config.method,
        "top1": top1,
        "images": len(chosen),
        "layers": layers,
        "median_input_std": statistics.median(x["input_std"] for x in layers),
        "median_levels_over_1pct": statistics.median(x["levels_over_1pct"] for x in layers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default=NAME, help="file stem of the results (NAME.json/.md)")
    parser.add_argument("--note", default=GPU_NOTE, help="closing sentence of the intro")
    args = parser.parse_args()
    records = [code_usage(run, args.images) for run in args.runs]
    rows = [
        (
            Path(r["run"]).name,
            r["method"],
            r["abits"],
            f"{r['top1']:.2f}" if isinstance(r["top1"], float) else r["top1"],
            2 ** r["abits"],
            f"{r['median_input_std']:.2f}",
            r["median_levels_over_1pct"],
            min(x["levels_over_1pct"] for x in r["layers"]),
            max(x["levels_over_1pct"] for x in r["layers"]),
        )
        for r in records
    ]
    header = run_header()
    markdown = (
        "# Activation codes actually used (per quantizer, evenly spaced test images)\n\n"
        "`input std`: std of the quantizer's input (the BatchNorm output), median over layers; "
        "`levels > 1 %`: how many output codes take more than 1 % of the values. ClimbQ's "
        "thresholds are `2 PhiInv((t - 1/2) / n)` (sigma = 2): +-1.93 and 0 at 2 bits, so inputs "
        "with std ~0.35 never reach the outer codes and 2-bit activations become binary; "
        "LSQ's learned step keeps all four 2-bit codes in use. Top-1: the run's own figure "
        f"(last epoch of its history when unfinished). {args.note}\n\n"
        + markdown_table(
            (
                "run",
                "method",
                "abits",
                "top-1 %",
                "codes",
                "median input std",
                "median levels > 1 %",
                "min",
                "max",
            ),
            rows,
        )
        + "\n\n"
        + provenance_markdown(header)
    )
    write_results(args.out, args.name, {**header, "records": records}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
