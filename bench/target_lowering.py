"""Which runs each target lowers exactly: every method x weight bits x activation bits x head.

For each architecture, method, ``(wbits, abits)`` in 2..8 x 2..8 and seed: a model with random
weights (``torch.manual_seed(seed)``) and trained-looking BatchNorm statistics (means ~N(0, 2),
variances in [0.5, 20.5], gammas ~N(0, 1), betas ~N(0, 0.5); ``ptq`` ranges in [2, 3]) is
captured, lowered with each head and exported to every target (``tflite`` and ``tensorrt``
with ``--weights int8`` and ``int4``); a cell records ``ok`` or the target's error. No
training: the refusals come from weight and activation bit widths (stem weights too large for
LiteRT's digit split, 20-bit input times 7-bit ClimbQ weights beyond int32, 8-bit odd-grid
weights beyond int8, partial sums reaching 2**24 in ONNX's float32 convs), not from trained
values, and several seeds show where a cell depends on the weights. ``ptq`` models are made
as ``climbq calibrate`` makes them (recipe ``ptq-int8`` with the cell's bit widths, 20
random images), so that the operands of a residual add share one scale.

The summary puts each target's measured table beside its declared ``lowers``
(:class:`climbq_deploy.targets.base.Lowering`) and flags a declared cell that did not export
for every seed. Records are appended to ``--records`` (JSON lines) and reused on a rerun.

Usage::

    .venv/bin/python -m bench.target_lowering --seeds 3          # ResNet-20, ~15 min here
    .venv/bin/python -m bench.target_lowering --arch mobilenetv2 --seeds 2 --heads float
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench._common import (
    DEFAULT_OUT,
    markdown_table,
    provenance_markdown,
    run_header,
    write_results,
)
from climbq_deploy.errors import ClimbQError
from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.passes import lower
from climbq_deploy.models import build_model
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.targets import TARGETS, get_target

BITS = tuple(range(2, 9))
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
EXPORTS = {  # column -> (target, options)
    "numpy": ("numpy", {}),
    "tflite": ("tflite", {}),
    "tflite --weights int4": ("tflite", {"weights": "int4"}),
    "tensorrt": ("tensorrt", {}),
    "tensorrt --weights int4": ("tensorrt", {"weights": "int4"}),
}


def trained_looking(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """BatchNorm statistics and PTQ ranges like a trained model's (see the module doc)."""
    g = torch.Generator().manual_seed(1000 + seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 2)
            m.running_var.copy_(torch.rand(c, generator=g) * 20 + 0.5)
            m.weight.data.copy_(torch.randn(c, generator=g))
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.5)
    for name, buffer in model.named_buffers():
        if name.endswith("quantizer.range"):
            buffer.fill_(2.0 + torch.rand(1, generator=g).item())
    return model.eval()


def calibrated_ptq(
    arch: str, wbits: int, abits: int, seed: int, size: int, folder: Path
) -> torch.nn.Module:
    """A ``ptq`` model as ``climbq calibrate`` makes it (ranges observed, the operands of a
    residual add on one scale), from a random full-precision run on random images."""
    from climbq_deploy.calibration import CalibrateConfig, calibrate
    from climbq_deploy.data.dataset import ImageDataset, save_dataset
    from climbq_deploy.export import load_run
    from climbq_deploy.train.checkpoint import save_checkpoint
    from climbq_deploy.train.config import TrainConfig

    rng = np.random.default_rng(seed)
    labels = np.arange(40, dtype=np.int64) % 10
    images = rng.integers(0, 256, (40, size, size, 3), dtype=np.uint8)
    data = save_dataset(
        ImageDataset("random", tuple("abcdefghij"), images, labels, images, labels, {}),
        folder / "data",
    )
    config = TrainConfig(str(data), arch=arch, epochs=1)
    torch.manual_seed(seed)
    model = trained_looking(build_model(arch, 10, config.quant_spec), seed)
    (folder / "fp").mkdir()
    save_checkpoint(
        folder / "fp" / "checkpoint.pt", {"config": config.as_dict(), "model": model.state_dict()}
    )
    recipe = CalibrateConfig(
        str(folder / "fp"), "ptq-int8", calib_size=20, wbits=wbits, abits=abits
    )
    calibrate(recipe, folder / "ptq")
    return load_run(folder / "ptq").model


def measure_cell(
    arch: str, method: str, wbits: int, abits: int, seed: int, heads: list[str], size: int
) -> list[dict[str, Any]]:
    """One record per head: ``ok`` or ``ErrorType: message`` for every export column."""
    records = []
    with tempfile.TemporaryDirectory() as scratch:
        if method == "ptq":
            model = calibrated_ptq(arch, wbits, abits, seed, size, Path(scratch))
        else:
            torch.manual_seed(seed)
            model = trained_looking(build_model(arch, 10, QuantSpec(method, wbits, abits)), seed)
        for head in heads:
            record: dict[str, Any] = dict(
                arch=arch, method=method, w=wbits, a=abits, head=head, seed=seed
            )
            for column, (name, options) in EXPORTS.items():
                target = get_target(name, **options)
                try:
                    graph = lower(
                        capture(model, MEAN, STD, (size, size, 3), {}, target.input_bits),
                        head=head,
                    )
                    target.export(graph, Path(scratch) / f"model{target.suffix}")
                    record[column] = "ok"
                except ClimbQError as exc:
                    record[column] = f"{type(exc).__name__}: {exc}"
            records.append(record)
    return records


def _cell_mark(results: list[bool]) -> str:
    return "Y" if all(results) else ("." if not any(results) else "s")


def summarize(records: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """Per export column, method and head: the w x a grid of marks (``Y`` every seed exported,
    ``s`` some, ``.`` none), the distinct errors, and the declared cells that failed."""
    cells: dict[tuple, list[bool]] = defaultdict(list)
    errors: dict[tuple, set[str]] = defaultdict(set)
    for r in records:
        for column in EXPORTS:
            ok = r[column] == "ok"
            cells[(column, r["method"], r["head"], r["w"], r["a"])].append(ok)
            if not ok:
                errors[(column, r["arch"])].add(r[column].split(":")[0] + ": " + _gist(r[column]))
    grids, lines, broken = {}, [], []
    for column, (name, _) in EXPORTS.items():
        declared = getattr(TARGETS[name], "lowers", None)
        lines.append(f"## {column}\n")
        lines.append(f"Declared: {'; '.join(map(str, declared)) if declared else 'every run'}\n")
        methods = sorted({k[1] for k in cells if k[0] == column})
        heads = sorted({k[2] for k in cells if k[0] == column})
        for method, head in itertools.product(methods, heads):
            rows = []
            for w in BITS:
                keys = [(column, method, head, w, a) for a in BITS]
                marks = [_cell_mark(cells[key]) if key in cells else "-" for key in keys]
                rows.append([f"w{w}", *marks])
                for a, mark in zip(BITS, marks, strict=True):
                    covered = declared is None or any(
                        row.covers(method, w, a, head) for row in declared
                    )
                    if covered and mark in ("s", "."):
                        broken.append(f"{column}: {method} w{w}a{a} head {head} ({mark})")
            grids[f"{column}|{method}|{head}"] = rows
            lines.append(f"{method}, head {head} (rows: weight bits; columns: activation bits)\n")
            lines.append(markdown_table(["", *(f"a{a}" for a in BITS)], rows) + "\n")
    reasons = {f"{c} ({arch})": sorted(v) for (c, arch), v in sorted(errors.items())}
    lines.append("## Errors seen\n")
    lines += [f"- {key}: " + "; ".join(v) for key, v in reasons.items()]
    lines.append("\n## Declared cells that did not export for every seed\n")
    lines.append("\n".join(f"- {b}" for b in broken) if broken else "none")
    return {"grids": grids, "errors": reasons, "declared_but_failed": broken}, "\n".join(lines)


def _gist(message: str) -> str:
    """The error without layer names and numbers, so equal causes group together."""
    text = message.split(": ", 1)[-1]
    text = re.sub(r"'[\w.]+'", "L", text)
    return re.sub(r"-?\d{3,}", "N", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--methods", default="climbq,climbq+,uniform,ptq,lsq")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--heads", default="float,int8,int4")
    parser.add_argument("--size", type=int, default=32, help="image side")
    parser.add_argument("--records", type=Path, default=DEFAULT_OUT / "target_lowering.jsonl")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    done = set()
    if args.records.is_file():
        for line in args.records.read_text().splitlines():
            r = json.loads(line)
            done.add((r["arch"], r["method"], r["w"], r["a"], r["seed"], r["head"]))
    heads = args.heads.split(",")
    with args.records.open("a") as log:
        for method, (w, a), seed in itertools.product(
            args.methods.split(","), itertools.product(BITS, BITS), range(args.seeds)
        ):
            todo = [h for h in heads if (args.arch, method, w, a, seed, h) not in done]
            if todo:
                for record in measure_cell(args.arch, method, w, a, seed, todo, args.size):
                    log.write(json.dumps(record) + "\n")
                log.flush()
    records = [json.loads(line) for line in args.records.read_text().splitlines()]
    header = run_header()
    payload, text = summarize(records)
    markdown = (
        "# What each target lowers exactly (bench/target_lowering.py)\n\n"
        f"{len(records)} records from {args.records.name}: "
        + ", ".join(sorted({r["arch"] for r in records}))
        + "; Y: exported for every seed, s: for some, .: for none, -: not measured.\n\n"
        + text
        + "\n\n"
        + provenance_markdown(header)
    )
    write_results(args.out, "target_lowering", {**payload, "header": header}, markdown)


if __name__ == "__main__":
    main()
