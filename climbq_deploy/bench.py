"""``climbq bench``: on-device latency and accuracy of an exported model.

Warm-up invokes, then ``repeats`` timed invokes of one batch: p50/p90/p99 latency (ms per
invoke) and images/s; with a dataset, top-1 (and long-tail metrics) over its test split; plus
the runtime, kernels, threads and CPU. The same record shape for every target.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.errors import ConfigError, DataError


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_tflite(
    model: str | Path,
    threads: int = 1,
    kernels: str = "xnnpack",
    warmup: int = 10,
    repeats: int = 100,
    data: str | Path | None = None,
) -> dict[str, Any]:
    """Latency of one ``.tflite`` written by climbq_deploy (batch as exported)."""
    from climbq_deploy.targets.tflite import KERNELS, RESOLVERS, TfliteRunner, interpreter_module

    if kernels not in KERNELS:
        raise ConfigError(f"kernels must be one of {KERNELS}, got {kernels!r}")
    if threads < 1 or warmup < 0 or repeats < 1:
        raise ConfigError("threads and repeats must be >= 1, warmup >= 0")
    module = interpreter_module()
    if module is None:
        raise ConfigError("no LiteRT interpreter here (pip install climbq-deploy[tflite])")
    path = Path(model)
    if not path.is_file():
        raise DataError(f"no model file at {path}")
    runner = TfliteRunner(path, kernels)  # validates the file and reads its program
    resolver = RESOLVERS[kernels]
    interpreter = module.Interpreter(
        model_content=path.read_bytes(),
        num_threads=threads,
        experimental_op_resolver_type=getattr(module.OpResolverType, resolver),
    )
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    batch = int(detail["shape"][0])
    x = np.zeros(detail["shape"], detail["dtype"])
    for _ in range(warmup):
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        times.append(time.perf_counter() - began)
    ms = np.sort(np.array(times)) * 1000
    record: dict[str, Any] = {
        "model": str(path),
        "target": "tflite",
        "kernels": kernels,
        "threads": threads,
        "batch": batch,
        "warmup": warmup,
        "repeats": repeats,
        "latency_ms": {q: float(np.percentile(ms, int(q[1:]))) for q in ("p50", "p90", "p99")},
        "images_per_second": batch / (float(np.median(ms)) / 1000),
        "runtime": getattr(module, "__name__", "interpreter"),
        "cpu": _cpu(),
        "machine": platform.machine(),
        "top1": None,
    }
    if data is not None:
        from climbq_deploy.calibration.dataset import load_dataset

        dataset = load_dataset(data)
        predictions = runner.run(dataset.test_images).logits.argmax(1)
        record["top1"] = float(100.0 * np.mean(predictions == dataset.test_labels))
        record["n_images"] = len(predictions)
    return record
