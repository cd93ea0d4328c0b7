"""Lowering: small named passes from the captured float-level graph to the integer program.

``lower(graph)`` runs :data:`PASSES` in order; each takes a :class:`Graph` and returns a new
one, and is tested alone.
"""

from __future__ import annotations

from collections.abc import Callable

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.graph import HEAD_OPS, INTEGER_OPS, Graph
from climbq_deploy.ir.passes.absorb_average_pools import absorb_average_pools
from climbq_deploy.ir.passes.bound_tensors import bound_tensors
from climbq_deploy.ir.passes.derive_thresholds import derive_thresholds
from climbq_deploy.ir.passes.fold_batchnorm import fold_batchnorm
from climbq_deploy.ir.passes.integerize_weights import integerize_weights
from climbq_deploy.ir.passes.quantize_head import quantize_head

Pass = Callable[[Graph], Graph]
PASSES: tuple[Pass, ...] = (
    absorb_average_pools,
    fold_batchnorm,
    integerize_weights,
    derive_thresholds,
    bound_tensors,
)
HEADS = ("float", "int8", "int4")


def lower(graph: Graph, head: str = "float") -> Graph:
    """The integer program of a captured graph; ``head="int8"`` / ``"int4"`` also quantizes the
    Linear head to that grid (per output channel)."""
    if head not in HEADS:
        raise LoweringError(f"head must be one of {HEADS}, got {head!r}")
    for step in PASSES:
        graph = step(graph)
    if head in ("int8", "int4"):
        graph = quantize_head(graph, bits=int(head[3:]))
    leftover = [n.op for n in graph.nodes if n.op not in INTEGER_OPS + HEAD_OPS]
    if leftover:
        raise LoweringError(f"lowering left non-integer ops {sorted(set(leftover))}")
    return graph.validate()


__all__ = [
    "PASSES",
    "absorb_average_pools",
    "bound_tensors",
    "derive_thresholds",
    "fold_batchnorm",
    "integerize_weights",
    "lower",
    "quantize_head",
]
