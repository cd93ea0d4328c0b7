"""Activation ranges of post-training quantization: observe, pick ``r``, tie residual operands.

The ranges are observed on the *full-precision* model (every activation quantizer slot is an
identity there), as the LiteRT converter and TensorRT's calibrators do: one pass over the
calibration images records, per slot, what enters the quantizer (the BatchNorm output). The
grids are symmetric (:class:`~climbq_deploy.quant.quantizers.PTQActivation`), so a range is a
magnitude ``r`` and the grid covers ``[-r, r]``:

- ``minmax``: ``r = max |x|`` over every element of every calibration image (= the larger of
  ``-min`` and ``max``);
- ``percentile``: the nearest-rank percentile of ``|x|``: with ``M`` values sorted ascending,
  ``r`` is the value at rank ``ceil(p / 100 * M)`` (1-based), so ``p = 100`` is ``minmax``.
  Computed exactly by keeping the ``M - rank + 1`` largest values seen so far (``M`` is known
  from the first batch's per-image size times the set size), not by a histogram.

An integer program adds residual operands as integers, which needs one scale on both sides
(:func:`climbq_deploy.ir.capture.capture` refuses otherwise). :func:`residual_groups` lists
the quantizers that must share a scale; :func:`tie_ranges` gives each group the largest of its
members' ranges (no member clips more than it did alone; the smaller ones lose resolution).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor, nn

from climbq_deploy.errors import ConfigError, DataError
from climbq_deploy.models.mobilenetv2 import CifarMobileNetV2
from climbq_deploy.quant.layers import ActQuant

RANGE_RULES = ("minmax", "percentile")
DEFAULT_PERCENTILE = 99.99


@dataclass(frozen=True)
class RangeRule:
    """How a range is read off the observed values: ``minmax`` or ``percentile`` at ``p``."""

    name: str = "minmax"
    percentile: float = DEFAULT_PERCENTILE

    def __post_init__(self) -> None:
        if self.name not in RANGE_RULES:
            raise ConfigError(f"range rule must be one of {RANGE_RULES}, got {self.name!r}")
        if not 0 < self.percentile <= 100:
            raise ConfigError(f"percentile must be in (0, 100], got {self.percentile}")

    def label(self) -> str:
        return self.name if self.name == "minmax" else f"percentile {self.percentile:g}"


def nearest_rank(p: float, count: int) -> int:
    """The 1-based rank ``ceil(p / 100 * count)`` (at least 1) of the nearest-rank percentile,
    exact: ``p`` is read as the decimal it prints as (99.99 is 9999/100, not its float)."""
    return max(1, math.ceil(Fraction(repr(float(p))) * count / 100))


class _Observer:
    """Running statistic of ``|x|`` for one quantizer slot over ``images`` images."""

    def __init__(self, rule: RangeRule, images: int, name: str = "") -> None:
        self.rule, self.images, self.name = rule, images, name
        self.top: Tensor | None = None  # the k largest |x| so far (percentile)
        self.peak = 0.0
        self.k = 0
        self.seen = 0

    def update(self, x: Tensor) -> None:
        magnitude = x.detach().abs().flatten().float()
        if not bool(torch.isfinite(magnitude).all()):
            bad = int((~torch.isfinite(magnitude)).sum())
            raise DataError(
                f"{bad} non-finite value(s) enter activation quantizer {self.name!r} "
                "while observing ranges (overflowing or NaN weights?)"
            )
        self.seen += x.shape[0]
        self.peak = max(self.peak, float(magnitude.max()))
        if self.rule.name == "minmax":
            return
        if self.top is None:
            total = self.images * (magnitude.numel() // x.shape[0])
            self.k = total - nearest_rank(self.rule.percentile, total) + 1
            self.top = magnitude.new_empty(0)
        pool = torch.cat([self.top, magnitude])
        self.top = torch.topk(pool, min(self.k, pool.numel()), sorted=False).values

    def value(self) -> float:
        if self.seen != self.images:
            raise DataError(f"observed {self.seen} images, expected {self.images}")
        if self.rule.name == "minmax" or self.top is None:
            return self.peak
        return float(self.top.min())


def observe_ranges(
    model: nn.Module, batches: Iterable[Tensor], images: int, rule: RangeRule
) -> dict[str, float]:
    """``r`` of every activation quantizer slot of ``model`` (by module name), in eval mode.

    ``batches`` yields normalised NCHW float tensors, ``images`` of them in all.
    """
    slots = {name: m for name, m in model.named_modules() if isinstance(m, ActQuant)}
    if not slots:
        raise ConfigError(f"{type(model).__name__} has no activation quantizer slots")
    observers = {name: _Observer(rule, images, name) for name in slots}
    handles = [
        module.register_forward_pre_hook(lambda _m, args, n=name: observers[n].update(args[0]))
        for name, module in slots.items()
    ]
    model.eval()
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for handle in handles:
            handle.remove()
    return {name: obs.value() for name, obs in observers.items()}


def residual_groups(
    model: nn.Module, image_shape: tuple[int, int, int] | None = None
) -> list[list[str]]:
    """Names of the activation quantizers whose outputs meet in an integer residual add or a
    concatenation (and so must share one step), read off the model's traced graph: the same
    graph :func:`climbq_deploy.ir.capture.capture` lowers, so any model it lowers is covered
    (``image_shape``, H x W x C, lets torch.export trace what torch.fx cannot).

    Every tensor carries the set of quantizers whose codes it holds unchanged: a quantizer's
    output holds its own; ReLU, max pooling, flatten and the like hold their input's; a conv,
    BatchNorm or Linear holds none (a new scale). An add or a concat puts the sets of all its
    operands into one group (groups that share a member merge). Groups list members in the
    order the graph first reaches them; groups of one are left out.

    ResNet: the stem's ``act1`` and the ``act2`` of each identity block of stage 1 meet; each
    downsampling block starts a new group of its shortcut's quantizer and its ``act2``, joined
    by the ``act2`` of the identity blocks after it. MobileNetV2 (integer form): each
    stride-1 block's ``project`` and ``shortcut`` quantizers.
    """
    from torch import fx

    from climbq_deploy.ir.capture import trace

    if isinstance(model, CifarMobileNetV2) and model.faithful:
        raise ConfigError("the authors' MobileNetV2 (--faithful-mbv2) has no integer form")
    gm = trace(model.eval(), image_shape)
    modules = dict(gm.named_modules())
    holds: dict[fx.Node, list[str]] = {}
    parent: dict[str, str] = {}
    order: list[str] = []

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    def operands(node: fx.Node) -> list[str]:
        names: list[str] = []
        for arg in node.all_input_nodes:
            names += [n for n in holds.get(arg, []) if n not in names]
        return names

    for node in gm.graph.nodes:
        module = modules.get(str(node.target)) if node.op == "call_module" else None
        quantizer = None
        if isinstance(module, ActQuant):
            quantizer = str(node.target)
        elif module is not None and isinstance(getattr(module, "act", None), ActQuant):
            quantizer = f"{node.target}.act"
        if quantizer is not None:
            holds[node] = [quantizer]
            parent.setdefault(quantizer, quantizer)
            order.append(quantizer)
        elif isinstance(module, nn.Conv2d | nn.BatchNorm2d | nn.Linear):
            holds[node] = []
        else:
            holds[node] = operands(node)
            is_join = node.op == "call_function" and node.target in (
                operator.add,
                torch.add,
                torch.cat,
                torch.concat,
            )
            if is_join or (node.op == "call_method" and node.target == "add"):
                members = holds[node]
                for name in members[1:]:
                    parent[root(name)] = root(members[0])
    groups: dict[str, list[str]] = {}
    for name in order:
        groups.setdefault(root(name), []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def tie_ranges(ranges: dict[str, float], groups: list[list[str]]) -> dict[str, float]:
    """``ranges`` with every member of a group set to the group's largest range."""
    tied = dict(ranges)
    for group in groups:
        missing = [name for name in group if name not in ranges]
        if missing:
            raise ConfigError(f"residual group {group}: no observed range for {missing}")
        peak = max(ranges[name] for name in group)
        tied.update(dict.fromkeys(group, peak))
    return tied
