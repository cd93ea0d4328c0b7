"""Pass: activation quantizers become per-channel integer thresholds (method §9).

An ``ActQuant`` with ascending float thresholds ``T_t`` reads ``y_c = a_c x_c + b_c`` where
``x`` is an integer tensor: an ``IntConv`` accumulator with its folded BatchNorm
(``a_c, b_c`` from the conv), or any other integer tensor of scale ``s`` (``a = s, b = 0``).
For integer ``x``:

- ``a_c > 0``:  ``y >= T``  iff  ``x >= (T - b_c) / a_c``   iff  ``x >= ceil((T - b_c) / a_c)``;
- ``a_c < 0``:  ``y >= T``  iff  ``-x >= (T - b_c) / |a_c|`` iff ``-x >= ceil((T - b_c) / |a_c|)``;
- ``a_c = 0``:  ``y = b_c`` for every input: level t is passed iff ``b_c >= T``.

So ``j_c = #{t : d_c x_c >= theta[c, t]}`` with ``d_c = sign(a_c)`` and
``theta[c, t] = ceil((T_t - b_c) / |a_c|)`` (float64, then snapped; quotients within 1e-9
of an integer are recomputed exactly with fractions of the same float64 values; for ``d = 0``,
``theta = 0`` for passed levels and ``1`` otherwise, so ``0 >= theta`` counts them). Levels pass
at ``y >= T`` exactly, i.e. ties round up, where training's half-to-even ``round`` may round
down: only exact ties can differ. Values too large for int64 are clamped to +-2**62 here and
to the proven input range by the bounds pass.
"""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction

import numpy as np

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.graph import ActQuant, Graph, IntConv, Node, ThresholdAct

CLAMP = float(2**62)


def snap_thresholds(
    thresholds: np.ndarray, scale: np.ndarray, shift: np.ndarray, source: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """``(theta int64 (C, n), direction int8 (C,))`` for ``y_c = scale_c x + shift_c``."""
    scale, shift = np.asarray(scale, np.float64), np.asarray(shift, np.float64)
    if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(shift))):
        bad = int(np.flatnonzero(~(np.isfinite(scale) & np.isfinite(shift)))[0])
        raise LoweringError(
            f"layer {source!r} channel {bad}: non-finite folded scale/shift "
            f"({scale[bad]}, {shift[bad]})"
        )
    t = np.asarray(thresholds, np.float64)[None, :]
    direction = np.sign(scale).astype(np.int8)
    magnitude = np.where(direction == 0, 1.0, np.abs(scale))[:, None]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        q = (t - shift[:, None]) / magnitude
        theta = np.ceil(q)
        # float division may land exactly on an integer the true quotient just misses (or the
        # reverse): redo those in exact rational arithmetic on the same float64 inputs
        near = (np.abs(q - np.rint(q)) <= 1e-9 * np.maximum(1.0, np.abs(q))) & (np.abs(q) < 2.0**53)
    near &= direction[:, None] != 0
    for c, k in zip(*np.nonzero(near), strict=True):
        exact = (Fraction(float(t[0, k])) - Fraction(float(shift[c]))) / Fraction(
            float(magnitude[c, 0])
        )
        theta[c, k] = math.ceil(exact)
    theta = np.clip(np.nan_to_num(theta, nan=0.0, posinf=CLAMP, neginf=-CLAMP), -CLAMP, CLAMP)
    constant = direction == 0
    theta[constant] = np.where(shift[constant, None] >= t, 0.0, 1.0)
    return theta.astype(np.int64), direction


def derive_thresholds(graph: Graph) -> Graph:
    producers = {n.output: n for n in graph.nodes}
    nodes: list[Node] = []
    index: dict[str, int] = {}
    for node in graph.nodes:
        if not isinstance(node, ActQuant):
            index[node.output] = len(nodes)
            nodes.append(node)
            continue
        x = graph.tensors[node.inputs[0]]
        source = producers.get(x.name)
        if isinstance(source, IntConv) and source.affine_scale is not None:
            if len(graph.consumers(x.name)) != 1:
                raise LoweringError(f"conv {source.source!r} feeds more than its quantizer")
            scale, shift = source.affine_scale, source.affine_shift
            nodes[index[x.name]] = replace(source, affine_scale=None, affine_shift=None)
        elif x.scale is not None and x.dtype.startswith("int"):
            scale, shift = np.full(x.channels, x.scale), np.zeros(x.channels)
        else:
            raise LoweringError(f"quantizer {node.source!r} reads non-integer {x.name!r}")
        theta, direction = snap_thresholds(node.thresholds, scale, shift, node.source)
        index[node.output] = len(nodes)
        nodes.append(
            ThresholdAct(
                **node.place(),
                thresholds=theta,
                direction=direction,
                mult=node.mult,
                offset=node.offset,
                bits=node.bits,
            )
        )
    for node in nodes:
        if isinstance(node, IntConv) and node.affine_scale is not None:
            raise LoweringError(
                f"conv {node.source!r} output is not quantized; an integer program needs an "
                "activation quantizer after every conv"
            )
    return graph.replace_nodes(nodes)
