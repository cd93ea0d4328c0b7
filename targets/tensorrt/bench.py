"""Latency of an exported ONNX model under ONNX Runtime (CPU) or TensorRT (GPU):
:meth:`TensorrtTarget.bench <climbq_deploy.targets.tensorrt.TensorrtTarget.bench>`, in the
record shape of every target (:func:`climbq_deploy.bench.bench_artifact`).

ONNX Runtime: wall-clock ``time.perf_counter`` around ``session.run`` of one float32 batch
(host input quantization excluded, as for LiteRT). TensorRT: CUDA events around
``execute_async_v3`` (device time of one batch, input already on the GPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.bench import check_batch_fits, host_fields, latency_fields, time_calls
from climbq_deploy.errors import ConfigError, DataError


def bench_onnx(
    model: str | Path,
    runtime: str = "onnxruntime",
    batch: int = 1,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 100,
) -> dict[str, Any]:
    """p50/p90/p99 milliseconds per invoke of ``batch`` images and images/s."""
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

        engine = TensorrtRunner(path, max_batch=max(batch, 64))
        ms = np.asarray(engine.time(batch, warmup, repeats))
        version = __import__("tensorrt").__version__
    else:
        runner = OnnxRuntimeRunner(path, threads=threads)
        check_batch_fits(runner.graph, batch)
        h, w, c = runner.graph.tensors[runner.graph.input].shape
        feed = {runner.input_name: np.zeros((batch, c, h, w), np.float32)}
        ms = time_calls(lambda: runner.session.run(["logits"], feed), warmup, repeats)
        version = runner._ort.__version__
    return {
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
        **host_fields(),
        "top1": None,
    }
