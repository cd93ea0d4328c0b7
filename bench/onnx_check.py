"""TensorRT target (explicit-quantization ONNX) under ONNX Runtime (CPU): whole-test-set check
against the NumPy reference and the torch model, INT4 vs INT8 head weights, and CPU latency
beside the NumPy reference and LiteRT.

For each trained run of ``runs/lowering``:

1. ``check_run(RUN, target="tensorrt")`` (= ``climbq check RUN --target tensorrt --runtime
   onnxruntime --json``): exports ``RUN/model.onnx`` (INT8 weights) and compares every code and
   top-1 with the NumPy reference of the same program (``exact_match``) and the torch model.
2. ``RUN/model.int4.onnx`` (INT4 weight-only head): ONNX Runtime logits on the whole test set
   against the INT8 model's (top-1 agreement, max logit difference), codes on the first 200
   images compared element by element, its top-1, and (first 200 images) its logits against
   the NumPy reference of its own INT4-head program.
3. Latency (ResNet-20 4-bit, MobileNetV2 4-bit): ONNX Runtime p50 at batch 1 and 64 (1 thread),
   the NumPy reference at the same batches, LiteRT (XNNPACK, 1 thread) at batch 1 where
   ``RUN/model.tflite`` exists. All in this one process, one after the other.

Usage::

    .venv/bin/python -m bench.onnx_check [--runs runs/lowering] [--skip-latency]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

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
from climbq_deploy.data.dataset import load_dataset
from climbq_deploy.export import load_run, lower_run
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.targets.tensorrt import OnnxRuntimeRunner, TensorrtTarget

NAME = "onnx_check"
RUNS = [
    "resnet20-climbq+-w4a4",
    "resnet20-climbq+-w2a2",
    "mobilenetv2-climbq+-w4a4",
    "mobilenetv2-climbq+-w2a2",
    "resnet20-uniform-w4a4",
]
LATENCY_RUNS = ["resnet20-climbq+-w4a4", "mobilenetv2-climbq+-w4a4"]


def predict(runner: OnnxRuntimeRunner, images: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [runner.run(images[i : i + 250]).logits for i in range(0, len(images), 250)]
    )


def int4_versus_int8(run_dir: Path, int8_path: Path, limit: int | None) -> dict[str, Any]:
    run = load_run(run_dir)
    target = TensorrtTarget(weights="int4")
    path = target.export(lower_run(run, input_bits=target.input_bits), run_dir / "model.int4.onnx")
    int4, int8 = OnnxRuntimeRunner(path), OnnxRuntimeRunner(int8_path)
    dataset = load_dataset(run.config.data)
    images, labels = dataset.test_images[:limit], dataset.test_labels[:limit]
    l4, l8 = predict(int4, images), predict(int8, images)
    first = images[:200]
    c4, c8 = int4.run(first, with_codes=True).codes, int8.run(first, with_codes=True).codes
    code_mismatches = sum(int(np.count_nonzero(c4[k] != c8[k])) for k in c8)
    reference = ReferenceModel(int4.graph).predict(first)  # the INT4-head program's oracle
    return {
        "int4_bytes": path.stat().st_size,
        "int8_bytes": int8_path.stat().st_size,
        "int4_vs_int8_top1_agreement": float(np.mean(l4.argmax(1) == l8.argmax(1))),
        "int4_vs_int8_max_abs_logit_diff": float(np.abs(l4 - l8).max()),
        "int4_vs_int8_code_mismatches_first_200": code_mismatches,
        "int4_top1": float(100 * np.mean(l4.argmax(1) == labels)),
        "int8_top1": float(100 * np.mean(l8.argmax(1) == labels)),
        "int4_vs_its_reference_top1_agreement_first_200": float(
            np.mean(l4[:200].argmax(1) == reference.argmax(1))
        ),
        "int4_vs_its_reference_max_abs_logit_diff_first_200": float(
            np.abs(l4[:200] - reference).max()
        ),
    }


def p50_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return 1000 * float(np.median(times))


def latency(run_dir: Path) -> dict[str, Any]:
    from climbq_deploy.targets.tensorrt.bench import bench_onnx

    runner = OnnxRuntimeRunner(run_dir / "model.onnx", threads=1)
    images = load_dataset(load_run(run_dir).config.data).test_images[:64]
    reference = ReferenceModel(runner.graph)
    out: dict[str, Any] = {}
    for batch, repeats in ((1, 50), (64, 10)):
        record = bench_onnx(run_dir / "model.onnx", batch=batch, threads=1, repeats=repeats)
        out[f"onnxruntime_b{batch}_p50_ms"] = record["latency_ms"]["p50"]
        out[f"numpy_reference_b{batch}_p50_ms"] = p50_ms(
            lambda b=batch: reference.run(images[:b]), max(3, repeats // 5), warmup=1
        )
    tflite = run_dir / "model.tflite"
    if tflite.is_file():
        from climbq_deploy.targets.tflite.bench import bench_tflite

        out["litert_xnnpack_b1_p50_ms"] = bench_tflite(tflite, repeats=50)["latency_ms"]["p50"]
    return out


def best_form_summary(out_dir: Path) -> str:
    """One paragraph from ``bench/onnx_latency.py``'s results (``onnx_latency.json`` in
    ``out_dir``): per model, the fastest exact ONNX form's p50 ratio to the plain int8 QDQ
    ResNet-20 under ONNX Runtime at 1 thread, batch 1 and 64; empty when absent."""
    import json

    path = out_dir / "onnx_latency.json"
    if not path.is_file():
        return ""
    results = json.loads(path.read_text())["results"]
    lines = []
    for name, result in results.items():
        exact = [f for f, r in result["exact"].items() if r["code_mismatches"] == 0]
        for row in result["latency"]:
            if row["threads"] != 1:
                continue
            ratios = {f: row["ratio_to_plain_int8"][f] for f in exact}
            best = min(ratios, key=ratios.get)
            lines.append(
                f"- {name}, batch {row['batch']}: `{best}` {row['p50_ms'][best]:.2f} ms, "
                f"{ratios[best]:.2f}x plain int8 QDQ ({row['p50_ms']['plain_int8']:.2f} ms); "
                f"today's `qdq` {ratios['qdq']:.2f}x"
            )
    return (
        "## Fastest exact ONNX form vs plain int8 QDQ ResNet-20 (ONNX Runtime, 1 thread)"
        "\n\nFrom `bench/results/onnx_latency.md` (`bench/onnx_latency.py`: every form and the "
        "plain int8 QDQ model interleaved in one process; p50 ratio):\n\n"
        + "\n".join(lines)
        + "\n\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=REPO_ROOT / "runs" / "lowering")
    parser.add_argument("--only", nargs="*", default=None, help="run names (default: all)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--limit", type=int, default=None, help="first N test images (smoke)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    load = warn_if_busy()
    records, rows, lat_rows = [], [], []
    for name in args.only or RUNS:
        run_dir = args.runs / name
        target = TensorrtTarget()
        artifact = target.export(
            lower_run(load_run(run_dir), input_bits=target.input_bits), run_dir / "model.onnx"
        )  # kept in the run folder: latency() below times it
        record = check_run(
            run_dir, target=target, artifact=artifact, progress=False, limit=args.limit
        )
        record.update(model=name, onnx_bytes=artifact.stat().st_size)
        record.update(int4_versus_int8(run_dir, artifact, args.limit))
        records.append(record)
        keys = (
            "exact_match",
            "top1_agreement",
            "ref_top1",
            "torch_top1",
            "int4_vs_int8_top1_agreement",
        )
        print(name, {k: record[k] for k in keys})
        rows.append(
            (
                name,
                record["n_images"],
                record["exact_match"],
                f"{record['code_agreement']:.6f}",
                f"{record['top1_agreement']:.4f}",
                f"{record['ref_top1']:.2f}",
                f"{record['torch_top1']:.2f}",
                f"{record['torch_fp32_top1']:.2f}",
                f"{record['reference_max_abs_logit_diff']:.1e}",
                f"{abs(record['ref_top1'] - record['torch_fp32_top1']):.2f}",
                f"{record['int4_vs_int8_top1_agreement']:.4f}",
                record["int4_vs_int8_code_mismatches_first_200"],
                f"{record['int4_top1']:.2f}",
                f"{record['onnx_bytes'] / 1024:.0f} / {record['int4_bytes'] / 1024:.0f}",
                f"{record['seconds']:.0f}",
            )
        )
    latencies = {}
    if not args.skip_latency:
        for name in LATENCY_RUNS:
            if name in (args.only or RUNS) and (args.runs / name / "model.onnx").is_file():
                latencies[name] = latency(args.runs / name)
                lat = latencies[name]
                lat_rows.append(
                    (
                        name,
                        *(
                            f"{lat[k]:.2f}" if k in lat else "-"
                            for k in (
                                "onnxruntime_b1_p50_ms",
                                "onnxruntime_b64_p50_ms",
                                "numpy_reference_b1_p50_ms",
                                "numpy_reference_b64_p50_ms",
                                "litert_xnnpack_b1_p50_ms",
                            )
                        ),
                    )
                )
    header = run_header(load)
    markdown = (
        "# TensorRT target (explicit-quantization ONNX) under ONNX Runtime 1.32 CPU: whole "
        "SynDigits-LT gamma 50 test set\n\n"
        "`exact_match`: every activation code and the top-1 of ONNX Runtime equal the NumPy "
        "reference of the same (20-bit-input) program. `torch`: the trained model in float64 on "
        "that input; `torch fp32`: as evaluated in training. INT4: the head's weights INT4 "
        "(block-quantized, weight-only; convs stay INT8), compared with the INT8 model on the "
        "whole test set (top-1) and code by code on the first 200 images. TensorRT itself was "
        "not run (not installable here).\n\n"
        + markdown_table(
            (
                "model",
                "images",
                "exact_match",
                "code agreement vs torch",
                "top-1 agreement vs torch",
                "onnx top-1 %",
                "torch top-1 %",
                "torch fp32 top-1 %",
                "max logit diff vs reference",
                "deployed gap to torch fp32 (points)",
                "int4 vs int8 top-1 agreement",
                "int4 vs int8 code mismatches",
                "int4 top-1 %",
                "KiB int8 / int4",
                "check seconds",
            ),
            rows,
        )
        + "\n\n## CPU latency, p50 ms per invoke, 1 thread\n\n"
        + markdown_table(
            ("model", "ORT b1", "ORT b64", "NumPy ref b1", "NumPy ref b64", "LiteRT XNNPACK b1"),
            lat_rows,
        )
        + "\n\nORT: `session.run` of the float32 input (host quantization excluded); NumPy "
        "reference: `ReferenceModel.run` on uint8 images; LiteRT: `climbq bench model.tflite`.\n\n"
        + best_form_summary(args.out)
        + provenance_markdown(header)
    )
    write_results(args.out, NAME, {**header, "records": records, "latency": latencies}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
