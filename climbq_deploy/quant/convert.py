"""``quantize(model)``: a user's float CNN made into a ClimbQ / ClimbQ+ quantization-aware model.

The model is deep-copied and traced with ``torch.fx`` only to *see* its structure (which module
feeds which; where fx cannot trace ``forward``, e.g. a branch on a shape, ``torch.export`` on
``example_input`` does: :mod:`climbq_deploy.models.module_graph`); the model that comes back is
the user's own module tree with some modules swapped, so its class, its ``forward`` and every
qualified name stay as the user wrote them. The rules:

- every ``nn.Conv2d`` becomes a :class:`~climbq_deploy.quant.layers.QConv2d` with the same
  hyper-parameters and the same weight tensors, its weights quantized by ``method`` at ``wbits``
  (``first_layer="float"``: the first conv to run keeps float weights; such a model trains, but
  cannot be lowered to an integer program);
- an activation quantizer (``abits``) follows every conv, where the paper puts it: when the
  conv's only user is an ``nn.BatchNorm2d``, that BatchNorm becomes a
  :class:`~climbq_deploy.quant.layers.BatchNormActQuant` (``act(bn(x))``, after the BN and before
  the ReLU); otherwise the conv itself becomes a :class:`~climbq_deploy.quant.layers.QConv2dAct`
  (``act(conv(x))``);
- the final ``nn.Linear`` (whose output the model returns) stays float (§4: the classifier is
  kept in full precision);
- everything else (ReLU, pooling, residual adds, concatenations, flatten) is left alone.

The result is a :class:`~climbq_deploy.models.quantized.QuantizedModel` holding the swapped model
as ``net``. ``quantize`` draws no random numbers: the new modules are made on the ``meta`` device
and take over the user's parameter and buffer tensors.
"""

from __future__ import annotations

import copy
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import fx, nn

from climbq_deploy.errors import ConfigError
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.module_graph import ExportGraphError, export_leaf_graph
from climbq_deploy.models.quantized import QuantizedModel
from climbq_deploy.quant.layers import (
    ActQuant,
    BatchNormActQuant,
    QConv2d,
    QConv2dAct,
    QuantContext,
)
from climbq_deploy.quant.quantizers import make_activation_quantizer, make_weight_quantizer

FIRST_LAYER_CHOICES = ("quantize", "float")
HEAD_CHOICES = ("float", "quantize")
# Module types with no quantized form here: refused by name rather than left in float.
_REFUSED_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
_ALREADY_QUANTIZED: tuple[type[nn.Module], ...] = (QConv2d, ActQuant, BatchNormActQuant)
_FUNCTIONAL_CONVS = {
    F.conv1d,
    F.conv2d,
    F.conv3d,
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.conv_transpose3d,
}
_TORCH_DIR = str(Path(torch.__file__).parent)


def quantize(
    model: nn.Module,
    method: str = "climbq+",
    wbits: int = 4,
    abits: int = 4,
    first_layer: str = "quantize",
    head: str = "float",
    act_scaling: str = "faithful",
    example_input: torch.Tensor | None = None,
) -> QuantizedModel:
    """A quantization-aware copy of the float CNN ``model`` (``model`` itself is not changed).

    Args:
        model: a float ``nn.Module`` that ``torch.fx.symbolic_trace`` can trace, built from
            ``nn.Conv2d`` (any stride, padding, dilation, groups, with or without bias),
            ``nn.BatchNorm2d`` and any parameter-free ops, and returning the output of its last
            ``nn.Linear`` (the logits, ``B x num_classes``).
        method: ``climbq+``, ``climbq``, ``uniform``, ``lsq`` or ``fp32`` (quantizer slots
            that pass values through, for full-precision pretraining with the same names).
        wbits, abits: weight and activation bits (2-8, or 32 for full precision).
        first_layer: ``quantize`` (the paper's setting: every conv, the first included) or
            ``float`` (the first conv keeps float weights; its output is still quantized).
        head: ``float``, the paper's choice (``quantize`` is not supported yet; the exporter's
            ``--head int8/int4`` quantizes the head at lowering instead).
        act_scaling: ``faithful`` (ClimbQ's class-scaled sigma in training) or ``off``.
        example_input: a batch (N x C x H x W) of the size the model will see; used only
            when ``torch.fx`` cannot trace ``forward``: ``torch.export`` then traces it on this
            input (shape-dependent branches are decided for this shape).

    Returns:
        a :class:`QuantizedModel`: the user's model as child ``net`` (state-dict keys
        ``net.<the user's names>``), ``num_classes`` the head's ``out_features``.

    Raises:
        ConfigError: naming the module (its qualified name and type) or the reason: a model fx
            cannot trace (and ``torch.export`` cannot either, or no ``example_input`` was
            given for it), a Conv1d, Conv3d or
            ConvTranspose layer, a functional conv, a conv or BatchNorm called twice, a model
            with no ``nn.Conv2d``, one that does not return the output of an ``nn.Linear``.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"quantize needs a torch.nn.Module, got {type(model).__name__}")
    if first_layer not in FIRST_LAYER_CHOICES:
        raise ConfigError(f"first_layer must be one of {FIRST_LAYER_CHOICES}, got {first_layer!r}")
    if head not in HEAD_CHOICES:
        raise ConfigError(f"head must be one of {HEAD_CHOICES}, got {head!r}")
    if head == "quantize":
        raise ConfigError(
            "head='quantize' is not supported yet: the head stays float in training (the "
            "paper's choice); export's --head int8 / int4 quantizes it at lowering"
        )
    spec = QuantSpec(method, wbits, abits, act_scaling)
    _refuse_unsupported_modules(model)
    net = copy.deepcopy(model)
    graph = _trace(net, example_input)
    _refuse_functional_convs(graph)
    modules = dict(net.named_modules())
    calls = _module_calls(graph, modules)
    convs = [n for n in calls if type(modules[n.target]) is nn.Conv2d]
    if not convs:
        raise ConfigError(f"{_describe(model)} has no nn.Conv2d to quantize")
    head_name = _head(graph, modules, model)
    for node in calls:
        if type(modules[node.target]) in (nn.Conv2d, nn.BatchNorm2d):
            _refuse_shared(net, node.target, modules[node.target], calls[node])
    context = QuantContext()

    def act_for(module: nn.Module) -> ActQuant:
        return ActQuant(make_activation_quantizer(method, abits), context).to(_device(module))

    for index, node in enumerate(convs):
        conv = modules[node.target]
        if conv.padding_mode != "zeros":
            raise ConfigError(
                f"{node.target} ({_kind(conv)}) pads with {conv.padding_mode!r}; only zero "
                "padding has a quantized form"
            )
        float_weights = index == 0 and first_layer == "float"
        weights = None if float_weights else make_weight_quantizer(method, wbits)
        users = list(node.users)
        bn_after = (
            len(users) == 1
            and users[0].op == "call_module"
            and type(modules[users[0].target]) is nn.BatchNorm2d
        )
        if bn_after:
            bn_name = users[0].target
            _swap(net, node.target, _qconv(QConv2d, conv, weights))
            _swap(net, bn_name, _bn_act(modules[bn_name], act_for(modules[bn_name])))
        else:
            _swap(net, node.target, _qconv(QConv2dAct, conv, weights, act=act_for(conv)))
    num_classes = modules[head_name].out_features
    return QuantizedModel(net, spec, head_name, num_classes, context).train(model.training)


class _Tracer(fx.Tracer):
    """``torch.fx``'s tracer (torch.nn's modules are leaves) that remembers the innermost
    module whose ``forward`` failed, for the error message."""

    def __init__(self) -> None:
        super().__init__()
        self.failed_in: tuple[str, str] | None = None

    def call_module(
        self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = (self.path_of_module(m), type(m).__name__)
            raise


def _trace(net: nn.Module, example_input: torch.Tensor | None = None) -> fx.Graph:
    """The fx graph of ``net`` (its structure only; the graph is not run): torch.fx's symbolic
    trace, else torch.export on ``example_input``."""
    tracer = _Tracer()
    try:
        return tracer.trace(net)
    except Exception as exc:
        fx_error = exc
    if example_input is None:
        export_failure = (
            "; give quantize an example_input (one batch) to trace it with torch.export instead"
        )
    else:
        training = net.training
        try:
            return export_leaf_graph(net.eval(), example_input, fx.Tracer().is_leaf_module)
        except ExportGraphError as exc:
            shape = tuple(example_input.shape)
            export_failure = f"; torch.export on a {shape} input failed too: {exc}"
        finally:
            net.train(training)
    where = (
        f"in {tracer.failed_in[0]} ({tracer.failed_in[1]})"
        if tracer.failed_in
        else f"in {type(net).__name__}.forward"
    )
    frames = [
        f for f in traceback.extract_tb(fx_error.__traceback__) if _TORCH_DIR not in f.filename
    ]
    line = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    reason = (str(fx_error).splitlines() or [""])[0]
    raise ConfigError(
        f"torch.fx cannot trace {type(net).__name__} {where}{line}: "
        f"{type(fx_error).__name__}: {reason}{export_failure}. quantize needs a forward without "
        "Python control flow on tensor values (make such a branch a constructor option)"
    )


def _refuse_unsupported_modules(model: nn.Module) -> None:
    for name, module in model.named_modules():
        label = f"{name or 'the model'} ({_kind(module)})"
        if isinstance(module, _REFUSED_MODULES):
            raise ConfigError(
                f"{label}: only nn.Conv2d layers have a quantized form (no Conv1d, Conv3d or "
                "ConvTranspose)"
            )
        if isinstance(module, _ALREADY_QUANTIZED):
            raise ConfigError(f"{label} is already quantized; give quantize the float model")
        if isinstance(module, nn.modules.lazy.LazyModuleMixin):
            raise ConfigError(f"{label} is not initialized; run one forward pass first")
        if isinstance(module, nn.Conv2d) and type(module) is not nn.Conv2d:
            raise ConfigError(
                f"{label} is a subclass of nn.Conv2d; quantize swaps plain nn.Conv2d layers "
                "only (a subclass may compute something else)"
            )


def _refuse_functional_convs(graph: fx.Graph) -> None:
    for node in graph.nodes:
        if node.op == "call_function" and node.target in _FUNCTIONAL_CONVS:
            stack = node.meta.get("nn_module_stack") or {}
            path, cls = next(reversed(stack.values()), ("", None))
            where = f"{path} ({cls.__name__})" if cls is not None else "the model's forward"
            raise ConfigError(
                f"{where} calls {node.target.__name__} directly; quantize swaps nn.Conv2d "
                "modules, so make that conv an nn.Conv2d"
            )


def _module_calls(graph: fx.Graph, modules: dict[str, nn.Module]) -> dict[fx.Node, int]:
    """Every ``call_module`` node in execution order, with how often its module is called."""
    nodes = [n for n in graph.nodes if n.op == "call_module"]
    times: dict[str, int] = {}
    for node in nodes:
        times[node.target] = times.get(node.target, 0) + 1
    return {node: times[node.target] for node in nodes if node.target in modules}


def _refuse_shared(net: nn.Module, name: str, module: nn.Module, times: int) -> None:
    """A conv or BatchNorm must be called once and registered under one name: the quantizer
    that follows it belongs to one place in the graph."""
    if times > 1:
        raise ConfigError(
            f"{name} ({_kind(module)}) is called {times} times; quantize needs each conv and "
            "BatchNorm called once (shared layers are not supported yet)"
        )
    names = [n for n, m in net.named_modules(remove_duplicate=False) if m is module]
    if len(names) > 1:
        raise ConfigError(
            f"{name} ({_kind(module)}) is registered under {len(names)} names "
            f"({', '.join(names)}); quantize needs one name per layer"
        )


def _head(graph: fx.Graph, modules: dict[str, nn.Module], model: nn.Module) -> str:
    """The qualified name of the final ``nn.Linear``: the module whose output the model
    returns."""
    linears = [n for n in graph.nodes if n.op == "call_module" and n.target in modules]
    linears = [n for n in linears if isinstance(modules[n.target], nn.Linear)]
    if not linears:
        raise ConfigError(
            f"{_describe(model)} has no nn.Linear; quantize needs a classifier that ends in an "
            "nn.Linear head (its output the logits)"
        )
    output = next(n for n in graph.nodes if n.op == "output")
    returned = output.args[0]
    last = linears[-1]
    if returned is not last:
        what = f"{returned.op} {returned.target}" if isinstance(returned, fx.Node) else "a value"
        raise ConfigError(
            f"{_describe(model)} must return the output of its final nn.Linear "
            f"({last.target}) as the logits; it returns {what}"
        )
    if sum(1 for n in linears if n.target == last.target) > 1:
        raise ConfigError(f"the head {last.target} (nn.Linear) is called more than once")
    return str(last.target)


def _qconv(cls: type[QConv2d], conv: nn.Conv2d, weights: Any, **extra: Any) -> QConv2d:
    """``cls`` with ``conv``'s hyper-parameters, holding ``conv``'s own weight and bias."""
    new = cls(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        device="meta",
        **extra,
    )
    new.load_state_dict(conv.state_dict(keep_vars=True), strict=False, assign=True)
    new.weight_quantizer = None if weights is None else weights.to(_device(conv))
    return new.train(conv.training)


def _bn_act(bn: nn.BatchNorm2d, act: ActQuant) -> BatchNormActQuant:
    """A :class:`BatchNormActQuant` holding ``bn``'s own parameters and statistics."""
    new = BatchNormActQuant(
        bn.num_features,
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        track_running_stats=bn.track_running_stats,
        device="meta",
        act=act,
    )
    new.load_state_dict(bn.state_dict(keep_vars=True), strict=False, assign=True)
    return new.train(bn.training)


def _swap(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def _device(module: nn.Module) -> torch.device:
    first = next(module.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _kind(module: nn.Module) -> str:
    cls = type(module)
    return f"torch.nn.{cls.__name__}" if cls.__module__.startswith("torch.nn") else cls.__name__


def _describe(model: nn.Module) -> str:
    return f"the model ({type(model).__name__})"


__all__ = ["FIRST_LAYER_CHOICES", "HEAD_CHOICES", "quantize"]
