"""LiteRT latency of every exact ClimbQ form against a plain int8 model of the same shape,
side by side in one process.

Forms, all written from the same lowered program of each run (``--run``, trained runs):

- ``plain-int8``: :func:`bench.plain_int8.write_plain_int8` (uniform int8 activations, fused
  ReLU: what LiteRT's int8 PTQ gives; the yardstick, not ClimbQ);
- ``int16-builtin``: ``climbq export --target tflite --ops int16`` (16x8 convs,
  GREATER_EQUAL/CAST/SUM counts; the first exact form);
- ``builtin``: ``--ops builtin`` (the default: per layer the cheapest exact form on ops
  XNNPACK runs, :mod:`climbq_deploy.targets.tflite.forms`);
- ``fused``: ``--ops climbq`` (the ``CLIMBQ_CONV_COUNT`` custom op: climbq_deploy's fused
  kernel, run through LiteRT's C API with the op registered).

For each ``threads`` x ``batch`` the four models are interleaved round-robin (``--rounds``
rounds; in each, every model runs for about ``--budget`` seconds, at least one invoke) so
that machine noise hits all alike; ``p50_ms`` is the median per-invoke time over all rounds,
``ratio_to_plain_int8`` its ratio to the plain model's in the same run. ``exact_match`` is
taken from the whole-test-set records of ``bench/tflite_check.py`` (``runs/tflite_checks``;
None when that check has not run); ``delegated_ops`` / ``total_ops`` from LiteRT's execution
plan with XNNPACK (:func:`~climbq_deploy.targets.tflite.bench.delegation`; the fused form's
compiled model does not expose its plan: None, its builtin ops are counted in ``total_ops``).

Usage::

    .venv/bin/python -m bench.tflite_latency --run runs/lowering/resnet20-climbq+-w4a4 \\
        --run runs/lowering/resnet20-climbq+-w2a2 --run runs/lowering/mobilenetv2-climbq+-w4a4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import (
    DEFAULT_OUT,
    REPO_ROOT,
    markdown_table,
    provenance_markdown,
    run_header,
    warn_if_busy,
    write_results,
)
from bench.plain_int8 import write_plain_int8
from climbq_deploy.export import load_run, lower_run
from climbq_deploy.ir.graph import Graph
from climbq_deploy.ir.serialize import program_bytes
from climbq_deploy.targets.tflite import TfliteTarget, interpreter_module
from climbq_deploy.targets.tflite.bench import delegation
from climbq_deploy.targets.tflite.export import write_tflite
from climbq_deploy.targets.tflite.flavour import int16_flavour
from climbq_deploy.targets.tflite.forms import write_fast_tflite

NAME = "tflite_latency"
PLAIN = "plain-int8"
FORMS = (PLAIN, "int16-builtin", "builtin", "fused")
CHECK_OPS = {"int16-builtin": "int16", "builtin": "builtin", "fused": "climbq"}


def models_of(graph: Graph, batch: int) -> dict[str, bytes]:
    """Each form's ``.tflite`` bytes for ``graph`` at ``batch``."""
    flavour = int16_flavour(graph)
    program = program_bytes(flavour)
    return {
        PLAIN: write_plain_int8(graph, batch),
        "int16-builtin": write_tflite(flavour, batch, program),
        "builtin": write_fast_tflite(flavour, batch, program)[0],
        "fused": write_fast_tflite(flavour, batch, program, fused=True)[0],
    }


def _op_count(content: bytes) -> int:
    from ai_edge_litert import schema_py_generated as schema

    return schema.Model.GetRootAs(content, 0).Subgraphs(0).OperatorsLength()


def invoker(form: str, content: bytes, threads: int) -> tuple[Callable[[], Any], dict]:
    """A no-argument call running one invoke of the model on a zero input, and its
    delegation record."""
    if form == "fused":
        from climbq_deploy.targets.tflite.fused_runner import FusedRunner

        runner = FusedRunner(content, threads=threads)
        x = runner.zero_input()
        ops = {"delegated_ops": None, "total_ops": _op_count(content), "partitions": None}
        return (lambda: runner.run(x)), ops
    module = interpreter_module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = module.Interpreter(
            model_content=content,
            num_threads=threads,
            experimental_op_resolver_type=module.OpResolverType.AUTO,
        )
    it.allocate_tensors()
    detail = it.get_input_details()[0]
    x = np.zeros(detail["shape"], detail["dtype"])

    def call() -> None:
        it.set_tensor(detail["index"], x)
        it.invoke()

    return call, delegation(it)


def time_round_robin(
    calls: dict[str, Callable[[], Any]], rounds: int, budget: float
) -> dict[str, list[float]]:
    """Per-invoke milliseconds of each call, interleaved (module docstring)."""
    repeats = {}
    for name, call in calls.items():
        for _ in range(3):
            call()
        began = time.perf_counter()
        call()
        repeats[name] = max(1, min(200, int(budget / max(time.perf_counter() - began, 1e-6))))
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(repeats[name]):
                began = time.perf_counter()
                call()
                times[name].append(1000 * (time.perf_counter() - began))
    return times


def exact_records(records: Path, run: str) -> dict[str, bool | None]:
    """``exact_match`` of each form on the whole test set (xnnpack kernels) from
    ``bench/tflite_check.py``'s records, None where the check has not run."""
    out: dict[str, bool | None] = {PLAIN: None}
    for form, ops in CHECK_OPS.items():
        stem = f"{run}-xnnpack" if ops == "int16" else f"{run}-{ops}-xnnpack"
        path = records / f"{stem}.json"
        out[form] = json.loads(path.read_text())["exact_match"] if path.is_file() else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, action="append", required=True)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.2, help="seconds per model per round")
    parser.add_argument("--records", type=Path, default=REPO_ROOT / "runs" / "tflite_checks")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--refresh-exact",
        action="store_true",
        help="no timing: re-read exact_match from --records into the results in --out",
    )
    args = parser.parse_args()
    if args.refresh_exact:
        refresh_exact(args)
        return
    load = warn_if_busy()
    records: list[dict[str, Any]] = []
    for run_dir in args.run:
        graph = lower_run(load_run(run_dir), input_bits=TfliteTarget.input_bits)
        exact = exact_records(args.records, run_dir.name)
        for batch in args.batch:
            models = models_of(graph, batch)
            for threads in args.threads:
                live = {form: invoker(form, models[form], threads) for form in FORMS}
                times = time_round_robin(
                    {form: call for form, (call, _) in live.items()}, args.rounds, args.budget
                )
                plain = statistics.median(times[PLAIN])
                for form in FORMS:
                    p50 = statistics.median(times[form])
                    ops = live[form][1]
                    record = {
                        "run": run_dir.name,
                        "form": form,
                        "threads": threads,
                        "batch": batch,
                        "p50_ms": p50,
                        "p90_ms": float(np.percentile(times[form], 90)),
                        "ratio_to_plain_int8": p50 / plain,
                        "exact_match": exact[form],
                        "bytes": len(models[form]),
                        "delegated_ops": ops["delegated_ops"],
                        "total_ops": ops["total_ops"],
                        "partitions": ops["partitions"],
                        "invokes": len(times[form]),
                    }
                    records.append(record)
                    print(_row(record), flush=True)
    header = run_header(load)
    header["settings"] = {"rounds": args.rounds, "budget": args.budget}
    markdown = render(records, header)
    write_results(args.out, NAME, {**header, "records": records}, markdown)
    print(markdown)


def _row(record: dict[str, Any]) -> tuple:
    exact = {True: "yes", False: "NO", None: "-"}[record["exact_match"]]
    ops = (
        "-"
        if record["delegated_ops"] is None
        else f"{record['delegated_ops']}/{record['total_ops']}"
    )
    return (
        record["run"],
        record["threads"],
        record["batch"],
        record["form"],
        f"{record['p50_ms']:.3f}",
        f"{record['ratio_to_plain_int8']:.2f}x",
        exact,
        record["bytes"],
        ops,
    )


def render(records: list[dict[str, Any]], header: dict[str, Any]) -> str:
    """The markdown table of the records, with the machine and command."""
    settings = header.get("settings", {"rounds": "?", "budget": "?"})
    return (
        "# ClimbQ TFLite forms vs a plain int8 model of the same shape (LiteRT, XNNPACK)\n\n"
        f"Each cell: median per-invoke time over {settings['rounds']} interleaved rounds (about "
        f"{settings['budget']} s of invokes per model per round) in one process; ratio = p50 / "
        "p50 of the plain int8 model in the same run (threads, batch). `exact`: every code of "
        "the whole SynDigits-LT test set equal to the NumPy reference (bench/tflite_check.md; "
        "'-' not checked, the plain int8 model is not ClimbQ). `XNNPACK ops`: operators "
        "XNNPACK runs / all operators ('-': the fused form runs through LiteRT's C API, whose "
        "compiled model does not expose its plan).\n\n"
        + markdown_table(
            (
                "run",
                "threads",
                "batch",
                "form",
                "p50 ms",
                "p50 / plain int8",
                "exact",
                "bytes",
                "XNNPACK ops",
            ),
            [_row(r) for r in records],
        )
        + "\n\n"
        + provenance_markdown(header)
    )


def refresh_exact(args: argparse.Namespace) -> None:
    """Re-read ``exact_match`` of every record from the check records (timings unchanged)."""
    payload = json.loads((args.out / f"{NAME}.json").read_text())
    for record in payload["records"]:
        record["exact_match"] = exact_records(args.records, record["run"])[record["form"]]
    header = {k: v for k, v in payload.items() if k != "records"}
    write_results(args.out, NAME, payload, render(payload["records"], header))


if __name__ == "__main__":
    main()
