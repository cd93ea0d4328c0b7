"""Capture a trained model as a float-level IR graph (before lowering), from its torch.fx graph.

The model is traced with ``torch.fx`` (:class:`_Tracer`: the quantized layers and torch.nn's
own modules are leaves) and converted node by node (:data:`MODULE_RULES`,
:data:`FUNCTION_RULES`, :data:`METHOD_RULES`), so the built-in ResNets and MobileNetV2 and a
user's own CNN go through one path, and every IR node knows the torch module it came from.
Anything without an exact integer form is refused naming the fx node, its op and the module
it came from (:func:`_unsupported`); nothing falls back to float inside the integer program.

Weights enter the graph as the quantizer's own integer weights times their scale (float64): the
codes the exporter sees are the codes training used. Activation quantizers enter as their
:class:`ActivationGrid` at inference (sigma = 2, no labels).

Per-output-channel weight scales ``s_o`` (post-training quantization) enter through the
BatchNorm that follows the conv: the conv carries ``W_int`` (scale 1) and
``BN(s_o z) = (gamma s_o) (z - mean / s_o) / sqrt(var + eps) + beta``, so the BatchNorm node
gets ``gamma' = gamma s_o`` and ``mean' = mean / s_o`` (float64); the folding pass is unchanged.

Sources (the ``source`` of each node, used in messages and the check's layer names): the module
path for module calls; for a function or method call (``x.relu()``, ``a + b``) the path of the
module whose ``forward`` made it plus the op (``layers.0.add``), and a ReLU applied straight to
a quantizer's codes is ``<quantizer>.relu``.
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import fx, nn

from climbq_deploy.errors import ConfigError, LoweringError
from climbq_deploy.ir.graph import (
    ActQuant,
    Add,
    AvgPool,
    BatchNorm,
    Conv,
    GlobalSumPool,
    Graph,
    InputQuant,
    Linear,
    MaxPool,
    Node,
    Relu,
    TensorSpec,
)
from climbq_deploy.ir.graph import Concat as ConcatNode
from climbq_deploy.ir.passes.absorb_average_pools import composite_conv
from climbq_deploy.models.module_graph import ExportGraphError, export_leaf_graph
from climbq_deploy.quant import layers as qlayers
from climbq_deploy.quant.layers import ActQuant as TorchActQuant
from climbq_deploy.quant.layers import QConv2d

MAX_INPUT_BITS = 24
SHORT_NAMES = {
    "input_quant": "input",
    "batchnorm": "bn",
    "act_quant": "act",
    "global_sum_pool": "pool",
    "linear": "fc",
    "max_pool": "maxpool",
    "avg_pool": "avgpool",
}


def input_scale(
    mean: tuple[float, ...],
    std: tuple[float, ...],
    stem_taps: int,
    stem_max_weight: int,
    input_bits: int = 32,
) -> float:
    """The input step ``2**-k``: as fine as the stem's int32 accumulator allows.

    The normalised image ``x`` enters as ``I = round(x / step)``; the stem accumulates
    ``taps * max|W_int| * max|I|``, which must stay below 2**31. ``k`` is capped at 24 (float32
    resolution, what the trained model itself sees), so the input rounding (at most
    ``step / 2`` in x) only moves codes whose value lies that close to a threshold.
    ``input_bits=16`` also keeps ``|I|`` within int16 (targets whose first conv reads int16).
    """
    extreme = max(max(abs(0 - m), abs(1 - m)) / s for m, s in zip(mean, std, strict=True))
    room = (2**31 - 1) / (stem_taps * stem_max_weight * extreme)
    storage = (2 ** (input_bits - 1) - 1) / extreme  # |I| must also fit input_bits
    return 2.0 ** -min(MAX_INPUT_BITS, math.floor(math.log2(room)), math.floor(math.log2(storage)))


class _Builder:
    def __init__(self, image_shape: tuple[int, int, int]) -> None:
        self.nodes: list[Node] = []
        self.tensors: dict[str, TensorSpec] = {}
        h, w, c = image_shape
        self.tensors["image"] = TensorSpec("image", "uint8", (h, w, c), channel_axis=2)
        self.count = 0
        # per-output-channel weight scales of a conv output, consumed by the BatchNorm after it
        self.channel_scales: dict[str, np.ndarray] = {}
        # a conv's bias (float64, per output channel), folded into the BatchNorm after it
        self.conv_bias: dict[str, np.ndarray] = {}
        self.producer: dict[str, Node] = {}  # tensor -> the node writing it
        self.input_tensor = ""  # the InputQuant output (the stem reads it)

    def add(
        self,
        cls: type[Node],
        inputs: tuple[str, ...],
        shape: tuple[int, ...],
        dtype: str = "float64",
        scale: float | None = None,
        source: str = "",
        **attrs: Any,
    ) -> str:
        self.count += 1
        name = f"{SHORT_NAMES.get(cls.op, cls.op)}{self.count}"
        axis = len(shape) - 1  # channels last: (H, W, C) or (C,)
        self.tensors[name] = TensorSpec(name, dtype, shape, axis, scale)
        node = cls(name=name, inputs=inputs, output=name, source=source, **attrs)
        self.nodes.append(node)
        self.producer[name] = node
        return name

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.tensors[tensor].shape


def _conv(b: _Builder, x: str, conv: nn.Module, source: str) -> str:
    if not isinstance(conv, QConv2d) or conv.weight_quantizer is None:
        raise ConfigError(
            f"layer {source!r} has full-precision weights; only quantized runs "
            "(climbq, climbq+, uniform, lsq with 2-8 bit weights) lower to integers"
        )
    try:
        w_int, scale = conv.weight_quantizer.integer_weights(conv.weight)
    except ConfigError as exc:  # the quantizer knows the value, not the layer
        raise ConfigError(f"layer {source!r}: {exc}") from None
    channel_scale = None
    if isinstance(scale, torch.Tensor):  # per output channel: the next BatchNorm takes it
        channel_scale, scale = scale.detach().double().numpy().copy(), 1.0
    h, w, c = b.shape(x)
    if c != conv.in_channels:  # pragma: no cover - model invariant
        raise ConfigError(f"layer {source!r} expects {conv.in_channels} channels, gets {c}")
    k, s, p, d = conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0]
    span = d * (k - 1) + 1  # the dilated kernel: torch's H_out = (H + 2p - d(k-1) - 1)//s + 1
    out_hw = ((h + 2 * p - span) // s + 1, (w + 2 * p - span) // s + 1)
    if min(out_hw) < 1:
        raise ConfigError(
            f"layer {source!r}: kernel {k}x{k} dilated by {d} is larger than its padded "
            f"input {h + 2 * p}x{w + 2 * p}"
        )
    ohwi = w_int.permute(0, 2, 3, 1).numpy().astype(np.float64)  # torch OIHW -> OHWI
    out = b.add(
        Conv,
        (x,),
        (*out_hw, conv.out_channels),
        source=source,
        weight=ohwi * scale,
        weight_scale=scale,
        weight_bits=conv.weight_quantizer.bits,
        weight_grid=conv.weight_quantizer.integer_grid(),
        stride=s,
        padding=p,
        groups=conv.groups,
        dilation=d,
    )
    if channel_scale is not None:
        b.channel_scales[out] = channel_scale
    return out


def _bn(b: _Builder, x: str, bn: nn.BatchNorm2d, source: str) -> str:
    def arr(t: torch.Tensor) -> np.ndarray:
        return t.detach().double().numpy().copy()

    gamma, mean = arr(bn.weight), arr(bn.running_mean)
    bias = b.conv_bias.pop(x, None)
    if bias is not None:  # BN(z + c) = gamma (z - (mean - c)) / sqrt(var + eps) + beta
        mean = mean - bias
    channel_scale = b.channel_scales.pop(x, None)
    if channel_scale is not None:  # BN(s z) = (gamma s) (z - mean / s) / sqrt(var + eps) + beta
        gamma, mean = gamma * channel_scale, mean / channel_scale
    return b.add(
        BatchNorm,
        (x,),
        b.shape(x),
        source=source,
        gamma=gamma,
        beta=arr(bn.bias),
        mean=mean,
        var=arr(bn.running_var),
        eps=float(bn.eps),
    )


def _unit_batchnorm(b: _Builder, x: str, source: str) -> str:
    """A conv output ``x`` with a bias ``c`` or per-channel weight scales ``s`` but no BatchNorm
    after it, made into one: ``y_c = s_c conv_c + c_c`` is exactly the inference BatchNorm with
    ``gamma = s`` (ones when absent), ``beta = c`` (zeros when absent), ``mean = 0``,
    ``var = 1`` and ``eps = 0`` (``gamma / sqrt(var + eps) = s``), which
    :func:`~climbq_deploy.ir.passes.fold_batchnorm` folds into the conv's affine and the
    thresholds absorb like any BatchNorm. ``x`` itself when it has neither."""
    bias, scale = b.conv_bias.pop(x, None), b.channel_scales.pop(x, None)
    if bias is None and scale is None:
        return x
    channels = b.shape(x)[-1]
    return b.add(
        BatchNorm,
        (x,),
        b.shape(x),
        source=f"{source}.bias" if bias is not None else f"{source}.weight_scale",
        gamma=np.ones(channels) if scale is None else scale,
        beta=np.zeros(channels) if bias is None else bias,
        mean=np.zeros(channels),
        var=np.ones(channels),
        eps=0.0,
    )


def _act(b: _Builder, x: str, act: nn.Module, source: str) -> str:
    if not isinstance(act, TorchActQuant) or act.quantizer is None:
        raise ConfigError(f"layer {source!r} has no activation quantizer; cannot lower to integers")
    try:
        grid = act.quantizer.grid()
    except ConfigError as exc:  # e.g. a ptq range never calibrated
        raise ConfigError(f"layer {source!r}: {exc}") from None
    finite = np.isfinite(np.asarray(grid.thresholds, np.float64))
    if not (finite.all() and math.isfinite(grid.step) and grid.step > 0):
        raise ConfigError(
            f"layer {source!r}: activation grid is not finite (step {grid.step}, "
            f"{int((~finite).sum())} non-finite thresholds)"
        )
    return b.add(
        ActQuant,
        (x,),
        b.shape(x),
        "int32",
        grid.step,
        source=source,
        thresholds=grid.thresholds,
        mult=grid.mult,
        offset=grid.offset,
        step=grid.step,
        bits=act.quantizer.bits,
    )


SUPPORTED = (
    "Conv2d (quantized; any groups, stride, padding, dilation, bias), "
    "BatchNorm2d, the activation quantizers, ReLU, ReLU6 (where the codes stay below 6), "
    "residual add, torch.cat on channels, MaxPool2d, global average pooling (AdaptiveAvgPool2d "
    "to 1x1, mean over H and W), local average pooling (AvgPool2d, avg_pool2d, "
    "AdaptiveAvgPool2d to a size dividing the map) read by convs, flatten, Dropout/Identity, "
    "and one final Linear head"
)


class CaptureError(ConfigError):
    """A model, or one node of its traced graph, that has no exact integer form."""


def _module_path(node: fx.Node) -> str:
    """The module whose ``forward`` made ``node`` ('' for the root)."""
    if node.op == "call_module":
        return str(node.target)
    return str(node.meta.get("climbq_module", ""))


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """``node 'x' (what it calls, and where)`` for messages."""
    where = _module_path(node)
    place = f"in module {where!r}" if where else "in the model's forward"
    if node.op == "call_module":
        what = f"module {node.target!r}, {type(modules[str(node.target)]).__name__}"
    elif node.op == "call_function":
        what = f"function {getattr(node.target, '__name__', repr(node.target))} {place}"
    elif node.op == "call_method":
        what = f"method .{node.target}() {place}"
    else:
        what = f"{node.op} {node.target!r} {place}"
    return f"node {node.name!r} ({what})"


def _unsupported(
    node: fx.Node, modules: dict[str, nn.Module], why: str, listing: bool = False
) -> CaptureError:
    """The error for ``node``: what it is, where it came from, why it has no exact integer
    form (and, for an op with no rule at all, what is supported)."""
    tail = f". Supported: {SUPPORTED}" if listing else ""
    return CaptureError(f"{_describe(node, modules)}: {why}; no exact integer form{tail}")


class _Tracer(fx.Tracer):
    """torch.fx tracer keeping the quantized layers whole (their forward reads run-time state:
    sigma, dtypes) besides torch.nn's own modules, and recording on every node the module
    whose ``forward`` made it (``node.meta["climbq_module"]``, for sources and messages)."""

    def __init__(self) -> None:
        super().__init__()
        self.module_scope: list[str] = []

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if type(m).__module__ == qlayers.__name__:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(
        self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict
    ) -> Any:
        self.module_scope.append(self.path_of_module(m))
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self.module_scope.pop()

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        node.meta["climbq_module"] = self.module_scope[-1] if self.module_scope else ""
        return node


def trace(model: nn.Module, image_shape: tuple[int, int, int] | None = None) -> fx.GraphModule:
    """``model`` (eval mode) as a torch.fx graph with the quantized layers as leaves; where fx's
    symbolic trace fails (a branch on a shape, say) and ``image_shape`` (H, W, C) is given,
    ``torch.export`` traces it on one zero image of that shape instead
    (:func:`~climbq_deploy.models.module_graph.export_leaf_graph`). A clear error when neither
    can."""
    concrete: dict[str, Any] = {}
    params = inspect.signature(model.forward).parameters
    for name, value in (("labels", None), ("return_features", False)):
        if name in params:
            concrete[name] = value
    tracer = _Tracer()
    try:
        return fx.GraphModule(model, tracer.trace(model, concrete_args=concrete or None))
    except Exception as exc:  # fx raises many kinds: TraceError, TypeError, RuntimeError ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        fx_failure = f"torch.fx cannot trace {type(model).__name__}: {type(exc).__name__}: {first}"
    if image_shape is None:
        raise CaptureError(
            f"{fx_failure} (data-dependent control flow in forward is the usual cause)"
        )
    h, w, c = image_shape
    try:
        graph = export_leaf_graph(
            model, torch.zeros(1, c, h, w), tracer.is_leaf_module, kwargs=concrete
        )
    except ExportGraphError as exc:
        raise CaptureError(
            f"{fx_failure}; torch.export on a 1 x {c} x {h} x {w} input failed too: {exc} "
            "(data-dependent control flow in forward is the usual cause)"
        ) from None
    return fx.GraphModule(model, graph)


class _Converter:
    """Walks the traced graph in execution order, building IR nodes (:class:`_Builder`)."""

    def __init__(self, gm: fx.GraphModule, b: _Builder) -> None:
        self.gm, self.b = gm, b
        self.modules = dict(gm.named_modules())
        self.env: dict[fx.Node, str] = {}
        self.head: str | None = None

    def arg(self, node: fx.Node, value: Any) -> str:
        if not isinstance(value, fx.Node) or value not in self.env:
            raise _unsupported(node, self.modules, f"reads {value!r}, not a tensor of the program")
        return self.env[value]

    def integer(self, node: fx.Node, tensor: str, what: str) -> None:
        spec = self.b.tensors[tensor]
        if spec.scale is None or spec.dtype.startswith("float"):
            raise _unsupported(
                node,
                self.modules,
                f"{what} reads {tensor!r}, a float tensor (no activation quantizer between the "
                "last conv or BatchNorm and this op)",
            )

    def run(self, image: str) -> str:
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        if not placeholders:
            raise CaptureError(f"{type(self.gm).__name__} takes no input")
        self.env[placeholders[0]] = image
        # Concrete arguments (labels=None, return_features=False) stay placeholders that fx
        # only asserts on: the nodes derived from them are skipped (the output must not be).
        derived = set(placeholders[1:])
        output = None
        for node in self.gm.graph.nodes:
            if node.op == "output":
                output = node.args[0]
                break
            if node in derived or any(a in derived for a in node.all_input_nodes):
                derived.add(node)
                continue
            if node.op == "placeholder":
                continue
            self.env[node] = self.convert(node)
        if not isinstance(output, fx.Node) or self.env.get(output) != self.head:
            raise CaptureError(
                "the model's output must be its final Linear head's logits (one tensor); "
                f"got {output!r}"
            )
        return self.env[output]

    def convert(self, node: fx.Node) -> str:
        if self.head is not None:
            raise _unsupported(node, self.modules, "an op after the Linear head")
        self.refuse_pool_readers(node)
        if node.op == "call_module":
            module = self.modules[str(node.target)]
            rule = next((r for cls, r in MODULE_RULES if isinstance(module, cls)), None)
            if rule is None:
                raise _unsupported(node, self.modules, "a module type with no rule", listing=True)
            return rule(self, node, module)
        if node.op == "call_function":
            rule = FUNCTION_RULES.get(node.target)
            if rule is None:
                raise _unsupported(node, self.modules, "a function with no rule", listing=True)
            return rule(self, node)
        if node.op == "call_method":
            rule = METHOD_RULES.get(str(node.target))
            if rule is None:
                raise _unsupported(node, self.modules, "a method with no rule", listing=True)
            return rule(self, node)
        raise _unsupported(
            node, self.modules, "a parameter or attribute read in forward", listing=True
        )

    def refuse_pool_readers(self, node: fx.Node) -> None:
        """Only a conv may read a local average pool's window sums (the lowering folds the
        pool into that conv: :mod:`~climbq_deploy.ir.passes.absorb_average_pools`)."""
        if node.op == "call_module" and isinstance(self.modules[str(node.target)], nn.Conv2d):
            return
        for arg in node.all_input_nodes:
            pool = self.b.producer.get(self.env.get(arg, ""))
            if isinstance(pool, AvgPool):
                raise _unsupported(
                    node,
                    self.modules,
                    f"reads the local average pool {pool.source!r}; a local average pool "
                    "lowers only into the conv that reads it (the conv's kernel takes in the "
                    "pool's windows)",
                )

    # -- shared pieces ------------------------------------------------------------------

    def square(self, node: fx.Node, value: Any, what: str) -> int:
        """A pool's kernel, stride, padding or dilation given as ``n`` or ``(n, n)``: ``n``;
        a refusal naming ``what`` for anything else (rectangular ones)."""
        pair = (value, value) if isinstance(value, int) else tuple(value)
        if len(pair) != 2 or pair[0] != pair[1]:
            raise _unsupported(node, self.modules, f"{what} {value!r} (square only)")
        return int(pair[0])

    def source(self, node: fx.Node, kind: str) -> str:
        where = _module_path(node)
        return f"{where}.{kind}" if where else kind

    def relu(self, node: fx.Node, x: str, cap: float | None, source: str) -> str:
        self.integer(node, x, "ReLU")
        spec = self.b.tensors[x]
        if cap is not None:  # ReLU6 etc.: exact as a ReLU when every code stays below the cap
            top = self.top_value(x)
            if top is None or top > cap:
                raise _unsupported(
                    node,
                    self.modules,
                    f"min(x, {cap:g}) on codes that may reach {top if top is not None else '?'} "
                    "(only a cap above every code is exact: it is then a ReLU)",
                )
        producer = self.b.producer.get(x)
        if isinstance(producer, ActQuant) and node.op != "call_module":
            source = f"{producer.source}.relu"
        return self.b.add(Relu, (x,), spec.shape, spec.dtype, spec.scale, source=source)

    def top_value(self, tensor: str) -> float | None:
        """The largest real value a quantizer's codes can take (None: not a quantizer's)."""
        node = self.b.producer.get(tensor)
        if isinstance(node, ActQuant):
            n = len(node.thresholds)
            return max(node.offset, node.mult * n + node.offset) * node.step
        if isinstance(node, Relu):
            return self.top_value(node.inputs[0])
        return None

    def add(self, node: fx.Node, x: str, y: str) -> str:
        for t in (x, y):
            self.integer(node, t, "add")
        sx, sy = self.b.tensors[x].scale, self.b.tensors[y].scale
        assert sx is not None and sy is not None
        if not math.isclose(sx, sy, rel_tol=1e-12):
            raise _unsupported(
                node,
                self.modules,
                f"a residual add of operands with scales {sx} and {sy}; an exact integer add "
                "needs equal scales (lsq learns one step per quantizer, climbq and uniform share "
                "R/n)",
            )
        if self.b.shape(x) != self.b.shape(y):
            raise _unsupported(
                node, self.modules, f"adds shapes {self.b.shape(x)} and {self.b.shape(y)}"
            )
        return self.b.add(
            Add, (x, y), self.b.shape(x), "int32", sx, source=self.source(node, "add")
        )

    def concat(self, node: fx.Node, tensors: list[str], dim: int) -> str:
        if dim not in (1, -3):
            raise _unsupported(node, self.modules, f"concatenates on dim {dim}, not channels (1)")
        if len(tensors) == 1:  # torch.cat of one tensor is that tensor
            return tensors[0]
        scales = {self.b.tensors[t].scale for t in tensors}
        for t in tensors:
            self.integer(node, t, "concat")
        if len(scales) != 1 or len({self.b.shape(t)[:2] for t in tensors}) != 1:
            raise _unsupported(
                node,
                self.modules,
                f"concatenates {[self.b.shape(t) for t in tensors]} with scales "
                f"{sorted(s for s in scales if s is not None)}: needs one scale and one H x W",
            )
        h, w, _ = self.b.shape(tensors[0])
        channels = sum(self.b.shape(t)[2] for t in tensors)
        return self.b.add(
            ConcatNode,
            tuple(tensors),
            (h, w, channels),
            "int32",
            scales.pop(),
            source=self.source(node, "cat"),
        )

    def max_pool(
        self,
        node: fx.Node,
        x: str,
        kernel: Any,
        stride: Any,
        padding: Any,
        dilation: Any,
        ceil_mode: bool,
        source: str,
    ) -> str:
        self.integer(node, x, "max pool")

        def one(value: Any, name: str) -> int:
            return self.square(node, value, f"max pool {name}")

        k = one(kernel, "kernel")
        s = one(stride if stride not in (None, (), []) else kernel, "stride")
        pad = one(padding, "padding")
        if one(dilation, "dilation") != 1 or ceil_mode:
            raise _unsupported(node, self.modules, "max pool with dilation or ceil_mode")
        h, w, c = self.b.shape(x)
        out = ((h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1, c)
        spec = self.b.tensors[x]
        return self.b.add(
            MaxPool,
            (x,),
            out,
            spec.dtype,
            spec.scale,
            source=source,
            kernel=k,
            stride=s,
            padding=pad,
        )

    def avg_pool(
        self,
        node: fx.Node,
        x: str,
        kernel: Any,
        stride: Any,
        padding: Any,
        ceil_mode: bool,
        count_include_pad: bool,
        divisor_override: int | None,
        source: str,
    ) -> str:
        """A local average pool as :class:`AvgPool` (window sums, scale ``s / divisor``); one
        covering the whole map without padding is the global pool."""

        def one(value: Any, name: str) -> int:
            return self.square(node, value, f"average pool {name}")

        h, w, c = self.b.shape(x) if len(self.b.shape(x)) == 3 else (0, 0, 0)
        k = one(kernel, "kernel")
        s = one(stride if stride not in (None, (), []) else kernel, "stride")
        pad = one(padding, "padding")
        if (h, w) == (k, k) and pad == 0 and divisor_override in (None, k * k):
            return self.global_pool(node, x, source)
        self.integer(node, x, "average pool")
        if x == self.b.input_tensor:
            raise _unsupported(
                node,
                self.modules,
                "a local average pool of the input image (it has no conv to lower into "
                "before the stem; pool the images before they reach the model)",
            )
        if len(self.b.shape(x)) != 3:
            raise _unsupported(node, self.modules, f"an average pool on {self.b.shape(x)}")
        out = ((h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1)
        if ceil_mode:
            ceil = tuple(-(-(n + 2 * pad - k) // s) + 1 for n in (h, w))
            if ceil != out:
                raise _unsupported(
                    node,
                    self.modules,
                    f"average pool with ceil_mode on a {h}x{w} map (its last window is "
                    "partial, with its own divisor)",
                )
        if pad and not count_include_pad:
            raise _unsupported(
                node,
                self.modules,
                "average pool with padding and count_include_pad=False (the divisor then "
                "changes at the border)",
            )
        divisor = int(divisor_override) if divisor_override else k * k
        scale = self.b.tensors[x].scale
        assert scale is not None
        return self.b.add(
            AvgPool,
            (x,),
            (*out, c),
            "int32",
            scale / divisor,
            source=source,
            kernel=k,
            stride=s,
            padding=pad,
            divisor=divisor,
        )

    def global_pool(self, node: fx.Node, x: str, source: str) -> str:
        self.integer(node, x, "global average pool")
        h, w, c = self.b.shape(x)
        scale = self.b.tensors[x].scale
        assert scale is not None
        return self.b.add(GlobalSumPool, (x,), (c,), "int32", scale / (h * w), source=source)

    def alias(self, node: fx.Node, x: str, what: str) -> str:
        """Ops that change nothing here: flatten of the pooled (C,) vector, Dropout, Identity."""
        if what == "flatten" and len(self.b.shape(x)) != 1:
            raise _unsupported(
                node, self.modules, f"flattens {self.b.shape(x)}; only the pooled vector (C,)"
            )
        return x

    def linear(self, node: fx.Node, x: str, fc: nn.Linear) -> str:
        if len(self.b.shape(x)) != 1 or fc.in_features != self.b.shape(x)[0]:
            raise _unsupported(
                node,
                self.modules,
                f"a Linear on {self.b.shape(x)}; the head reads the globally pooled (C,) vector",
            )
        self.integer(node, x, "the head")
        bias = fc.bias.detach().numpy().copy() if fc.bias is not None else np.zeros(fc.out_features)
        self.head = self.b.add(
            Linear,
            (x,),
            (fc.out_features,),
            source=str(node.target),
            weight=fc.weight.detach().numpy().copy(),
            bias=bias,
        )
        return self.head


# -- module rules ---------------------------------------------------------------------------


def _conv_module(c: _Converter, node: fx.Node, conv: nn.Module) -> str:
    x = c.arg(node, node.args[0])
    if not isinstance(conv, QConv2d):
        raise _unsupported(
            node, c.modules, "a Conv2d that is not quantized (climbq_deploy.quantize swaps them)"
        )
    shape = c.b.shape(x)
    if len(shape) != 3:
        raise _unsupported(node, c.modules, f"a conv on {shape}")
    if c.b.tensors[x].scale is None and x != c.b.input_tensor:
        raise _unsupported(node, c.modules, f"a conv reading the float tensor {x!r}")
    for name in ("kernel_size", "stride", "padding", "dilation"):
        value = getattr(conv, name)
        if isinstance(value, str) or len(set(value)) != 1:
            raise _unsupported(node, c.modules, f"conv {name} {value!r} (square only)")
    if conv.padding_mode != "zeros":
        raise _unsupported(node, c.modules, f"conv padding_mode {conv.padding_mode!r}")
    out = _conv(c.b, x, conv, str(node.target))
    pool = c.b.producer.get(x)
    if isinstance(pool, AvgPool):  # the lowering folds the pool into this conv: can it?
        made = c.b.producer[out]
        assert isinstance(made, Conv)
        h, w, _ = c.b.shape(pool.inputs[0])
        try:
            composite_conv(
                pool,
                np.rint(made.weight / made.weight_scale).astype(np.int64),
                made.weight_bits,
                made.weight_grid,
                made.stride,
                made.padding,
                made.dilation,
                (h, w),
                f"it reads the average pool {pool.source!r}",
            )
        except LoweringError as exc:
            raise _unsupported(node, c.modules, str(exc)) from None
    if conv.bias is not None:
        c.b.conv_bias[out] = conv.bias.detach().double().numpy().copy()
    act = getattr(conv, "act", None)
    if act is not None:  # QConv2dAct: the quantizer on the conv's own output
        out = _act(c.b, _unit_batchnorm(c.b, out, str(node.target)), act, f"{node.target}.act")
    return out


def _bn_module(c: _Converter, node: fx.Node, bn: nn.Module) -> str:
    x = c.arg(node, node.args[0])
    producer = c.b.producer.get(x)
    if not isinstance(producer, Conv):
        raise _unsupported(node, c.modules, "a BatchNorm that does not follow a conv")
    out = _bn(c.b, x, bn, str(node.target))
    act = getattr(bn, "act", None)
    if act is not None:  # BatchNormActQuant: the quantizer after the BatchNorm
        out = _act(c.b, out, act, f"{node.target}.act")
    return out


def _act_module(c: _Converter, node: fx.Node, act: nn.Module) -> str:
    x = c.arg(node, node.args[0])
    producer = c.b.producer.get(x)
    if not isinstance(producer, BatchNorm | Conv | Add):
        raise _unsupported(
            node, c.modules, "an activation quantizer that follows no conv, BatchNorm or add"
        )
    if isinstance(producer, Conv):  # a conv's bias or channel scales with no BatchNorm
        x = _unit_batchnorm(c.b, x, producer.source)
    return _act(c.b, x, act, str(node.target))


def _relu_module(c: _Converter, node: fx.Node, m: nn.Module) -> str:
    cap = 6.0 if isinstance(m, nn.ReLU6) else None
    if isinstance(m, nn.Hardtanh) and not isinstance(m, nn.ReLU6):
        if m.min_val != 0.0:
            raise _unsupported(node, c.modules, f"Hardtanh({m.min_val}, {m.max_val})")
        cap = float(m.max_val)
    return c.relu(node, c.arg(node, node.args[0]), cap, str(node.target))


def _maxpool_module(c: _Converter, node: fx.Node, m: nn.MaxPool2d) -> str:
    if m.return_indices:
        raise _unsupported(node, c.modules, "max pool returning indices")
    x = c.arg(node, node.args[0])
    return c.max_pool(
        node, x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, str(node.target)
    )


def _avgpool_module(c: _Converter, node: fx.Node, m: nn.AvgPool2d) -> str:
    return c.avg_pool(
        node,
        c.arg(node, node.args[0]),
        m.kernel_size,
        m.stride,
        m.padding,
        m.ceil_mode,
        m.count_include_pad,
        m.divisor_override,
        str(node.target),
    )


def _adaptive_avg(c: _Converter, node: fx.Node, x: str, size: Any, source: str) -> str:
    """``AdaptiveAvgPool2d(1)`` is the global pool; to ``o x o`` on a map whose side ``H``
    ``o`` divides, torch's windows are the ``H/o`` tiles: an average pool of kernel and stride
    ``H/o``. Other sizes (overlapping windows of two sizes) are refused."""
    if size in (1, (1, 1), [1, 1]):
        return c.global_pool(node, x, source)
    shape = c.b.shape(x)
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if (
        len(shape) != 3
        or len(pair) != 2
        or None in pair
        or shape[0] % pair[0]
        or shape[1] % pair[1]
        or shape[0] // pair[0] != shape[1] // pair[1]
    ):
        raise _unsupported(
            node,
            c.modules,
            f"adaptive average pool to {size!r} on {shape} (only 1x1, or a size dividing an "
            "H x W map into square tiles)",
        )
    tile = shape[0] // pair[0]
    if tile == 1:  # to the map's own size: each window is one pixel
        return x
    return c.avg_pool(node, x, tile, tile, 0, False, True, None, source)


def _adaptive_module(c: _Converter, node: fx.Node, m: nn.AdaptiveAvgPool2d) -> str:
    return _adaptive_avg(c, node, c.arg(node, node.args[0]), m.output_size, str(node.target))


def _alias_module(c: _Converter, node: fx.Node, m: nn.Module) -> str:
    x = c.arg(node, node.args[0])
    return c.alias(node, x, "flatten" if isinstance(m, nn.Flatten) else "identity")


def _linear_module(c: _Converter, node: fx.Node, m: nn.Linear) -> str:
    return c.linear(node, c.arg(node, node.args[0]), m)


MODULE_RULES: list[tuple[type, Callable[..., str]]] = [
    (QConv2d, _conv_module),
    (nn.Conv2d, _conv_module),  # refused by the rule with the reason (not quantized)
    (nn.BatchNorm2d, _bn_module),
    (TorchActQuant, _act_module),
    (nn.ReLU, _relu_module),
    (nn.ReLU6, _relu_module),
    (nn.Hardtanh, _relu_module),
    (nn.MaxPool2d, _maxpool_module),
    (nn.AdaptiveAvgPool2d, _adaptive_module),
    (nn.AvgPool2d, _avgpool_module),
    (nn.Flatten, _alias_module),
    (nn.Dropout, _alias_module),
    (nn.Identity, _alias_module),
    (nn.Linear, _linear_module),
]
"""Module type -> converter (first match wins; subclasses such as QConv2d first)."""


# -- function and method rules --------------------------------------------------------------


def _kw(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _fn_relu(c: _Converter, node: fx.Node) -> str:
    return c.relu(node, c.arg(node, node.args[0]), None, c.source(node, "relu"))


def _fn_relu6(c: _Converter, node: fx.Node) -> str:
    return c.relu(node, c.arg(node, node.args[0]), 6.0, c.source(node, "relu6"))


def _fn_add(c: _Converter, node: fx.Node) -> str:
    if len(node.args) != 2 or node.kwargs:
        raise _unsupported(node, c.modules, "an add with extra arguments (alpha)")
    return c.add(node, c.arg(node, node.args[0]), c.arg(node, node.args[1]))


def _fn_cat(c: _Converter, node: fx.Node) -> str:
    tensors = _kw(node, 0, "tensors", None)
    if not isinstance(tensors, list | tuple) or not tensors:
        raise _unsupported(node, c.modules, "a concat of no tensors")
    return c.concat(node, [c.arg(node, t) for t in tensors], int(_kw(node, 1, "dim", 0)))


def _fn_flatten(c: _Converter, node: fx.Node) -> str:
    if int(_kw(node, 1, "start_dim", 0)) != 1:
        raise _unsupported(node, c.modules, "flatten that merges the batch axis")
    return c.alias(node, c.arg(node, node.args[0]), "flatten")


def _fn_adaptive_avg(c: _Converter, node: fx.Node) -> str:
    size = _kw(node, 1, "output_size", None)
    return _adaptive_avg(c, node, c.arg(node, node.args[0]), size, c.source(node, "pool"))


def _fn_avg_pool(c: _Converter, node: fx.Node) -> str:
    kernel = _kw(node, 1, "kernel_size", None)
    return c.avg_pool(
        node,
        c.arg(node, node.args[0]),
        kernel,
        _kw(node, 2, "stride", None),
        _kw(node, 3, "padding", 0),
        bool(_kw(node, 4, "ceil_mode", False)),
        bool(_kw(node, 5, "count_include_pad", True)),
        _kw(node, 6, "divisor_override", None),
        c.source(node, "avgpool"),
    )


def _fn_max_pool(c: _Converter, node: fx.Node) -> str:
    x = c.arg(node, node.args[0])
    kernel = _kw(node, 1, "kernel_size", None)
    return c.max_pool(
        node,
        x,
        kernel,
        _kw(node, 2, "stride", None),
        _kw(node, 3, "padding", 0),
        _kw(node, 4, "dilation", 1),
        bool(_kw(node, 5, "ceil_mode", False)),
        c.source(node, "maxpool"),
    )


def _fn_dropout(c: _Converter, node: fx.Node) -> str:
    return c.alias(node, c.arg(node, node.args[0]), "identity")


FUNCTION_RULES: dict[Any, Callable[[_Converter, fx.Node], str]] = {
    F.relu: _fn_relu,
    torch.relu: _fn_relu,
    F.relu6: _fn_relu6,
    operator.add: _fn_add,
    torch.add: _fn_add,
    torch.cat: _fn_cat,
    torch.concat: _fn_cat,
    torch.flatten: _fn_flatten,
    F.adaptive_avg_pool2d: _fn_adaptive_avg,
    F.max_pool2d: _fn_max_pool,
    F.avg_pool2d: _fn_avg_pool,
    F.dropout: _fn_dropout,
}


def _m_flatten(c: _Converter, node: fx.Node) -> str:
    start = int(_kw(node, 1, "start_dim", 0))
    if start != 1:
        raise _unsupported(node, c.modules, "flatten that merges the batch axis")
    return c.alias(node, c.arg(node, node.args[0]), "flatten")


def _m_view(c: _Converter, node: fx.Node) -> str:
    x = c.arg(node, node.args[0])
    shape = tuple(a for a in node.args[1:])
    if len(shape) == 1 and isinstance(shape[0], tuple | list):
        shape = tuple(shape[0])
    if len(c.b.shape(x)) == 1 and len(shape) == 2 and shape[1] in (-1, c.b.shape(x)[0]):
        return x
    raise _unsupported(node, c.modules, f"reshape to {shape!r} (only (N, -1) of the pooled vector)")


def _m_mean(c: _Converter, node: fx.Node) -> str:
    dims = _kw(node, 1, "dim", None)
    if (
        isinstance(dims, int)
        or dims is None
        or sorted(int(d) for d in dims) not in ([2, 3], [-2, -1])
    ):
        raise _unsupported(node, c.modules, f"mean over {dims!r} (only over H and W)")
    if _kw(node, 2, "keepdim", False):
        raise _unsupported(node, c.modules, "mean with keepdim")
    return c.global_pool(node, c.arg(node, node.args[0]), c.source(node, "pool"))


METHOD_RULES: dict[str, Callable[[_Converter, fx.Node], str]] = {
    "relu": _fn_relu,
    "add": _fn_add,
    "flatten": _m_flatten,
    "view": _m_view,
    "reshape": _m_view,
    "mean": _m_mean,
}


def _stem_conv(gm: fx.GraphModule) -> QConv2d:
    """The first conv the traced graph calls: the one reading the integer input."""
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules[str(node.target)], nn.Conv2d):
            conv = modules[str(node.target)]
            if not isinstance(conv, QConv2d) or conv.weight_quantizer is None:
                raise CaptureError(
                    f"the model's first conv {node.target!r} has full-precision weights; only "
                    "quantized runs lower to integers"
                )
            return conv
    raise CaptureError("the model has no Conv2d; nothing to lower")


def capture(
    model: nn.Module,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    image_shape: tuple[int, int, int] = (32, 32, 3),
    meta: dict[str, Any] | None = None,
    input_bits: int = 32,
) -> Graph:
    """The float-level IR of ``model`` in eval mode, fed uint8 images (H, W, C) normalised by
    mean/std: traced with torch.fx and converted node by node (see the module docstring)."""
    channels, stats = image_shape[2], [*mean, *std]
    if not len(mean) == len(std) == channels or not all(map(math.isfinite, stats)) or min(std) <= 0:
        raise ConfigError(
            f"input normalization must be {channels} finite means and stds > 0, "
            f"got mean {tuple(mean)}, std {tuple(std)}"
        )
    if getattr(model, "faithful", False):
        raise ConfigError(
            "the authors' MobileNetV2 (--faithful-mbv2) leaves its shortcut and block output "
            "unquantized, so the next conv sees non-integer input; retrain without "
            "--faithful-mbv2 (the integer-friendly default) to export it"
        )
    model = model.eval()
    gm = trace(model, image_shape)
    stem = _stem_conv(gm)
    mult, offset = stem.weight_quantizer.integer_grid()
    n = 2**stem.weight_quantizer.bits - 1
    taps = stem.in_channels // stem.groups * stem.kernel_size[0] * stem.kernel_size[1]
    peak = max(abs(offset), abs(mult * n + offset))
    scale = input_scale(tuple(mean), tuple(std), taps, peak, input_bits)
    b = _Builder(image_shape)
    h, w, c = image_shape
    x = b.add(
        InputQuant,
        ("image",),
        (h, w, c),
        dtype="int32",
        scale=scale,
        source="input",
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        step=scale,
    )
    b.input_tensor = x
    with torch.no_grad():
        logits = _Converter(gm, b).run(x)
    if b.channel_scales or b.conv_bias:
        raise ConfigError(
            f"convs {sorted({*b.channel_scales, *b.conv_bias})} have per-channel weight scales "
            "or a bias but no BatchNorm after them to absorb them"
        )
    return Graph(tuple(b.nodes), b.tensors, "image", logits, dict(meta or {})).validate()
