"""Latency of an exported ``.tflite`` under LiteRT: :meth:`TfliteTarget.bench
<climbq_deploy.targets.tflite.TfliteTarget.bench>`.

Wall-clock ``time.perf_counter`` around ``set_tensor`` + ``invoke`` of one input of
``batch`` images (the model's batch axis resized to it; the fused op's C API route runs the
stored batch, 1), on an interpreter with ``threads`` threads and the chosen kernels. The
input is what the model reads: uint8 images for a model of the uint8 contract (its input step
runs inside and is timed), the integer input ``I`` for a file of the int32 input form (the
host's input quantization is not timed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.bench import host_fields, latency_fields, time_calls
from climbq_deploy.errors import ConfigError, DataError


def bench_tflite(
    model: str | Path,
    threads: int = 1,
    kernels: str = "xnnpack",
    warmup: int = 10,
    repeats: int = 100,
    batch: int = 1,
) -> dict[str, Any]:
    """The latency record of one ``.tflite`` written by climbq_deploy at ``batch`` images per
    invoke."""
    from climbq_deploy.targets.tflite import KERNELS, TfliteRunner, interpreter_module

    if kernels not in KERNELS:
        raise ConfigError(f"kernels must be one of {KERNELS}, got {kernels!r}")
    if threads < 1 or warmup < 0 or repeats < 1 or batch < 1:
        raise ConfigError("batch, threads and repeats must be >= 1, warmup >= 0")
    module = interpreter_module()
    if module is None:
        raise ConfigError("no LiteRT interpreter here (pip install climbq-deploy[tflite])")
    path = Path(model)
    if not path.is_file():
        raise DataError(f"no model file at {path}")
    runner = TfliteRunner(path, kernels)  # validates the file (and program) before LiteRT
    if runner.fused:  # the CLIMBQ_CONV_COUNT op: LiteRT's C API route, op registered
        from climbq_deploy.targets.tflite.fused_runner import FusedRunner

        if batch != 1:
            raise ConfigError(
                f"{path} holds the fused custom op, run through LiteRT's C API at the stored "
                "batch 1; bench it with --batch 1 (builtin forms take any batch)"
            )
        fused = FusedRunner(path.read_bytes(), threads=threads, path=path)
        x = fused.zero_input()
        ms = time_calls(lambda: fused.run(x), warmup, repeats)
        runtime = "litert-c-api+climbq-fused"
        ops = None  # a compiled model does not expose its partitions
    else:
        ms, ops = _time_interpreter(module, path, threads, kernels, warmup, repeats, batch)
        runtime = getattr(module, "__name__", "interpreter")
    return {
        "model": str(path),
        "target": "tflite",
        "kernels": kernels,
        "threads": threads,
        "batch": batch,
        "warmup": warmup,
        "repeats": repeats,
        **latency_fields(ms, batch),
        "runtime": runtime,
        "delegation": ops,
        **host_fields(),
        "top1": None,
    }


def _time_interpreter(
    module: Any, path: Path, threads: int, kernels: str, warmup: int, repeats: int, batch: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Milliseconds per invoke of ``batch`` inputs of a builtin-op model under LiteRT's
    Interpreter (axis 0 of its input resized), and its :func:`delegation`."""
    from climbq_deploy.targets.tflite import RESOLVERS

    interpreter = module.Interpreter(
        model_content=path.read_bytes(),
        num_threads=threads,
        experimental_op_resolver_type=getattr(module.OpResolverType, RESOLVERS[kernels]),
    )
    detail = interpreter.get_input_details()[0]
    shape = [batch, *detail["shape"][1:]]
    if batch != int(detail["shape"][0]):
        try:
            interpreter.resize_tensor_input(detail["index"], shape)
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"{path}: LiteRT cannot run batch {batch}: {exc}") from None
    try:
        interpreter.allocate_tensors()
    except RuntimeError as exc:  # a model whose reshapes fix the batch (files before the
        # open batch axis) fails to prepare at another batch
        raise ConfigError(f"{path}: LiteRT cannot run batch {batch}: {exc}") from None
    x = np.zeros(shape, detail["dtype"])

    def invoke() -> None:
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()

    return time_calls(invoke, warmup, repeats), delegation(interpreter)


def delegation(interpreter: Any) -> dict[str, Any]:
    """How many of the model's operators a delegate (XNNPACK) runs: ``delegated_ops``,
    ``total_ops``, ``partitions`` (delegate nodes) and ``left_ops`` (names of the operators
    LiteRT runs itself, in execution order).

    LiteRT replaces each partition of delegated operators by one ``DELEGATE`` node whose inputs
    are the tensors entering the partition; the operators inside are those reached backwards
    from the node's outputs without crossing its inputs."""
    ops = interpreter._get_ops_details()
    original = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): op["index"] for op in original for t in op["outputs"]}
    by_index = {op["index"]: op for op in original}
    inside: set[int] = set()
    partitions = 0
    for node in ops:
        if node["op_name"] != "DELEGATE":
            continue
        partitions += 1
        entering = {int(t) for t in node["inputs"]}
        todo = [int(t) for t in node["outputs"]]
        seen: set[int] = set()
        while todo:
            tensor = todo.pop()
            if tensor in seen or tensor in entering or tensor not in producer:
                continue
            seen.add(tensor)
            op = producer[tensor]
            if op not in inside:
                inside.add(op)
                todo.extend(int(t) for t in by_index[op]["inputs"] if int(t) >= 0)
    return {
        "delegated_ops": len(inside),
        "total_ops": len(original),
        "partitions": partitions,
        "left_ops": [op["op_name"] for op in original if op["index"] not in inside],
    }
