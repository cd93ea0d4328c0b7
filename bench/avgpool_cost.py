"""What a local average pool costs once lowered: the same CNN with ``MaxPool2d(2)`` and with
``AvgPool2d(2)``, side by side, on LiteRT and ONNX Runtime.

A local average pool has no integer form between layers, so the lowering folds it into the
conv after it (:mod:`climbq_deploy.ir.passes.absorb_average_pools`): a 2x2 stride-2 pool and a
3x3 padded conv become one 6x6 stride-2 conv, 4x that conv's multiply-adds, while the max pool
stays a pool op of its own. This bench measures what that costs on a VGG-style CNN (32 x 32
input; stem 3x3 conv; then twice: pool, two 3x3 convs; global pool; float head; BatchNorm
after every conv, ReLU after every BatchNorm), quantized by :func:`climbq_deploy.quantize`
(ClimbQ+ 4-bit weights and activations, random weights, BatchNorm statistics set so the codes
spread; latency does not depend on training).

For each pool, the lowered program is written as the TFLite builtin forms (``--ops
builtin``), the fused custom op (``--ops climbq``) and the plain int8 model of its shape
(the yardstick of ``bench/tflite_latency.py``), and as the ONNX ``ort`` and ``qdq`` forms.
Every ClimbQ file is checked exact against the NumPy reference (every code of ``--images``
random images) before it is timed. Timing: all TFLite models interleaved round-robin in one
process (``bench.tflite_latency.time_round_robin``), all ONNX sessions likewise
(``bench.onnx_latency.interleaved_p50``); ``avg / max`` is the average-pool model's p50 over
the max-pool model's in the same form and run; ``MACs`` counts the program's conv
multiply-adds per image.

Usage::

    .venv/bin/python -m bench.avgpool_cost [--threads 1 2] [--batch 1 16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench._common import (
    DEFAULT_OUT,
    markdown_table,
    provenance_markdown,
    run_header,
    warn_if_busy,
    write_results,
)
from bench.onnx_latency import interleaved_p50, session
from bench.tflite_latency import PLAIN, invoker, models_of, time_round_robin
from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.graph import Graph, IntConv
from climbq_deploy.ir.passes import lower
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.quant.convert import quantize

NAME = "avgpool_cost"
POOLS = ("max", "avg")
MEAN, STD, SIZE = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 32
TFLITE_FORMS = (PLAIN, "builtin", "fused")
ONNX_FORMS = ("ort", "qdq")


class VggNet(nn.Module):
    """stem 3x3 (3 -> w); [pool 2x2; 3x3 (c -> 2c); 3x3 (2c -> 2c)] x 2; global pool; head."""

    def __init__(self, pool: str, width: int = 16, classes: int = 10) -> None:
        super().__init__()

        def unit(cin: int, cout: int) -> list[nn.Module]:
            conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
            return [conv, nn.BatchNorm2d(cout), nn.ReLU()]

        layers = unit(3, width)
        c = width
        for _ in range(2):
            layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
            layers += unit(c, 2 * c) + unit(2 * c, 2 * c)
            c *= 2
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def program(pool: str, input_bits: int) -> Graph:
    """The lowered program of :class:`VggNet` with ``pool``, quantized ClimbQ+ 4/4; BatchNorm
    statistics from 64 random images so every layer's codes spread."""
    torch.manual_seed(0)
    model = quantize(VggNet(pool), "climbq+", 4, 4)
    images = torch.rand(64, 3, SIZE, SIZE)
    x = (images - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the batches below
    with torch.no_grad():
        model(x)
    model.eval()
    return lower(capture(model, MEAN, STD, (SIZE, SIZE, 3), input_bits=input_bits))


def macs(graph: Graph) -> int:
    """Conv multiply-adds per image."""
    total = 0
    for node in graph.nodes:
        if isinstance(node, IntConv):
            h, w, _ = graph.tensors[node.output].shape
            total += h * w * int(np.prod(node.weight.shape))
    return total


def images(n: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def code_mismatches(graph: Graph, runner: Any, x: np.ndarray) -> int:
    values = ReferenceModel(graph).run(x, keep=True)
    out = runner.run(x, with_codes=True)
    wrong = 0
    for node in graph.nodes:
        if node.op == "threshold_act":
            got = out.codes[node.source]
            expected = getattr(out, "expected", None)
            want = (
                values[node.output]
                if expected is None
                else expected(node.source, values[node.output])
            )
            wrong += int(np.count_nonzero(got != want))
    return wrong


def main() -> None:
    from climbq_deploy.targets.tensorrt import TensorrtTarget
    from climbq_deploy.targets.tflite import TfliteTarget

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--budget", type=float, default=0.2, help="seconds per model per round")
    parser.add_argument("--images", type=int, default=64, help="images of the exactness check")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    load = warn_if_busy()
    x = images(args.images)
    tflite = {pool: program(pool, TfliteTarget.input_bits) for pool in POOLS}
    onnx = {pool: program(pool, TensorrtTarget.input_bits) for pool in POOLS}
    records: list[dict[str, Any]] = []
    exact: dict[tuple[str, str], int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for pool in POOLS:
            for form, ops in (("builtin", "builtin"), ("fused", "climbq")):
                target = TfliteTarget("xnnpack", ops=ops)
                path = target.export(tflite[pool], folder / f"{pool}-{form}.tflite")
                exact[(pool, form)] = code_mismatches(tflite[pool], target.load(path), x)
            for form in ONNX_FORMS:
                target = TensorrtTarget(form=form)
                path = target.export(onnx[pool], folder / f"{pool}-{form}.onnx")
                exact[(pool, form)] = code_mismatches(onnx[pool], target.load(path), x)
            print(pool, {f: n for (p, f), n in exact.items() if p == pool}, flush=True)
        for batch in args.batch:
            contents = {pool: models_of(tflite[pool], batch) for pool in POOLS}
            feed = np.zeros((batch, SIZE, SIZE, 3), np.uint8)
            for threads in args.threads:
                calls = {
                    (pool, form): invoker(form, contents[pool][form], threads)[0]
                    for pool in POOLS
                    for form in TFLITE_FORMS
                }
                times = time_round_robin(calls, args.rounds, args.budget)
                p50 = {key: statistics.median(v) for key, v in times.items()}
                sessions = {
                    (pool, form): (session(folder / f"{pool}-{form}.onnx", threads), "image")
                    for pool in POOLS
                    for form in ONNX_FORMS
                }
                p50.update(interleaved_p50(sessions, feed, args.rounds, max(1, 32 // batch)))
                for (pool, form), ms in p50.items():
                    runtime = "onnxruntime" if form in ONNX_FORMS else "litert"
                    graph = onnx[pool] if runtime == "onnxruntime" else tflite[pool]
                    record = {
                        "pool": pool,
                        "runtime": runtime,
                        "form": form,
                        "threads": threads,
                        "batch": batch,
                        "p50_ms": ms,
                        "avg_over_max": ms / p50[("max", form)] if pool == "avg" else None,
                        "macs": macs(graph),
                        "code_mismatches": exact.get((pool, form)),
                        "codes_checked_images": None if form == PLAIN else args.images,
                    }
                    records.append(record)
                    print(_row(record), flush=True)
    header = run_header(load)
    header["settings"] = {"rounds": args.rounds, "budget": args.budget, "images": args.images}
    markdown = render(records, header)
    write_results(args.out, NAME, {**header, "records": records}, markdown)
    print(markdown)


def _row(record: dict[str, Any]) -> tuple:
    ratio = record["avg_over_max"]
    wrong = record["code_mismatches"]
    return (
        record["runtime"],
        record["form"],
        record["threads"],
        record["batch"],
        record["pool"],
        f"{record['macs'] / 1e6:.2f}",
        f"{record['p50_ms']:.3f}",
        "-" if ratio is None else f"{ratio:.2f}x",
        "-" if wrong is None else ("yes" if wrong == 0 else f"NO ({wrong} codes)"),
    )


def render(records: list[dict[str, Any]], header: dict[str, Any]) -> str:
    s = header["settings"]
    ordered = sorted(
        records, key=lambda r: (r["runtime"], r["threads"], r["batch"], r["form"], r["pool"])
    )
    return (
        "# Local average pooling, lowered: AvgPool2d(2) against MaxPool2d(2) in the same CNN\n\n"
        "A VGG-style CNN at 32 x 32 (stem; twice: 2x2 pool, two 3x3 convs; global pool; head), "
        "ClimbQ+ 4-bit weights and activations, once with `MaxPool2d(2)` and once with "
        "`AvgPool2d(2)`. The average pools are folded into the 3x3 conv after each (a 6x6 "
        "stride-2 conv: 4x that conv's multiply-adds), the max pools stay pool ops. `exact`: "
        f"every code of {s['images']} random images equal to the NumPy reference. p50: median "
        f"over {s['rounds']} interleaved rounds of all models of one runtime in one process; "
        "`avg / max`: the average-pool model's p50 over the max-pool model's, same form and "
        "run. `plain-int8` is the yardstick model of each program's shape (not ClimbQ: its "
        "pools are what the program has, its avg model holds the composite convs).\n\n"
        + markdown_table(
            (
                "runtime",
                "form",
                "threads",
                "batch",
                "pool",
                "MMACs",
                "p50 ms",
                "avg / max",
                "exact",
            ),
            [_row(r) for r in ordered],
        )
        + "\n\n"
        + provenance_markdown(header)
    )


if __name__ == "__main__":
    main()
