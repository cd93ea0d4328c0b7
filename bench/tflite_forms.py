"""Single-layer LiteRT timings of the fast forms' pieces, and the cost model fitted to them.

For each 3x3 conv layer shape (``H x H`` pixels, ``C`` channels in and out, ``n`` thresholds)
the models below run interleaved in one process (XNNPACK, one thread, batch 1):

- ``plain int8``: one int8 conv (the yardstick);
- ``float conv``: the float32 conv alone;
- ``float signs``: float32 conv + 1x1 depthwise with multiplier ``n`` (``RELU_N1_TO_1``) +
  RESHAPE + SUM: the ``float-signs`` form (:mod:`climbq_deploy.targets.tflite.forms`);
- ``int8 signs``: int8 conv with ``C n`` outputs (``RELU_N1_TO_1``) + block-diagonal 1x1 int8
  sum: the ``int8-signs`` form.

Then :data:`~climbq_deploy.targets.tflite.forms.COSTS` is checked against them: its predicted
float/int8 ratio per shape next to the measured one, and the least-squares constants these
timings give (``float_mac``, ``int8_mac``, ``sign_element``). Weights and thresholds are random:
only time is measured.

Usage::

    .venv/bin/python -m bench.tflite_forms
"""

from __future__ import annotations

import argparse
import statistics
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
from bench.tflite_latency import invoker, time_round_robin
from climbq_deploy.targets.tflite.builder import ModelBuilder
from climbq_deploy.targets.tflite.forms import COSTS

NAME = "tflite_forms"
SHAPES = [(32, 16, 15), (16, 32, 15), (8, 64, 15), (32, 16, 3), (16, 32, 7), (8, 64, 3)]


def float_layer(h: int, c: int, n: int, signs: bool, seed: int = 0) -> bytes:
    """A float32 3x3 conv (SAME) of (1, h, h, c), then the sign stage when ``signs``."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder("bench")
    x = b.add_tensor("x", (1, h, h, c), "float32")
    w = rng.integers(-15, 16, (c, 3, 3, c)).astype(np.float32)
    wt = b.add_tensor("w", w.shape, "float32", data=w)
    bias = b.add_tensor("b", (c,), "float32", data=np.zeros(c, np.float32))
    acc = b.add_tensor("acc", (1, h, h, c), "float32")
    b.add_operator("CONV_2D", [x, wt, bias], [acc], padding="SAME")
    out = acc
    if signs:
        dw = b.add_tensor("dw", (1, 1, 1, c * n), "float32", data=np.full((1, 1, 1, c * n), 2.0))
        theta = rng.integers(-100, 100, c * n).astype(np.float32)
        db = b.add_tensor("db", (c * n,), "float32", data=theta)
        s = b.add_tensor("s", (1, h, h, c * n), "float32")
        b.add_operator(
            "DEPTHWISE_CONV_2D",
            [acc, dw, db],
            [s],
            padding="VALID",
            depth_multiplier=n,
            fused_activation="RELU_N1_TO_1",
        )
        grouped = b.add_tensor("g", (1, h, h, c, n), "float32")
        b.add_operator("RESHAPE", [s], [grouped], new_shape=[1, h, h, c, n])
        axis = b.add_tensor("axis", (1,), "int32", data=np.array([4], np.int32))
        out = b.add_tensor("o", (1, h, h, c), "float32")
        b.add_operator("SUM", [grouped, axis], [out], keep_dims=False)
    b.set_io([x], [out])
    return b.build()


def int8_layer(h: int, c: int, n: int, signs: bool, seed: int = 0) -> bytes:
    """An int8 3x3 conv (unit scales) with ``c`` outputs, or with ``c n`` outputs clamped to
    ±1 and the block-diagonal sum when ``signs``."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder("bench")
    unit = {"scale": 1.0, "zero_point": 0}
    x = b.add_tensor("x", (1, h, h, c), "int8", **unit)
    k = c * n if signs else c
    per = {"scale": [1.0] * k, "zero_point": [0] * k}
    w = rng.integers(-30, 31, (k, 3, 3, c)).astype(np.int8)
    wt = b.add_tensor("w", w.shape, "int8", data=w, **per)
    bias = b.add_tensor("b", (k,), "int32", data=np.zeros(k, np.int32), **per)
    s = b.add_tensor("s", (1, h, h, k), "int8", **unit)
    activation = "RELU_N1_TO_1" if signs else "NONE"
    b.add_operator("CONV_2D", [x, wt, bias], [s], padding="SAME", fused_activation=activation)
    out = s
    if signs:
        blocks = np.zeros((c, 1, 1, k), np.int8)
        for ch in range(c):
            blocks[ch, 0, 0, ch * n : (ch + 1) * n] = 1
        sums = {"scale": [1.0] * c, "zero_point": [0] * c}
        bw = b.add_tensor("bw", blocks.shape, "int8", data=blocks, **sums)
        bz = b.add_tensor("bz", (c,), "int32", data=np.zeros(c, np.int32), **sums)
        out = b.add_tensor("o", (1, h, h, c), "int8", **unit)
        b.add_operator("CONV_2D", [s, bw, bz], [out], padding="VALID")
    b.set_io([x], [out])
    return b.build()


def work(h: int, c: int, n: int) -> dict[str, float]:
    """The cost model's units of one layer: conv multiply-adds, values, int8-signs MACs."""
    macs = h * h * c * 9 * c
    return {"macs": macs, "values": h * h * c, "int8_macs": macs * n + h * h * c * n * c}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--budget", type=float, default=0.05, help="seconds per model per round")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    load = warn_if_busy()
    records, rows = [], []
    for h, c, n in SHAPES:
        models = {
            "plain int8": int8_layer(h, c, n, False),
            "float conv": float_layer(h, c, n, False),
            "float signs": float_layer(h, c, n, True),
            "int8 signs": int8_layer(h, c, n, True),
        }
        calls = {name: invoker("builtin", content, 1)[0] for name, content in models.items()}
        times = time_round_robin(calls, args.rounds, args.budget)
        us = {name: 1000 * statistics.median(values) for name, values in times.items()}
        units = work(h, c, n)
        predicted = (COSTS.float_mac * units["macs"] + COSTS.sign_element * units["values"]) / (
            COSTS.int8_mac * units["int8_macs"]
        )
        records.append({"h": h, "c": c, "n": n, "p50_us": us, **units})
        rows.append(
            (
                f"{h}x{h}x{c}",
                n,
                *(f"{us[name]:.1f}" for name in models),
                f"{us['float signs'] / us['plain int8']:.1f}x",
                f"{us['int8 signs'] / us['plain int8']:.1f}x",
                f"{us['float signs'] / us['int8 signs']:.2f}",
                f"{predicted:.2f}",
            )
        )
        print(rows[-1], flush=True)
    # least squares: float signs = a macs + s values; int8 signs = b int8_macs
    a_rows = np.array([[r["macs"], r["values"]] for r in records], float)
    a_times = np.array([r["p50_us"]["float signs"] * 1e-6 for r in records])
    (float_mac, sign_element), *_ = np.linalg.lstsq(a_rows, a_times, rcond=None)
    b_rows = np.array([[r["int8_macs"]] for r in records], float)
    b_times = np.array([r["p50_us"]["int8 signs"] * 1e-6 for r in records])
    (int8_mac,), *_ = np.linalg.lstsq(b_rows, b_times, rcond=None)
    fitted = {"float_mac": float_mac, "int8_mac": int8_mac, "sign_element": sign_element}
    header = run_header(load)
    markdown = (
        "# Single-layer timings of the fast TFLite forms (LiteRT, XNNPACK, 1 thread, batch 1)\n\n"
        "3x3 conv layers, C channels in and out, n thresholds; median microseconds over "
        f"{args.rounds} interleaved rounds. `float/int8` is the measured time ratio of the two "
        "ClimbQ forms; `COSTS predicts` the ratio climbq_deploy's cost model "
        "(targets/tflite/forms.py COSTS) gives: it picks the form whose prediction is smaller, "
        "so what matters is that both ratios fall on the same side of 1.\n\n"
        + markdown_table(
            (
                "layer",
                "n",
                "plain int8 us",
                "float conv us",
                "float signs us",
                "int8 signs us",
                "float signs / plain",
                "int8 signs / plain",
                "float/int8 measured",
                "COSTS predicts",
            ),
            rows,
        )
        + "\n\nLeast-squares constants from these timings: "
        + ", ".join(f"{k} = {v:.3g} s" for k, v in fitted.items())
        + f" (COSTS: float_mac {COSTS.float_mac:g}, int8_mac {COSTS.int8_mac:g}, "
        f"sign_element {COSTS.sign_element:g}).\n\n" + provenance_markdown(header)
    )
    write_results(args.out, NAME, {**header, "records": records, "fitted": fitted}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
