"""Pass: integer weights and integer accumulators.

A float-level ``Conv`` with quantized weights ``W_hat = W_int * s_w`` on an integer input of
scale ``s_x`` becomes ``IntConv`` with int8/int16 ``W_int = round(W_hat / s_w)``, checked to lie
on the quantizer grid ``mult * code + offset``, ``code`` in ``0..2**b - 1``. Its output is the
exact accumulator ``acc = sum W_int X`` of scale ``s_w s_x``; the folded BatchNorm becomes
``y_c = (a_c s_w s_x) acc_c + b_c``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.graph import Conv, Graph, IntConv, Node

GRID_TOLERANCE = 1e-6  # in units of s_w: W_hat / s_w must be this close to an integer


def integer_weight(conv: Conv) -> np.ndarray:
    """``W_int`` of a float-level conv, validated against its grid: int8, or int16 for the
    8-bit odd grid ``2j - 255`` (which reaches +-255)."""
    ratio = conv.weight / conv.weight_scale
    w_int = np.rint(ratio)
    off = np.abs(ratio - w_int)
    if off.size and off.max() > GRID_TOLERANCE:
        raise LoweringError(
            f"conv {conv.source!r}: weight {ratio.flat[off.argmax()]} is not an "
            f"integer multiple of its scale {conv.weight_scale}"
        )
    mult, offset = conv.weight_grid
    codes = (w_int - offset) / mult
    n = 2**conv.weight_bits - 1
    if codes.size and (np.any(codes != np.rint(codes)) or codes.min() < 0 or codes.max() > n):
        raise LoweringError(
            f"conv {conv.source!r}: weights off the {conv.weight_bits}-bit grid "
            f"{mult} * code + {offset}"
        )
    return w_int.astype(np.int8 if not w_int.size or np.abs(w_int).max() <= 127 else np.int16)


def integerize_weights(graph: Graph) -> Graph:
    nodes: list[Node] = []
    tensors = dict(graph.tensors)
    for node in graph.nodes:
        if not isinstance(node, Conv):
            nodes.append(node)
            continue
        x = graph.tensors[node.inputs[0]]
        if x.scale is None or not x.dtype.startswith("int"):
            raise LoweringError(f"conv {node.source!r} reads non-integer tensor {x.name!r}")
        acc_scale = node.weight_scale * x.scale
        channels = node.weight.shape[0]
        a = np.ones(channels) if node.affine_scale is None else node.affine_scale
        b = np.zeros(channels) if node.affine_shift is None else node.affine_shift
        nodes.append(
            IntConv(
                **node.place(),
                weight=integer_weight(node),
                weight_bits=node.weight_bits,
                weight_grid=node.weight_grid,
                stride=node.stride,
                padding=node.padding,
                groups=node.groups,
                dilation=node.dilation,
                affine_scale=a * acc_scale,
                affine_shift=b,
            )
        )
        tensors[node.output] = replace(tensors[node.output], dtype="int32", scale=acc_scale)
    return graph.replace_nodes(nodes, tensors)
