"""Batch-1 LiteRT latency of the ClimbQ TFLite models against a plain int8 model of the same
shape from the same writer (the issue's yardstick), side by side in one process.

Models, all from the same lowered program of each run:

- ``plain int8``: :func:`bench.plain_int8.write_plain_int8` (uniform
  activation quantization, fused ReLU; what the LiteRT converter's int8 PTQ gives);
- ``ClimbQ exact int16``: ``climbq export --target tflite`` (int8 filters), bit-exact;
- ``ClimbQ exact int16, int4 filters``: ``--weights int4``, the same outputs;
- ``int8 count probe``: *not a usable model* — the cheapest compare-and-count we found on
  LiteRT builtins in int8 (conv to int8, then a 1x1 depthwise conv with multiplier n giving
  ``clamp(2 (y - t) + 1, -1, 1)`` per threshold, then a grouped 1x1 conv summing the n signs).
  Thresholds are zeros: only its time is meaningful. It bounds what an int8 ClimbQ form with
  requantized (approximate) thresholds would cost.

Timing: the models are interleaved round-robin (``--rounds`` rounds of ``--repeats`` invokes
each, after warm-up) so machine noise hits all alike; the table gives the median per-invoke
time over all rounds and the ratio to the plain model in the same run.

Usage::

    .venv/bin/python -m bench.tflite_latency --run runs/lowering/resnet20-climbq+-w4a4 \
        --run runs/lowering/resnet20-climbq+-w2a2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._common import (
    DEFAULT_OUT,
    markdown_table,
    provenance_markdown,
    run_header,
    warn_if_busy,
    write_results,
)
from bench.plain_int8 import write_conv, write_plain_int8
from climbq_deploy.export import load_run, lower_run
from climbq_deploy.ir.graph import Graph, IntConv, ThresholdAct
from climbq_deploy.targets.tflite import TfliteTarget, interpreter_module
from climbq_deploy.targets.tflite.builder import ModelBuilder

NAME = "tflite_latency"
PLAIN = "plain int8"


def count_probe(graph: Graph) -> bytes:
    """The plain int8 model plus an int8 compare-and-count after every conv (module docstring).
    Built by rewriting each conv's output into the probe's three ops."""

    def conv_then_count(
        b: ModelBuilder, conv: IntConv, x, in_shape, batch, out, in_scale, multipliers, activation
    ) -> None:
        act = next(
            n for n in graph.nodes if isinstance(n, ThresholdAct) and n.inputs[0] == conv.output
        )
        n = act.thresholds.shape[1]
        h, w, c = graph.tensors[conv.output].shape
        y = b.add_tensor(f"{conv.output}/y", (batch, h, w, c), "int8", scale=1.0, zero_point=0)
        write_conv(b, conv, x, in_shape, batch, y, in_scale, multipliers, "NONE")
        k = c * n
        unit = {"zero_point": 0}

        def const(name: str, values: np.ndarray, axis: int = 0) -> int:
            scales = [1.0] * values.shape[axis]
            return b.add_tensor(
                f"{conv.output}/{name}",
                values.shape,
                str(values.dtype),
                data=values,
                scale=scales,
                quantized_dimension=axis,
            )

        signs = b.add_tensor(f"{conv.output}/signs", (batch, h, w, k), "int8", scale=1.0, **unit)
        two = const("two", np.full((1, 1, 1, k), 2, np.int8), axis=3)
        one_minus_2t = const("one_minus_2t", np.ones(k, np.int32))
        b.add_operator(
            "DEPTHWISE_CONV_2D",
            [y, two, one_minus_2t],
            [signs],
            depth_multiplier=n,
            padding="VALID",
            fused_activation="RELU_N1_TO_1",
        )
        ones = const("sum", np.ones((c, 1, 1, n), np.int8))
        zero = const("sum_bias", np.zeros(c, np.int32))
        b.add_operator(
            "CONV_2D", [signs, ones, zero], [out], padding="VALID", fused_activation=activation
        )

    return write_plain_int8(graph, conv_writer=conv_then_count)


def models_of(run_dir: Path, tmp: Path) -> dict[str, bytes]:
    run = load_run(run_dir)
    graph = lower_run(run, input_bits=TfliteTarget.input_bits)
    out = {PLAIN: write_plain_int8(graph)}
    for weights in ("int8", "int4"):
        path = TfliteTarget("xnnpack", weights).export(graph, tmp / f"{weights}.tflite")
        label = "ClimbQ exact int16" + (", int4 filters" if weights == "int4" else "")
        out[label] = path.read_bytes()
    out["int8 count probe"] = count_probe(graph)
    return out


def interpreter(content: bytes, threads: int, kernels: str):
    module = interpreter_module()
    resolver = {"xnnpack": "AUTO", "optimized": "BUILTIN_WITHOUT_DEFAULT_DELEGATES"}[kernels]
    it = module.Interpreter(
        model_content=content,
        num_threads=threads,
        experimental_op_resolver_type=getattr(module.OpResolverType, resolver),
    )
    it.allocate_tensors()
    detail = it.get_input_details()[0]
    x = np.zeros(detail["shape"], detail["dtype"])
    return it, detail["index"], x


def time_round_robin(
    models: dict[str, bytes], threads: int, kernels: str, rounds: int, repeats: int
) -> dict[str, list[float]]:
    live = {name: interpreter(content, threads, kernels) for name, content in models.items()}
    for it, index, x in live.values():
        for _ in range(10):
            it.set_tensor(index, x)
            it.invoke()
    times: dict[str, list[float]] = {name: [] for name in live}
    for _ in range(rounds):
        for name, (it, index, x) in live.items():
            for _ in range(repeats):
                began = time.perf_counter()
                it.set_tensor(index, x)
                it.invoke()
                times[name].append(1000 * (time.perf_counter() - began))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, action="append", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    load = warn_if_busy()
    records, rows = [], []
    for run_dir in args.run:
        with tempfile.TemporaryDirectory() as tmp:
            models = models_of(run_dir, Path(tmp))
        for threads in (1, 2):
            for kernels in ("xnnpack", "optimized"):
                times = time_round_robin(models, threads, kernels, args.rounds, args.repeats)
                plain = statistics.median(times[PLAIN])
                for name, values in times.items():
                    p50 = statistics.median(values)
                    records.append(
                        {
                            "run": str(run_dir),
                            "model": name,
                            "threads": threads,
                            "kernels": kernels,
                            "bytes": len(models[name]),
                            "p50_ms": p50,
                            "p90_ms": float(np.percentile(values, 90)),
                            "p99_ms": float(np.percentile(values, 99)),
                            "ratio_to_plain_int8": p50 / plain,
                            "times_ms": values,
                        }
                    )
                    rows.append(
                        (
                            run_dir.name,
                            threads,
                            kernels,
                            name,
                            len(models[name]),
                            f"{p50:.3f}",
                            f"{np.percentile(values, 90):.3f}",
                            f"{p50 / plain:.1f}x",
                        )
                    )
    header = run_header(load)
    markdown = (
        "# ClimbQ TFLite models vs a plain int8 model of the same shape, batch 1\n\n"
        f"Each cell: median of {args.rounds} x {args.repeats} invokes, models interleaved "
        "round-robin in one process; ratio = p50 / p50 of the plain int8 model in the same "
        "run (threads, kernels). `int8 count probe` is a timing probe, not a usable model "
        "(see bench/tflite_latency.py).\n\n"
        + markdown_table(
            ("run", "threads", "kernels", "model", "bytes", "p50 ms", "p90 ms", "p50 / plain int8"),
            rows,
        )
        + "\n\n"
        + provenance_markdown(header)
    )
    write_results(args.out, NAME, {**header, "records": records}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
