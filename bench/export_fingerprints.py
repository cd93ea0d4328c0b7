"""sha256 of every exported file of the built-in models, through the CLI only.

A refactor of the lowering or the targets must not change what is written. Run this before
and after the change, on the same run folders, and compare the two JSON files:

    python -m bench.export_fingerprints --runs /tmp/fp-runs --make --out before.json
    ... change the code ...
    python -m bench.export_fingerprints --runs /tmp/fp-runs --out after.json
    diff before.json after.json      # empty: every export byte-identical

``--make`` renders a small SynDigits-LT (16 x 16) and trains short runs of the built-in models
(ResNet-20 ClimbQ+ 4/2-bit, uniform 4-bit, MobileNetV2 ClimbQ+ 4-bit, PTQ int8, ClimbQ-PTQ);
without it the folders are reused, so both sides export the very same checkpoints. Only the
``climbq`` command is used, so the script does not depend on module names.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

CLIMBQ = [sys.executable, "-m", "climbq_deploy"]

RUNS = {
    "r20-climbq+-w4a4": [
        "--arch",
        "resnet20",
        "--method",
        "climbq+",
        "--wbits",
        "4",
        "--abits",
        "4",
    ],
    "r20-climbq+-w2a2": [
        "--arch",
        "resnet20",
        "--method",
        "climbq+",
        "--wbits",
        "2",
        "--abits",
        "2",
    ],
    "r20-uniform-w4a4": [
        "--arch",
        "resnet20",
        "--method",
        "uniform",
        "--wbits",
        "4",
        "--abits",
        "4",
    ],
    "mbv2-climbq+-w4a4": [
        "--arch",
        "mobilenetv2",
        "--method",
        "climbq+",
        "--wbits",
        "4",
        "--abits",
        "4",
    ],
}
PTQ = {"ptq-int8": "ptq-int8", "climbq-ptq": "climbq-ptq"}

# (file name, export options)
EXPORTS = [
    ("model.climbq", ["--target", "numpy"]),
    ("model.unpacked.climbq", ["--target", "numpy", "--no-pack"]),
    ("model.head-int8.climbq", ["--target", "numpy", "--head", "int8"]),
    ("model.tflite", ["--target", "tflite"]),
    ("model.int4.tflite", ["--target", "tflite", "--weights", "int4"]),
    ("model.onnx", ["--target", "tensorrt"]),
    ("model.int4.onnx", ["--target", "tensorrt", "--weights", "int4"]),
    ("model.head-int4.int4.onnx", ["--target", "tensorrt", "--weights", "int4", "--head", "int4"]),
]


def climbq(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLIMBQ, *args], capture_output=True, text=True)
    return result


def make(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    data = root / "syn"
    if not (data / "data.npz").is_file():
        out = climbq("data", "syndigits", "--gamma", "50", "--size", "16", "--out", str(data))
        out.check_returncode()
    common = ["--data", str(data), "--batch-size", "64", "--seed", "0"]
    fp = root / "fp"
    for arch in ("resnet20", "mobilenetv2"):
        folder = fp if arch == "resnet20" else root / "fp-mbv2"
        if not (folder / "metrics.json").is_file():
            climbq("train", *common, "--arch", arch, "--epochs", "2", "--out", str(folder))
    for name, spec in RUNS.items():
        folder = root / name
        start = root / ("fp-mbv2" if "mbv2" in name else "fp")
        if not (folder / "metrics.json").is_file():
            res = climbq("train", *common, *spec, "--epochs", "1", "--init", str(start),
                         "--out", str(folder))  # fmt: skip
            if res.returncode:
                raise SystemExit(res.stderr)
    for name, method in PTQ.items():
        folder = root / name
        if not (folder / "metrics.json").is_file():
            res = climbq("calibrate", str(fp), "--method", method, "--calib-size", "200",
                         "--out", str(folder))  # fmt: skip
            if res.returncode:
                raise SystemExit(res.stderr)


def fingerprints(root: Path) -> dict[str, str]:
    out_dir = root / "exports"
    shutil.rmtree(out_dir, ignore_errors=True)
    hashes: dict[str, str] = {}
    for run in [*RUNS, *PTQ]:
        for file_name, options in EXPORTS:
            target = out_dir / run / file_name
            target.parent.mkdir(parents=True, exist_ok=True)
            res = climbq("export", str(root / run), *options, "--out", str(target))
            key = f"{run}/{file_name}"
            if res.returncode:
                hashes[key] = "refused: " + res.stderr.strip().splitlines()[-1]
            else:
                hashes[key] = hashlib.sha256(target.read_bytes()).hexdigest()
    return hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="folder of the run folders")
    parser.add_argument("--make", action="store_true", help="render the data and train the runs")
    parser.add_argument("--out", type=Path, required=True, help="JSON file of sha256 per export")
    args = parser.parse_args()
    if args.make:
        make(args.runs)
    hashes = fingerprints(args.runs)
    args.out.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    refused = sum(v.startswith("refused") for v in hashes.values())
    print(f"{len(hashes)} exports ({refused} refused) -> {args.out}")


if __name__ == "__main__":
    main()
