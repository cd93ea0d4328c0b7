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
from climbq_deploy.ir.graph import Graph, IntLinear, Linear

HEAD_BITS = (8, 4)


def quantize_head(graph: Graph, bits: int = 8) -> Graph:
    if bits not in HEAD_BITS:
        raise LoweringError(f"head bits must be one of {HEAD_BITS}, got {bits!r}")
    q = 2 ** (bits - 1) - 1
    nodes = [per_row_head(n, n.weight, q) if isinstance(n, Linear) else n for n in graph.nodes]
    return graph.replace_nodes(nodes)


def per_row_head(node: Linear | IntLinear, weight: np.ndarray, q: int) -> IntLinear:
    """``node`` as an :class:`IntLinear` whose rows are ``weight`` (the head's real weights,
    ``(classes, K)``) quantized symmetrically to ``[-q, q]`` (module docstring; computed in
    ``weight``'s dtype), with ``node``'s bias and place in the program."""
    peak = np.abs(weight).max(axis=1)
    scale = np.where(peak > 0, peak / q, 1.0)
    w_q = np.clip(np.rint(weight / scale[:, None]), -q, q).astype(np.int8)
    return IntLinear(**node.place(), weight=w_q, weight_scale=scale, bias=node.bias)
