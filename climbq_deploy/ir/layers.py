"""A lowered program as layers: each ``IntConv`` with the ``ThresholdAct`` it feeds, as one unit.

Every target computes a conv and the compare-and-count after it together (the count reads the
conv's accumulator, and the direction ``d_c`` folds into the conv's weights), so the emitters
and anything else that walks a lowered program by layer iterate :func:`iter_layers` instead of
pairing nodes themselves:

- an ``IntConv`` whose output has exactly one consumer, a ``ThresholdAct``, comes as one
  :class:`ConvLayer` at the conv's place in the program (``stem`` when the conv reads the
  program's integer input, the output of ``InputQuant``);
- an ``IntConv`` that feeds anything else is refused (:class:`LoweringError` naming the conv):
  no target has a form for a bare accumulator;
- every other node comes as itself (a ``ThresholdAct`` reading a non-conv value, e.g. a residual
  sum, included).

Lowered programs place each conv's activation right after it; where something else sat in
between, the layer still comes at the conv's place, which keeps the order valid (nothing in
between reads the conv's or the activation's output).

Backends dispatch on ``type(layer)`` through their own op tables (``{ConvLayer: ..., Relu:
...}``); :func:`op_entry` is that lookup, by exact class (a subclass of an op is a new op and
needs its own entry, never another op's by inheritance).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.graph import Graph, InputQuant, IntConv, Node, ThresholdAct

__all__ = ["ConvLayer", "Layer", "iter_layers", "op_entry"]


@dataclass(frozen=True)
class ConvLayer:
    """An integer conv and the compare-and-count that is its only consumer.

    Attributes:
        conv: the ``IntConv`` (accumulator ``acc = conv(X, W_int)``).
        act: the ``ThresholdAct`` counting ``d_c acc`` against its thresholds.
        stem: the conv reads the program's integer input ``I`` (the ``InputQuant`` output),
            which is wider than any activation and gets a target's digit split.
    """

    conv: IntConv
    act: ThresholdAct
    stem: bool

    @property
    def source(self) -> str:
        return self.conv.source


Layer = ConvLayer | Node
T = TypeVar("T")


def iter_layers(graph: Graph) -> Iterator[Layer]:
    """The program's layers in execution order (see the module docstring).

    Raises :class:`LoweringError` ``conv {source!r} must feed exactly one ThresholdAct`` for
    an ``IntConv`` whose output is read by anything but exactly one ``ThresholdAct``."""
    producers = {n.output: n for n in graph.nodes}
    readers: dict[str, list[Node]] = {}
    for node in graph.nodes:
        for name in node.inputs:
            readers.setdefault(name, []).append(node)
    paired: set[int] = set()  # ids of the activations already yielded with their conv
    for node in graph.nodes:
        if id(node) in paired:
            continue
        if isinstance(node, IntConv):
            consumer = readers.get(node.output, [])
            if len(consumer) != 1 or not isinstance(consumer[0], ThresholdAct):
                raise LoweringError(f"conv {node.source!r} must feed exactly one ThresholdAct")
            act = consumer[0]
            paired.add(id(act))
            stem = isinstance(producers.get(node.inputs[0]), InputQuant)
            yield ConvLayer(node, act, stem)
        else:
            yield node


def op_entry(table: Mapping[type, T], layer: Layer) -> T | None:
    """``table``'s entry for the layer's exact class, or None (the caller raises its own
    "no form" error naming the op)."""
    return table.get(type(layer))
