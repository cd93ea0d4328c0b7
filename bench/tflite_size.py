"""Where the bytes of a ClimbQ ``.tflite`` go, int8 filters against packed INT4 filters.

For each run: ``climbq export --target tflite`` with ``--weights int8`` and ``--weights int4``,
then every byte of each file is put in one category (tensor names say what a constant is):

- ``filters``: the conv / depthwise filters (int8, or packed INT4 two per byte);
- ``thresholds``: the per-channel integer thresholds of the CDF activation (int16 where the
  16x8 conv output is compared, int32 where a sum is formed first: the INT4 sum-term layers);
- ``biases, sum terms``: conv biases, the window-sum filters and biases of the INT4 split;
- ``head``: the float32 classifier;
- ``other constants``: shapes, axes, stem digit constants;
- ``quantization``: per-tensor / per-channel scales and zero points;
- ``program``: the ``climbq_program`` metadata (the whole ``.climbq`` program: what ``climbq
  check`` compares LiteRT with, and what makes a ``.tflite`` self-describing);
- ``structure``: the rest (tensor and operator tables, names, alignment).

Ratios: ``file`` (the issue's measure: INT4 file / int8 file), ``without program`` (both files
without the metadata), ``filters only`` (the INT4 file if only its filters differed from the int8
file's: the floor of this lowering, whatever else is trimmed).

Usage::

    .venv/bin/python -m bench.tflite_size runs/lowering/resnet20-climbq+-w4a4 ...
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import (
    DEFAULT_OUT,
    markdown_table,
    provenance_markdown,
    run_header,
    write_results,
)
from climbq_deploy.export import load_run, lower_run
from climbq_deploy.targets.tflite import TfliteTarget

NAME = "tflite_size"
CATEGORIES = (
    "filters",
    "thresholds",
    "biases, sum terms",
    "head",
    "other constants",
    "quantization",
    "program",
    "structure",
)
FLOAT32, INT16, INT32 = 0, 7, 2  # TFLite TensorType codes


def _category(name: str, kind: int) -> str:
    leaf = name.rsplit("/", 1)[-1]
    if kind == FLOAT32 and leaf in ("weight", "bias"):
        return "head"
    if leaf.startswith("weight"):  # weight, weight_int4
        return "filters"
    if leaf == "thresholds":
        return "thresholds"
    if leaf in ("bias", "window_ones", "window_bias"):
        return "biases, sum terms"
    return "other constants"


def breakdown(content: bytes) -> dict[str, Any]:
    """Bytes per category of one ``.tflite`` (module docstring), plus threshold counts."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    sizes = dict.fromkeys(CATEGORIES, 0)
    seen: set[int] = set()
    thresholds = {"int16": 0, "int32": 0, "int32 fitting int16": 0}
    for tensor in model.subgraphs[0].tensors:
        q = tensor.quantization
        if q is not None:
            sizes["quantization"] += 4 * len(q.scale if q.scale is not None else [])
            sizes["quantization"] += 8 * len(q.zeroPoint if q.zeroPoint is not None else [])
        data = model.buffers[tensor.buffer].data
        if data is None or tensor.buffer in seen:
            continue
        seen.add(tensor.buffer)
        category = _category(tensor.name.decode(), tensor.type)
        sizes[category] += len(data)
        if category == "thresholds":
            if tensor.type == INT16:
                thresholds["int16"] += len(data) // 2
            elif tensor.type == INT32:
                values = np.frombuffer(bytes(data), "<i4")
                thresholds["int32"] += values.size
                thresholds["int32 fitting int16"] += int(
                    np.count_nonzero((values >= -(2**15)) & (values < 2**15))
                )
    for entry in model.metadata or []:
        sizes["program"] += len(model.buffers[entry.buffer].data)
    sizes["structure"] = len(content) - sum(sizes.values())
    return {"bytes": len(content), "categories": sizes, "thresholds": thresholds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    records, rows, ratio_rows = [], [], []
    for run_dir in args.runs:
        run = load_run(run_dir)
        graph = lower_run(run, input_bits=TfliteTarget.input_bits)
        files = {}
        with tempfile.TemporaryDirectory() as tmp:
            for weights in ("int8", "int4"):
                path = TfliteTarget(weights=weights).export(graph, Path(tmp) / f"{weights}.tflite")
                files[weights] = breakdown(path.read_bytes())
        int8, int4 = files["int8"], files["int4"]
        c8, c4 = int8["categories"], int4["categories"]
        ratios = {
            "file": int4["bytes"] / int8["bytes"],
            "without program": (int4["bytes"] - c4["program"]) / (int8["bytes"] - c8["program"]),
            "filters only": (int8["bytes"] - c8["program"] - c8["filters"] + c4["filters"])
            / (int8["bytes"] - c8["program"]),
        }
        label = f"{run.config.arch} {run.config.method} W{run.config.wbits}A{run.config.abits}"
        records.append(
            {"run": str(run_dir), "model": label, "int8": int8, "int4": int4, "ratios": ratios}
        )
        for weights, record in files.items():
            cats = record["categories"]
            rows.append(
                [label, weights, f"{record['bytes']:,}", *(f"{cats[c]:,}" for c in CATEGORIES)]
            )
        t = int4["thresholds"]
        kinds = f"{t['int16']:,} / {t['int32']:,} ({t['int32 fitting int16']:,})"
        ratio_rows.append([label, *(f"{ratios[k]:.3f}" for k in ratios), kinds])
    header = run_header()
    lines = [
        "# ClimbQ `.tflite` size: int8 filters vs packed INT4 filters, byte by byte",
        "",
        "Categories and ratios: see bench/tflite_size.py. The issue's goal is INT4 file <= 0.6x "
        "the int8-filter file.",
        "",
        markdown_table(["model", "filters", "bytes", *CATEGORIES], rows),
        "",
        "## Ratios (INT4 / int8)",
        "",
        markdown_table(
            [
                "model",
                "file",
                "without program",
                "filters only",
                "INT4 file thresholds int16 / int32 (int32 values that fit int16)",
            ],
            ratio_rows,
        ),
    ]
    write_results(
        args.out,
        NAME,
        {**header, "records": records},
        "\n".join(lines) + "\n\n" + provenance_markdown(header),
    )


if __name__ == "__main__":
    main()
