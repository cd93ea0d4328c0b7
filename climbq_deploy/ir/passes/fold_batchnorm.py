"""Pass: fold each inference BatchNorm into the conv before it as a per-channel affine.

``BN(conv(x))_c = gamma_c (conv_c - mean_c) / sqrt(var_c + eps) + beta_c = a_c conv_c + b_c``
with ``a_c = gamma_c / sqrt(var_c + eps)`` and ``b_c = beta_c - mean_c a_c`` (float64). The
conv takes over the BatchNorm's output tensor, so consumers are unchanged. ``a_c`` may be
huge (tiny variance), negative (negative gamma) or zero (zero gamma); the thresholds pass
handles each.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.graph import BatchNorm, Conv, Graph, Node


def fold_batchnorm(graph: Graph) -> Graph:
    """Every ``Conv -> BatchNorm`` pair becomes one Conv with ``affine_scale/shift``."""
    nodes: list[Node] = []
    for node in graph.nodes:
        if not isinstance(node, BatchNorm):
            nodes.append(node)
            continue
        conv = nodes[-1] if nodes else None
        if not isinstance(conv, Conv) or conv.output != node.inputs[0]:
            raise LoweringError(f"BatchNorm {node.source!r} does not follow a conv")
        if len(graph.consumers(conv.output)) != 1:
            raise LoweringError(f"conv {conv.source!r} feeds more than its BatchNorm")
        if conv.affine_scale is not None:
            raise LoweringError(f"conv {conv.source!r} already has a folded BatchNorm")
        if np.any(node.var + node.eps <= 0) or not np.all(np.isfinite(node.var)):
            bad = int(np.flatnonzero(~(node.var + node.eps > 0))[0])
            raise LoweringError(
                f"BatchNorm {node.source!r} channel {bad}: var + eps = {node.var[bad] + node.eps}"
            )
        scale = node.gamma / np.sqrt(node.var + node.eps)
        nodes[-1] = replace(
            conv, output=node.output, affine_scale=scale, affine_shift=node.beta - node.mean * scale
        )
    return graph.replace_nodes(nodes)
