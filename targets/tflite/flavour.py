"""The program as LiteRT's int16 form computes it (the "tflite flavour" of the reference).

The TFLite export reads every conv accumulator back as an int16 conv output (multiplier
``2**-shift``, round half up, saturating). With ``shift = 0`` that is the accumulator itself
wherever a count can change, so the count is exact. A layer whose thresholds leave
``[-32767, 32767]`` is counted on
``v' = (v + 2**(shift-1)) >> shift`` with the smallest shift that brings its thresholds in,
and thresholds ``theta' = floor(theta / 2**shift) + 1``: level t is then passed iff
``v >= theta' 2**shift - 2**(shift-1)``, a boundary within ``2**(shift-1)`` of ``theta``. Only
values in that band count differently from the pure program; ``climbq check`` measures how
many. The stem is exempt: the export computes its accumulator exactly in int32 from three
6-bit digits of the input (see :mod:`.export`), so it keeps the pure program's thresholds.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from climbq_deploy.ir.errors import LoweringError
from climbq_deploy.ir.graph import Graph, InputQuant, IntConv, Node, ThresholdAct

INT16_LIMIT = 32767


def input_width(graph: Graph) -> int:
    """``B``: the program input's integers lie in ``[-2**(B-1), 2**(B-1))`` (its bounds)."""
    quant = next(n for n in graph.nodes if isinstance(n, InputQuant))
    lo, hi = graph.tensors[quant.output].bounds or (-(2**31), 2**31 - 1)
    return next(b for b in range(2, 33) if -(2 ** (b - 1)) <= lo and hi < 2 ** (b - 1))


def input_type(graph: Graph) -> str:
    """The model input's TFLite type: ``int16`` when the program's input fits it, else
    ``int32`` (the target lowers with a 20-bit input: see ``TfliteTarget.input_bits``)."""
    return "int16" if input_width(graph) <= 16 else "int32"


def requantize_shift(thresholds: np.ndarray, direction: np.ndarray) -> tuple[int, np.ndarray]:
    """``(shift, thresholds')`` for one layer (constant channels keep their 0/1 thresholds)."""
    theta = thresholds.astype(np.int64)
    varying = direction != 0
    for shift in range(0, 40):
        shifted = np.where(varying[:, None], (theta >> shift) + 1, theta) if shift else theta
        if shifted.size == 0 or (shifted.min() >= -INT16_LIMIT and shifted.max() <= INT16_LIMIT):
            return shift, shifted
    raise LoweringError("thresholds beyond 2**55 cannot be brought into int16")  # pragma: no cover


def int16_flavour(graph: Graph) -> Graph:
    """Set ``shift`` and thresholds of every conv-fed ThresholdAct for the int16 TFLite form."""
    producers = {n.output: n for n in graph.nodes}
    program_input = next(n.output for n in graph.nodes if isinstance(n, InputQuant))
    nodes: list[Node] = []
    for node in graph.nodes:
        conv = producers.get(node.inputs[0])
        if (
            isinstance(node, ThresholdAct)
            and isinstance(conv, IntConv)
            and conv.inputs[0] != program_input  # the stem is computed exactly (digit split)
        ):
            shift, theta = requantize_shift(node.thresholds, node.direction)
            node = replace(node, shift=shift, thresholds=theta.astype(np.int16))
        nodes.append(node)
    return graph.replace_nodes(nodes)
