"""TFLite target against the NumPy reference and the torch model, whole SynDigits-LT test set.

Runs ``climbq check RUN --target tflite --ops O --kernels K --json`` for the trained runs of
``bench/lowering_check.py`` (kept under ``--runs``) and collects the records; with
``--collect`` it only gathers records already written to ``runs/tflite_checks/``, with
``--keep`` it runs only the checks that have no record there yet.

Usage::

    .venv/bin/python -m bench.tflite_check [--runs runs/lowering] [--collect]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from bench._common import (
    DEFAULT_OUT,
    REPO_ROOT,
    git_commit,
    markdown_table,
    provenance_markdown,
    run_header,
    utc_timestamp,
    write_results,
)
from climbq_deploy.fileio import write_json

NAME = "tflite_check"
RUNS = (
    "resnet20-climbq+-w4a4",
    "resnet20-climbq+-w2a2",
    "mobilenetv2-climbq+-w4a4",
    "mobilenetv2-climbq+-w2a2",
)
# --ops form x kernels: the builtin forms on every LiteRT kernel set; the fused custom op runs
# through LiteRT's C API (XNNPACK) only
CHECKS = [
    (run, ops, kernels)
    for run in RUNS
    for ops, kernels in [
        *(("builtin", k) for k in ("xnnpack", "ref", "optimized")),
        ("climbq", "xnnpack"),
        *(("int16", k) for k in ("ref", "xnnpack", "optimized")),
    ]
]


def _relative(path: str) -> str:
    """A run folder relative to the repository when it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=REPO_ROOT / "runs" / "lowering")
    parser.add_argument("--records", type=Path, default=REPO_ROOT / "runs" / "tflite_checks")
    parser.add_argument("--collect", action="store_true")
    parser.add_argument(
        "--keep", action="store_true", help="reuse records already written; run the missing checks"
    )
    parser.add_argument("--only", nargs="*", default=None, help="run names (default: all)")
    parser.add_argument(
        "--ops", nargs="*", default=None, help="--ops forms to check (default: all)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    args.records.mkdir(parents=True, exist_ok=True)
    header = run_header()
    records, rows, missing = [], [], []
    for run, ops, kernels in CHECKS:
        # the int16 form's records keep their earlier names (it was the only form)
        stem = f"{run}-{kernels}" if ops == "int16" else f"{run}-{ops}-{kernels}"
        path = args.records / f"{stem}.json"
        if (args.only and run not in args.only) or (args.ops and ops not in args.ops):
            continue
        if not args.collect and not (args.keep and path.is_file()):
            command = [
                sys.executable,
                "-m",
                "climbq_deploy",
                "check",
                str(args.runs / run),
                "--target",
                "tflite",
                "--kernels",
                kernels,
                "--ops",
                ops,
                "--json",
            ]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            stamp = {"measured_commit": git_commit(), "measured_utc": utc_timestamp()}
            write_json(path, {**json.loads(output), **stamp})
        if not path.is_file():  # --collect of a check never run
            missing.append(f"{run} {ops} {kernels}")
            continue
        record = json.loads(path.read_text())
        record["model"] = run
        measured = record.get("measured_commit")
        when = (
            measured[:7]
            if measured
            else "not recorded (file of "
            + (
                dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).strftime(
                    "%Y-%m-%d %H:%M UTC)"
                )
            )
        )
        records.append(record)
        rows.append(
            (
                _relative(record["run"]),
                ops,
                kernels,
                record["n_images"],
                record["exact_match"],
                f"{record['code_agreement']:.6f}",
                f"{record['top1_agreement']:.4f}",
                f"{record['ref_top1']:.2f}",
                f"{record['torch_top1']:.2f}",
                f"{record['torch_fp32_top1']:.2f}",
                f"{record['reference_max_abs_logit_diff']:.1e}",
                f"{abs(record['ref_top1'] - record['torch_fp32_top1']):.2f}",
                f"{record['seconds']:.0f}",
                when,
            )
        )
    markdown = (
        "# TFLite (LiteRT) target: whole SynDigits-LT gamma 50 test set\n\n"
        "`exact_match`: every activation code and the top-1 of LiteRT equal the NumPy reference "
        "of the same (20-bit-input) program. `torch`: the trained model in float64 on that "
        "input; `torch fp32`: as evaluated in training (float32, raw input).\n\n"
        + markdown_table(
            (
                "model",
                "ops",
                "kernels",
                "images",
                "exact_match",
                "code agreement vs torch",
                "top-1 agreement vs torch",
                "tflite top-1 %",
                "torch top-1 %",
                "torch fp32 top-1 %",
                "max logit diff vs reference",
                "deployed gap to torch fp32 (points)",
                "check seconds",
                "measured at commit",
            ),
            rows,
        )
        + "\n\nRecords produced by `climbq check RUN --target tflite --ops O --kernels K "
        "--json` (one per row; RUN as in the first column); this file collects them. Not run: "
        + (", ".join(missing) or "none")
        + ".\n\n"
        + provenance_markdown(header)
    )
    write_results(args.out, NAME, {**header, "records": records, "missing": missing}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
