"""uint8-input models (the default model contract, issue 42 item 3) against the NumPy reference
on the whole SynDigits-LT test set: TFLite under XNNPACK and ONNX under ONNX Runtime.

For each (run, target, form) of :data:`CHECKS`:

1. ``climbq export RUN --target T <form options> --out SCRATCH/model.<ext> --golden 0``
   (default ``--input uint8``); the file's own input is read back (LiteRT's input details /
   the ONNX graph input) and its ``climbq_contract`` metadata, so the record says what was
   checked: a uint8 ``(N, H, W, 3)`` image input, normalised inside the model.
2. ``climbq check RUN --target T <form options> --artifact SCRATCH/model.<ext> --json``:
   the runner feeds the uint8 test images as they are, and every activation code and the
   top-1 of every image are compared with the NumPy reference of the file's program
   (``exact_match``), beside the torch model.

Each check's record is kept in ``--records`` (``--keep`` reuses them, ``--collect`` only
gathers them); the table goes to ``bench/results/uint8_contract_check.{json,md}``.

Usage::

    .venv/bin/python -m bench.uint8_contract_check [--runs runs/lowering] [--only RUN ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench._common import (
    DEFAULT_OUT,
    REPO_ROOT,
    git_commit,
    markdown_table,
    provenance_markdown,
    run_header,
    utc_timestamp,
    warn_if_busy,
    write_results,
)
from climbq_deploy.fileio import write_json

NAME = "uint8_contract_check"
# (run, target, form options, label): ResNet-20 4-bit on both TFLite forms XNNPACK runs and
# the ONNX Runtime forms ort (fastest) and qdq (the TensorRT file); then the others as time
# allows (each check covers 2000 images, with the torch model beside it).
CHECKS: list[tuple[str, str, tuple[str, ...], str]] = [
    (run, target, options, label)
    for run in ("resnet20-climbq+-w4a4", "resnet20-climbq+-w2a2", "mobilenetv2-climbq+-w4a4")
    for target, options, label in (
        ("tflite", ("--ops", "builtin", "--kernels", "xnnpack"), "tflite builtin xnnpack"),
        ("tflite", ("--ops", "climbq", "--kernels", "xnnpack"), "tflite climbq (fused) xnnpack"),
        ("tensorrt", ("--form", "ort", "--runtime", "onnxruntime"), "onnx ort onnxruntime"),
        ("tensorrt", ("--form", "qdq", "--runtime", "onnxruntime"), "onnx qdq onnxruntime"),
    )
]
SUFFIX = {"tflite": ".tflite", "tensorrt": ".onnx"}


def climbq(*args: str) -> str:
    """``python -m climbq_deploy ARGS``'s standard output (CalledProcessError on failure)."""
    command = [sys.executable, "-m", "climbq_deploy", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def model_input(path: Path) -> dict[str, Any]:
    """The file's own input (name, dtype, shape, shape signature) and its contract."""
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        from climbq_deploy.targets.tflite.reader import read_contract

        detail = Interpreter(model_content=path.read_bytes()).get_input_details()[0]
        given = {
            "name": detail["name"],
            "dtype": detail["dtype"].__name__,
            "shape": [int(d) for d in detail["shape_signature"]],
        }
        return {"model_input": given, "contract": read_contract(path.read_bytes(), path)}
    import onnx
    from onnx import helper

    from climbq_deploy.targets.tensorrt.export import read_contract

    model = onnx.load(path)
    first = model.graph.input[0]
    kind = first.type.tensor_type
    given = {
        "name": first.name,
        "dtype": str(helper.tensor_dtype_to_np_dtype(kind.elem_type)),
        "shape": [d.dim_param or d.dim_value for d in kind.shape.dim],
    }
    return {"model_input": given, "contract": read_contract(model, path)}


def check_one(run_dir: Path, target: str, options: tuple[str, ...]) -> dict[str, Any]:
    """Export with the default input, read its input back, check it on the whole test set."""
    with tempfile.TemporaryDirectory(prefix="uint8-contract-") as scratch:
        artifact = Path(scratch) / f"model{SUFFIX[target]}"
        run_only = ("--kernels", "--runtime")  # how the file is run, not what is written
        export_options = [
            o for i, o in enumerate(options) if o not in run_only and options[i - 1] not in run_only
        ]
        climbq(
            "export",
            str(run_dir),
            "--target",
            target,
            *export_options,
            "--out",
            str(artifact),
            "--golden",
            "0",
        )
        described = model_input(artifact)
        record = json.loads(
            climbq(
                "check",
                str(run_dir),
                "--target",
                target,
                *options,
                "--artifact",
                str(artifact),
                "--json",
            )
        )
    record.update(described)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=REPO_ROOT / "runs" / "lowering")
    parser.add_argument(
        "--records", type=Path, default=REPO_ROOT / "runs" / "uint8_contract_checks"
    )
    parser.add_argument("--only", nargs="*", default=None, help="run names (default: all)")
    parser.add_argument("--labels", nargs="*", default=None, help="check labels (default: all)")
    parser.add_argument("--keep", action="store_true", help="reuse records; run the missing")
    parser.add_argument("--collect", action="store_true", help="only gather existing records")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    args.records.mkdir(parents=True, exist_ok=True)
    load = warn_if_busy()
    records, rows, missing = [], [], []
    for run, target, options, label in CHECKS:
        selected = (not args.only or run in args.only) and (not args.labels or label in args.labels)
        stem = label.replace(" ", "_").replace("(", "").replace(")", "")
        path = args.records / f"{run}-{stem}.json"
        if selected and not args.collect and not (args.keep and path.is_file()):
            record = check_one(args.runs / run, target, options)
            record.update(measured_commit=git_commit(), measured_utc=utc_timestamp())
            record["command"] = " ".join(
                ["climbq check", f"runs/lowering/{run}", "--target", target, *options]
            )
            write_json(path, record)
            print(run, label, {k: record[k] for k in ("exact_match", "n_images")}, flush=True)
        if not path.is_file():
            missing.append(f"{run} {label}")
            continue
        record = json.loads(path.read_text())
        record.update(model=run, check=label)
        records.append(record)
        codes = sum(layer["codes"] for layer in record["layers"])
        given = record["model_input"]
        rows.append(
            (
                run,
                label,
                f"{given['dtype']} {given['shape']}",
                record["contract"]["input"]["normalization"]["applied"].split(",")[0],
                record["n_images"],
                f"{codes:,}",
                record["exact_match"],
                f"{record['reference_max_abs_logit_diff']:.1e}",
                f"{record['ref_top1']:.2f}",
                f"{record['torch_top1']:.2f}",
                f"{record['seconds']:.0f}",
                (record.get("measured_commit") or "?")[:7],
            )
        )
    header = run_header(load)
    markdown = (
        "# uint8-input models against the NumPy reference: whole SynDigits-LT gamma 50 test "
        "set\n\n"
        "Each file exported with the default model contract (`--input uint8`: uint8 NHWC "
        "images in, the normalisation and the integer input step inside the model, exactly; "
        "float32 logits out), then `climbq check RUN --target T ... --artifact FILE --json`: "
        "the runner feeds the uint8 test images as they are; `exact_match` means every "
        "activation code of every image and every top-1 equal the NumPy reference of the "
        "file's program (which quantizes the same images on the host with "
        "`kernels.ops.input_quant`). `codes compared`: activation codes per check (all "
        "layers, all images). `model input`: the file's own input tensor (dtype, shape "
        "signature; -1 or N: the open batch axis).\n\n"
        + markdown_table(
            (
                "model",
                "target / form / runtime",
                "model input",
                "normalisation",
                "images",
                "codes compared",
                "exact_match",
                "max logit diff vs reference",
                "deployed top-1 %",
                "torch top-1 %",
                "check seconds",
                "measured at commit",
            ),
            rows,
        )
        + "\n\nEach row is one record in `runs/uint8_contract_checks/` (its own `command`, "
        "commit and time are in the JSON), written by this script's invocations with `--keep` "
        "and gathered by the one below; the machine and load are that invocation's.\n\nNot run: "
        + (", ".join(missing) or "none")
        + ".\n\n"
        + provenance_markdown(header)
    )
    write_results(args.out, NAME, {**header, "records": records, "missing": missing}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
