"""Max pooling in LiteRT exactly as torch's ``max_pool2d`` on integers (shared by the int16
form of :mod:`.export` and the fast forms of :mod:`.forms`).

LiteRT has no int32 ``MAX_POOL_2D``, and its SAME padding is not torch's: for a 3x3 stride-2
pool of an even input SAME pads one row after and none before, torch one on each side. So a
pool runs in the narrowest of int8 / int16 / float32 that holds its values
(:func:`pool_dtype`), after an explicit pad that never changes a window's max, as a VALID
``MAX_POOL_2D`` (:func:`max_pool_2d`).
"""

from __future__ import annotations

import numpy as np

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.graph import Graph, MaxPool
from climbq_deploy.ir.integer_forms import FLOAT32_EXACT, nhwc_pads
from climbq_deploy.targets.tflite.builder import ModelBuilder
from climbq_deploy.targets.tflite.flavour import INT16_LIMIT

__all__ = ["max_pool_2d", "pool_dtype"]


def pool_dtype(graph: Graph, node: MaxPool) -> str:
    """The narrowest of int8, int16 (LiteRT's integer MAX_POOL_2D types) and float32 (exact for
    integers below 2**24) holding ``node``'s input bounds; :class:`LoweringError` when none
    does."""
    lo, hi = graph.tensors[node.inputs[0]].bounds or (-(2**31), 2**31 - 1)
    for dtype, (low, high) in (("int8", (-128, 127)), ("int16", (-32768, INT16_LIMIT))):
        if low <= lo and hi <= high:
            return dtype
    if max(-lo, hi) < FLOAT32_EXACT:
        return "float32"
    raise LoweringError(
        f"max pool {node.source!r}: input range [{lo}, {hi}] fits neither int16 nor float32's "
        "exact integers (LiteRT has no int32 MAX_POOL_2D)"
    )


def max_pool_2d(
    b: ModelBuilder, graph: Graph, node: MaxPool, x: int, dtype: str, batch: int, name: str
) -> int:
    """``node`` on ``x`` (NHWC, ``dtype`` int8/int16 of scale 1 and zero point 0, or float32)
    with torch's padding made explicit, then a VALID ``MAX_POOL_2D``; returns the output tensor
    (named ``name``).

    Torch pads with -inf (a padded position never wins). Two pads give the same maxima:

    - zeros (``PAD``) where the input's lower bound ``lo >= 0``: every window holds a real
      value (``p <= k // 2``), which is ``>= lo >= 0``;
    - else the edge row and column repeated ``p`` times (:func:`_edge_pad`: SLICE and
      CONCATENATION, which XNNPACK runs, unlike PADV2): a window reaching the padded rows
      ``-p..-1`` starts at ``-p`` or later, so it ends at ``k - 1 - p >= p - 1 >= 0`` or
      later and holds row 0, the row the pad repeats; a window reaching rows ``H..H+p-1``
      starts at ``H + p - k <= H - p`` or earlier and holds row ``H - 1``; likewise per
      column. A copied value is always in the window already: the max is unchanged.
    """
    quant = {"scale": 1.0, "zero_point": 0} if dtype != "float32" else {}
    spec = graph.tensors[node.inputs[0]]
    lo = (spec.bounds or (-(2**31), 0))[0]
    p, (h, w, c) = node.padding, spec.shape
    if p and lo >= 0:
        padded = b.add_tensor(
            f"{node.output}/padded", (batch, h + 2 * p, w + 2 * p, c), dtype, **quant
        )
        pads = b.add_tensor(f"{node.output}/pads", (4, 2), "int32", data=nhwc_pads(p))
        b.add_operator("PAD", [x, pads], [padded])
        x = padded
    elif p:
        x = _edge_pad(b, node, x, dtype, (batch, h, w, c), quant)
    out = b.add_tensor(name, (batch, *graph.tensors[node.output].shape), dtype, **quant)
    b.add_operator(
        "MAX_POOL_2D",
        [x],
        [out],
        padding="VALID",
        stride_h=node.stride,
        stride_w=node.stride,
        filter_h=node.kernel,
        filter_w=node.kernel,
    )
    return out


def _edge_pad(
    b: ModelBuilder,
    node: MaxPool,
    x: int,
    dtype: str,
    shape: tuple[int, int, int, int],
    quant: dict[str, object],
) -> int:
    """``x`` (NHWC ``shape``) with its first and last row each repeated ``p`` times before and
    after it (SLICE, CONCATENATION on axis 1), then likewise its first and last column (axis
    2): the tensor :func:`max_pool_2d` pools where zeros could win a window."""
    p, current = node.padding, list(shape)
    for axis, label in ((1, "row"), (2, "col")):
        edges = []
        for side, start in (("first", 0), ("last", current[axis] - 1)):
            begin, extent = [0, 0, 0, 0], list(current)
            begin[axis], extent[axis] = start, 1
            edge = b.add_tensor(f"{node.output}/{side}_{label}", tuple(extent), dtype, **quant)
            where = b.add_tensor(
                f"{node.output}/{side}_{label}_begin", (4,), "int32", data=np.array(begin, np.int32)
            )
            size = b.add_tensor(
                f"{node.output}/{side}_{label}_size", (4,), "int32", data=np.array(extent, np.int32)
            )
            b.add_operator("SLICE", [x, where, size], [edge])
            edges.append(edge)
        current[axis] += 2 * p
        padded = b.add_tensor(f"{node.output}/padded_{label}s", tuple(current), dtype, **quant)
        parts = [edges[0]] * p + [x] + [edges[1]] * p
        b.add_operator("CONCATENATION", parts, [padded], axis=axis)
        x = padded
    return x
