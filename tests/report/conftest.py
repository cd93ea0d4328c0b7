"""Tiny run folders for the report: untrained models saved as `climbq train` checkpoints, with
hand-written metrics.json, check.json and bench.json (no training, a few seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from climbq_deploy.data.dataset import save_dataset
from climbq_deploy.models import build_model
from climbq_deploy.train.checkpoint import save_checkpoint
from climbq_deploy.train.config import TrainConfig

# name -> (method, wbits/abits, act_scaling, loss, top1, many, medium, few)
RUNS = {
    "fp": ("fp32", 32, "faithful", "la", 48.35, 61.583333333333336, 35.166666666666664, 8.5),
    "q4-scaled": ("climbq+", 4, "faithful", "homovar", 40.65, 52.75, 26.833333333333332, 9.5),
    "q4-unscaled": ("climbq", 4, "off", "ce", 39.1, 50.125, 24.0, None),
    "uniform": ("uniform", 4, "faithful", "ce", 31.0, 44.5, 20.25, 3.0),
}

CHECK_TFLITE = {
    "n_images": 100,
    "top1_agreement": 0.9875,
    "code_agreement": 0.99990234375,
    "ref_top1": 40.75,
    "torch_top1": 40.65,
    "torch_fp32_top1": 40.7,
    "exact_match": True,
    "target": "tflite",
    "kernels": "xnnpack",
    "artifact": "does/not/exist/model.tflite",
    "max_abs_logit_diff": 2.0e-06,
}
BENCH_TFLITE = {
    "target": "tflite",
    "kernels": "xnnpack",
    "threads": 2,
    "batch": 1,
    "latency_ms": {"p50": 28.474889000790427, "p90": 29.089707799903408, "p99": 30.158478},
    "images_per_second": 35.11866191900665,
    "top1": None,
    "cpu": "AMD EPYC",
    "runtime": "ai_edge_litert.interpreter",
    "model": "does/not/exist/model.tflite",
}
CHECK_NUMPY = {
    "n_images": 100,
    "top1_agreement": 1.0,
    "code_agreement": 1.0,
    "ref_top1": 40.65,
    "torch_top1": 40.65,
    "torch_fp32_top1": 40.7,
    "target": "numpy",
    "artifact": "model.climbq",
}
BENCH_ONNX = {
    "target": "tensorrt",
    "kernels": "onnxruntime",
    "threads": 1,
    "batch": 8,
    "latency_ms": {"p50": 3.25, "p90": 3.5, "p99": 4.125},
    "images_per_second": 2461.5384615,
    "top1": 40.5,
    "cpu": "AMD EPYC",
    "runtime": "onnxruntime",
    "artifact_bytes": 123456,
}


def write(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def make_run(root: Path, name: str, data: str, counts: list[int], seed: int) -> Path:
    method, bits, scaling, loss, top1, many, medium, few = RUNS[name]
    config = TrainConfig(
        data,
        method=method,
        wbits=bits,
        abits=bits,
        act_scaling=scaling,
        loss=loss,
        epochs=2,
        batch_size=16,
        seed=seed,
    )
    torch.manual_seed(seed)
    model = build_model("resnet20", len(counts), config.quant_spec)
    folder = root / name
    folder.mkdir(parents=True)
    save_checkpoint(
        folder / "checkpoint.pt", {"config": config.as_dict(), "model": model.state_dict()}
    )
    per_class = [round(100 * ((k * 37 + seed) % 101) / 101, 6) for k in range(len(counts))]
    write(
        folder / "metrics.json",
        {
            "top1": top1,
            "many": many,
            "medium": medium,
            "few": few,
            "per_class": per_class,
            "train_counts": counts,
            "fit_counts": counts,
            "method": method,
            "arch": "resnet20",
            "wbits": bits,
            "abits": bits,
            "loss": loss,
            "epochs": 2,
            "seconds": 16.161048729000413,
            "dataset": "syndigits-lt",
            "config": config.as_dict(),
        },
    )
    return folder


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory, small_syndigits) -> dict[str, Path]:
    """Four runs (fp32, ClimbQ+ with class scaling, ClimbQ without, uniform) on the small
    SynDigits-LT set; q4-scaled has three targets (numpy check only, tflite check + bench,
    onnxruntime bench only); the others none. Also ``data``: the dataset folder."""
    root = tmp_path_factory.mktemp("report_runs")
    data = str(save_dataset(small_syndigits, root / "syn"))
    counts = small_syndigits.counts("train")
    runs = {name: make_run(root, name, data, counts, seed) for seed, name in enumerate(RUNS)}
    targets = runs["q4-scaled"] / "targets"
    write(targets / "numpy" / "check.json", CHECK_NUMPY)
    write(targets / "tflite-xnnpack" / "check.json", CHECK_TFLITE)
    write(targets / "tflite-xnnpack" / "bench.json", BENCH_TFLITE)
    write(targets / "tensorrt-onnxruntime" / "bench.json", BENCH_ONNX)
    return {**runs, "data": Path(data)}
