"""The NumPy reference runner: executes a lowered program node by node with :mod:`.ops`.

:data:`REFERENCE_KERNELS` is the runner's op table: node class -> kernel call
``kernel(node, inputs, graph) -> output`` (the node's parameters, its input arrays in order, and
the graph for tensor specs). Adding an op to the reference is one entry here and its kernel in
:mod:`.ops`; a node without an entry raises a :class:`DataError` naming it when it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.errors import DataError
from climbq_deploy.ir import graph as ir
from climbq_deploy.ir.graph import Graph, IntConv, Node, TensorSpec
from climbq_deploy.ir.integer_forms import partial_sum_bound
from climbq_deploy.ir.serialize import load_program
from climbq_deploy.kernels import ops


def _stored(value: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """``value`` in its tensor's storage dtype, after checking the proven bounds hold."""
    if spec.bounds is None or not spec.dtype.startswith("int"):
        return value
    lo, hi = spec.bounds
    if value.size and (value.min() < lo or value.max() > hi):
        raise DataError(
            f"tensor {spec.name!r}: values [{value.min()}, {value.max()}] outside the proven "
            f"bounds [{lo}, {hi}] (a lowering bug; please report)"
        )
    return value.astype(spec.dtype, copy=False)


def _conv_partial_bound(node: IntConv, graph: Graph) -> int:
    """The proven bound of every partial sum of ``node`` (from its input's bounds)."""
    bounds = graph.tensors[node.inputs[0]].bounds
    if bounds is None:
        raise DataError(
            f"conv {node.source!r}: input has no proven bounds; lower "
            "the graph (bounds pass) before running it"
        )
    return partial_sum_bound(node.weight, *bounds)


def _input_scale(node: Node, graph: Graph) -> float | None:
    return graph.tensors[node.inputs[0]].scale


Kernel = Callable[[Any, list[np.ndarray], Graph], np.ndarray]
REFERENCE_KERNELS: dict[type[Node], Kernel] = {
    ir.InputQuant: lambda node, x, graph: ops.input_quant(x[0], node.mean, node.std, node.step),
    ir.IntConv: lambda node, x, graph: ops.int_conv(
        x[0],
        node.weight,
        node.stride,
        node.padding,
        node.groups,
        _conv_partial_bound(node, graph),
        node.dilation,
    ),
    ir.ThresholdAct: lambda node, x, graph: ops.threshold_act(
        x[0], node.thresholds, node.direction, node.mult, node.offset, node.shift
    ),
    ir.Relu: lambda node, x, graph: ops.relu(x[0]),
    ir.Add: lambda node, x, graph: ops.add(x[0], x[1]),
    ir.MaxPool: lambda node, x, graph: ops.max_pool(x[0], node.kernel, node.stride, node.padding),
    ir.Concat: lambda node, x, graph: ops.concat(x),
    ir.GlobalSumPool: lambda node, x, graph: ops.global_sum_pool(x[0]),
    ir.Linear: lambda node, x, graph: ops.linear(
        x[0], node.weight, node.bias, _input_scale(node, graph)
    ),
    ir.IntLinear: lambda node, x, graph: ops.int_linear(
        x[0], node.weight, node.weight_scale, node.bias, _input_scale(node, graph)
    ),
}
"""Node class -> reference kernel call (exact class: a new op needs its own entry)."""


class ReferenceModel:
    """Run a lowered :class:`Graph` on uint8 NHWC images.

    ``predict(images)`` returns float64 logits; ``run(images, keep=True)`` returns every
    tensor (NHWC integers, then the logits) by name, for debugging and layer-wise checks.
    """

    def __init__(self, graph: Graph, manifest: dict[str, Any] | None = None) -> None:
        self.graph = graph.validate()
        self.manifest = manifest or {}
        for node in graph.nodes:  # fail early, as before any image: convs need proven bounds
            if type(node) is IntConv:
                _conv_partial_bound(node, graph)

    @classmethod
    def load(cls, path: str | Path) -> ReferenceModel:
        graph, manifest = load_program(path)
        return cls(graph, manifest)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.graph.tensors[self.graph.input].shape

    def _check(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != self.input_shape:
            expected = ", ".join(map(str, self.input_shape))
            raise DataError(
                f"images must be uint8 of shape (N, {expected}), got {images.dtype} {images.shape}"
            )
        return images

    def run(
        self, images: np.ndarray, keep: bool | Collection[str] = False
    ) -> dict[str, np.ndarray]:
        """Execute the program. Returns the output tensor and the tensors named in ``keep``
        (every tensor when ``keep is True``), each in its proven storage dtype."""
        values: dict[str, np.ndarray] = {self.graph.input: self._check(images)}
        wanted = set(self.graph.tensors) if keep is True else set(keep or ())
        wanted.add(self.graph.output)
        uses: dict[str, int] = {}
        for node in self.graph.nodes:
            for name in node.inputs:
                uses[name] = uses.get(name, 0) + 1
        kept: dict[str, np.ndarray] = {}
        for node in self.graph.nodes:
            out = self._execute(node, [values[n] for n in node.inputs])
            values[node.output] = out
            if node.output in wanted:
                kept[node.output] = _stored(out, self.graph.tensors[node.output])
            for name in node.inputs:
                uses[name] -= 1
                if uses[name] == 0:
                    del values[name]
        if keep is True:
            kept[self.graph.input] = images
        return kept

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """float64 logits ``(N, classes)``, in batches."""
        images = self._check(images)
        parts = [
            self.run(images[i : i + batch_size])[self.graph.output]
            for i in range(0, len(images), batch_size)
        ]
        return (
            np.concatenate(parts)
            if parts
            else np.zeros((0, self.graph.tensors[self.graph.output].shape[0]))
        )

    def _execute(self, node: Node, inputs: list[np.ndarray]) -> np.ndarray:
        kernel = REFERENCE_KERNELS.get(type(node))
        if kernel is None:
            raise DataError(
                f"node {node.name!r}: op {node.op!r} has no reference kernel "
                "(lower the graph first)"
            )
        return kernel(node, inputs, self.graph)
