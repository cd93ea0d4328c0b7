"""Latency of an exported ONNX model under ONNX Runtime (CPU) or TensorRT (GPU):
:meth:`TensorrtTarget.bench <climbq_deploy.targets.tensorrt.TensorrtTarget.bench>`, in the
record shape of every target (:func:`climbq_deploy.bench.bench_artifact`).

ONNX Runtime: wall-clock ``time.perf_counter`` around ``session.run`` of one batch of the
model's input: uint8 images for a model of the uint8 contract (its input step runs inside and
is timed), the float32 ``I`` for a file of the int32 input form (the host's input
quantization not timed, as for LiteRT). TensorRT: the runner's own timing.
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
    from climbq_deploy.targets.tensorrt import RUNTIMES, OnnxRuntimeRunner, zero_input

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
        feed = {runner.input_name: zero_input(runner.model, runner.graph, batch)}
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
