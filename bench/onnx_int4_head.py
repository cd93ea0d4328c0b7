"""INT4 vs INT8 weight storage of one program (``--head int4``) under ONNX Runtime, whole test set.

For each run: lower with the 4-bit head in the program (``climbq export --head int4``), write
the TensorRT-bound ONNX with INT8 and with INT4 head weights, run both on every test image and
compare every logit, and each against the NumPy reference of the program (top-1).

Usage::

    .venv/bin/python -m bench.onnx_int4_head runs/lowering/resnet20-climbq+-w4a4 ...
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bench._common import (
    DEFAULT_OUT,
    markdown_table,
    provenance_markdown,
    run_header,
    warn_if_busy,
    write_results,
)
from climbq_deploy.data.dataset import load_dataset
from climbq_deploy.export import load_run, lower_run
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.targets.tensorrt import OnnxRuntimeRunner, TensorrtTarget

NAME = "onnx_int4_head"


def logits(runner: OnnxRuntimeRunner, images: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [runner.run(images[i : i + 64]).logits for i in range(0, len(images), 64)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    load = warn_if_busy()
    records, rows = [], []
    for run_dir in args.runs:
        run = load_run(run_dir)
        dataset = load_dataset(run.config.data)
        images, labels = dataset.test_images, dataset.test_labels
        graph = lower_run(run, head="int4", input_bits=TensorrtTarget.input_bits)
        out: dict[str, np.ndarray] = {}
        sizes: dict[str, int] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for weights in ("int8", "int4"):
                path = TensorrtTarget("onnxruntime", weights).export(
                    graph, Path(tmp) / f"{weights}.onnx"
                )
                sizes[weights] = path.stat().st_size
                out[weights] = logits(OnnxRuntimeRunner(path, threads=2), images)
        reference = ReferenceModel(graph).predict(images).argmax(1)
        record = {
            "run": str(run_dir),
            "n_images": len(labels),
            "identical_logits": bool(np.array_equal(out["int8"], out["int4"])),
            "max_abs_logit_diff": float(np.abs(out["int8"] - out["int4"]).max()),
            "int4_vs_reference_top1_agreement": float(np.mean(out["int4"].argmax(1) == reference)),
            "int4_top1": float(100 * np.mean(out["int4"].argmax(1) == labels)),
            "int8_top1": float(100 * np.mean(out["int8"].argmax(1) == labels)),
            "bytes": sizes,
        }
        records.append(record)
        rows.append(
            (
                run_dir.name,
                record["n_images"],
                record["identical_logits"],
                f"{record['max_abs_logit_diff']:.1e}",
                f"{record['int4_vs_reference_top1_agreement']:.4f}",
                f"{record['int8_top1']:.2f}",
                f"{record['int4_top1']:.2f}",
                f"{sizes['int8']} / {sizes['int4']}",
            )
        )
    header = run_header(load)
    markdown = (
        "# One program (`--head int4`), INT8 vs INT4 head storage, ONNX Runtime, whole test "
        "set\n\nThe 4-bit head is part of the program, so both files compute the same numbers; "
        "the convs stay INT8 Q/DQ in both (TensorRT has no INT4 convolution), so the files "
        "differ only in the head.\n\n"
        + markdown_table(
            (
                "run",
                "images",
                "identical logits",
                "max logit diff",
                "INT4 top-1 agreement vs reference",
                "INT8 top-1 %",
                "INT4 top-1 %",
                "bytes INT8 / INT4",
            ),
            rows,
        )
        + "\n\n"
        + provenance_markdown(header)
    )
    write_results(args.out, NAME, {**header, "records": records}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
