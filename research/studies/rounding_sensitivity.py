"""How much a trained ClimbQ model depends on the exact grid of each group of its quantizers:
the model on its whole test set with the rounding of one group removed, everything else as
trained.

A ClimbQ activation quantizer is ``x_hat = (2j/n - 1) R`` with ``j = round(n Phi(x / sigma))``;
without its rounding it is ``R (2 Phi(x / sigma) - 1)``
(:func:`~climbq_deploy.quant.functional.climbq_activation_unrounded`), the same squashing map
minus the rounding. Likewise a ClimbQ weight quantizer without its rounding is
``2 Phi((w - mean) / std) - 1``. A group is every quantizer of one position in the network:
the module name with its block and Sequential indices dropped (``blocks.3.shortcut.2`` ->
``blocks.shortcut``). ``delta``: the group's unrounded top-1 minus the as-trained top-1, on the
same images.

What it measures, and what not: the layers after a group were trained (weights and BatchNorm
running statistics) on its rounded values. At 2 bits the rounded values are 4 levels whose
spread differs from the unrounded map's, so removing the rounding moves every later layer off
the inputs it learned: a negative ``delta`` says the model relies on that group's grid, not
that the rounding helps. A ``delta`` near 0 says the group's rounding is not where the model's
points go. It does not measure what a model trained without a group's quantizer would reach;
only training that model does (``--faithful-mbv2`` for MobileNetV2's shortcut and block
output quantizers).

Why: 2-bit ClimbQ+ MobileNetV2 reaches 48.20 on SynDigits-LT gamma 200 against the paper's
67.20, and our integer-friendly MobileNetV2 quantizes the shortcut and the block output of
each stride-1 block, which the authors' version keeps in float (models/mobilenetv2.py).

Usage::

    .venv/bin/python -m research.studies.rounding_sensitivity RUN [RUN ...] [--name NAME]
    .venv/bin/python -m research.studies.rounding_sensitivity --render JSON  # markdown again
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from bench._common import markdown_table, provenance_markdown, run_header, write_results
from climbq_deploy.data.dataset import ImageDataset, load_dataset
from climbq_deploy.errors import ConfigError
from climbq_deploy.export import TrainedRun, load_run
from climbq_deploy.quant.functional import climbq_activation_unrounded, climbq_weight_unrounded
from climbq_deploy.quant.layers import ActQuant, QConv2d
from climbq_deploy.quant.quantizers import ACTIVATION_RANGE, ClimbQActivation, ClimbQWeight
from climbq_deploy.train.loop import predict
from climbq_deploy.train.metrics import long_tail_metrics
from research import RESULTS

NAME = "rounding_sensitivity"
BATCH = 500


class UnroundedActivation(nn.Module):
    """A ClimbQ activation quantizer's map without its rounding (same call as the quantizer)."""

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        return climbq_activation_unrounded(x, sigma, ACTIVATION_RANGE)


class UnroundedWeight(nn.Module):
    """A ClimbQ weight quantizer's map without its rounding."""

    def forward(self, w: Tensor) -> Tensor:
        return climbq_weight_unrounded(w)


def group_of(module_name: str) -> str:
    """``blocks.3.shortcut.2`` -> ``blocks.shortcut``: the name without its numeric parts."""
    return ".".join(p for p in module_name.split(".") if not re.fullmatch(r"\d+", p)) or "model"


def quantizer_groups(model: nn.Module) -> dict[str, list[tuple[str, nn.Module]]]:
    """``act:<group>`` / ``weight:<group>`` -> the ClimbQ quantizers there, in model order."""
    groups: dict[str, list[tuple[str, nn.Module]]] = {}
    for name, module in model.named_modules():
        if isinstance(module, ActQuant) and isinstance(module.quantizer, ClimbQActivation):
            groups.setdefault(f"act:{group_of(name)}", []).append((name, module))
        elif isinstance(module, QConv2d) and isinstance(module.weight_quantizer, ClimbQWeight):
            groups.setdefault(f"weight:{group_of(name)}", []).append((name, module))
    return groups


@contextlib.contextmanager
def unrounded(modules: list[tuple[str, nn.Module]]) -> Iterator[None]:
    """Swap the quantizers of ``modules`` for their unrounded maps; put them back on exit."""
    saved: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for _, module in modules:
            slot = "quantizer" if isinstance(module, ActQuant) else "weight_quantizer"
            saved.append((module, slot, getattr(module, slot)))
            setattr(
                module, slot, UnroundedActivation() if slot == "quantizer" else UnroundedWeight()
            )
        yield
    finally:
        for module, slot, quantizer in saved:
            setattr(module, slot, quantizer)


def evaluate(run: TrainedRun, data: ImageDataset, train_counts: list[int]) -> dict[str, Any]:
    """Top-1 and many/medium/few of ``run.model`` as it stands on ``data``'s test split,
    through the training loop's own test path (:func:`~climbq_deploy.train.loop.predict`)."""
    predictions = predict(run.model, data, BATCH)
    metrics = long_tail_metrics(predictions, data.test_labels, train_counts)
    return {
        "top1": metrics.top1,
        "many": metrics.many,
        "medium": metrics.medium,
        "few": metrics.few,
    }


def sensitivity(run_dir: Path) -> dict[str, Any]:
    """Every group of ``run_dir``'s model, and all activations / all weights / everything, each
    with its rounding removed, against the as-trained model on the whole test set."""
    run = load_run(run_dir)
    run.model.to(memory_format=torch.channels_last)  # as trained: ~1.5x faster on the CPU
    groups = quantizer_groups(run.model)
    if not groups:
        raise ConfigError(f"{run_dir}: method {run.config.method} has no ClimbQ quantizers")
    counts = run.metrics.get("train_counts")
    if not counts:
        raise ConfigError(f"{run_dir}: metrics.json has no train_counts (unfinished run?)")
    data = load_dataset(run.config.data)
    base = evaluate(run, data, counts)
    every_act = [m for k, ms in groups.items() if k.startswith("act:") for m in ms]
    every_weight = [m for k, ms in groups.items() if k.startswith("weight:") for m in ms]
    probes = {
        **groups,
        "act:all": every_act,
        "weight:all": every_weight,
        "all": every_act + every_weight,
    }
    rows = []
    for key, modules in tqdm(probes.items(), desc=run_dir.name, unit="group", file=sys.stderr):
        with unrounded(modules):
            got = evaluate(run, data, counts)
        rows.append(
            {
                "group": key,
                "quantizers": len(modules),
                **got,
                "delta": round(got["top1"] - base["top1"], 2),
            }
        )
    return {
        "run": str(run_dir),
        "method": run.config.method,
        "wbits": run.config.wbits,
        "abits": run.config.abits,
        "images": len(data.test_labels),
        "as_trained": base,
        "record_top1": run.metrics.get("top1"),
        "groups": rows,
    }


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--render", type=Path, help="rewrite the markdown of this results JSON")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default=NAME, help="file stem of the results (NAME.json/.md)")
    args = parser.parse_args()
    if args.render:
        payload = json.loads(args.render.read_text())
        header = {k: v for k, v in payload.items() if k != "records"}
        write_results(
            args.render.parent, args.render.stem, payload, render(payload["records"], header)
        )
        return
    if not args.runs:
        parser.error("name at least one run folder (or --render JSON)")
    header = run_header()
    records: list[dict[str, Any]] = []
    for run in args.runs:  # the files are rewritten after each run: a long probe keeps its part
        records.append(sensitivity(run))
        markdown = render(records, header)
        write_results(args.out, args.name, {**header, "records": records}, markdown)
    print(markdown)


def render(records: list[dict[str, Any]], header: dict[str, Any]) -> str:
    """The markdown: one table per run, groups by how much their rounding costs."""
    parts = [
        "# Rounding sensitivity: top-1 with one group of ClimbQ quantizers left unrounded\n\n"
        "Each row: the trained model on its whole test set with the rounding of that group "
        "removed (`R (2 Phi(x / sigma) - 1)` for activations, `2 Phi(z) - 1` for weights), "
        "every other quantizer as trained. `delta`: minus the as-trained top-1 on the same "
        "images. The layers after a group learned its rounded values (weights and BatchNorm "
        "statistics), so a negative delta says how much the model relies on that group's "
        "grid, not that rounding helps; a delta near 0 says the group's rounding is not where "
        "the points go. It cannot say what a model trained without a group would reach. "
        "`act:blocks.shortcut` and `act:blocks.out_act` are the two quantizers per stride-1 "
        "block that our integer-friendly MobileNetV2 adds to the authors' version.\n"
    ]
    for r in records:
        base = r["as_trained"]
        rows = [
            [
                g["group"],
                g["quantizers"],
                f"{g['top1']:.2f}",
                f"{g['delta']:+.2f}",
                "/".join(_pct(g[k]) for k in ("many", "medium", "few")),
            ]
            for g in sorted(r["groups"], key=lambda g: -g["delta"])
        ]
        parts += [
            f"## {Path(r['run']).name} (W{r['wbits']}A{r['abits']}, {r['images']} test images)"
            f"\n\nAs trained: top-1 {base['top1']:.2f} (the run's own record: "
            f"{r['record_top1']}), many/medium/few "
            + "/".join(_pct(base[k]) for k in ("many", "medium", "few"))
            + "\n\n"
            + markdown_table(
                ("group unrounded", "quantizers", "top-1 %", "delta", "many/med/few"), rows
            )
            + "\n"
        ]
    return "\n".join(parts) + "\n" + provenance_markdown(header)


if __name__ == "__main__":
    main()
