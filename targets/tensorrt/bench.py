"""Latency (and top-1) of an exported ONNX model under ONNX Runtime (CPU) or TensorRT (GPU),
in the record shape of :func:`climbq_deploy.bench.bench_tflite`.

ONNX Runtime: wall-clock ``time.perf_counter`` around ``session.run`` of one float32 batch
(host input quantization excluded, as for LiteRT). TensorRT: CUDA events around
``execute_async_v3`` (device time of one batch, input already on the GPU).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.bench import _cpu, latency_fields
from climbq_deploy.errors import ConfigError, DataError


def bench_onnx(
    model: str | Path,
    runtime: str = "onnxruntime",
    batch: int = 1,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 100,
    data: str | Path | None = None,
) -> dict[str, Any]:
    """p50/p90/p99 milliseconds per invoke of ``batch`` images, images/s, and top-1 on
    ``data``'s test split when given."""
    from climbq_deploy.targets.tensorrt import RUNTIMES, OnnxRuntimeRunner

    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if batch < 1 or threads < 1 or warmup < 0 or repeats < 1:
        raise ConfigError("batch, threads and repeats must be >= 1, warmup >= 0")
    path = Path(model)
    if not path.is_file():
        raise DataError(f"no model file at {path}")
    if runtime == "tensorrt":
        from climbq_deploy.targets.tensorrt.engine import TensorrtRunner

        runner: Any = TensorrtRunner(path, max_batch=max(batch, 64))
        times = np.array(runner.time(batch, warmup, repeats))
        version = __import__("tensorrt").__version__
    else:
        runner = OnnxRuntimeRunner(path, threads=threads)
        h, w, c = runner.graph.tensors[runner.graph.input].shape
        feed = {runner.input_name: np.zeros((batch, c, h, w), np.float32)}
        for _ in range(warmup):
            runner.session.run(["logits"], feed)
        samples = []
        for _ in range(repeats):
            began = time.perf_counter()
            runner.session.run(["logits"], feed)
            samples.append(time.perf_counter() - began)
        times = np.array(samples) * 1000
        version = runner._ort.__version__
    ms = np.asarray(times)
    record: dict[str, Any] = {
        "model": str(path),
        "target": "tensorrt",
        "kernels": runtime,
        "runtime_version": version,
        "threads": threads,
        "batch": batch,
        "warmup": warmup,
        "repeats": repeats,
        **latency_fields(ms, batch),
        "runtime": runtime,
        "cpu": _cpu(),
        "machine": platform.machine(),
        "top1": None,
    }
    if data is not None:
        from climbq_deploy.data.dataset import load_dataset

        dataset = load_dataset(data)
        predictions = np.concatenate(
            [
                runner.run(dataset.test_images[i : i + 256]).logits.argmax(1)
                for i in range(0, len(dataset.test_images), 256)
            ]
        )
        record["top1"] = float(100.0 * np.mean(predictions == dataset.test_labels))
        record["n_images"] = len(predictions)
    return record
