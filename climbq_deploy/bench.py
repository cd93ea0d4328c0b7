"""``climbq bench``: on-device latency and accuracy of an exported model.

Warm-up invokes, then ``repeats`` timed invokes of one batch: p50/p90/p99 latency (ms per
invoke) and images/s; with a dataset, top-1 (and long-tail metrics) over its test split; plus
the runtime, kernels, threads and CPU. The same record shape for every target.
"""

from __future__ import annotations

import os
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


def latency_fields(ms: np.ndarray, batch: int) -> dict[str, Any]:
    """``latency_ms`` (p50/p90/p99 of per-invoke milliseconds) and ``images_per_second``
    (``batch`` / median), the part of the record every target shares."""
    ms = np.asarray(ms, dtype=np.float64)
    return {
        "latency_ms": {q: float(np.percentile(ms, int(q[1:]))) for q in ("p50", "p90", "p99")},
        "images_per_second": batch / (float(np.median(ms)) / 1000),
    }


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
    ms = np.array(times) * 1000
    record: dict[str, Any] = {
        "model": str(path),
        "target": "tflite",
        "kernels": kernels,
        "threads": threads,
        "batch": batch,
        "warmup": warmup,
        "repeats": repeats,
        **latency_fields(ms, batch),
        "runtime": getattr(module, "__name__", "interpreter"),
        "cpu": _cpu(),
        "machine": platform.machine(),
        "top1": None,
    }
    if data is not None:
        from climbq_deploy.data.dataset import load_dataset

        dataset = load_dataset(data)
        _check_images(dataset, runner.graph, data, path)
        predictions = runner.run(dataset.test_images).logits.argmax(1)
        record["top1"] = float(100.0 * np.mean(predictions == dataset.test_labels))
        record["n_images"] = len(predictions)
    return record


def _check_images(dataset: Any, graph: Any, data: str | Path, model: Path) -> None:
    """The dataset's test images must be what the model reads: (H, W, C) of its input."""
    expected = tuple(graph.tensors[graph.input].shape)
    if dataset.image_shape != expected:
        have, want = ("x".join(map(str, s)) for s in (dataset.image_shape, expected))
        raise DataError(f"{data}: test images are {have} but {model} expects {want}")


def _reference_agreement(graph: Any, images: np.ndarray, predictions: np.ndarray) -> float:
    from climbq_deploy.kernels import ReferenceModel

    reference = ReferenceModel(graph).run(images)[graph.output].argmax(1)
    return float(np.mean(reference == predictions))


def bench_artifact(
    artifact: str | Path,
    threads: int = 1,
    kernels: str | None = None,
    batch: int = 1,
    warmup: int = 10,
    repeats: int = 100,
    data: str | Path | None = None,
) -> dict[str, Any]:
    """``climbq bench`` for any exported artifact, one record shape for every target.

    ``.tflite``: :func:`bench_tflite` (LiteRT invokes, batch as exported). ``.climbq`` (NumPy
    reference) and ``.onnx`` (ONNX Runtime): ``runner.run`` on a batch of ``batch`` images,
    timed per call. With ``data``: top-1 on its test split and ``reference_agreement``, the
    share of images whose top-1 equals the NumPy reference of the artifact's own program
    (None for the NumPy target: it is the reference).
    """
    from climbq_deploy.targets import TARGET_NAMES, get_target

    path = Path(artifact)
    if path.is_dir():
        raise DataError(f"{path} is a folder; give the model file (e.g. {path / 'model.climbq'})")
    if not path.is_file():
        raise DataError(f"no artifact at {path}")
    if threads < 1 or batch < 1 or warmup < 0 or repeats < 1:
        raise ConfigError("threads, batch and repeats must be >= 1, warmup >= 0")
    names = {}
    for name in TARGET_NAMES:
        names.setdefault(_suffix_of(name), name)
    target_name = names.get(path.suffix)
    if target_name is None:
        raise ConfigError(
            f"{path}: unknown artifact kind {path.suffix!r}; expected one of "
            f"{', '.join(sorted(names))}"
        )
    if target_name == "tflite":
        if batch != 1:
            raise ConfigError("the TFLite model's batch is fixed at export (1)")
        record = bench_tflite(path, threads, kernels or "xnnpack", warmup, repeats, None)
    elif target_name == "tensorrt":
        from climbq_deploy.targets.tensorrt.bench import bench_onnx

        record = bench_onnx(path, kernels or "onnxruntime", batch, threads, warmup, repeats)
    else:
        record = _bench_runner(get_target(target_name, kernels), path, batch, warmup, repeats)
        record["threads"] = None  # NumPy's BLAS uses its own thread pool
    record.setdefault("cores", os.cpu_count())
    record["reference_agreement"] = None
    if data is not None:
        from climbq_deploy.data.dataset import load_dataset

        dataset = load_dataset(data)
        runner = _load_runner(target_name, path, kernels, threads)
        _check_images(dataset, runner.graph, data, path)
        predictions = np.concatenate(
            [
                runner.run(dataset.test_images[i : i + 256]).logits.argmax(1)
                for i in range(0, len(dataset.test_images), 256)
            ]
        )
        record["top1"] = float(100.0 * np.mean(predictions == dataset.test_labels))
        record["n_images"] = len(predictions)
        if target_name != "numpy":
            record["reference_agreement"] = _reference_agreement(
                runner.graph, dataset.test_images, predictions
            )
    return record


def _bench_runner(target: Any, path: Path, batch: int, warmup: int, repeats: int) -> dict[str, Any]:
    """Per-call latency of ``target.load(path).run`` on a batch of zero images."""
    from climbq_deploy.errors import TargetUnavailableError

    reason = target.unavailable()
    if reason:
        raise TargetUnavailableError(f"target {target.name!r} cannot run here: {reason}")
    runner = target.load(path)
    images = np.zeros((batch, *runner.graph.tensors["image"].shape), np.uint8)
    for _ in range(warmup):
        runner.run(images)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        runner.run(images)
        times.append(time.perf_counter() - began)
    ms = np.array(times) * 1000
    return {
        "model": str(path),
        "target": target.name,
        "kernels": target.name,
        "batch": batch,
        "warmup": warmup,
        "repeats": repeats,
        **latency_fields(ms, batch),
        "runtime": f"numpy {np.__version__}",
        "cpu": _cpu(),
        "machine": platform.machine(),
        "top1": None,
    }


def _suffix_of(target_name: str) -> str:
    from climbq_deploy.targets import get_target

    return get_target(target_name).suffix


def _load_runner(target_name: str, path: Path, kernels: str | None, threads: int) -> Any:
    """The artifact's runner (ONNX Runtime's with ``threads`` intra-op threads)."""
    from climbq_deploy.targets import get_target

    if target_name == "tensorrt" and kernels in (None, "onnxruntime"):
        from climbq_deploy.targets.tensorrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, threads=threads)
    return get_target(target_name, kernels).load(path)
