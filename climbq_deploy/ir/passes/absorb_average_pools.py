"""Pass: each local average pool becomes part of the conv that reads it.

A local average pool has no exact integer form of its own between layers: its output, the
window sum ``P`` with scale ``s_x / D``, is wider than the codes every target moves between
layers. But it is linear, so a pool followed by a conv is one conv. Along one axis (the same
along the other; kernels are square), with the pool's kernel ``kp``, stride ``sp``, padding
``pp`` and the conv's kernel ``k``, stride ``s``, padding ``p``, dilation ``d``::

    P[u]   = sum_{a < kp} X[sp u + a - pp]                      (X zero outside 0..H-1)
    acc[y] = sum_{i < k} W[i] P[s y + d i - p]                  (P zero outside 0..Hp-1)
           = sum_{m < K} W'[m] X[(sp s) y + m - (sp p + pp)]    when the conditions below hold

with ``W'[m] = sum of W[i] over the (i, a) with sp d i + a = m`` and ``K = sp d (k - 1) + kp``:
a conv of ``X`` itself with kernel ``K``, stride ``sp s``, padding ``sp p + pp``, dilation 1
and the conv's own groups. The real value is unchanged when the composite's weight scale is
``s_w / D`` (``D`` the pool's divisor: the accumulator ``sum W' X`` has scale
``s_w s_x / D``, the pool-then-conv's ``s_w (s_x / D)``), so the thresholds the later passes
derive are the same numbers.

Exact (every target then computes the pool in the conv's own integer arithmetic) when

- every pooled position ``u`` outside ``0..Hp-1`` that the conv reads (its zero padding)
  has a pool window lying wholly in X's zero padding, ``sp u - pp + kp <= 0`` or
  ``sp u - pp >= H``: the composite reads zeros there too (a 2x2 stride-2 pool on an odd
  map drops the last row, which a padded conv after it would make the composite read);
- the composite's output size is the conv's (``(H + 2 Pd - K) // S + 1 == Ho``), its
  padding is narrower than its kernel (the program's rule), and ``W'`` lies on a grid of at
  most 8 bits (``mult code + offset``): the conv's own when the pool windows tile
  (``kp == sp``, ``d == 1``: each ``W'`` entry is one ``W``), else the narrowest grid that
  holds the window sums (``mult`` 2 when they share a parity, else 1).

Cost: the composite does ``K**2 / k**2`` the conv's multiply-adds per output (4x for a 2x2
stride-2 pool before a 3x3 or a 1x1 conv, 9x for a 3x3 stride-1 pool before a 1x1 conv) and
the pool's own work disappears. A pool read by several convs is folded into each; a pool
read by anything else is refused (capture refuses it first, naming the torch node).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.graph import AvgPool, Conv, Graph, Node
from climbq_deploy.ir.passes.integerize_weights import integer_weight

__all__ = ["Composite", "absorb_average_pools", "composite_conv"]

MAX_BITS = 8


@dataclass(frozen=True)
class Composite:
    """The one conv equal to ``pool`` then ``conv``: OHWI ``weight`` (integers, the units of
    the conv's ``W_int``), square ``stride`` and ``padding``, and the weight grid."""

    weight: np.ndarray
    stride: int
    padding: int
    weight_bits: int
    weight_grid: tuple[int, int]


def _out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _grid(weight: np.ndarray, bits: int, grid: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """``weight``'s grid: the conv's own ``(bits, grid)`` when every value lies on it, else the
    narrowest ``(mult, offset)`` grid holding them (its bits may exceed 8: the caller refuses)."""
    mult, offset = grid
    codes, rest = np.divmod(weight - offset, mult)
    if not rest.any() and codes.min() >= 0 and codes.max() <= 2**bits - 1:
        return bits, grid
    lo, hi = int(weight.min()), int(weight.max())
    mult = 2 if np.all((weight - lo) % 2 == 0) and hi > lo else 1
    levels = (hi - lo) // mult + 1
    return max(1, (levels - 1).bit_length()), (mult, lo)


def composite_conv(
    pool: AvgPool,
    weight: np.ndarray,
    weight_bits: int,
    weight_grid: tuple[int, int],
    stride: int,
    padding: int,
    dilation: int,
    map_hw: tuple[int, int],
    where: str,
) -> Composite:
    """The conv equal to ``pool`` (on an ``H x W`` map) then a conv with integer OHWI
    ``weight`` (see the module docstring); :class:`LoweringError` starting with ``where``
    saying which condition fails."""
    kp, sp, pp = pool.kernel, pool.stride, pool.padding
    k = weight.shape[1]
    big = sp * dilation * (k - 1) + kp
    new_stride, new_padding = sp * stride, sp * padding + pp
    for size in map_hw:
        pooled = _out(size, kp, sp, pp)
        out = _out(pooled, k, stride, padding, dilation)
        read = {stride * y + dilation * i - padding for y in range(out) for i in range(k)}
        outside = [u for u in sorted(read) if not 0 <= u < pooled]
        # a pooled position the conv reads in its zero padding: the composite reads X there
        real = [u for u in outside if sp * u - pp + kp > 0 and sp * u - pp < size]
        why = ""
        if real:
            u = real[0]
            first, last = max(0, sp * u - pp), min(size, sp * u - pp + kp) - 1
            why = (
                f"the conv's zero padding reads pooled position {u} (outside 0..{pooled - 1}), "
                f"whose window covers pixels {first}..{last} of the {size}-wide map: the "
                "composite conv would read them where pool-then-conv reads zeros (a map the "
                "pool tiles whole, or a conv without padding, is exact)"
            )
        elif _out(size, big, new_stride, new_padding) != out:
            why = f"the composite conv's output size differs from the conv's ({out})"
        elif new_padding > big - 1:
            why = f"the composite conv's padding {new_padding} is not below its kernel {big}"
        if why:
            raise LoweringError(
                f"{where}: average pool {kp}x{kp} stride {sp} padding {pp} then a {k}x{k} "
                f"conv (stride {stride}, padding {padding}, dilation {dilation}) on a "
                f"{map_hw[0]}x{map_hw[1]} map: {why}"
            )
    wide = np.zeros((weight.shape[0], big, big, weight.shape[3]), np.int64)
    step = sp * dilation
    for i in range(k):
        for j in range(k):
            for a in range(kp):
                for b in range(kp):
                    wide[:, step * i + a, step * j + b, :] += weight[:, i, j, :]
    bits, grid = _grid(wide, weight_bits, weight_grid)
    if bits > MAX_BITS:
        raise LoweringError(
            f"{where}: average pool {kp}x{kp} stride {sp} then a {k}x{k} conv: the composite "
            f"conv's weights span {int(wide.min())}..{int(wide.max())}, more than an 8-bit grid"
        )
    return Composite(wide, new_stride, new_padding, bits, grid)


def absorb_average_pools(graph: Graph) -> Graph:
    """Every ``AvgPool`` read only by convs is folded into each of them (the conv reads the
    pool's input); the pool and its tensor disappear."""
    pools = {n.output: n for n in graph.nodes if isinstance(n, AvgPool)}
    if not pools:
        return graph
    nodes: list[Node] = []
    for node in graph.nodes:
        if isinstance(node, AvgPool):
            readers = [r for r in graph.consumers(node.output) if not isinstance(r, Conv)]
            if readers:
                raise LoweringError(
                    f"average pool {node.source!r} is read by {readers[0].op} "
                    f"{readers[0].source!r}; a local average pool lowers only into the conv "
                    "that reads it"
                )
            continue
        pool = pools.get(node.inputs[0]) if isinstance(node, Conv) else None
        if pool is None:
            nodes.append(node)
            continue
        assert isinstance(node, Conv)
        x = graph.tensors[pool.inputs[0]]
        w_int = integer_weight(node).astype(np.int64)  # checked against the conv's grid
        merged = composite_conv(
            pool,
            w_int,
            node.weight_bits,
            node.weight_grid,
            node.stride,
            node.padding,
            node.dilation,
            (x.shape[0], x.shape[1]),
            f"conv {node.source!r} after average pool {pool.source!r}",
        )
        scale = node.weight_scale / pool.divisor
        nodes.append(
            replace(
                node,
                inputs=(pool.inputs[0],),
                weight=merged.weight.astype(np.float64) * scale,
                weight_scale=scale,
                weight_bits=merged.weight_bits,
                weight_grid=merged.weight_grid,
                stride=merged.stride,
                padding=merged.padding,
                dilation=1,
            )
        )
    return graph.replace_nodes(nodes)
