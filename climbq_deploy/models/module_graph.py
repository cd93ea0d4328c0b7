"""A model's graph at the level of its leaf modules, from ``torch.export`` where ``torch.fx``'s
symbolic trace cannot make one.

``torch.fx`` traces with proxies, so a ``forward`` that branches on a shape (``if
x.shape[-1] > 8``), asserts on one, or loops over a size fails to trace. ``torch.export``
runs ``forward`` on fake tensors of one concrete input shape instead, so such branches are
decided for that shape; but it records ATen ops (``aten.relu.default``), not the modules and
torch functions that :mod:`climbq_deploy.quant.convert` and :mod:`climbq_deploy.ir.capture`
read. :func:`export_leaf_graph` bridges the two: ``torch.export.unflatten`` restores the
module hierarchy, every call of a *leaf* module (as the caller's fx tracer defines leaves)
becomes one ``call_module`` node named by the module's qualified name, the bodies of the other
modules are inlined, and the ATen ops between modules become the torch functions or methods
they implement (:data:`ATEN_FUNCTIONS`, :data:`ATEN_METHODS`). ATen ops with no such
counterpart stay as they are, so the caller's rules refuse them naming the node. The result is
the graph fx would have made for that input shape.
"""

from __future__ import annotations

import contextlib
import io
import logging
import operator
import re
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import fx, nn

aten = torch.ops.aten

ATEN_FUNCTIONS: dict[Any, Callable[..., Any]] = {
    aten.relu.default: torch.relu,
    aten.relu_.default: torch.relu,
    aten.add.Tensor: operator.add,
    aten.add_.Tensor: operator.add,
    aten.cat.default: torch.cat,
    aten.concat.default: torch.cat,
    aten.flatten.using_ints: torch.flatten,
    aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d,
    aten.max_pool2d.default: F.max_pool2d,
    aten.avg_pool2d.default: F.avg_pool2d,
    aten.dropout.default: F.dropout,
    aten.conv2d.default: F.conv2d,
    aten.conv1d.default: F.conv1d,
    aten.conv3d.default: F.conv3d,
}
"""ATen op -> the torch function with the same positional arguments (for these ops)."""

ATEN_METHODS: dict[Any, str] = {
    aten.mean.dim: "mean",
    aten.view.default: "view",
    aten.reshape.default: "reshape",
}
"""ATen op -> the tensor method with the same arguments (``x.mean(dims, keepdim)``, ...)."""

_SKIPPED = ("_assert", "sym_constrain_range", "_check")
_CALL_SUFFIX = re.compile(r"@\d+$")  # unflatten's name for a module's second, third ... call


class ExportGraphError(RuntimeError):
    """``torch.export`` could not make a leaf-module graph of the model (the message says why)."""


def export_leaf_graph(
    model: nn.Module,
    example: torch.Tensor,
    is_leaf: Callable[[nn.Module, str], bool],
    kwargs: dict[str, Any] | None = None,
) -> fx.Graph:
    """The fx graph of ``model`` called on ``example`` (one batch, NCHW), in which every call
    of a module for which ``is_leaf(module, qualified_name)`` holds is one ``call_module``
    node targeting the module's qualified name in ``model``, and the rest is inlined.

    Each node's ``meta["climbq_module"]`` names the module whose ``forward`` made it ('' for
    the model's own). Raises :class:`ExportGraphError` with ``torch.export``'s first line when
    it cannot export the model, or naming a constant tensor that ``forward`` makes (a leaf-level
    graph has no place for one)."""
    modules = dict(model.named_modules())
    try:
        with torch.no_grad(), _stand_ins(modules, is_leaf), _quiet():
            program = torch.export.export(model, (example,), kwargs or {}, strict=False)
            flat = torch.export.unflatten(program)
    except Exception as exc:  # export raises many kinds: UserError, RuntimeError, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportGraphError(f"{type(exc).__name__}: {first}") from None
    graph = fx.Graph()
    outputs = _inline(graph, flat, flat.graph, "", None, modules, is_leaf)
    if isinstance(outputs, tuple | list) and len(outputs) == 1:
        outputs = outputs[0]
    graph.output(outputs)
    return graph


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.export without its own output: on a failed guard it prints the traced graph to
    stdout and logs warnings (the caller reports the failure in one line instead), and torch
    2.13's unflatten trips its own pytree deprecation (LeafSpec)."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.filterwarnings("ignore", ".*LeafSpec.*", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _stand_ins(
    modules: dict[str, nn.Module], is_leaf: Callable[[nn.Module, str], bool]
) -> Iterator[None]:
    """While exporting, a leaf module that is not torch.nn's own (a quantized layer, whose
    forward checks values: ``if not torch.isfinite(sigma)``, which export cannot decide on fake
    tensors) runs the forward of the torch.nn class it derives from (``nn.Conv2d.forward`` for
    a ``QConv2d``), or passes its input through when it derives from ``nn.Module`` alone. A
    leaf is one opaque node of the result, so only its output's shape matters there, and these
    stand-ins keep it. The modules' own forwards are restored on exit."""
    patched: list[nn.Module] = []
    try:
        for name, module in modules.items():
            cls = type(module)
            if not name or cls.__module__.startswith("torch.nn") or not is_leaf(module, name):
                continue
            base = next(c for c in cls.__mro__ if c.__module__.startswith("torch.nn"))
            if base is nn.Module:
                module.forward = _pass_through  # type: ignore[method-assign]
            else:
                module.forward = types.MethodType(base.forward, module)  # type: ignore[method-assign]
            patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward


def _pass_through(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """The input, as a new tensor: a forward that returned ``x`` itself would leave the module
    no op of its own in the exported graph, and unflatten would drop its call (an activation
    quantizer written into a model by hand would vanish from the captured program)."""
    return x.clone()


def _inline(
    graph: fx.Graph,
    owner: nn.Module,
    body: fx.Graph,
    prefix: str,
    inputs: list[Any] | None,
    modules: dict[str, nn.Module],
    is_leaf: Callable[[nn.Module, str], bool],
) -> Any:
    """Copy ``body`` (the graph of the unflattened module ``owner``, qualified name ``prefix``)
    into ``graph``; ``inputs`` are its arguments (None: the model's own placeholders). Returns
    what ``body`` returns, in ``graph``'s nodes."""
    env: dict[fx.Node, Any] = {}
    scope = prefix.rstrip(".")
    placeholders = iter(inputs) if inputs is not None else None

    def value(a: Any) -> Any:
        return fx.node.map_arg(a, lambda n: env[n])

    for node in body.nodes:
        if node.op == "placeholder":
            if placeholders is None:
                env[node] = graph.placeholder(node.name)
            else:
                env[node] = next(placeholders)
        elif node.op == "output":
            return value(node.args[0])
        elif node.op == "call_module":
            local = _CALL_SUFFIX.sub("", str(node.target))
            name = prefix + local
            module = modules.get(name)
            args = [value(a) for a in node.args]
            if module is not None and not is_leaf(module, name):
                env[node] = _inline(
                    graph,
                    owner.get_submodule(str(node.target)),
                    owner.get_submodule(str(node.target)).graph,
                    name + ".",
                    args,
                    modules,
                    is_leaf,
                )
            else:
                made = graph.call_module(name, tuple(args), value(node.kwargs))
                made.meta["climbq_module"] = scope
                env[node] = made
        elif node.op == "call_function":
            target = node.target
            if target is operator.getitem and not isinstance(env.get(node.args[0]), fx.Node):
                env[node] = value(node.args[0])[node.args[1]]  # a tuple a module returned
                continue
            name = str(getattr(target, "__name__", target))
            if name.startswith(_SKIPPED) or target is torch.ops.aten.sym_size.int:
                continue  # export's own shape checks: decided for this input shape
            args, kwargs = value(node.args), value(node.kwargs)
            if target in ATEN_METHODS:
                made = graph.call_method(ATEN_METHODS[target], args, kwargs)
            else:
                made = graph.call_function(ATEN_FUNCTIONS.get(target, target), args, kwargs)
                if target is aten.max_pool2d.default and len(args) > 2 and not args[2]:
                    made.args = (*args[:2], None, *args[3:])  # stride [] means the kernel
            made.meta["climbq_module"] = scope
            env[node] = made
        else:  # get_attr: a constant tensor forward made (parameters stay in leaf modules)
            raise ExportGraphError(
                f"{scope or 'the model'}'s forward reads the constant {node.target!r}; only "
                "modules' parameters and buffers have a place in the graph"
            )
    raise ExportGraphError(f"{scope or 'the model'}: graph has no output")  # pragma: no cover


__all__ = ["ATEN_FUNCTIONS", "ATEN_METHODS", "ExportGraphError", "export_leaf_graph"]
