"""Lowering agreement on trained models: ``check`` of the NumPy reference against the torch model
on the whole SynDigits-LT (gamma 50) test set, for several methods, bit widths and models.

Each model follows the paper's recipe, shortened: full-precision pretraining (logit-adjusted
loss, batch 32, cosine, 4 epochs; MobileNetV2, ~6x slower per epoch here, 2), then
quantization-aware training from it (2 epochs, lr 0.01; MobileNetV2 1; ClimbQ+ uses its HomoVar
loss). Runs are kept under ``--runs`` and reused when finished, so
the script resumes after an interruption. For the 4-bit ClimbQ+ ResNet-20 the int8 classifier
head is checked too (its accuracy effect against the float head).

Usage::

    .venv/bin/python -m bench.lowering_check [--runs runs/lowering] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench._common import (
    DEFAULT_OUT,
    REPO_ROOT,
    markdown_table,
    provenance_markdown,
    run_header,
    warn_if_busy,
    write_results,
)
from climbq_deploy.check import check_run
from climbq_deploy.data.dataset import save_dataset
from climbq_deploy.data.syndigits import build_syndigits
from climbq_deploy.train.config import SHORT_FP32_PRETRAINING, SHORT_QAT, TrainConfig
from climbq_deploy.train.loop import train

NAME = "lowering_check"
# (name, arch, method, bits, head)
MODELS = [
    ("resnet20-climbq+-w4a4", "resnet20", "climbq+", 4, "float"),
    ("resnet20-climbq+-w4a4", "resnet20", "climbq+", 4, "int8"),
    ("resnet20-climbq+-w2a2", "resnet20", "climbq+", 2, "float"),
    ("resnet20-uniform-w4a4", "resnet20", "uniform", 4, "float"),
    ("mobilenetv2-climbq+-w4a4", "mobilenetv2", "climbq+", 4, "float"),
    ("mobilenetv2-climbq+-w2a2", "mobilenetv2", "climbq+", 2, "float"),
]


def ensure_run(config: TrainConfig, out: Path) -> dict[str, Any]:
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    return train(config, out, resume=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=REPO_ROOT / "runs" / "lowering")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    data = args.runs / "syndigits-lt-g50"
    if not (data / "meta.json").is_file():
        save_dataset(build_syndigits(50, seed=0), data)
    load = warn_if_busy()
    records, rows = [], []
    for name, arch, method, bits, head in MODELS:
        fp = args.runs / f"{arch}-fp32"
        fp_epochs, qat_epochs = (4, 2) if arch == "resnet20" else (2, 1)  # MobileNetV2: ~6x
        ensure_run(
            TrainConfig(str(data), arch=arch, **{**SHORT_FP32_PRETRAINING, "epochs": fp_epochs}), fp
        )
        run = args.runs / name
        metrics = ensure_run(
            TrainConfig(
                str(data),
                arch=arch,
                method=method,
                wbits=bits,
                abits=bits,
                init=str(fp),
                **{**SHORT_QAT, "epochs": qat_epochs},
            ),
            run,
        )
        began = time.perf_counter()
        record = check_run(run, head=head, progress=False)
        record["check_seconds"] = time.perf_counter() - began
        record["train_top1"] = metrics["top1"]
        record["model"] = name
        records.append(record)
        rows.append(
            (
                name,
                head,
                record["n_images"],
                f"{record['code_agreement']:.6f}",
                f"{record['top1_agreement']:.4f}",
                f"{record['max_abs_logit_diff']:.2e}",
                f"{record['ref_top1']:.2f}",
                f"{record['torch_top1']:.2f}",
                f"{record['torch_fp32_top1']:.2f}",
                f"{record['torch_fp32_top1_agreement']:.4f}",
                record["first_divergent_layer"],
            )
        )
        print(rows[-1], flush=True)
    header = run_header(load)
    payload = {**header, "dataset": str(data), "records": records}
    markdown = (
        "# Lowering check: NumPy integer reference vs the trained torch model\n\n"
        "SynDigits-LT gamma 50 (seed 0), whole balanced test set. `torch` = the trained model "
        "in float64 on the program's quantized input (the comparison that isolates the "
        "lowering); `torch fp32` = the trained model as evaluated in training (float32, raw "
        "input).\n\n"
        + markdown_table(
            (
                "model",
                "head",
                "images",
                "code agreement",
                "top-1 agreement",
                "max |logit diff|",
                "ref top-1 %",
                "torch top-1 %",
                "torch fp32 top-1 %",
                "ref vs torch fp32 top-1 agreement",
                "first divergent layer",
            ),
            rows,
        )
        + "\n\n"
        + provenance_markdown(header)
    )
    write_results(args.out, NAME, payload, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
