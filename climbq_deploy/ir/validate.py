"""Validation of a lowered integer program: everything a kernel relies on, checked up front.

:func:`validate_program` is what a loader runs on a :class:`Graph` read from a file before any
kernel sees it. It refuses, with an :class:`ArtifactError` naming the node or tensor and the
bad value, anything a corrupt or crafted file could carry:

- **wiring**: unique node names, each tensor written once, read after it is written, the op's
  number of inputs (at least two for ``concat``), exactly one ``input_quant`` (the only reader
  of the uint8 image), only integer ops and the head;
- **tensor specs**: dtype, shape ``(H, W, C)`` or ``(C,)`` of positive sizes (at most
  ``2**31 - 1`` elements), the channel axis last (the kernels are channels-last), a finite
  positive scale, bounds ``lo <= hi`` that the storage dtype holds;
- **shapes and dtypes** of every node's arrays against its tensors (conv arithmetic
  ``H_out = (H + 2 p - d (k - 1) - 1) // s + 1`` with dilation ``1 <= d <= 2**15`` and
  ``0 <= p <= d (k - 1)``, the padded input within :data:`MAX_ELEMENTS`, groups dividing the
  input and output channels, thresholds ``(C, n)``;
  max pool ``k, s >= 1``, ``0 <= p <= k // 2`` as torch, the same output rule; concat inputs
  of equal scale and ``(H, W)``, output channels their sum);
- **values**: conv weights on their ``mult * code + offset`` grid with ``code < 2**bits``,
  thresholds sorted along the levels and inside int32, directions in ``{-1, 0, 1}``,
  requantization shifts None or ``(C,)`` in ``0..31``, finite
  float head parameters, ``|W_q| <= 127`` for the int8 head;
- **bounds**: interval arithmetic (as the bounds pass) from each node's declared input bounds:
  the declared output bounds must contain the proven range, and every accumulator, partial sum
  and integer tensor must stay inside int32. A program that passes runs in the reference
  without overflow, and a wrong declared bound cannot hide one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from climbq_deploy.errors import ArtifactError
from climbq_deploy.ir.graph import (
    FLOAT_DTYPES,
    INT_DTYPES,
    UINT8,
    Add,
    Concat,
    GlobalSumPool,
    Graph,
    InputQuant,
    IntConv,
    IntLinear,
    Linear,
    MaxPool,
    Node,
    Relu,
    TensorSpec,
    ThresholdAct,
)

__all__ = ["MAX_DILATION", "MAX_ELEMENTS", "PROGRAM_OPS", "OpRule", "validate_program"]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MAX_ELEMENTS = 2**31 - 1  # per image and tensor: what TFLite and TensorRT can index
MAX_DILATION = 2**15  # far beyond any CNN's; the padded input is bounded on its own
Bounds = tuple[int, int]


class _Checker:
    """Checks one graph; ``where`` prefixes every message (the file name)."""

    def __init__(self, graph: Graph, where: str) -> None:
        self.graph = graph
        self.where = f"{where}: " if where else ""
        self.bounds: dict[str, Bounds] = {}

    def fail(self, message: str) -> ArtifactError:
        return ArtifactError(f"{self.where}{message}")

    # -- scalars -----------------------------------------------------------------------------

    def integer(self, node: Node, name: str, lo: int, hi: int) -> int:
        value = getattr(node, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | np.integer)
            or not (lo <= value <= hi)
        ):
            raise self.fail(
                f"node {node.name!r}: {name} must be an integer in [{lo}, {hi}], got {value!r}"
            )
        return int(value)

    def positive(self, node: Node, name: str, value: object) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float | np.floating)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise self.fail(
                f"node {node.name!r}: {name} must be a finite positive number, got {value!r}"
            )
        return float(value)

    def array(self, node: Node, name: str, kinds: str, ndim: int) -> np.ndarray:
        value = getattr(node, name)
        if not isinstance(value, np.ndarray) or value.dtype.kind not in kinds:
            described = getattr(value, "dtype", type(value).__name__)
            wanted = "a float" if kinds == "f" else "an integer"
            raise self.fail(f"node {node.name!r}: {name} must be {wanted} array, got {described}")
        if value.ndim != ndim or 0 in value.shape:
            raise self.fail(
                f"node {node.name!r}: {name} must be a non-empty {ndim}-d array, "
                f"got shape {value.shape}"
            )
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise self.fail(f"node {node.name!r}: {name} holds NaN or infinite values")
        return value

    # -- tensors -----------------------------------------------------------------------------

    def spec(self, name: str) -> TensorSpec:
        spec = self.graph.tensors[name]
        if not isinstance(spec, TensorSpec) or spec.name != name:
            raise self.fail(f"tensor {name!r} has a malformed spec {spec!r}")
        dtypes = (*INT_DTYPES, UINT8, *FLOAT_DTYPES)
        if not isinstance(spec.dtype, str) or spec.dtype not in dtypes:
            raise self.fail(f"tensor {name!r}: dtype {spec.dtype!r} is not one of {dtypes}")
        shape = spec.shape
        if (
            not isinstance(shape, tuple)
            or len(shape) not in (1, 3)
            or any(type(d) is not int or d < 1 for d in shape)
        ):
            raise self.fail(
                f"tensor {name!r}: shape {shape!r} must be (H, W, C) or (C,) of positive ints"
            )
        if math.prod(shape) > MAX_ELEMENTS:
            raise self.fail(f"tensor {name!r}: shape {shape} has more than {MAX_ELEMENTS} elements")
        if spec.channel_axis != len(shape) - 1 or isinstance(spec.channel_axis, bool):
            raise self.fail(
                f"tensor {name!r}: channel_axis {spec.channel_axis!r} must be the "
                f"last axis ({len(shape) - 1}) of shape {shape}"
            )
        scale = spec.scale
        if scale is not None and (
            isinstance(scale, bool)
            or not isinstance(scale, int | float)
            or not math.isfinite(scale)
            or scale <= 0
        ):
            raise self.fail(f"tensor {name!r}: scale {scale!r} must be finite and positive")
        if spec.dtype in INT_DTYPES:
            info = np.iinfo(spec.dtype)
            bounds = spec.bounds
            if (
                not isinstance(bounds, tuple)
                or len(bounds) != 2
                or any(isinstance(b, bool) or not isinstance(b, int) for b in bounds)
                or not info.min <= bounds[0] <= bounds[1] <= info.max
            ):
                raise self.fail(
                    f"tensor {name!r}: bounds {bounds!r} must be [lo, hi] with "
                    f"lo <= hi inside its dtype {spec.dtype}"
                )
        elif spec.bounds is not None:
            raise self.fail(
                f"tensor {name!r}: a {spec.dtype} tensor has no integer bounds, got {spec.bounds!r}"
            )
        return spec

    def produced(self, node: Node, bounds: Bounds) -> None:
        """Check the declared bounds of ``node``'s int output contain the proven ``bounds``."""
        spec = self.graph.tensors[node.output]
        lo, hi = bounds
        if lo < INT32_MIN or hi > INT32_MAX:
            raise self.fail(f"node {node.name!r}: output range [{lo}, {hi}] exceeds int32")
        if spec.dtype not in INT_DTYPES:
            raise self.fail(
                f"node {node.name!r}: output {node.output!r} must be an integer "
                f"tensor, got {spec.dtype}"
            )
        declared = spec.bounds or (0, -1)  # never None here: spec() checked int tensors
        if declared[0] > lo or declared[1] < hi:
            raise self.fail(
                f"node {node.name!r}: output {node.output!r} declares bounds "
                f"{list(declared)} but its inputs reach [{lo}, {hi}]"
            )
        self.bounds[node.output] = (int(declared[0]), int(declared[1]))

    def integer_input(self, node: Node, index: int = 0) -> tuple[TensorSpec, Bounds]:
        name = node.inputs[index]
        spec = self.graph.tensors[name]
        if name not in self.bounds:
            raise self.fail(
                f"node {node.name!r}: input {name!r} ({spec.dtype}) is not an "
                "integer tensor of the program"
            )
        return spec, self.bounds[name]

    def same_shape(self, node: Node, shape: tuple[int, ...]) -> None:
        out = self.graph.tensors[node.output].shape
        if out != shape:
            raise self.fail(
                f"node {node.name!r}: output {node.output!r} has shape {out}, the op gives {shape}"
            )

    # -- graph -------------------------------------------------------------------------------

    def run(self) -> None:
        graph = self.graph
        if not isinstance(graph.tensors, dict) or not isinstance(graph.nodes, tuple):
            raise self.fail("program must hold a node tuple and a tensor dict")
        for name in graph.tensors:
            if not isinstance(name, str):
                raise self.fail(f"tensor name {name!r} is not a string")
            self.spec(name)
        for label, name in (("input", graph.input), ("output", graph.output)):
            if not isinstance(name, str) or name not in graph.tensors:
                raise self.fail(f"program {label} {name!r} is not a tensor of the program")
        image = graph.tensors[graph.input]
        if image.dtype != UINT8 or len(image.shape) != 3:
            raise self.fail(
                f"program input {graph.input!r} must be a uint8 (H, W, C) image, "
                f"got {image.dtype} {image.shape}"
            )
        if not isinstance(graph.meta, dict):
            raise self.fail(f"provenance must be an object, got {type(graph.meta).__name__}")
        written = {graph.input}
        names: set[str] = set()
        quantizers = 0
        for node in graph.nodes:
            self.wiring(node, written, names)
            quantizers += isinstance(node, InputQuant)
            PROGRAM_OPS[type(node)].check(self, node)
        if quantizers != 1:
            raise self.fail(f"program must have exactly one input_quant node, has {quantizers}")
        if graph.output not in written or graph.output == graph.input:
            raise self.fail(f"program output {graph.output!r} is never produced")

    def wiring(self, node: Node, written: set[str], names: set[str]) -> None:
        if not isinstance(node, Node) or not isinstance(node.name, str) or not node.name:
            raise self.fail(f"malformed node {node!r}")
        if node.name in names:
            raise self.fail(f"node name {node.name!r} is used twice")
        names.add(node.name)
        rule = PROGRAM_OPS.get(type(node))
        if rule is None:
            raise self.fail(
                f"node {node.name!r}: op {node.op!r} is not an op of a lowered "
                "program (lower the graph before saving it)"
            )
        if not isinstance(node.source, str):
            raise self.fail(f"node {node.name!r}: source {node.source!r} is not a string")
        inputs = node.inputs
        if (
            not isinstance(inputs, tuple)
            or not (len(inputs) >= rule.arity if rule.variadic else len(inputs) == rule.arity)
            or not all(isinstance(name, str) for name in inputs)
        ):
            least = "at least " if rule.variadic else ""
            raise self.fail(
                f"node {node.name!r}: {node.op} takes {least}{rule.arity} input "
                f"tensor names, got {inputs!r}"
            )
        for name in inputs:
            if name not in written:
                raise self.fail(f"node {node.name!r} reads {name!r} before it is produced")
            if (name == self.graph.input) != isinstance(node, InputQuant):
                raise self.fail(
                    f"node {node.name!r}: only input_quant reads the image "
                    f"{self.graph.input!r} (and it reads nothing else)"
                )
        if not isinstance(node.output, str) or node.output not in self.graph.tensors:
            raise self.fail(f"node {node.name!r} writes unknown tensor {node.output!r}")
        if node.output in written:
            raise self.fail(f"node {node.name!r} writes {node.output!r}, which is already written")
        written.add(node.output)


# -- per op ------------------------------------------------------------------------------------


def _input_quant(c: _Checker, node: InputQuant) -> None:
    image = c.graph.tensors[node.inputs[0]]
    channels = image.shape[-1]
    for name in ("mean", "std"):
        values = getattr(node, name)
        if not isinstance(values, tuple) or len(values) != channels:
            raise c.fail(
                f"node {node.name!r}: {name} must hold {channels} numbers (one per "
                f"image channel), got {values!r}"
            )
    for m in node.mean:
        if isinstance(m, bool) or not isinstance(m, int | float) or not math.isfinite(m):
            raise c.fail(f"node {node.name!r}: mean {node.mean!r} must be finite numbers")
    for s in node.std:
        c.positive(node, "std", s)
    step = c.positive(node, "step", node.step)
    # The bounds pass's formula: I of pixel values 0 and 255, per channel.
    values = [
        (p / 255.0 - m) / s / step
        for m, s in zip(node.mean, node.std, strict=True)
        for p in (0.0, 255.0)
    ]
    if not all(math.isfinite(v) and abs(v) < 2**31 for v in values):
        raise c.fail(
            f"node {node.name!r}: mean/std/step {node.mean}, {node.std}, {step} put the "
            "quantized input beyond int32"
        )
    rounded = [int(np.rint(v)) for v in values]
    c.same_shape(node, image.shape)
    c.produced(node, (min(rounded), max(rounded)))


def _int_conv(c: _Checker, node: IntConv) -> None:
    spec, (lo, hi) = c.integer_input(node)
    if len(spec.shape) != 3:
        raise c.fail(
            f"node {node.name!r}: conv input {spec.name!r} must be (H, W, C), got {spec.shape}"
        )
    h, w, channels = spec.shape
    weight = c.array(node, "weight", "iu", 4)
    out_ch, kh, kw, per_group = weight.shape
    bits = c.integer(node, "weight_bits", 1, 8)
    grid = node.weight_grid
    if (
        not isinstance(grid, tuple)
        or len(grid) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in grid)
        or not 1 <= grid[0] <= 2**8
        or abs(grid[1]) > 2**15
    ):
        raise c.fail(
            f"node {node.name!r}: weight_grid {grid!r} must be (mult, offset) ints "
            "with 1 <= mult <= 256 and |offset| <= 2**15"
        )
    mult, offset = grid
    wide = weight.astype(np.int64)
    codes, rest = np.divmod(wide - offset, mult)
    if rest.any() or codes.min() < 0 or codes.max() > 2**bits - 1:
        off = (rest != 0) | (codes < 0) | (codes > 2**bits - 1)
        bad = int(wide.flat[np.flatnonzero(off)[0]])
        raise c.fail(
            f"node {node.name!r}: weight {bad} is off the {bits}-bit grid "
            f"{mult} * code + {offset}, code in 0..{2**bits - 1}"
        )
    stride = c.integer(node, "stride", 1, max(h, w))
    dilation = c.integer(node, "dilation", 1, MAX_DILATION)
    span_h, span_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1  # the dilated kernel
    padding = c.integer(node, "padding", 0, max(span_h, span_w) - 1)
    groups = c.integer(node, "groups", 1, channels)
    if channels % groups or out_ch % groups or per_group != channels // groups:
        raise c.fail(
            f"node {node.name!r}: weight {weight.shape} with groups={groups} does not "
            f"fit {channels} input channels"
        )
    if (h + 2 * padding) * (w + 2 * padding) * channels > MAX_ELEMENTS:
        raise c.fail(
            f"node {node.name!r}: the padded input {h + 2 * padding}x{w + 2 * padding}x"
            f"{channels} has more than {MAX_ELEMENTS} elements"
        )
    if h + 2 * padding < span_h or w + 2 * padding < span_w:
        dilated = f" dilated by {dilation} ({span_h}x{span_w})" if dilation != 1 else ""
        raise c.fail(
            f"node {node.name!r}: kernel {kh}x{kw}{dilated} is larger than the padded input "
            f"{h}x{w} (padding {padding})"
        )
    for name in ("affine_scale", "affine_shift"):
        if getattr(node, name) is not None:
            raise c.fail(
                f"node {node.name!r}: {name} must be consumed by the lowering (None in a program)"
            )
    rows = wide.reshape(out_ch, -1)
    positive = rows.clip(min=0).sum(axis=1).tolist()
    negative = rows.clip(max=0).sum(axis=1).tolist()
    partial = max(p - n for p, n in zip(positive, negative, strict=True)) * max(abs(lo), abs(hi))
    plo, phi = (min(lo, 0), max(hi, 0)) if padding else (lo, hi)
    upper = max(p * phi + n * plo for p, n in zip(positive, negative, strict=True))
    lower = min(p * plo + n * phi for p, n in zip(positive, negative, strict=True))
    if max(partial, abs(lower), abs(upper)) > INT32_MAX:
        raise c.fail(
            f"node {node.name!r}: accumulator bound {max(partial, -lower, upper)} "
            f"exceeds int32 (inputs in [{lo}, {hi}])"
        )
    shape = (
        (h + 2 * padding - span_h) // stride + 1,
        (w + 2 * padding - span_w) // stride + 1,
        out_ch,
    )
    c.same_shape(node, shape)
    c.produced(node, (lower, upper))


def _threshold_act(c: _Checker, node: ThresholdAct) -> None:
    spec, _ = c.integer_input(node)
    channels = spec.shape[-1]
    bits = c.integer(node, "bits", 1, 8)
    thresholds = c.array(node, "thresholds", "iu", 2)
    if thresholds.shape[0] != channels or thresholds.shape[1] > 2**bits - 1:
        raise c.fail(
            f"node {node.name!r}: thresholds of shape {thresholds.shape} must be "
            f"({channels}, n) with n <= {2**bits - 1} ({bits} bits)"
        )
    levels = thresholds.shape[1]
    if thresholds.min() < INT32_MIN or thresholds.max() > INT32_MAX:
        raise c.fail(
            f"node {node.name!r}: thresholds in [{thresholds.min()}, "
            f"{thresholds.max()}] leave int32"
        )
    steps = np.diff(thresholds.astype(np.int64), axis=1)
    if steps.size and steps.min() < 0:
        channel = int(np.flatnonzero((steps < 0).any(axis=1))[0])
        raise c.fail(
            f"node {node.name!r}: thresholds of channel {channel} are not sorted: "
            f"{thresholds[channel].tolist()}"
        )
    direction = c.array(node, "direction", "iu", 1)
    if direction.shape != (channels,) or direction.min() < -1 or direction.max() > 1:
        raise c.fail(
            f"node {node.name!r}: direction must be ({channels},) values in "
            f"{{-1, 0, 1}}, got shape {direction.shape}, values "
            f"{np.unique(direction)[:8].tolist()}"
        )
    mult = c.integer(node, "mult", 1, 2**16)
    offset = c.integer(node, "offset", INT32_MIN, INT32_MAX)
    if node.shift is not None:
        shift = c.array(node, "shift", "iu", 1)
        if shift.shape != (channels,) or shift.min() < 0 or shift.max() > 31:
            raise c.fail(
                f"node {node.name!r}: shift must be None or ({channels},) integers in "
                f"[0, 31], got shape {shift.shape}, values in [{shift.min()}, "
                f"{shift.max()}]"
            )
    c.same_shape(node, spec.shape)
    c.produced(node, (offset, mult * levels + offset))


def _relu(c: _Checker, node: Relu) -> None:
    spec, (lo, hi) = c.integer_input(node)
    c.same_shape(node, spec.shape)
    c.produced(node, (max(lo, 0), max(hi, 0)))


def _add(c: _Checker, node: Add) -> None:
    (a, (alo, ahi)), (b, (blo, bhi)) = c.integer_input(node, 0), c.integer_input(node, 1)
    if a.shape != b.shape:
        raise c.fail(f"node {node.name!r}: adds {a.name!r} {a.shape} and {b.name!r} {b.shape}")
    c.same_shape(node, a.shape)
    c.produced(node, (alo + blo, ahi + bhi))


def _max_pool(c: _Checker, node: MaxPool) -> None:
    """``k >= 1``, ``s >= 1``, ``0 <= p <= k // 2`` (torch's limit: every window then holds an
    input position), ``k <= H + 2 p`` and ``W + 2 p``; output ``((H + 2 p - k) // s + 1,
    (W + 2 p - k) // s + 1, C)`` of the input's scale and bounds."""
    spec, bounds = c.integer_input(node)
    if len(spec.shape) != 3:
        raise c.fail(
            f"node {node.name!r}: max pool input {spec.name!r} must be (H, W, C), got {spec.shape}"
        )
    h, w, channels = spec.shape
    kernel = c.integer(node, "kernel", 1, INT32_MAX)
    stride = c.integer(node, "stride", 1, INT32_MAX)
    padding = c.integer(node, "padding", 0, kernel // 2)
    if h + 2 * padding < kernel or w + 2 * padding < kernel:
        raise c.fail(
            f"node {node.name!r}: kernel {kernel}x{kernel} is larger than the padded input "
            f"{h}x{w} (padding {padding})"
        )
    _same_scale(c, node, [spec])
    shape = ((h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1)
    c.same_shape(node, (*shape, channels))
    c.produced(node, bounds)


def _concat(c: _Checker, node: Concat) -> None:
    """Inputs ``(H, W, C_i)`` of one scale; output ``(H, W, sum C_i)`` of that scale, bounds
    ``[min lo_i, max hi_i]``."""
    ins = [c.integer_input(node, i) for i in range(len(node.inputs))]
    specs = [spec for spec, _ in ins]
    first = specs[0]
    if any(len(spec.shape) != 3 or spec.shape[:2] != first.shape[:2] for spec in specs):
        listed = ", ".join(f"{spec.name!r} {spec.shape}" for spec in specs)
        raise c.fail(
            f"node {node.name!r}: concat inputs must be (H, W, C) of equal H and W, got {listed}"
        )
    _same_scale(c, node, specs)
    c.same_shape(node, (*first.shape[:2], sum(spec.shape[2] for spec in specs)))
    c.produced(node, (min(lo for _, (lo, _) in ins), max(hi for _, (_, hi) in ins)))


def _same_scale(c: _Checker, node: Node, specs: list[TensorSpec]) -> None:
    """The inputs' and the output's scales are equal (relative 1e-9: the same quantizer step
    computed twice), so the op moves integers without changing what they mean."""
    out = c.graph.tensors[node.output]
    scales = [spec.scale for spec in specs] + [out.scale]
    ref = scales[0]
    if any(
        (s is None) != (ref is None)
        or (s is not None and ref is not None and not math.isclose(s, ref, rel_tol=1e-9))
        for s in scales
    ):
        listed = ", ".join(f"{t.name!r} {t.scale}" for t in [*specs, out])
        raise c.fail(
            f"node {node.name!r}: {node.op} needs one scale for its inputs and output, got {listed}"
        )


def _global_sum_pool(c: _Checker, node: GlobalSumPool) -> None:
    spec, (lo, hi) = c.integer_input(node)
    if len(spec.shape) != 3:
        raise c.fail(
            f"node {node.name!r}: pools {spec.name!r} of shape {spec.shape}, not (H, W, C)"
        )
    h, w, channels = spec.shape
    c.same_shape(node, (channels,))
    c.produced(node, (lo * h * w, hi * h * w))


def _head_input(c: _Checker, node: Linear | IntLinear) -> None:
    spec, _ = c.integer_input(node)
    if len(spec.shape) != 1 or spec.scale is None:
        raise c.fail(
            f"node {node.name!r}: the head reads {spec.name!r} {spec.shape} with scale "
            f"{spec.scale}; it needs pooled (C,) sums with a scale"
        )


def _linear(c: _Checker, node: Linear) -> None:
    _head_input(c, node)
    _head_shapes(c, node, c.array(node, "weight", "f", 2))


def _int_linear(c: _Checker, node: IntLinear) -> None:
    _head_input(c, node)
    weight = c.array(node, "weight", "iu", 2)
    if weight.min() < -127 or weight.max() > 127:
        raise c.fail(f"node {node.name!r}: int8 head weights must be within +-127")
    scale = c.array(node, "weight_scale", "f", 1)
    if scale.shape != weight.shape[:1]:
        raise c.fail(
            f"node {node.name!r}: weight_scale {scale.shape} does not match weight {weight.shape}"
        )
    _head_shapes(c, node, weight)


def _head_shapes(c: _Checker, node: Linear | IntLinear, weight: np.ndarray) -> None:
    spec = c.graph.tensors[node.inputs[0]]
    bias = c.array(node, "bias", "f", 1)
    classes = weight.shape[0]
    if weight.shape[1] != spec.shape[0] or bias.shape != (classes,):
        raise c.fail(
            f"node {node.name!r}: weight {weight.shape} and bias {bias.shape} do not "
            f"fit the input {spec.shape}"
        )
    out = c.graph.tensors[node.output]
    if out.dtype not in FLOAT_DTYPES:
        raise c.fail(f"node {node.name!r}: logits {node.output!r} must be float, got {out.dtype}")
    c.same_shape(node, (classes,))


class OpRule(NamedTuple):
    """How :func:`validate_program` checks one op: its number of input tensors (``variadic``:
    at least that many), and the check of its arrays, shapes and bounds
    (``check(checker, node)``)."""

    arity: int
    check: Callable[[_Checker, Any], None]
    variadic: bool = False


PROGRAM_OPS: dict[type[Node], OpRule] = {
    InputQuant: OpRule(1, _input_quant),
    IntConv: OpRule(1, _int_conv),
    ThresholdAct: OpRule(1, _threshold_act),
    Relu: OpRule(1, _relu),
    Add: OpRule(2, _add),
    MaxPool: OpRule(1, _max_pool),
    Concat: OpRule(2, _concat, variadic=True),
    GlobalSumPool: OpRule(1, _global_sum_pool),
    Linear: OpRule(1, _linear),
    IntLinear: OpRule(1, _int_linear),
}
"""The ops of a lowered program (node class -> :class:`OpRule`); any other node is refused
as "not an op of a lowered program"."""


def validate_program(graph: Graph, where: str = "") -> Graph:
    """Check ``graph`` is a well-formed lowered program (see the module docstring); return it.

    ``where`` (a file name) starts every error message. Raises :class:`ArtifactError`."""
    _Checker(graph, where).run()
    return graph
