"""What the stem costs in the fused TFLite form: the stem layer alone (its builtin float sign
sum: the fused kernel takes int8 codes, the stem reads the 20-bit input) against the whole
``--ops climbq`` model, interleaved in one process (LiteRT, XNNPACK, 1 thread, batch 1).

Usage::

    .venv/bin/python -m bench.tflite_stem --run runs/lowering/resnet20-climbq+-w4a4 \\
        --run runs/lowering/mobilenetv2-climbq+-w4a4
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench._common import (
    DEFAULT_OUT,
    markdown_table,
    provenance_markdown,
    run_header,
    warn_if_busy,
    write_results,
)
from bench.plain_int8 import write_plain_int8
from bench.tflite_latency import invoker, time_round_robin
from climbq_deploy.export import load_run, lower_run
from climbq_deploy.ir.graph import Graph
from climbq_deploy.ir.layers import ConvLayer, iter_layers, op_entry
from climbq_deploy.targets.tflite import TfliteTarget, forms
from climbq_deploy.targets.tflite.flavour import int16_flavour

NAME = "tflite_stem"


def stem_model(graph: Graph) -> bytes:
    """The input and the stem layer of the fused-form writer, its codes as the output."""
    e = forms._FastEmit(graph, 1, "int8")
    e.forms = {c.layer: c.chosen for c in forms.choose_forms(graph, fused=True)}
    for layer in iter_layers(graph):
        op_entry(forms.FAST_EMITTERS, layer)(e, layer)
        if isinstance(layer, ConvLayer):
            e.b.set_io(e.inputs, [e.float_view(layer.act.output)])
            return e.b.build()
    raise ValueError("the program has no conv layer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, action="append", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.1, help="seconds per model per round")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    load = warn_if_busy()
    records, rows = [], []
    for run_dir in args.run:
        graph = lower_run(load_run(run_dir), input_bits=TfliteTarget.input_bits)
        flavour = int16_flavour(graph)
        calls = {
            "plain int8": invoker("builtin", write_plain_int8(graph, 1), 1)[0],
            "stem alone": invoker("builtin", stem_model(flavour), 1)[0],
            "fused model": invoker("fused", forms.write_fast_tflite(flavour, fused=True)[0], 1)[0],
        }
        times = time_round_robin(calls, args.rounds, args.budget)
        ms = {name: statistics.median(values) for name, values in times.items()}
        records.append({"run": run_dir.name, "p50_ms": ms})
        rows.append(
            (
                run_dir.name,
                *(f"{ms[name]:.3f}" for name in calls),
                f"{ms['stem alone'] / ms['fused model']:.0%}",
            )
        )
        print(rows[-1], flush=True)
    header = run_header(load)
    markdown = (
        "# The stem's share of the fused TFLite model (LiteRT, XNNPACK, 1 thread, batch 1)\n\n"
        f"p50 ms over {args.rounds} interleaved rounds. `stem alone`: the input and the first "
        "conv layer as the fused writer emits it (a float sign sum: the kernel takes int8 "
        "codes, the stem reads the 20-bit input).\n\n"
        + markdown_table(
            ("run", "plain int8 ms", "stem alone ms", "fused model ms", "stem / fused"), rows
        )
        + "\n\n"
        + provenance_markdown(header)
    )
    write_results(args.out, NAME, {**header, "records": records}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
