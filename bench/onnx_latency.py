"""ONNX forms of ClimbQ ResNet-20 under ONNX Runtime (CPU) against a plain int8 QDQ ResNet-20.

For each model (the trained runs of ``runs/lowering`` where their ``checkpoint.pt`` and
``metrics.json`` exist, else a random-BatchNorm ResNet-20 like the tests'):

1. Exactness: every form (``--form`` of the tensorrt target: ``qdq``, ``sign_sum``,
   ``int8_dup``, ``ort``) on 16 images, every code of every layer against
   :class:`~climbq_deploy.kernels.ReferenceModel` of the same program; with ``--check``, the
   ``ort`` form of each trained run on the whole test set (``climbq check --target tensorrt
   --form ort``, :func:`~climbq_deploy.check.check_run`).
2. Latency: the forms and the plain int8 QDQ model of the same shape
   (:func:`bench.onnx_plain_int8.write_plain_int8_onnx`, fused by ONNX Runtime into
   ``QLinearConv``/``QLinearAdd``) in one process, interleaved round by round (each round runs
   every model ``calls`` times), at 1 and 2 intra-op threads, batch 1 and 64; p50 of the
   per-call means of the rounds, and its ratio to the plain int8 model's p50 of the same
   setting. Session options are the toolkit runner's (deterministic compute, memory arena
   off) for every model, the plain one included. Input: random integers in the 20-bit input
   range (latency does not depend on the values).

Usage::

    .venv/bin/python -m bench.onnx_latency [--runs runs/lowering] [--check] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
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
from bench.onnx_plain_int8 import write_plain_int8_onnx
from climbq_deploy.ir.graph import Graph, ThresholdAct
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.targets.tensorrt import OnnxRuntimeRunner, TensorrtTarget

NAME = "onnx_latency"
FORMS = ("qdq", "sign_sum", "int8_dup", "ort")
RUNS = ("resnet20-climbq+-w4a4", "resnet20-climbq+-w2a2")
CHECK_RUNS = (*RUNS, "mobilenetv2-climbq+-w4a4")  # --check: whole test set, where trained
SETTINGS = ((1, 1), (2, 1), (1, 64), (2, 64))  # (threads, batch)


def random_resnet20(bits: int) -> Graph:
    """A ResNet-20 ClimbQ+ with the tests' random BatchNorm, lowered with 20-bit input."""
    import torch

    from climbq_deploy.ir.capture import capture
    from climbq_deploy.ir.passes import lower
    from climbq_deploy.models.common import QuantSpec
    from climbq_deploy.models.resnet import CifarResNet
    from tests.conftest import MEAN, STD, randomize_batchnorm

    torch.manual_seed(bits)
    model = CifarResNet(20, 10, QuantSpec("climbq+", bits, bits))
    randomize_batchnorm(model, bits)
    return lower(capture(model, MEAN, STD, (32, 32, 3), input_bits=20))


def models(runs: Path) -> dict[str, Graph]:
    """Model name -> lowered program: trained runs where present, else random ResNet-20s."""
    from climbq_deploy.export import load_run, lower_run

    out = {}
    for name in RUNS:
        folder = runs / name
        if (folder / "checkpoint.pt").is_file() and (folder / "metrics.json").is_file():
            out[name] = lower_run(load_run(folder), input_bits=TensorrtTarget.input_bits)
        else:
            bits = int(name.rsplit("a", 1)[1])
            out[f"random-resnet20-w{bits}a{bits}"] = random_resnet20(bits)
    return out


def code_mismatches(runner: OnnxRuntimeRunner, images: np.ndarray) -> tuple[int, int]:
    """``(mismatched codes, codes compared)`` of every layer against the reference."""
    out = runner.run(images, with_codes=True)
    values = ReferenceModel(runner.graph).run(images, keep=True)
    acts = [n for n in runner.graph.nodes if isinstance(n, ThresholdAct)]
    bad = sum(int(np.count_nonzero(out.codes[n.source] != values[n.output])) for n in acts)
    return bad, sum(int(values[n.output].size) for n in acts)


def session(path: Path, threads: int):
    """An ONNX Runtime CPU session with the toolkit runner's options (deterministic compute,
    memory arena off) and ``threads`` intra-op threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.use_deterministic_compute = True
    options.enable_cpu_mem_arena = False
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def interleaved_p50(
    sessions: dict[Any, Any], feed: np.ndarray | dict[Any, np.ndarray], rounds: int, calls: int
) -> dict[Any, float]:
    """Per model, the median over ``rounds`` of the mean ms of ``calls`` runs; every round
    runs every model (one untimed call first), so drifts of the machine hit all alike.
    ``feed``: one input for all, or one per key of ``sessions``."""
    times: dict[Any, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for key, (session, name) in sessions.items():
            x = feed[key] if isinstance(feed, dict) else feed
            session.run(["logits"], {name: x})
            began = time.perf_counter()
            for _ in range(calls):
                session.run(["logits"], {name: x})
            times[key].append(1000 * (time.perf_counter() - began) / calls)
    return {k: float(np.median(v)) for k, v in times.items()}


def measure(graph: Graph, folder: Path, quick: bool) -> dict[str, Any]:
    """Exactness of each form on 16 images and the latency table of one model."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    paths = {"plain_int8": folder / "plain_int8.onnx"}
    paths["plain_int8"].write_bytes(write_plain_int8_onnx(graph).SerializeToString())
    exact = {}
    for form in FORMS:
        # the int32 input form: every session here is fed the same float32 NCHW input I, as
        # the plain int8 model (the uint8 contract's input step is a few elementwise ops)
        target = TensorrtTarget(form=form, input="int32")
        paths[form] = target.export(graph, folder / f"{form}.onnx")
        bad, total = code_mismatches(target.load(paths[form], threads=1), images)
        exact[form] = {"code_mismatches": bad, "codes_compared": total}
        print(f"  {form}: {bad} of {total} codes differ from the reference", flush=True)
    latency = []
    h, w, c = graph.tensors[graph.input].shape
    for threads, batch in SETTINGS:
        made = {key: session(path, threads) for key, path in paths.items()}
        sessions = {key: (s, s.get_inputs()[0].name) for key, s in made.items()}
        feed = rng.integers(-(2**19), 2**19, (batch, c, h, w)).astype(np.float32)
        rounds, calls = (5, 10 if batch == 1 else 1) if quick else (9, 20 if batch == 1 else 2)
        p50 = interleaved_p50(sessions, feed, rounds, calls)
        row = {"threads": threads, "batch": batch, "p50_ms": p50}
        row["ratio_to_plain_int8"] = {k: v / p50["plain_int8"] for k, v in p50.items()}
        latency.append(row)
        print(f"  threads {threads} batch {batch}:", {k: round(v, 3) for k, v in p50.items()})
    return {"exact": exact, "latency": latency}


def check_trained(runs: Path, names: list[str]) -> list[dict[str, Any]]:
    """``climbq check --target tensorrt --form ort`` on the whole test set of each run."""
    from climbq_deploy.check import check_run

    records = []
    for name in names:
        record = check_run(runs / name, target=TensorrtTarget(form="ort"), progress=False)
        keys = ("exact_match", "n_images", "code_agreement", "top1_agreement", "ref_top1")
        records.append({"model": name, **{k: record[k] for k in keys}, "raw": record})
        print(name, {k: record[k] for k in keys}, flush=True)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=REPO_ROOT / "runs" / "lowering")
    parser.add_argument("--check", action="store_true", help="whole test set, ort form")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    load = warn_if_busy()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, graph in models(args.runs).items():
            print(name, flush=True)
            folder = Path(tmp) / name
            folder.mkdir()
            results[name] = measure(graph, folder, args.quick)
    trained = [n for n in CHECK_RUNS if (args.runs / n / "metrics.json").is_file()]
    checks = check_trained(args.runs, trained) if args.check else []
    header = run_header(load)
    keys = ("plain_int8", *FORMS)
    rows = []
    for name, result in results.items():
        for row in result["latency"]:
            rows.append(
                (
                    name,
                    row["threads"],
                    row["batch"],
                    *(
                        f"{row['p50_ms'][k]:.3f} ({row['ratio_to_plain_int8'][k]:.2f}x)"
                        for k in keys
                    ),
                )
            )
    exact_rows = [
        (
            name,
            *(
                f"{r['exact'][f]['code_mismatches']} / {r['exact'][f]['codes_compared']}"
                for f in FORMS
            ),
        )
        for name, r in results.items()
    ]
    check_rows = [
        (c["model"], c["n_images"], c["exact_match"], f"{c['ref_top1']:.2f}") for c in checks
    ]
    markdown = (
        "# ONNX forms of ClimbQ ResNet-20 under ONNX Runtime (CPU) vs a plain int8 QDQ "
        "ResNet-20\n\n"
        "p50 ms per `session.run` (ratio to the plain int8 QDQ model of the same shape, "
        "same threads and batch), all models in one process, interleaved round by round. "
        "Forms (`climbq export RUN --target tensorrt --form F`): `qdq` the TensorRT file "
        "(default), `sign_sum` float32 conv + clamped-sign sum, `int8_dup` QLinearConv with "
        "each channel repeated per threshold (saturating compare) + block-diagonal "
        "QLinearConv sum, `ort` int8_dup for <= 3 thresholds per channel else sign_sum "
        "(targets/tensorrt/ort_forms.py).\n\n"
        + markdown_table(("model", "threads", "batch", *keys), rows)
        + "\n\n## Exactness on 16 random images (mismatched codes / codes, every layer)\n\n"
        + markdown_table(("model", *FORMS), exact_rows)
        + (
            "\n\n## `ort` form on the whole SynDigits-LT test set (`climbq check`)\n\n"
            + markdown_table(("model", "images", "exact_match", "top-1 %"), check_rows)
            if check_rows
            else ""
        )
        + "\n\n"
        + provenance_markdown(header)
    )
    payload = {
        **header,
        "results": results,
        "checks": [{k: v for k, v in c.items() if k != "raw"} for c in checks],
    }
    write_results(args.out, NAME, payload, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
