"""What an int8 requantization before the count would cost in accuracy (issue 5's latency
question): the ClimbQ activation counted on a rounded accumulator instead of the exact one.

LiteRT's fast int8 kernels (XNNPACK) return a conv's accumulator only as a rounded int8; an
int8 compare-and-count would therefore count ``v' = (v - o_c + 2**(s_c-1)) >> s_c`` (a
per-channel offset ``o_c`` through the bias, a per-channel multiplier ``2**-s_c`` through the
filter scale) against snapped thresholds ``floor(theta / 2**s_c) + 1``. This script emulates
exactly that in the NumPy reference (``ThresholdAct.shift``) for every conv-fed activation but
the stem, with the smallest ``s_c`` that brings each channel's own threshold span within
``span`` (int8: 250), and compares codes and top-1 with the exact program on evenly spaced test
images. ``span`` = 2**31 is the exact program (no shift): a control that must give agreement 1.

    .venv/bin/python -m research.studies.tflite_int8_requant RUN [--images 1000] \\
        [--spans 250 4000 2147483647]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench._common import markdown_table, provenance_markdown, run_header, write_results
from climbq_deploy.data.dataset import load_dataset
from climbq_deploy.export import load_run, lower_run
from climbq_deploy.ir.graph import Graph, InputQuant, IntConv, Node, ThresholdAct
from climbq_deploy.kernels.reference import ReferenceModel
from climbq_deploy.targets.tflite.flavour import snap_thresholds_to_shift
from research import RESULTS

NAME = "tflite_int8_requant"


def span_shifts(thresholds: np.ndarray, direction: np.ndarray, span: int) -> np.ndarray:
    """Per channel, the smallest ``s`` with ``((max - min) >> s) + 1 <= span`` over the
    channel's thresholds (0 for constant channels), int64 ``(C,)``."""
    theta = thresholds.astype(np.int64)
    width = theta.max(axis=1) - theta.min(axis=1)
    shift = np.full(len(theta), -1, np.int64)
    for s in range(32):
        shift[(shift < 0) & ((width >> s) + 1 <= span)] = s
    shift[(shift < 0) | (direction == 0)] = 0
    return shift


def requantized(graph: Graph, span: int) -> tuple[Graph, int]:
    """``graph`` with every conv-fed ThresholdAct but the stem's counting on the requantized
    accumulator; also the number of channels that got a shift. A per-channel offset that is a
    multiple of ``2**s`` moves nothing but the stored range, so it is left out here."""
    producers = {n.output: n for n in graph.nodes}
    program_input = next(n.output for n in graph.nodes if isinstance(n, InputQuant))
    nodes: list[Node] = []
    shifted = 0
    for node in graph.nodes:
        conv = producers.get(node.inputs[0])
        if (
            isinstance(node, ThresholdAct)
            and isinstance(conv, IntConv)
            and (conv.inputs[0] != program_input)
        ):
            shift = span_shifts(node.thresholds, node.direction, span)
            snapped = snap_thresholds_to_shift(node.thresholds, shift)
            shifted += int(np.count_nonzero(shift))
            node = replace(
                node, shift=shift.astype(np.int8) if shift.any() else None, thresholds=snapped
            )
        nodes.append(node)
    return graph.replace_nodes(nodes), shifted


def compare(run_dir: Path, spans: list[int], images: int) -> list[dict]:
    run = load_run(run_dir)
    graph = lower_run(run, input_bits=20)
    dataset = load_dataset(run.config.data)
    chosen = np.unique(np.round(np.linspace(0, len(dataset.test_images) - 1, images)).astype(int))
    x, y = dataset.test_images[chosen], dataset.test_labels[chosen]
    acts = {n.output for n in graph.nodes if isinstance(n, ThresholdAct)}
    exact = ReferenceModel(graph)
    reference = [exact.run(x[i : i + 100], keep=acts) for i in range(0, len(x), 100)]
    exact_pred = np.concatenate([r[graph.output].argmax(1) for r in reference])
    records = []
    for span in spans:
        began = time.perf_counter()
        program, shifted = requantized(graph, span)
        model = ReferenceModel(program)
        equal = total = 0
        preds = []
        for i, ref in zip(range(0, len(x), 100), reference, strict=True):
            out = model.run(x[i : i + 100], keep=acts)
            equal += sum(int(np.count_nonzero(out[t] == ref[t])) for t in acts)
            total += sum(ref[t].size for t in acts)
            preds.append(out[program.output].argmax(1))
        pred = np.concatenate(preds)
        records.append(
            {
                "run": str(run_dir),
                "span": span,
                "images": len(x),
                "shifted_channels": shifted,
                "code_agreement": equal / total,
                "top1_agreement": float(np.mean(pred == exact_pred)),
                "top1_exact": 100 * float(np.mean(exact_pred == y)),
                "top1_requantized": 100 * float(np.mean(pred == y)),
                "seconds": time.perf_counter() - began,
            }
        )
        print(records[-1], flush=True)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--spans", type=int, nargs="+", default=[250, 4000, 2**31 - 1])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    header = run_header()
    records = [r for run in args.runs for r in compare(run, args.spans, args.images)]
    rows = [
        (
            Path(r["run"]).name,
            f"{r['span']:,}",
            r["shifted_channels"],
            r["images"],
            f"{r['code_agreement']:.5f}",
            f"{r['top1_agreement']:.4f}",
            f"{r['top1_exact']:.2f}",
            f"{r['top1_requantized']:.2f}",
        )
        for r in records
    ]
    markdown = (
        "# ClimbQ activation counted on a requantized accumulator (int8 emulation)\n\n"
        "Each conv-fed activation but the stem counts `(v + 2**(s-1)) >> s` against "
        "`floor(theta / 2**s) + 1`, with the smallest per-channel `s` that brings the channel's "
        "threshold span within `span` (int8 with a per-channel offset: 250). Agreement is with "
        "the exact program (NumPy reference) on evenly spaced test images; a flipped code moves "
        "every later accumulator, so flips spread through the network. span 2,147,483,647: no "
        "shift (control).\n\n"
        + markdown_table(
            (
                "run",
                "span",
                "shifted channels",
                "images",
                "code agreement",
                "top-1 agreement",
                "top-1 exact %",
                "top-1 requantized %",
            ),
            rows,
        )
        + "\n\n"
        + provenance_markdown(header)
    )
    write_results(args.out, NAME, {**header, "records": records}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
