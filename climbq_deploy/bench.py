"""``climbq bench``: on-device latency and accuracy of an exported model.

Warm-up invokes, then ``repeats`` timed invokes of one batch: p50/p90/p99 latency (ms per
invoke) and images/s; with a dataset, top-1 over its test split and the agreement with the
NumPy reference of the artifact's own program; plus the runtime, kernels, threads and CPU. The
same record shape for every target: the timing itself is each target's ``bench`` method
(:class:`climbq_deploy.targets.base.Target`), the rest is here.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy import _make_callable
from climbq_deploy.errors import ConfigError, DataError

TOP1_CHUNK = 256  # images per runner call of the accuracy pass
THREADS_PER_CORE = 16  # the most threads per core bench asks a runtime for


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
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


def host_fields() -> dict[str, Any]:
    """``cpu`` and ``machine``: where the record was measured."""
    return {"cpu": cpu_name(), "machine": platform.machine()}


def time_calls(call: Callable[[], Any], warmup: int, repeats: int) -> np.ndarray:
    """Milliseconds of each of ``repeats`` calls of ``call`` (``time.perf_counter`` around
    it), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return np.array(times) * 1000


def check_threads(threads: int) -> None:
    """ConfigError when ``threads`` exceeds :data:`THREADS_PER_CORE` per core of this machine
    (a runtime would start them all, or fail doing so)."""
    cores = os.cpu_count() or 1
    if threads > THREADS_PER_CORE * cores:
        raise ConfigError(
            f"--threads {threads} is more than {THREADS_PER_CORE} per core of this machine "
            f"({cores} cores: at most {THREADS_PER_CORE * cores})"
        )


def available_memory() -> int | None:
    """Bytes this machine can still give: ``MemAvailable`` of ``/proc/meminfo``, else the
    physical memory (``sysconf``); None where neither is known."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def batch_bytes(graph: Any, batch: int) -> int:
    """A rough bound on the memory a runtime needs to run ``batch`` images of ``graph``:
    ``batch x 8 x E x (n + 1)`` bytes, with ``E`` the elements of the program's largest
    tensor and ``n`` the most thresholds of one activation: a compare-and-count holds a
    tensor ``n`` times the activation's size (float32 in ONNX Runtime, int32 in the NumPy
    kernels), and two such tensors may be alive at once. Measured on a 16x16 4-bit ResNet-20:
    ~240 kB per image for NumPy, ~350 kB for ONNX Runtime, against 524 kB from this bound."""
    from climbq_deploy.ir.graph import ThresholdAct

    largest = max((int(np.prod(t.shape)) for t in graph.tensors.values()), default=1)
    levels = max(
        (n.thresholds.shape[-1] for n in graph.nodes if isinstance(n, ThresholdAct)), default=1
    )
    return batch * 8 * largest * (levels + 1)


def check_batch_fits(graph: Any, batch: int) -> None:
    """ConfigError when :func:`batch_bytes` of ``batch`` images exceeds
    :func:`available_memory` (refused before anything is allocated)."""
    need, have = batch_bytes(graph, batch), available_memory()
    if have is not None and need > have:
        most = max(1, have // batch_bytes(graph, 1))
        raise ConfigError(
            f"--batch {batch} needs about {need / 2**30:.1f} GiB to run, more than the "
            f"{have / 2**30:.1f} GiB available here; use --batch {most} or less"
        )


def bench_runner(
    target: Any, path: Path, *, batch: int, warmup: int, repeats: int, runtime: str
) -> dict[str, Any]:
    """The latency record of ``target.load(path).run`` on a batch of ``batch`` zero images,
    timed per call (for a target without a runtime-specific timer); ``runtime`` names what
    runs it."""
    from climbq_deploy.errors import TargetUnavailableError

    reason = target.unavailable()
    if reason:
        raise TargetUnavailableError(f"target {target.name!r} cannot run here: {reason}")
    runner = target.load(path)
    check_batch_fits(runner.graph, batch)
    images = np.zeros((batch, *runner.graph.tensors[runner.graph.input].shape), np.uint8)
    ms = time_calls(lambda: runner.run(images), warmup, repeats)
    return {
        "model": str(path),
        "target": target.name,
        "kernels": target.engine,
        "batch": batch,
        "warmup": warmup,
        "repeats": repeats,
        **latency_fields(ms, batch),
        "runtime": runtime,
        **host_fields(),
        "top1": None,
    }


def check_images(dataset: Any, graph: Any, data: str | Path, model: Path) -> None:
    """The dataset's test images must be what the model reads: (H, W, C) of its input."""
    expected = tuple(graph.tensors[graph.input].shape)
    if dataset.image_shape != expected:
        have, want = ("x".join(map(str, s)) for s in (dataset.image_shape, expected))
        raise DataError(f"{data}: test images are {have} but {model} expects {want}")


def predictions(runner: Any, images: np.ndarray, chunk: int = TOP1_CHUNK) -> np.ndarray:
    """Top-1 class of every image, ``runner.run`` on ``chunk`` images at a time."""
    return np.concatenate(
        [runner.run(images[i : i + chunk]).logits.argmax(1) for i in range(0, len(images), chunk)]
    )


def reference_agreement(graph: Any, images: np.ndarray, predicted: np.ndarray) -> float:
    """Share of images whose top-1 equals the NumPy reference of ``graph``'s."""
    from climbq_deploy.kernels import ReferenceModel

    reference = ReferenceModel(graph).run(images)[graph.output].argmax(1)
    return float(np.mean(reference == predicted))


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MiB (``VmHWM`` of
    ``/proc/self/status``, else ``ru_maxrss``); None where neither is known."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except (ImportError, OSError):
        return None


def _load_and_first_invoke(client: Any, path: Path, threads: int, batch: int) -> dict[str, float]:
    """``load_ms`` (the target's runner made: file read, validated, interpreter or session
    built) and ``first_invoke_ms`` (its first run on ``batch`` zero images, where runtimes
    allocate and pack)."""
    began = time.perf_counter()
    runner = client.load(path, threads=threads)
    loaded = time.perf_counter()
    check_batch_fits(runner.graph, batch)
    runner.run(np.zeros((batch, *runner.graph.tensors[runner.graph.input].shape), np.uint8))
    return {
        "load_ms": (loaded - began) * 1000,
        "first_invoke_ms": (time.perf_counter() - loaded) * 1000,
    }


def bench_artifact(
    artifact: str | Path,
    threads: int = 1,
    kernels: str | None = None,
    batch: int = 1,
    warmup: int = 10,
    repeats: int = 100,
    data: str | Path | None = None,
    *,
    target: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``climbq bench`` for any exported artifact, one record shape for every target.

    ``target``: a registered target's name, by default the one whose suffix the file has;
    ``options``: that target's options (``{"kernels": "ref"}``); ``kernels``: its first option
    (the kernels or runtime that run it), as :func:`~climbq_deploy.targets.get_target`'s
    positional value. The target's ``bench`` times ``batch`` images per invoke (``threads``
    where its runtime takes a count; refused above :data:`THREADS_PER_CORE` per core, as is a
    batch whose :func:`batch_bytes` exceeds the available memory). With ``data``: top-1 on
    its test split and ``reference_agreement``, the share of images whose top-1 equals the
    NumPy reference of the artifact's own program (None for the reference target itself).

    Every record also has ``file_bytes``, ``load_ms``, ``first_invoke_ms`` and
    ``peak_rss_mb`` (this process's peak resident memory after the run: ``climbq bench`` with
    several models measures each in its own process). A ``.tflite`` or ``.onnx`` that this
    toolkit did not write (no ``climbq_program`` in it) is timed as it is
    (:mod:`climbq_deploy.foreign`; ``foreign`` true, no reference agreement, no ``data``).
    """
    from climbq_deploy.targets import get_target, known_suffixes, target_for_path

    path = Path(artifact)
    if path.is_dir():
        raise DataError(f"{path} is a folder; give the model file (e.g. {path / 'model.climbq'})")
    if not path.is_file():
        raise DataError(f"no artifact at {path}")
    if threads < 1 or batch < 1 or warmup < 0 or repeats < 1:
        raise ConfigError("threads, batch and repeats must be >= 1, warmup >= 0")
    if target is None:
        found = target_for_path(path)
        if found is None:
            raise ConfigError(
                f"{path}: unknown artifact kind {path.suffix!r}; expected one of "
                f"{', '.join(known_suffixes())}"
            )
        target = found.name
    check_threads(threads)
    from climbq_deploy.foreign import bench_foreign, is_climbq_model

    if path.suffix in (".tflite", ".onnx") and not is_climbq_model(path):
        if data is not None or kernels is not None or options:
            raise ConfigError(
                f"{path} was not written by climbq_deploy (no climbq_program in it): it is "
                "timed as it is, with no --data, kernels or target options"
            )
        record = bench_foreign(path, threads=threads, batch=batch, warmup=warmup, repeats=repeats)
        record.update(
            cores=os.cpu_count(),
            reference_agreement=None,
            file_bytes=path.stat().st_size,
            peak_rss_mb=peak_rss_mb(),
        )
        return record
    client = get_target(target, kernels, **(options or {}))
    reason = client.unavailable()
    if reason:
        from climbq_deploy.errors import TargetUnavailableError

        raise TargetUnavailableError(f"target {client.name!r} cannot run here: {reason}")
    startup = _load_and_first_invoke(client, path, threads, batch)
    try:
        record = client.bench(path, batch=batch, threads=threads, warmup=warmup, repeats=repeats)
    except MemoryError:  # past check_batch_fits's estimate (or a target without it)
        raise ConfigError(
            f"--batch {batch} does not fit in this machine's memory; use a smaller --batch"
        ) from None
    record.setdefault("cores", os.cpu_count())
    record["reference_agreement"] = None
    record.update(startup, file_bytes=path.stat().st_size, foreign=False)
    if data is not None:
        record.update(_accuracy(client, path, threads, data))
    record["peak_rss_mb"] = peak_rss_mb()
    return record


def _accuracy(client: Any, path: Path, threads: int, data: str | Path) -> dict[str, Any]:
    """``top1`` and ``n_images`` on ``data``'s test split, and ``reference_agreement``."""
    from climbq_deploy.data.dataset import load_dataset

    dataset = load_dataset(data)
    runner = client.load(path, threads=threads)
    check_images(dataset, runner.graph, data, path)
    predicted = predictions(runner, dataset.test_images)
    found: dict[str, Any] = {
        "top1": float(100.0 * np.mean(predicted == dataset.test_labels)),
        "n_images": len(predicted),
    }
    if not client.reference:
        found["reference_agreement"] = reference_agreement(
            runner.graph, dataset.test_images, predicted
        )
    return found


_make_callable(__name__)  # climbq_deploy.bench(...) is climbq_deploy.api.bench (see the package)
