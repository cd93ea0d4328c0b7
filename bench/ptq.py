"""Post-training quantization on long-tailed data: PTQ int8 / PTQ w4a4 / ClimbQ-PTQ w4a4, each
calibrated on a natural (long-tailed) and a class-balanced calibration set, beside the
quantization-aware ClimbQ+ run, all deployed through TFLite (LiteRT) with agreement figures.

For each ``--fp-run`` / ``--qat-run`` pair (a full-precision ResNet-20 and a 4-bit ClimbQ+ QAT
run on the same dataset; ``--qat-run -`` when there is none) every recipe is calibrated with
``climbq_deploy.calibration.calibrate`` (the library behind ``climbq calibrate``) into
``--work/<dataset>/<row>/``, evaluated on the whole balanced test set (top-1, many/medium/few),
and checked with ``check_run(target="tflite")`` on ``--limit`` evenly spaced test images. Finished
rows (``metrics.json``, ``check-tflite.json``) are reused, so the script resumes; ``--rows``
runs only rows whose id contains one of the given strings (to keep each invocation short).

Usage::

    .venv/bin/python -m bench.ptq --fp-run runs/lowering/resnet20-fp32 \\
        --qat-run runs/lowering/resnet20-climbq+-w4a4 [--fp-run CIFAR_FP --qat-run CIFAR_QAT]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
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
from climbq_deploy.calibration import CalibrateConfig, calibrate
from climbq_deploy.check import check_run
from climbq_deploy.data.dataset import read_meta
from climbq_deploy.export import load_run, lower_run
from climbq_deploy.fileio import write_json
from climbq_deploy.targets import get_target

NAME = "ptq"
# (row id, recipe, range rule or None)
RECIPES = [
    ("ptq-int8-minmax", "ptq-int8", "minmax"),
    ("ptq-int8-p99.99", "ptq-int8", "percentile"),
    ("ptq-w4a4-minmax", "ptq-w4a4", "minmax"),
    ("ptq-w4a4-p99.99", "ptq-w4a4", "percentile"),
    ("climbq-ptq-w4a4", "climbq-ptq", None),
]
CALIBS = ("natural", "balanced")
EXPECTED = ("syndigits-lt gamma 50", "cifar10-lt gamma 50")
CHECK_KEYS = (
    "n_images",
    "top1_agreement",
    "code_agreement",
    "exact_match",
    "ref_top1",
    "torch_top1",
    "torch_fp32_top1",
    "first_divergent_layer",
    "kernels",
    "seconds",
)


def dataset_label(run_dir: Path, display: bool = True) -> str:
    """``<name> gamma <g>``; a fixed list without a recorded gamma (the authors' CIFAR-10-LT)
    gets ``floor(max / min)`` of its training counts when ``display`` (5000 / 99 -> 50). The
    work folder uses ``display=False`` (the recorded gamma only), as earlier runs did."""
    run = load_run(run_dir)
    meta = read_meta(run.config.data)
    gamma = meta.get("info", {}).get("gamma")
    train = meta.get("counts", {}).get("train") or []
    if display and gamma is None and train and min(train) > 0:
        gamma = max(train) // min(train)
    return f"{meta['name']} gamma {gamma:g}" if gamma is not None else meta["name"]


def tflite_record(
    run_dir: Path, limit: int, kernels: str, force: bool, keep: Path | None = None
) -> dict[str, Any]:
    """``check_run`` on TFLite, cached in ``keep`` (default ``run_dir``); the artifact is
    exported there too, so a reference run's own folder is never written to."""
    keep = keep or run_dir
    path = keep / f"check-tflite-{kernels}-{limit}.json"
    if path.is_file() and not force:
        return json.loads(path.read_text())
    keep.mkdir(parents=True, exist_ok=True)
    target = get_target("tflite", kernels)
    artifact = keep / f"model{target.suffix}"
    target.export(lower_run(load_run(run_dir), input_bits=target.input_bits), artifact)
    record = check_run(
        run_dir, target="tflite", artifact=artifact, limit=limit, kernels=kernels, progress=False
    )
    record.pop("layers", None)
    write_json(path, record)
    return record


def onnx_record(run_dir: Path, limit: int, force: bool, keep: Path | None = None) -> dict[str, Any]:
    """``check_run`` on the TensorRT target's ONNX under ONNX Runtime, cached like
    :func:`tflite_record`."""
    keep = keep or run_dir
    path = keep / f"check-tensorrt-onnxruntime-{limit}.json"
    if path.is_file() and not force:
        return json.loads(path.read_text())
    keep.mkdir(parents=True, exist_ok=True)
    target = get_target("tensorrt", "onnxruntime")
    artifact = keep / f"model{target.suffix}"
    target.export(lower_run(load_run(run_dir), input_bits=target.input_bits), artifact)
    record = check_run(
        run_dir,
        target="tensorrt",
        artifact=artifact,
        limit=limit,
        kernels="onnxruntime",
        progress=False,
    )
    record.pop("layers", None)
    write_json(path, record)
    return record


def numpy_record(run_dir: Path, limit: int, force: bool) -> dict[str, Any]:
    """The pure integer program (NumPy reference) against torch, cached in ``run_dir``."""
    path = run_dir / f"check-numpy-{limit}.json"
    if path.is_file() and not force:
        return json.loads(path.read_text())
    print(f"check numpy {run_dir.name}", file=sys.stderr, flush=True)
    record = check_run(run_dir, target="numpy", artifact=None, limit=limit, progress=False)
    record = {k: record.get(k) for k in CHECK_KEYS if k in record}
    write_json(path, record)
    return record


def group_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    keep = ("top1", "many", "medium", "few", "per_class")
    return {k: metrics.get(k) for k in keep}


def calibrated_row(
    fp_run: Path,
    work: Path,
    row: str,
    recipe: str,
    rule: str | None,
    calib: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Calibrate (each seed), evaluate, check seed 0's model on TFLite."""
    seeds = []
    for seed in args.seeds:
        out = work / f"{row}-{calib}-s{seed}"
        if (out / "metrics.json").is_file() and not args.force:
            metrics = json.loads((out / "metrics.json").read_text())
        else:
            print(f"calibrate {out.name}", file=sys.stderr, flush=True)
            config = CalibrateConfig(str(fp_run), recipe, calib, args.calib_size, rule, seed=seed)
            metrics = calibrate(config, out)
        seeds.append(
            {
                "seed": seed,
                "run": str(out),
                **group_figures(metrics),
                "calibration_counts": metrics["calibration"]["set"]["counts"],
                "seconds": metrics["seconds"],
            }
        )
    first = Path(seeds[0]["run"])
    print(f"check tflite {first.name}", file=sys.stderr, flush=True)
    deployed = tflite_record(first, args.limit, args.kernels, args.force or args.recheck)
    print(f"check onnx {first.name}", file=sys.stderr, flush=True)
    onnx = onnx_record(first, args.limit, args.force or args.recheck)
    pure = None
    if (deployed.get("code_agreement") or 0) < 1.0 and args.numpy_limit:
        pure = numpy_record(first, args.numpy_limit, args.force)
    mean = {
        k: statistics.fmean(s[k] for s in seeds)
        for k in ("top1", "many", "medium", "few")
        if all(s[k] is not None for s in seeds)
    }
    return {
        "row": row,
        "recipe": recipe,
        "range_rule": rule,
        "calib": calib,
        "wbits": 8 if recipe == "ptq-int8" else 4,
        "abits": 8 if recipe == "ptq-int8" else 4,
        **mean,
        "seeds": seeds,
        "tflite": {k: deployed.get(k) for k in CHECK_KEYS},
        "onnx": {k: onnx.get(k) for k in CHECK_KEYS},
        "numpy": pure,
    }


def reference_row(
    run_dir: Path, name: str, args: argparse.Namespace, keep: Path | None = None
) -> dict[str, Any]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    row = {
        "row": name,
        "recipe": name,
        "range_rule": None,
        "calib": None,
        "wbits": metrics["wbits"],
        "abits": metrics["abits"],
        "run": str(run_dir),
        "epochs": metrics.get("epochs"),
        **group_figures(metrics),
    }
    if keep is not None:
        print(f"check tflite {run_dir.name}", file=sys.stderr, flush=True)
        deployed = tflite_record(
            run_dir, args.limit, args.kernels, args.force or args.recheck, keep
        )
        row["tflite"] = {k: deployed.get(k) for k in CHECK_KEYS}
        print(f"check onnx {run_dir.name}", file=sys.stderr, flush=True)
        onnx = onnx_record(run_dir, args.limit, args.force or args.recheck, keep)
        row["onnx"] = {k: onnx.get(k) for k in CHECK_KEYS}
    return row


def _f(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        t = r.get("tflite") or {}
        o = r.get("onnx") or {}
        calib = r["calib"] or "–"
        rule = {"minmax": "min-max", "percentile": "p99.99"}.get(r["range_rule"] or "", "–")
        lines.append(
            (
                r["row"],
                f"w{r['wbits']}a{r['abits']}",
                calib,
                rule,
                _f(r.get("top1")),
                _f(r.get("many")),
                _f(r.get("medium")),
                _f(r.get("few")),
                t.get("n_images", "–"),
                t.get("exact_match", "–"),
                _f(t.get("top1_agreement"), 3),
                _f(t.get("code_agreement"), 4),
                _f(t.get("ref_top1")),
                _f(t.get("torch_top1")),
                o.get("exact_match", "–"),
                _f(o.get("top1_agreement"), 3),
                _f(o.get("ref_top1")),
            )
        )
    return markdown_table(
        (
            "model",
            "bits",
            "calibration",
            "range",
            "top-1 %",
            "many",
            "medium",
            "few",
            "tflite images",
            "tflite exact",
            "tflite top-1 agr.",
            "tflite code agr.",
            "tflite top-1 %",
            "torch top-1 %",
            "onnx exact",
            "onnx top-1 agr.",
            "onnx top-1 %",
        ),
        lines,
    )


def tail_key(rows: list[dict[str, Any]]) -> str:
    """``few`` where the dataset has few-shot classes (< 20 training images), else ``medium``
    (CIFAR-10-LT gamma 50: its rarest class has 100)."""
    return "few" if any(r.get("few") is not None for r in rows) else "medium"


def findings(rows: list[dict[str, Any]]) -> list[str]:
    """Plain sentences computed from the rows: balanced vs natural, PTQ vs ClimbQ+ QAT."""
    out = []
    tail = tail_key(rows)
    by = {(r["row"], r["calib"]): r for r in rows}
    for row_id, _, _ in RECIPES:
        nat, bal = by.get((row_id, "natural")), by.get((row_id, "balanced"))
        if nat and bal and nat.get(tail) is not None:
            few = (
                f"{bal['few'] - nat['few']:+.2f} points few-shot, "
                if tail == "few"
                else "no few-shot class, "
            )
            out.append(
                f"- {row_id}: balanced minus natural calibration = {few}"
                f"{bal['medium'] - nat['medium']:+.2f} medium, "
                f"{bal['many'] - nat['many']:+.2f} many, "
                f"{bal['top1'] - nat['top1']:+.2f} top-1."
            )
    qat = by.get(("climbq+ QAT w4a4", None))
    fourbit = [r for r in rows if r["calib"] and r["wbits"] == 4]
    if qat and fourbit:
        best = max(fourbit, key=lambda r: r["top1"])
        out.append(
            f"- Best 4-bit training-free row: {best['row']} ({best['calib']}) at "
            f"{best['top1']:.2f}% top-1 vs ClimbQ+ QAT {qat['top1']:.2f}% "
            f"({best['top1'] - qat['top1']:+.2f} points; {tail} "
            f"{best[tail] - qat[tail]:+.2f})."
        )
        for r in fourbit:
            if r["recipe"] == "ptq-w4a4":
                out.append(
                    f"  - {r['row']} ({r['calib']}): {r['top1'] - qat['top1']:+.2f} points "
                    f"top-1 vs ClimbQ+ QAT."
                )
    return out


def verdict(rows: list[dict[str, Any]]) -> list[str]:
    """The plain answers the issue asks for, computed from the rows."""
    by = {(r["row"], r["calib"]): r for r in rows}
    pairs = [
        (by[(row, "natural")], by[(row, "balanced")])
        for row, _, _ in RECIPES
        if (row, "natural") in by and (row, "balanced") in by
    ]
    out = ["### Verdict\n"]
    if pairs:
        tail = tail_key(rows)
        diffs = [b[tail] - n[tail] for n, b in pairs if n.get(tail) is not None]
        helped = sum(d > 0 for d in diffs)
        mean = statistics.fmean(diffs)
        label = "Few-shot" if tail == "few" else "Medium-shot (the rarest classes here)"
        spreads = [
            statistics.stdev(x[tail] for x in r["seeds"])
            for n, b in pairs
            for r in (n, b)
            if len(r["seeds"]) > 1 and all(x.get(tail) is not None for x in r["seeds"])
        ]
        sd = statistics.fmean(spreads) if spreads else 0.0
        noise = (
            f" Seed-to-seed sd of one recipe's {tail} accuracy: {sd:.2f} points (mean "
            f"over recipes, {len(pairs[0][0]['seeds'])} calibration seeds)."
            if spreads
            else " One calibration seed: no spread measured."
        )
        # a recipe's balanced-minus-natural difference of n-seed means has sd ~ sd * sqrt(2/n)
        n_seeds = len(pairs[0][0]["seeds"])
        margin = 2 * sd * math.sqrt(2 / n_seeds) if spreads else float("inf")
        if mean > margin / math.sqrt(len(diffs)) and helped > len(diffs) // 2:
            answer = "Here it helps."
        elif mean < -margin / math.sqrt(len(diffs)):
            answer = "Here it hurts."
        else:
            answer = "Here it makes no difference beyond calibration-draw noise."
        out.append(
            f"- **Does class-balanced calibration help the tail?** {label} accuracy rose "
            f"in {helped} of {len(diffs)} recipes (mean change {mean:+.2f}"
            f" points; range {min(diffs):+.2f} to {max(diffs):+.2f}). " + answer + noise
        )
    qat = by.get(("climbq+ QAT w4a4", None))
    fourbit = [r for r in rows if r["calib"] and r["wbits"] == 4]
    if qat and fourbit:
        gaps = ", ".join(f"{r['row']} {r['calib']} {r['top1'] - qat['top1']:+.2f}" for r in fourbit)
        out.append(
            f"- **PTQ vs ClimbQ+ QAT at 4 bits** (QAT {qat['top1']:.2f}% top-1, "
            f"{qat.get('epochs')} epochs): {gaps} points top-1."
        )
        fp = by.get(("fp32 (no quantization)", None))
        if fp:
            out.append(
                f"  The full-precision run behind every row has {fp['top1']:.2f}% top-1 "
                f"after {fp.get('epochs')} epochs and the QAT run trained "
                f"{qat.get('epochs')} epochs from it (the paper trains 50): this "
                "compares PTQ with a short QAT run, not the paper's ClimbQ+."
            )
    inexact = [r for r in rows if r.get("tflite") and (r["tflite"].get("code_agreement") or 1) < 1]
    if inexact:
        worst = min(r["tflite"]["top1_agreement"] for r in inexact)
        pure = [r["numpy"] for r in inexact if r.get("numpy")]
        text = (
            f"- **TFLite:** every row equals its TFLite-flavour reference exactly; the "
            f"4-bit rows also equal torch code for code. The {len(inexact)} rows "
            f"{', '.join(sorted({r['row'] for r in inexact}))} do not (code agreement "
            f"{min(r['tflite']['code_agreement'] for r in inexact):.3f}-"
            f"{max(r['tflite']['code_agreement'] for r in inexact):.3f}, top-1 agreement "
            f">= {worst:.3f}): with 8-bit activations the accumulator thresholds leave "
            "int16, and the int16 TFLite form counts them after a per-channel "
            "requantization shift (2-3 bits for most channels here: their own thresholds "
            "leave int16), which moves codes near a threshold by "
            "one step; each moved code perturbs the next layer."
        )
        if pure:
            text += (
                f" The pure integer program (NumPy target) of the same models is exact: "
                f"code agreement {min(p['code_agreement'] for p in pure):.4f}, top-1 "
                f"agreement {min(p['top1_agreement'] for p in pure):.3f} on "
                f"{pure[0]['n_images']} evenly spaced images."
            )
        out.append(text)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fp-run", type=Path, action="append", required=True)
    parser.add_argument(
        "--qat-run",
        action="append",
        required=True,
        help="4-bit ClimbQ+ QAT run of the same dataset, '-' for none",
    )
    parser.add_argument("--calib-size", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--limit", type=int, default=500, help="TFLite check: N evenly spaced test images"
    )
    parser.add_argument(
        "--numpy-limit",
        type=int,
        default=100,
        help="NumPy check of rows whose TFLite codes differ (0: skip)",
    )
    parser.add_argument("--kernels", default="xnnpack", choices=("xnnpack", "optimized", "ref"))
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "ptq")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--rows", nargs="*", default=None, help="only rows containing these")
    parser.add_argument("--force", action="store_true", help="recompute finished rows")
    parser.add_argument("--recheck", action="store_true", help="redo the deployment checks only")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results")
    args = parser.parse_args()
    if len(args.fp_run) != len(args.qat_run):
        parser.error("give one --qat-run (or '-') per --fp-run")
    load = warn_if_busy()
    sections = []
    for fp_run, qat in zip(args.fp_run, args.qat_run, strict=True):
        label = dataset_label(fp_run)
        work = args.work / dataset_label(fp_run, display=False).replace(" ", "-")
        rows = [reference_row(fp_run, "fp32 (no quantization)", args)]
        for row, recipe, rule in RECIPES:
            for calib in CALIBS:
                if args.rows and not any(s in f"{row}-{calib}" for s in args.rows):
                    continue
                rows.append(calibrated_row(fp_run, work, row, recipe, rule, calib, args))
        if qat != "-" and (not args.rows or any(s in "qat" for s in args.rows)):
            qat_keep = work / f"qat-{Path(qat).name}"
            rows.append(reference_row(Path(qat), "climbq+ QAT w4a4", args, qat_keep))
        sections.append({"dataset": label, "fp_run": str(fp_run), "qat_run": qat, "rows": rows})
    if args.no_write:
        return
    have = {s["dataset"] for s in sections}
    missing = [d for d in EXPECTED if d not in have]
    header = run_header(load)
    parts = [
        "# Post-training quantization on long-tailed data (ResNet-20)\n",
        f"Calibration sets of {args.calib_size} training images, seed(s) "
        f"{' '.join(map(str, args.seeds))}: *natural* (a uniform draw: follows the long "
        "tail) or *balanced* (equal per class, capped by availability). PTQ: per-channel "
        "symmetric weights, per-tensor symmetric activations (min-max or nearest-rank "
        "99.99th percentile of |x|, observed on the full-precision model, residual "
        "operands tied to one scale), BatchNorm folded. ClimbQ-PTQ: ClimbQ 4-bit "
        "quantizers on the trained weights, BatchNorm statistics re-estimated on the "
        "calibration set; no training. Accuracy: whole balanced test set (mean over "
        "seeds). TFLite: LiteRT "
        f"({args.kernels}) on {args.limit} evenly spaced test images only (CPU budget), seed "
        f"{args.seeds[0]}'s model, and the TensorRT target's ONNX under ONNX Runtime on "
        "the same images; `exact` is the bit-exactness (every code and top-1) against "
        "the NumPy reference of the program the file computes, the agreements are "
        "against the torch model in float64 on the program's (20-bit) input (the "
        "tflite/torch top-1 columns are on that subset). "
        "Few-shot = the classes with < 20 training images (one class on "
        "SynDigits-LT gamma 50, 200 test images: one seed's few-shot figure moves by "
        "several points between calibration draws).\n",
    ]
    for s in sections:
        parts += [
            f"## {s['dataset']}\n",
            f"Full-precision run `{s['fp_run']}`, QAT run `{s['qat_run']}`.\n",
            table(s["rows"]),
            "\n",
            *findings(s["rows"]),
            "",
            *verdict(s["rows"]),
            "",
        ]
    if missing:
        parts.append("## Missing rows\n")
        parts += [
            f"- **{d}**: not measured — no full-precision run given (pass "
            "`--fp-run RUN --qat-run RUN` once it exists)."
            for d in missing
        ]
        parts.append("")
    parts.append(provenance_markdown(header))
    payload = {
        **header,
        "calib_size": args.calib_size,
        "seeds": args.seeds,
        "tflite_limit": args.limit,
        "tflite_kernels": args.kernels,
        "sections": sections,
        "missing": missing,
    }
    write_results(args.out, NAME, payload, "\n".join(parts))


if __name__ == "__main__":
    main()
