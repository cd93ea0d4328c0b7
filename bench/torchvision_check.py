"""torchvision's ResNet-18 and MobileNetV2 as a user's own CNNs, end to end through the CLI.

For each model: ``climbq train --model bench/torchvision_models.py:FACTORY`` (ClimbQ+ 4-bit
weights and activations, first conv quantized, float head; ``--epochs`` epochs) on
SynDigits-LT rendered at 64 x 64 (gamma 50), then ``climbq check`` on the whole test set for
every target: the NumPy reference, TFLite (builtin forms and the fused custom op) and the
TensorRT-bound ONNX under ONNX Runtime. Each record is the check's JSON: ``exact_match`` (every
code and top-1 equal to the NumPy reference of the program) and ``top1_agreement`` against
torch float64 on the same input. Runs and datasets are kept under ``--work`` and reused.

Usage::

    .venv/bin/python -m bench.torchvision_check [--work runs/torchvision] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench._common import (
    DEFAULT_OUT,
    REPO_ROOT,
    markdown_table,
    provenance_markdown,
    run_header,
    write_results,
)

NAME = "torchvision_check"
MODELS = ("resnet18", "mobilenet_v2")
CHECKS = (
    ("numpy", []),
    ("tflite", ["--ops", "builtin"]),
    ("tflite", ["--ops", "climbq"]),
    ("tensorrt", []),
)


def climbq(*args: str) -> str:
    """Run the CLI as a user would; its stdout (stderr shown when it fails)."""
    command = [sys.executable, "-m", "climbq_deploy", *args]
    print("+ climbq", " ".join(args), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"climbq {' '.join(args)} failed with exit code {done.returncode}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "torchvision")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    work = args.work.resolve()
    data = work / "syndigits-lt-g50-64px"
    if not (data / "dataset.json").is_file() and not data.is_dir():
        climbq(
            "data", "syndigits", "--gamma", "50", "--size", "64", "--test-per-class",
            str(args.test_per_class), "--out", str(data),
        )  # fmt: skip
    records, rows = [], []
    for model in args.models:
        run = work / f"{model}-climbq+-w4a4"
        began = time.perf_counter()
        if not (run / "config.json").is_file():
            climbq(
                "train", "--data", str(data), "--model",
                f"{REPO_ROOT / 'bench' / 'torchvision_models.py'}:{model}", "--method", "climbq+",
                "--wbits", "4", "--abits", "4", "--epochs", str(args.epochs), "--batch-size", "64",
                "--out", str(run),
            )  # fmt: skip
        train_s = time.perf_counter() - began
        for target, options in CHECKS:
            began = time.perf_counter()
            record = json.loads(climbq("check", str(run), "--target", target, *options, "--json"))
            seconds = time.perf_counter() - began
            form = " ".join(options) or "-"
            record.update(model=model, target=target, form=form, wall_s=seconds)
            records.append(record)
            rows.append(
                (
                    model,
                    target,
                    form,
                    record["n_images"],
                    record.get("exact_match"),
                    f"{record['code_agreement']:.6f}",
                    f"{record['top1_agreement']:.4f}",
                    f"{record['ref_top1']:.2f}",
                    f"{record['torch_fp32_top1']:.2f}",
                    f"{seconds:.0f}",
                )
            )
            print(rows[-1], flush=True)
        print(f"{model}: trained in {train_s:.0f} s", flush=True)
    header = run_header()
    markdown = (
        "# torchvision models as users' CNNs, on every target\n\n"
        f"`torchvision.models.resnet18` and `mobilenet_v2` (`num_classes=10, weights=None`), "
        "quantized by `climbq train --model bench/torchvision_models.py:FACTORY` with ClimbQ+ "
        f"4-bit weights and activations, trained {args.epochs} epoch(s) on SynDigits-LT "
        "(gamma 50) rendered at 64 x 64, then `climbq check --target T --json` on the whole "
        "test set. `exact`: every code and top-1 equal to the NumPy reference of the program; "
        "`top-1 agreement`: the target's top-1 against torch float64 on the same input. "
        "One epoch trains little: the accuracy columns show the models run, not how well "
        "they classify.\n\n"
        + markdown_table(
            (
                "model",
                "target",
                "form",
                "images",
                "exact",
                "code agreement",
                "top-1 agreement",
                "target top-1 %",
                "torch fp32 top-1 %",
                "check s",
            ),
            rows,
        )
        + "\n"
        + provenance_markdown(header)
    )
    write_results(args.out, NAME, {**header, "records": records}, markdown)


if __name__ == "__main__":
    main()
