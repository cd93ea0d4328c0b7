"""The integer IR: typed tensors and nodes of the program every target runs.

A :class:`Graph` is a list of nodes in execution order over named tensors. Shapes are per
image, channels last ``(H, W, C)`` (as TFLite) or ``(C,)``; the batch axis is implicit and
first at run time. Every tensor records its channel axis explicitly (``channel_axis`` indexes
``shape``); conv weights are ``(O, kh, kw, I / groups)`` (OHWI).

Integer tensors carry a ``scale``: the real value is ``integer * scale``. Activations on a
quantizer grid have scale ``step`` (``R/n`` for ClimbQ and uniform), accumulators
``weight_scale * input_scale``. ``bounds`` is a proven ``[lo, hi]`` of the integers (set by the
bounds pass); ``dtype`` is the storage type it picks.

Nodes come in two stages. Capture (:mod:`climbq_deploy.ir.capture`) emits the float-level ops
of the trained model (:class:`Conv` with quantized float weights, :class:`BatchNorm`,
:class:`ActQuant`); the lowering passes (:mod:`climbq_deploy.ir.passes`) replace them with the
integer ops (:class:`IntConv`, :class:`ThresholdAct`). A lowered graph holds only
:data:`INTEGER_OPS` plus the float head.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from climbq_deploy.errors import ArtifactError

INT_DTYPES = ("int8", "int16", "int32", "int64")
FLOAT_DTYPES = ("float32", "float64")
UINT8 = "uint8"


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of the program (per image).

    Attributes:
        name: unique name.
        dtype: storage dtype (``int8/16/32/64``, ``uint8`` for the image, ``float32/64``).
        shape: per-image shape, channels last.
        channel_axis: index into ``shape`` of the channel axis.
        scale: real value per integer unit, None for float tensors and the raw image.
        bounds: proven integer range ``(lo, hi)``, None until the bounds pass.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    channel_axis: int = 0
    scale: float | None = None
    bounds: tuple[int, int] | None = None

    @property
    def channels(self) -> int:
        return self.shape[self.channel_axis]


@dataclass(frozen=True)
class Node:
    """Base of every op: a name, input tensor names, one output tensor name, and the torch
    module it came from (``source``, for debugging and the check's layer names)."""

    name: str
    inputs: tuple[str, ...]
    output: str
    source: str = ""

    op = "node"

    def place(self) -> dict[str, Any]:
        """The fields that place a node in the program (``name``, ``inputs``, ``output``,
        ``source``): a pass that replaces a node by another op keeps them,
        ``NewOp(**node.place(), ...)``."""
        return {
            "name": self.name,
            "inputs": self.inputs,
            "output": self.output,
            "source": self.source,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """The node's array fields (weights, thresholds, ...)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if _is_array(self, f.name)}

    def attributes(self) -> dict[str, Any]:
        """The node's scalar / tuple fields, JSON-ready."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if not _is_array(self, f.name):
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def _is_array(node: Node, name: str) -> bool:
    return isinstance(getattr(node, name), np.ndarray)


@dataclass(frozen=True)
class InputQuant(Node):
    """uint8 image ``p`` (HWC) to the integer input ``I`` (HWC), in units of ``step``:

    ``I = round_half_even((p / 255 - mean_c) / std_c / step)``, computed in float64.
    ``step = 2**-k`` is as fine as the stem's int32 accumulator allows (k <= 24); zero
    padding of ``I`` is exactly zero padding of the normalised image. This is the only
    rounding before the integer program; its effect on the codes is measured by
    ``climbq check``.
    """

    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    step: float = 2.0**-16
    op = "input_quant"


@dataclass(frozen=True)
class Conv(Node):
    """Float-level conv of the trained model: ``y = conv(x, weight)`` with ``weight`` the
    quantized float weights ``W_int * weight_scale`` (float64), no bias; ``stride``,
    ``padding``, ``dilation`` and ``groups`` as torch's (square). ``affine`` (set by
    :func:`fold_batchnorm`) is the per-channel ``y_c = scale_c * conv_c + shift_c``."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros(0))
    weight_scale: float = 1.0
    weight_bits: int = 8
    weight_grid: tuple[int, int] = (2, -255)
    stride: int = 1
    padding: int = 0
    groups: int = 1
    dilation: int = 1
    affine_scale: np.ndarray | None = None
    affine_shift: np.ndarray | None = None
    op = "conv"


@dataclass(frozen=True)
class BatchNorm(Node):
    """Inference BatchNorm: ``y = gamma (x - mean) / sqrt(var + eps) + beta`` per channel."""

    gamma: np.ndarray = field(default_factory=lambda: np.zeros(0))
    beta: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    var: np.ndarray = field(default_factory=lambda: np.zeros(0))
    eps: float = 1e-5
    op = "batchnorm"


@dataclass(frozen=True)
class ActQuant(Node):
    """An activation quantizer: ``j = #{t : x >= thresholds[t]}`` (ascending, float64, units
    of x), output ``X_int = mult * j + offset`` with scale ``step``."""

    thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mult: int = 2
    offset: int = -1
    step: float = 1.0
    bits: int = 8
    op = "act_quant"


@dataclass(frozen=True)
class IntConv(Node):
    """Integer conv, exact, zero padding ``p``, stride ``s``, dilation ``d``, ``G`` groups:

    ``acc[y, x, o] = sum_{i, j, c} W_int[o, i, j, c] * X[s y + d i - p, s x + d j - p,
    g(o) C / G + c]`` with ``g(o) = o // (O / G)`` (torch's grouping: output channels in ``G``
    contiguous blocks, each reading its own ``C / G`` input channels; depthwise: ``G = C``).
    Output ``H_out = (H + 2 p - d (k - 1) - 1) // s + 1``, likewise ``W_out``.

    ``weight`` is ``W_int = weight_grid[0] * code + weight_grid[1]`` (int8; int16 for the 8-bit
    odd grid) with ``code`` in ``0..2**weight_bits - 1``, OHWI ``(O, k, k, C / G)``. Until
    :func:`derive_thresholds` consumes it, ``affine_scale/shift`` map the accumulator to the
    BatchNorm output ``y_c = affine_scale_c * acc_c + affine_shift_c`` (float64).

    ``dilation`` is newer than program version 1: a program with ``dilation != 1`` is written
    as version 2 (:mod:`climbq_deploy.ir.serialize`), every other one byte for byte as
    before."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    weight_bits: int = 8
    weight_grid: tuple[int, int] = (2, -255)
    stride: int = 1
    padding: int = 0
    groups: int = 1
    dilation: int = 1
    affine_scale: np.ndarray | None = None
    affine_shift: np.ndarray | None = None
    op = "int_conv"


@dataclass(frozen=True)
class ThresholdAct(Node):
    """Per-channel compare-and-count: ``j_c = #{t : direction_c * x_c >= thresholds[c, t]}``,
    output ``X_int = mult * j + offset``.

    ``thresholds`` is int64 ``(C, n)``, non-decreasing along t; ``direction`` int8 ``(C,)`` in
    ``{+1, -1, 0}`` (0: constant channel, thresholds 0 for passed levels and 1 for the rest).
    The input is any integer tensor (an accumulator, or an integer sum).

    ``shift`` is a runtime's requantization before the count, per output channel: None in the
    pure program (no requantization), else an int8 ``(C,)`` array ``s`` with values in
    ``0..31``. Channel c counts ``(d_c x + 2**(s_c - 1)) >> s_c`` for ``s_c > 0`` (divide by
    ``2**s_c``, round half up, for either sign) and ``d_c x`` itself for ``s_c = 0``: what
    LiteRT's int16 conv output with the per-channel multiplier ``2**-s_c`` computes
    (:mod:`climbq_deploy.targets.tflite.flavour`). :meth:`channel_shifts` gives the array in
    both cases."""

    thresholds: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    direction: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    mult: int = 2
    offset: int = -1
    bits: int = 8
    shift: np.ndarray | None = None
    op = "threshold_act"

    def channel_shifts(self) -> np.ndarray:
        """The per-channel shifts ``s`` as int64 ``(C,)`` (zeros when ``shift`` is None)."""
        if self.shift is None:
            return np.zeros(self.thresholds.shape[0], np.int64)
        return np.asarray(self.shift).astype(np.int64)


@dataclass(frozen=True)
class Relu(Node):
    """``max(x, 0)`` on integers (scale unchanged)."""

    op = "relu"


@dataclass(frozen=True)
class Add(Node):
    """``a + b`` on integers of equal scale (residual add)."""

    op = "add"


@dataclass(frozen=True)
class MaxPool(Node):
    """``y[h, w, c] = max over the kernel x kernel window at (s h - p, s w - p)`` of integer
    ``x`` (HWC), windows clipped to the input (torch's ``max_pool2d`` pads with -inf: a padded
    position never wins); scale unchanged. ``out = floor((in + 2 p - k) / s) + 1`` (no
    ceil mode, no dilation)."""

    kernel: int = 2
    stride: int = 2
    padding: int = 0
    op = "max_pool"


@dataclass(frozen=True)
class AvgPool(Node):
    """Float-level local average pool of integer ``x`` (HWC), as captured: the output holds the
    window sums ``P[h, w, c] = sum_{i, j < kernel} x[s h + i - p, s w + j - p, c]`` (zero
    padding counted, torch's ``count_include_pad=True``), scale ``input_scale / divisor``
    (``divisor = kernel**2``, or torch's ``divisor_override``), so ``P * scale`` is torch's
    average exactly. ``out = floor((in + 2 p - k) / s) + 1``.

    No target runs it: :func:`~climbq_deploy.ir.passes.absorb_average_pools` lowers it into
    the conv that reads it (a local average pool is linear, so pool-then-conv is one conv)."""

    kernel: int = 2
    stride: int = 2
    padding: int = 0
    divisor: int = 4
    op = "avg_pool"


@dataclass(frozen=True)
class Concat(Node):
    """Integer tensors of equal scale and spatial shape joined along channels, in input
    order (``torch.cat(..., dim=1)`` in NCHW)."""

    op = "concat"


@dataclass(frozen=True)
class GlobalSumPool(Node):
    """``s_c = sum_{h,w} x[c, h, w]`` in int32/int64; the average is ``s * scale`` with
    ``scale = input_scale / (H * W)`` recorded on the output tensor (exact, no division)."""

    op = "global_sum_pool"


@dataclass(frozen=True)
class Linear(Node):
    """Float head (as in the paper): ``logits = weight @ (s * input_scale) + bias``, computed in
    float64 from the trained float32 ``weight`` and ``bias``."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0))
    op = "linear"


@dataclass(frozen=True)
class IntLinear(Node):
    """int8 head option: ``acc[o] = sum_c W_q[o, c] * s[c]`` (exact integer), then
    ``logits[o] = acc[o] * weight_scale[o] * input_scale + bias[o]`` in float64.
    ``W_q = round_half_even(W / weight_scale[o])`` per output row, ``|W_q| <= 127``."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int8))
    weight_scale: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0))
    op = "int_linear"


OPS: dict[str, type[Node]] = {
    cls.op: cls
    for cls in (
        InputQuant,
        Conv,
        BatchNorm,
        ActQuant,
        IntConv,
        ThresholdAct,
        Relu,
        Add,
        MaxPool,
        AvgPool,
        Concat,
        GlobalSumPool,
        Linear,
        IntLinear,
    )
}
INTEGER_OPS = (
    "input_quant",
    "int_conv",
    "threshold_act",
    "relu",
    "add",
    "max_pool",
    "concat",
    "global_sum_pool",
)
HEAD_OPS = ("linear", "int_linear")


@dataclass(frozen=True)
class Graph:
    """A program: ``nodes`` in execution order, ``tensors`` by name, one input, one output,
    and ``meta`` (provenance: arch, method, bits, dataset, metrics)."""

    nodes: tuple[Node, ...]
    tensors: dict[str, TensorSpec]
    input: str
    output: str
    meta: dict[str, Any] = field(default_factory=dict)

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def ops(self) -> list[str]:
        return [n.op for n in self.nodes]

    def replace_nodes(
        self, nodes: list[Node], tensors: dict[str, TensorSpec] | None = None
    ) -> Graph:
        """A copy with new nodes (and tensors), dropping tensors no node uses any more."""
        tensors = dict(self.tensors if tensors is None else tensors)
        used = {self.input, self.output}
        for n in nodes:
            used.update(n.inputs)
            used.add(n.output)
        return replace(
            self, nodes=tuple(nodes), tensors={k: v for k, v in tensors.items() if k in used}
        )

    def validate(self) -> Graph:
        """Check names resolve and every input is produced before use; return self."""
        known = {self.input}
        for n in self.nodes:
            for name in n.inputs:
                if name not in known:
                    raise ArtifactError(f"node {n.name!r} reads {name!r} before it is produced")
            if n.output not in self.tensors:
                raise ArtifactError(f"node {n.name!r} writes unknown tensor {n.output!r}")
            known.add(n.output)
        if self.output not in known:
            raise ArtifactError(f"graph output {self.output!r} is never produced")
        return self
