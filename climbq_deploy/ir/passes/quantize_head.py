"""Pass (option): the float Linear head becomes an int8 (or int4) per-output-channel head.

With ``Q = 2**(bits - 1) - 1`` (127 for 8 bits, 7 for 4 bits: symmetric, zero point 0):
``weight_scale[o] = max_c |W[o, c]| / Q`` (1 for an all-zero row),
``W_q = round_half_even(W / weight_scale[o])`` in ``[-Q, Q]``; the accumulator
``sum_c W_q[o, c] s[c]`` is exact in int64 and ``logits = acc * weight_scale * s_in + bias``.
Its accuracy effect against the float head is measured by ``climbq check``.
"""

from __future__ import annotations

import numpy as np

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.graph import Graph, IntLinear, Linear, Node

HEAD_BITS = (8, 4)


def quantize_head(graph: Graph, bits: int = 8) -> Graph:
    if bits not in HEAD_BITS:
        raise LoweringError(f"head bits must be one of {HEAD_BITS}, got {bits!r}")
    q = 2 ** (bits - 1) - 1
    nodes: list[Node] = []
    for node in graph.nodes:
        if isinstance(node, Linear):
            peak = np.abs(node.weight).max(axis=1)
            scale = np.where(peak > 0, peak / q, 1.0)
            w_q = np.clip(np.rint(node.weight / scale[:, None]), -q, q).astype(np.int8)
            node = IntLinear(
                name=node.name,
                inputs=node.inputs,
                output=node.output,
                source=node.source,
                weight=w_q,
                weight_scale=scale,
                bias=node.bias,
            )
        nodes.append(node)
    return graph.replace_nodes(nodes)
