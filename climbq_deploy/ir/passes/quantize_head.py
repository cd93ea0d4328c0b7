"""Pass (option): the float Linear head becomes an int8 per-output-channel head.

``weight_scale[o] = max_c |W[o, c]| / 127`` (1 for an all-zero row),
``W_q = round_half_even(W / weight_scale[o])`` in ``[-127, 127]``; the accumulator
``sum_c W_q[o, c] s[c]`` is exact in int64 and ``logits = acc * weight_scale * s_in + bias``.
Its accuracy effect against the float head is measured by ``climbq check``.
"""

from __future__ import annotations

import numpy as np

from climbq_deploy.ir.graph import Graph, IntLinear, Linear, Node


def quantize_head(graph: Graph) -> Graph:
    nodes: list[Node] = []
    for node in graph.nodes:
        if isinstance(node, Linear):
            peak = np.abs(node.weight).max(axis=1)
            scale = np.where(peak > 0, peak / 127.0, 1.0)
            w_q = np.clip(np.rint(node.weight / scale[:, None]), -127, 127).astype(np.int8)
            node = IntLinear(name=node.name, inputs=node.inputs, output=node.output,
                             source=node.source, weight=w_q, weight_scale=scale,
                             bias=node.bias)  # fmt: skip
        nodes.append(node)
    return graph.replace_nodes(nodes)
