"""What the uint8 model contract's input step costs: each run's program written with uint8
images in (the default: CAST, MUL, ADD and a GATHER of the 256 x C table inside the model) and
with the int32 integer input ``I`` (``--input int32``, the host quantizes), timed side by side:
on LiteRT the builtin forms and the fused op (the plain int8 model of the same shape as the
yardstick), on ONNX Runtime the ``ort`` and ``qdq`` forms of the tensorrt target.

LiteRT: all models of one run and batch interleaved round-robin in one process
(``bench.tflite_latency.time_round_robin``: ``--rounds`` rounds of about ``--budget`` s per
model). ONNX Runtime: the four sessions likewise, each fed its own input (uint8 NHWC images,
or the float32 NCHW ``I`` the int32 form reads), median over the rounds of the mean of 20
calls (2 at batch 16). ``uint8 / int32`` is the ratio of the two input forms' medians. Both
forms are exact on the whole SynDigits-LT test set (``bench/results/uint8_contract_check.md``
for the uint8 files, ``tflite_check.md`` and ``onnx_check.md`` for the int32 ones).

Usage::

    .venv/bin/python -m bench.input_step_cost --run runs/lowering/resnet20-climbq+-w4a4 \\
        --run runs/lowering/mobilenetv2-climbq+-w4a4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench._common import (
    DEFAULT_OUT,
    markdown_table,
    provenance_markdown,
    run_header,
    warn_if_busy,
    write_results,
)
from bench.onnx_latency import interleaved_p50, session
from bench.plain_int8 import write_plain_int8
from bench.tflite_latency import PLAIN, invoker, time_round_robin
from climbq_deploy.export import load_run, lower_run
from climbq_deploy.ir.serialize import program_bytes
from climbq_deploy.targets.tensorrt import TensorrtTarget
from climbq_deploy.targets.tflite import TfliteTarget
from climbq_deploy.targets.tflite.flavour import int16_flavour
from climbq_deploy.targets.tflite.forms import write_fast_tflite

NAME = "input_step_cost"
INPUTS = ("uint8", "int32")
ONNX_FORMS = ("ort", "qdq")


def onnx_p50(graph, batch: int, threads: int, rounds: int, folder: Path) -> dict:
    """``{(form, input): (p50 ms, bytes)}`` of the ONNX forms, interleaved."""
    import numpy as np

    h, w, c = graph.tensors[graph.input].shape
    rng = np.random.default_rng(0)
    inputs = {
        "uint8": rng.integers(0, 256, (batch, h, w, c), dtype=np.uint8),
        "int32": rng.integers(-(2**19), 2**19, (batch, c, h, w)).astype(np.float32),
    }
    sessions, feeds, sizes = {}, {}, {}
    for form in ONNX_FORMS:
        for kind in INPUTS:
            path = TensorrtTarget(form=form, input=kind).export(
                graph, folder / f"{form}-{kind}.onnx"
            )
            s = session(path, threads)
            sessions[(form, kind)] = (s, s.get_inputs()[0].name)
            feeds[(form, kind)], sizes[(form, kind)] = inputs[kind], path.stat().st_size
    p50 = interleaved_p50(sessions, feeds, rounds, 20 if batch == 1 else 2)
    return {key: (ms, sizes[key]) for key, ms in p50.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, action="append", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--budget", type=float, default=0.2, help="seconds per model per round")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    load = warn_if_busy()
    records: list[dict[str, Any]] = []
    for run in args.run:
        graph = lower_run(load_run(run), input_bits=TfliteTarget.input_bits)
        flavour = int16_flavour(graph)
        program = program_bytes(flavour)
        for batch in args.batch:
            models = {(PLAIN, "-"): write_plain_int8(graph, batch)}
            for form, fused in (("builtin", False), ("fused", True)):
                for kind in INPUTS:
                    content = write_fast_tflite(
                        flavour, batch, program, fused=fused, input_form=kind
                    )
                    models[(form, kind)] = content[0]
            calls = {
                key: invoker(key[0], content, args.threads)[0] for key, content in models.items()
            }
            times = time_round_robin(calls, args.rounds, args.budget)
            p50 = {key: statistics.median(values) for key, values in times.items()}
            for (form, kind), ms in p50.items():
                record = {
                    "run": run.name,
                    "runtime": "litert",
                    "batch": batch,
                    "threads": args.threads,
                    "form": form,
                    "input": kind,
                    "p50_ms": ms,
                    "uint8_over_int32": ms / p50[(form, "int32")] if kind == "uint8" else None,
                    "over_plain_int8": ms / p50[(PLAIN, "-")],
                    "bytes": len(models[(form, kind)]),
                }
                records.append(record)
                print(_row(record), flush=True)
            onnx_graph = lower_run(load_run(run), input_bits=TensorrtTarget.input_bits)
            with tempfile.TemporaryDirectory() as tmp:
                timed = onnx_p50(onnx_graph, batch, args.threads, args.rounds, Path(tmp))
            for (form, kind), (ms, size) in timed.items():
                record = {
                    "run": run.name,
                    "runtime": "onnxruntime",
                    "batch": batch,
                    "threads": args.threads,
                    "form": form,
                    "input": kind,
                    "p50_ms": ms,
                    "uint8_over_int32": ms / timed[(form, "int32")][0] if kind == "uint8" else None,
                    "over_plain_int8": None,
                    "bytes": size,
                }
                records.append(record)
                print(_row(record), flush=True)
    header = run_header(load)
    header["settings"] = {"rounds": args.rounds, "budget": args.budget}
    markdown = render(records, header)
    write_results(args.out, NAME, {**header, "records": records}, markdown)
    print(markdown)


def _row(record: dict[str, Any]) -> tuple:
    ratio, plain = record["uint8_over_int32"], record["over_plain_int8"]
    return (
        record["run"],
        record["runtime"],
        record["batch"],
        record["threads"],
        record["form"],
        record["input"],
        f"{record['p50_ms']:.3f}",
        "-" if ratio is None else f"{ratio:.3f}x",
        "-" if plain is None else f"{plain:.2f}x",
        record["bytes"],
    )


def render(records: list[dict[str, Any]], header: dict[str, Any]) -> str:
    s = header["settings"]
    return (
        "# The uint8 input step: uint8 images in against the int32 input\n\n"
        "Each run's program with uint8 NHWC images in (the model contract: CAST, MUL, ADD, "
        "GATHER of the input table inside the model) and with the int32 integer input "
        f"(`--input int32`). p50: median per-invoke ms over {s['rounds']} interleaved rounds "
        f"of all models of one run, batch and runtime in one process (LiteRT: about "
        f"{s['budget']} s per model per round, XNNPACK on; ONNX Runtime: the mean of 20 calls, "
        "2 at batch 16, per round, each session fed its own input form); `uint8 / int32`: the "
        "ratio of the two input forms; `/ plain int8`: over LiteRT's plain int8 model of the "
        "program's shape in the same run.\n\n"
        + markdown_table(
            (
                "run",
                "runtime",
                "batch",
                "threads",
                "form",
                "input",
                "p50 ms",
                "uint8 / int32",
                "/ plain int8",
                "bytes",
            ),
            [_row(r) for r in records],
        )
        + "\n\n"
        + provenance_markdown(header)
    )


if __name__ == "__main__":
    main()
