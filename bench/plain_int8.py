"""A plain int8 TFLite model with the shape of a lowered program: the latency yardstick.

What an ordinary int8 deployment of the same network looks like (uniform activation
quantization, the form the LiteRT converter's int8 PTQ emits), written by the same
:class:`~climbq_deploy.targets.tflite.builder.ModelBuilder`:

- input int8 (scale 1/32, zero point 0);
- each ``IntConv`` (+ its activation) is one int8 ``CONV_2D`` / ``DEPTHWISE_CONV_2D``:
  the program's integer filter with per-channel scale, int32 bias 0, and a per-tensor output
  scale; a ReLU that is the activation's only consumer is fused (``RELU``), as the converter
  does; its requantization ``y = round(M_c acc) + z`` *is* the uniform activation quantizer
  (``M_c`` spreads the channel's threshold range over the int8 range);
- ``Add`` an int8 ``ADD`` (ReLU fused when it is the only consumer; an activation after it
  is the ADD's own requantization), any other ``Relu`` a ``MAXIMUM`` with 0;
  ``MaxPool`` an int8 ``MAX_POOL_2D`` with the product's explicit padding
  (:func:`~climbq_deploy.targets.tflite.pooling.max_pool_2d`); ``Concat`` an int8
  ``CONCATENATION`` (one scale); ``GlobalSumPool`` an int8 ``MEAN``; the head an int8
  ``FULLY_CONNECTED`` with per-channel weights.

The numbers are realistic in range but the model is not trained for uniform activations, so
its accuracy is meaningless: it exists to time the ClimbQ models against
(``bench/tflite_latency.py``). It is a benchmark's yardstick, not part of the product: it lives
in ``bench/`` and is built only from the product's public IR and ``ModelBuilder``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.graph import (
    Add,
    Concat,
    GlobalSumPool,
    Graph,
    InputQuant,
    IntConv,
    Linear,
    MaxPool,
    Relu,
    ThresholdAct,
)
from climbq_deploy.ir.integer_forms import conv_padding
from climbq_deploy.targets.tflite.builder import ModelBuilder
from climbq_deploy.targets.tflite.export import conv_filter, dilation_options
from climbq_deploy.targets.tflite.pooling import max_pool_2d

INPUT_SCALE = 1.0 / 32
ACT_SCALE = 1.0  # every int8 activation tensor: scale 1, zero point 0


def _conv_output_multipliers(act: ThresholdAct) -> np.ndarray:
    """Per-channel ``M_c``: the channel's threshold range maps onto the int8 range."""
    theta = act.thresholds.astype(np.float64)
    spread = theta.max(axis=1) - theta.min(axis=1) if theta.shape[1] > 1 else np.abs(theta[:, 0])
    return 254.0 / np.maximum(spread, 1.0)


def write_plain_int8(graph: Graph, batch: int = 1, conv_writer: Callable | None = None) -> bytes:
    """The ``.tflite`` bytes of the plain int8 model with ``graph``'s shape (module docstring).

    ``conv_writer`` (same signature as :func:`write_conv`) replaces how each conv + activation
    is written; benchmarks use it for timing probes."""
    write = conv_writer or write_conv
    b = ModelBuilder("climbq_deploy plain int8 yardstick")
    t = graph.tensors
    producers = {n.output: n for n in graph.nodes}
    consumers: dict[str, list] = {}
    for node in graph.nodes:
        for name in node.inputs:
            consumers.setdefault(name, []).append(node)
    index: dict[str, int] = {}
    act_q = {"scale": ACT_SCALE, "zero_point": 0}

    def shape(name: str) -> tuple[int, ...]:
        return (batch, *t[name].shape)

    def relu_only(name: str) -> bool:
        users = consumers.get(name, [])
        return bool(users) and all(isinstance(u, Relu) for u in users)

    def alias_relus(name: str, tensor: int) -> None:
        for user in consumers.get(name, []):
            index[user.output] = tensor

    inputs: list[int] = []
    outputs: list[int] = []
    for node in graph.nodes:
        if isinstance(node, InputQuant):
            x = b.add_tensor("input", shape(node.output), "int8", scale=INPUT_SCALE, zero_point=0)
            index[node.output] = x
            inputs = [x]
        elif isinstance(node, IntConv):
            continue  # written with its activation
        elif isinstance(node, ThresholdAct):
            conv = producers[node.inputs[0]]
            if not isinstance(conv, IntConv):  # e.g. after an Add: the ADD requantizes itself
                index[node.output] = index[node.inputs[0]]
                continue
            fused = relu_only(node.output)
            out = b.add_tensor(node.output, shape(node.output), "int8", **act_q)
            stem = isinstance(producers.get(conv.inputs[0]), InputQuant)
            write(
                b,
                conv,
                index[conv.inputs[0]],
                t[conv.inputs[0]].shape,
                batch,
                out,
                INPUT_SCALE if stem else ACT_SCALE,
                _conv_output_multipliers(node),
                "RELU" if fused else "NONE",
            )
            index[node.output] = out
            if fused:
                alias_relus(node.output, out)
        elif isinstance(node, Relu):
            if node.output in index:
                continue  # fused into its producer
            out = b.add_tensor(node.output, shape(node.output), "int8", **act_q)
            zero = b.add_tensor(
                f"{node.output}/zero", (), "int8", data=np.array(0, np.int8), **act_q
            )
            b.add_operator("MAXIMUM", [index[node.inputs[0]], zero], [out])
            index[node.output] = out
        elif isinstance(node, Add):
            fused = relu_only(node.output)
            out = b.add_tensor(node.output, shape(node.output), "int8", **act_q)
            b.add_operator(
                "ADD",
                [index[n] for n in node.inputs],
                [out],
                fused_activation="RELU" if fused else "NONE",
            )
            index[node.output] = out
            if fused:
                alias_relus(node.output, out)
        elif isinstance(node, MaxPool):  # every int8 activation has scale 1, zero point 0
            index[node.output] = max_pool_2d(
                b, graph, node, index[node.inputs[0]], "int8", batch, node.output
            )
        elif isinstance(node, Concat):
            out = b.add_tensor(node.output, shape(node.output), "int8", **act_q)
            b.add_operator("CONCATENATION", [index[n] for n in node.inputs], [out], axis=3)
            index[node.output] = out
        elif isinstance(node, GlobalSumPool):
            out = b.add_tensor(node.output, shape(node.output), "int8", **act_q)
            axes = b.add_tensor(
                f"{node.output}/axes", (2,), "int32", data=np.array([1, 2], np.int32)
            )
            b.add_operator("MEAN", [index[node.inputs[0]], axes], [out], keep_dims=False)
            index[node.output] = out
        elif isinstance(node, Linear):
            w = node.weight.astype(np.float64)
            w_scale = np.maximum(np.abs(w).max(axis=1), 1e-8) / 127.0
            w_int = np.clip(np.rint(w / w_scale[:, None]), -127, 127).astype(np.int8)
            k = len(w_scale)
            weight = b.add_tensor(
                "fc/weight", w.shape, "int8", data=w_int, scale=list(w_scale), zero_point=[0] * k
            )
            bias_scale = list(w_scale * ACT_SCALE)
            bias = b.add_tensor(
                "fc/bias",
                (k,),
                "int32",
                data=np.zeros(k, np.int32),
                scale=bias_scale,
                zero_point=[0] * k,
            )
            out = b.add_tensor("logits", shape(node.output), "int8", scale=0.1, zero_point=0)
            b.add_operator("FULLY_CONNECTED", [index[node.inputs[0]], weight, bias], [out])
            outputs = [out]
        else:
            raise LoweringError(f"op {node.op!r} ({node.source!r}) has no plain int8 form")
    b.set_io(inputs, outputs)
    return b.build()


def write_conv(
    b: ModelBuilder,
    conv: IntConv,
    x: int,
    in_shape: tuple[int, ...],
    batch: int,
    out: int,
    in_scale: float,
    multipliers: np.ndarray,
    activation: str,
) -> None:
    """One int8 conv with per-channel output multiplier ``M_c = s_in s_w[c] / s_out``."""
    c = conv.weight.shape[0]
    w_scale = list(multipliers * ACT_SCALE / in_scale)
    zeros = [0] * c
    options = {
        "stride_h": conv.stride,
        "stride_w": conv.stride,
        "fused_activation": activation,
        **dilation_options(conv),
    }
    if conv_padding(conv) == "PAD":
        p = conv.padding
        h, w, cin = in_shape
        padded = b.add_tensor(
            f"{conv.output}/padded",
            (batch, h + 2 * p, w + 2 * p, cin),
            "int8",
            scale=in_scale,
            zero_point=0,
        )
        pads = np.array([[0, 0], [p, p], [p, p], [0, 0]], np.int32)
        b.add_operator(
            "PAD", [x, b.add_tensor(f"{conv.output}/pads", (4, 2), "int32", data=pads)], [padded]
        )
        x, options["padding"] = padded, "VALID"
    else:
        options["padding"] = "SAME" if conv.padding else "VALID"
    bias_scale = [s * in_scale for s in w_scale]
    bias = b.add_tensor(
        f"{conv.output}/bias",
        (c,),
        "int32",
        data=np.zeros(c, np.int32),
        scale=bias_scale,
        zero_point=zeros,
    )
    op, filt, extra = conv_filter(conv, conv.weight)  # LiteRT's own grouping and multiplier
    weight = b.add_tensor(
        f"{conv.output}/weight",
        filt.shape,
        "int8",
        data=filt.astype(np.int8),
        scale=w_scale,
        zero_point=zeros,
        **({"quantized_dimension": 3} if op == "DEPTHWISE_CONV_2D" else {}),
    )
    b.add_operator(op, [x, weight, bias], [out], **extra, **options)
