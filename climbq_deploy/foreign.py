"""``climbq bench`` for models this toolkit did not write: a plain ``.tflite`` or ``.onnx``.

Such a model has no embedded integer program, so there is no reference to agree with and
no accuracy pass; what is measured is what the runtime does with it, the same way as for our
own models: load time (the interpreter or session made and its tensors allocated), the
first invoke, ``repeats`` timed invokes after ``warmup`` (``set_tensor`` + ``invoke`` for
LiteRT, ``run`` for ONNX Runtime) on zero inputs of the model's own dtypes and shapes, with
``batch`` on a batch axis the model leaves open (or resizes, for LiteRT).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.errors import ArtifactError, ConfigError, TargetUnavailableError

ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def is_climbq_model(path: Path) -> bool:
    """Whether ``path`` (``.tflite`` or ``.onnx``) carries a ``climbq_program`` (we wrote it).
    Checked on the file's bytes, with no runtime: the metadata's name is stored verbatim in
    both formats, and a file that has it is then read (and validated) by its target."""
    return b"climbq_program" in path.read_bytes()


def bench_foreign(
    path: Path, *, threads: int, batch: int, warmup: int, repeats: int
) -> dict[str, Any]:
    """The timing part of the bench record of a foreign ``.tflite`` or ``.onnx``."""
    from climbq_deploy.bench import host_fields, latency_fields, time_calls

    if path.suffix == ".tflite":
        load_ms, invoke, used_batch, runtime, kernels = _litert(path, threads, batch)
    elif path.suffix == ".onnx":
        load_ms, invoke, used_batch, runtime, kernels = _onnxruntime(path, threads, batch)
    else:
        raise ConfigError(f"{path}: a foreign model must be .tflite or .onnx")
    began = time.perf_counter()
    invoke()
    first_ms = (time.perf_counter() - began) * 1000
    ms = time_calls(invoke, warmup, repeats)
    return {
        "model": str(path),
        "target": "tflite" if path.suffix == ".tflite" else "onnx",
        "kernels": kernels,
        "threads": threads,
        "batch": used_batch,
        "warmup": warmup,
        "repeats": repeats,
        "load_ms": load_ms,
        "first_invoke_ms": first_ms,
        **latency_fields(ms, used_batch),
        "runtime": runtime,
        **host_fields(),
        "top1": None,
        "foreign": True,
    }


def _litert(path: Path, threads: int, batch: int) -> tuple[float, Any, int, str, str]:
    from climbq_deploy.targets.tflite import interpreter_module

    module = interpreter_module()
    if module is None:
        raise TargetUnavailableError(
            "no LiteRT interpreter here (pip install 'climbq-deploy[tflite]')"
        )
    began = time.perf_counter()
    try:
        interpreter = module.Interpreter(model_path=str(path), num_threads=threads)
        details = interpreter.get_input_details()
        if batch > 1:
            for d in details:
                if len(d["shape"]) == 0 or d["shape"][0] != 1:
                    raise ConfigError(
                        f"{path}: input {d['name']!r} has shape {list(d['shape'])}; --batch "
                        f"{batch} needs a batch axis of 1 to resize"
                    )
                interpreter.resize_tensor_input(d["index"], [batch, *d["shape"][1:]])
        interpreter.allocate_tensors()
    except ConfigError:
        raise
    except Exception as exc:  # LiteRT raises ValueError / RuntimeError with its own text
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ArtifactError(f"{path}: LiteRT cannot load it ({first})") from None
    details = interpreter.get_input_details()
    inputs = [(d["index"], np.zeros(d["shape"], d["dtype"])) for d in details]
    load_ms = (time.perf_counter() - began) * 1000

    def invoke() -> None:
        for index, value in inputs:
            interpreter.set_tensor(index, value)
        interpreter.invoke()

    used = int(details[0]["shape"][0]) if len(details[0]["shape"]) else 1
    return load_ms, invoke, used, getattr(module, "__name__", "litert"), "xnnpack"


def _onnxruntime(path: Path, threads: int, batch: int) -> tuple[float, Any, int, str, str]:
    from climbq_deploy.targets.tensorrt import onnxruntime_module

    ort = onnxruntime_module()
    if ort is None:
        raise TargetUnavailableError(
            "onnxruntime is not installed (pip install 'climbq-deploy[onnx]')"
        )
    began = time.perf_counter()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ArtifactError(f"{path}: ONNX Runtime cannot load it ({first})") from None
    feeds = {}
    used = batch
    for i, node in enumerate(session.get_inputs()):
        dtype = ORT_TYPES.get(node.type)
        if dtype is None:
            raise ConfigError(f"{path}: input {node.name!r} has type {node.type}, not a tensor")
        shape = []
        for axis, dim in enumerate(node.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif axis == 0:
                shape.append(batch)
            else:
                raise ConfigError(
                    f"{path}: input {node.name!r} has the open dimension {dim!r} at axis "
                    f"{axis} (shape {node.shape}); only the batch axis may be open"
                )
        if i == 0 and shape:
            used = shape[0]
        feeds[node.name] = np.zeros(shape, dtype)
    load_ms = (time.perf_counter() - began) * 1000

    def invoke() -> None:
        session.run(None, feeds)

    return load_ms, invoke, used, "onnxruntime", "onnxruntime-cpu"


__all__ = ["bench_foreign", "is_climbq_model"]
