"""Pass: prove an integer range for every tensor, pick its storage, refuse int32 overflow.

Interval arithmetic, per tensor ``[lo, hi]``:

- input: the exact ``I`` of pixel values 0 and 255 per channel;
- int conv, output channel o: ``sum_k max(W_k lo', W_k hi')`` (``lo' = min(lo, 0)``,
  ``hi' = max(hi, 0)`` when zero padding can enter, which bounds every partial sum too); the
  same for any stride, dilation and grouping (each output still sums its own ``W_o`` times
  inputs in ``[lo', hi']``);
- threshold act: ``[offset, mult * n + offset]``; relu: ``[max(lo, 0), max(hi, 0)]``;
- add: ``[lo1 + lo2, hi1 + hi2]``; global sum pool: ``[H W lo, H W hi]``;
- max pool: ``[lo, hi]`` (a max of values in the range; padding never wins); concat:
  ``[min_i lo_i, max_i hi_i]``.

An accumulator whose bound leaves int32 is refused (``LoweringError`` naming the layer and the
bound). Storage is the narrowest of int8/int16/int32 holding the range. Thresholds are clamped
to ``[L, H + 1]`` of ``d * x`` (same counts for every possible input) and stored in the
narrowest integer type holding them. Each op's rule is an entry of :data:`BOUND_RULES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.graph import (
    Add,
    Concat,
    GlobalSumPool,
    Graph,
    InputQuant,
    IntConv,
    MaxPool,
    Node,
    Relu,
    TensorSpec,
    ThresholdAct,
)
from climbq_deploy.ir.integer_forms import partial_sum_bound

__all__ = [
    "BOUND_RULES",
    "bound_tensors",
    "conv_channel_bounds",
    "input_bounds",
    "partial_sum_bound",
    "storage_dtype",
]

INT32 = (-(2**31), 2**31 - 1)
STORAGE = (("int8", 2**7), ("int16", 2**15), ("int32", 2**31))
Bounds = tuple[int, int]


def storage_dtype(lo: int, hi: int, what: str = "tensor") -> str:
    """The narrowest of int8/int16/int32 holding ``[lo, hi]``; ``LoweringError`` naming
    ``what`` (the layer) when even int32 does not."""
    for name, half in STORAGE:
        if -half <= lo and hi < half:
            return name
    raise LoweringError(f"{what}: range [{lo}, {hi}] does not fit int32")


def input_bounds(node: InputQuant) -> tuple[int, int]:
    values = [
        np.rint((p / 255.0 - m) / s / node.step)
        for m, s in zip(node.mean, node.std, strict=True)
        for p in (0.0, 255.0)
    ]
    return int(min(values)), int(max(values))


def conv_channel_bounds(weight: np.ndarray, lo: int, hi: int, padding: int) -> np.ndarray:
    """``(O, 2)`` int64 bounds of each output channel's accumulator (and of its partial sums,
    which add only terms of one sign more or less: each is within the channel's own bound)."""
    if padding:
        lo, hi = min(lo, 0), max(hi, 0)
    w = weight.reshape(weight.shape[0], -1).astype(np.int64)
    upper = np.maximum(w * lo, w * hi).sum(axis=1)
    lower = np.minimum(w * lo, w * hi).sum(axis=1)
    return np.stack([lower, upper], axis=1)


# -- one rule per op: (node, input bounds, graph) -> (node, output bounds) ------------------------
# (every input is bounded when a rule runs, except the uint8 image that input_quant reads: None)


def _input_quant(node: InputQuant, ins: list[Bounds], graph: Graph) -> tuple[Node, Bounds]:
    return node, input_bounds(node)


def _int_conv(node: IntConv, ins: list[Bounds], graph: Graph) -> tuple[Node, Bounds]:
    lo, hi = ins[0]
    per_channel = conv_channel_bounds(node.weight, lo, hi, node.padding)
    out = (int(per_channel[:, 0].min()), int(per_channel[:, 1].max()))
    worst = max(abs(out[0]), abs(out[1]), partial_sum_bound(node.weight, lo, hi))
    if worst > INT32[1]:
        raise LoweringError(
            f"conv {node.source!r}: accumulator bound {worst} exceeds int32 "
            f"({INT32[1]}); inputs lie in [{lo}, {hi}], {node.weight_bits}-bit weights"
        )
    return node, out


def _threshold_act(node: ThresholdAct, ins: list[Bounds], graph: Graph) -> tuple[Node, Bounds]:
    lo, hi = ins[0]
    n = node.thresholds.shape[1]
    out = (node.offset, node.mult * n + node.offset)
    d = node.direction.astype(np.int64)[:, None]
    low = np.where(d < 0, -hi, lo).astype(np.int64)
    high = np.where(d < 0, -lo, hi).astype(np.int64)
    theta = node.thresholds.astype(np.int64)
    clamped = np.where(d == 0, theta, np.clip(theta, low, high + 1))
    # a threshold above the input range is stored as H + 1 ("never reached"), which
    # int32 cannot hold when H is int32's largest value
    what = f"threshold_act {node.source!r} (input range [{lo}, {hi}]) thresholds"
    storage = storage_dtype(int(clamped.min(initial=0)), int(clamped.max(initial=0)), what)
    return replace(node, thresholds=clamped.astype(storage)), out


def _relu(node: Relu, ins: list[Bounds], graph: Graph) -> tuple[Node, Bounds]:
    lo, hi = ins[0]
    return node, (max(lo, 0), max(hi, 0))


def _add(node: Add, ins: list[Bounds], graph: Graph) -> tuple[Node, Bounds]:
    return node, (ins[0][0] + ins[1][0], ins[0][1] + ins[1][1])


def _max_pool(node: MaxPool, ins: list[Bounds], graph: Graph) -> tuple[Node, Bounds]:
    return node, ins[0]


def _concat(node: Concat, ins: list[Bounds], graph: Graph) -> tuple[Node, Bounds]:
    return node, (min(lo for lo, _ in ins), max(hi for _, hi in ins))


def _global_sum_pool(node: GlobalSumPool, ins: list[Bounds], graph: Graph) -> tuple[Node, Bounds]:
    h, w, _ = graph.tensors[node.inputs[0]].shape
    return node, (ins[0][0] * h * w, ins[0][1] * h * w)


BoundRule = Callable[[Node, list[Bounds], Graph], tuple[Node, Bounds]]
BOUND_RULES: dict[type[Node], BoundRule] = {
    InputQuant: _input_quant,
    IntConv: _int_conv,
    ThresholdAct: _threshold_act,
    Relu: _relu,
    Add: _add,
    MaxPool: _max_pool,
    Concat: _concat,
    GlobalSumPool: _global_sum_pool,
}
"""Op class -> its interval rule; ops without one (the float head) pass through unbounded."""


def bound_tensors(graph: Graph) -> Graph:
    bounds: dict[str, Bounds] = {}
    nodes: list[Node] = []
    for node in graph.nodes:
        rule = BOUND_RULES.get(type(node))
        if rule is None:
            nodes.append(node)
            continue
        unbounded = [n for n in node.inputs if n not in bounds and n != graph.input]
        if unbounded:
            raise LoweringError(
                f"{node.op} {node.source!r} reads {unbounded[0]!r}, which has no proven "
                "bounds (its producer's op has no entry in BOUND_RULES)"
            )
        node, out = rule(node, [bounds.get(name) for name in node.inputs], graph)
        if out[0] < INT32[0] or out[1] > INT32[1]:
            raise LoweringError(f"{node.op} {node.source!r}: range {out} exceeds int32")
        bounds[node.output] = out
        nodes.append(node)
    tensors: dict[str, TensorSpec] = {}
    for name, spec in graph.tensors.items():
        if name in bounds:
            lo, hi = bounds[name]
            spec = replace(spec, bounds=(lo, hi), dtype=storage_dtype(lo, hi, f"tensor {name!r}"))
        tensors[name] = spec
    return graph.replace_nodes(nodes, tensors)
