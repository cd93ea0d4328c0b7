"""Does bf16 autocast keep accuracy? The same recipes trained with ``--precision fp32`` and
``--precision bf16`` from the same seeds, final-epoch balanced top-1 side by side.

Recipes (SynDigits-LT gamma 50, the embedded default; ResNet-20): full-precision pretraining
(logit-adjusted loss, batch 32, lr 0.05 cosine, ``--epochs``) and 4-bit ClimbQ+ QAT from the
fp32-precision pretraining (2 epochs, lr 0.01), for ``--seeds`` seeds. Speed is measured in
``bench/train_speed.py``; this one is about accuracy only.

Usage::

    .venv/bin/python -m bench.bf16_accuracy [--epochs 4] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench._common import (
    DEFAULT_OUT,
    markdown_table,
    provenance_markdown,
    run_header,
    write_results,
)
from climbq_deploy.data.dataset import save_dataset
from climbq_deploy.data.syndigits import build_syndigits
from climbq_deploy.train.config import SHORT_FP32_PRETRAINING, SHORT_QAT, TrainConfig
from climbq_deploy.train.loop import train

NAME = "bf16_accuracy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = str(save_dataset(build_syndigits(50, seed=0, progress=False), root / "syn"))
        for seed in args.seeds:
            for precision in ("fp32", "bf16"):
                fp_dir = root / f"fp-{precision}-{seed}"
                fp_recipe = {**SHORT_FP32_PRETRAINING, "epochs": args.epochs}
                fp = train(
                    TrainConfig(data, seed=seed, precision=precision, **fp_recipe),
                    fp_dir,
                    progress=False,
                )
                q4 = train(
                    TrainConfig(
                        data,
                        method="climbq+",
                        wbits=4,
                        abits=4,
                        seed=seed,
                        precision=precision,
                        init=str(root / f"fp-fp32-{seed}"),
                        **SHORT_QAT,
                    ),
                    root / f"q4-{precision}-{seed}",
                    progress=False,
                )
                for recipe, metrics in (("fp32 pretraining", fp), ("4-bit ClimbQ+ QAT", q4)):
                    entry = results.setdefault(f"{recipe} | {precision}", {"top1": [], "few": []})
                    entry["top1"].append(metrics["top1"])
                    entry["few"].append(metrics["few"])
                print(seed, precision, fp["top1"], q4["top1"], flush=True)
    rows = [
        (
            *key.split(" | "),
            " / ".join(f"{v:.2f}" for v in r["top1"]),
            f"{statistics.median(r['top1']):.2f}",
            f"{statistics.median(r['few']):.2f}",
        )
        for key, r in results.items()
    ]
    header = run_header()
    payload = {**header, "epochs": args.epochs, "seeds": args.seeds, "results": results}
    markdown = (
        "# bf16 autocast vs fp32: final-epoch accuracy, SynDigits-LT gamma 50, ResNet-20\n\n"
        + markdown_table(
            ("recipe", "precision", "top-1 % per seed", "median top-1 %", "median few-shot %"), rows
        )
        + "\n\n"
        + provenance_markdown(header)
    )
    write_results(args.out, NAME, payload, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
