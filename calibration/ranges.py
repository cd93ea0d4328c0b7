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
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor, nn

from climbq_deploy.errors import ConfigError, DataError
from climbq_deploy.models.mobilenetv2 import CifarMobileNetV2
from climbq_deploy.models.resnet import CifarResNet
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


def residual_groups(model: nn.Module) -> list[list[str]]:
    """Names of the activation quantizers whose outputs meet in an integer residual add (and
    so must share one step), following the lowering's walk of each architecture.

    ResNet: the stem's ``act1`` and the ``act2`` of each identity block of stage 1 meet; each
    downsampling block starts a new group of its shortcut's quantizer and its ``act2``, joined
    by the ``act2`` of the identity blocks after it. MobileNetV2 (integer form): each
    stride-1 block's ``project`` and ``shortcut`` quantizers.
    """
    groups: list[list[str]] = []
    if isinstance(model, CifarResNet):
        current = ["act1"]
        groups.append(current)
        for i, block in enumerate(model.layers):
            if isinstance(block.shortcut, nn.Sequential):
                current = [f"layers.{i}.shortcut.2"]
                groups.append(current)
            current.append(f"layers.{i}.act2")
    elif isinstance(model, CifarMobileNetV2):
        if model.faithful:
            raise ConfigError("the authors' MobileNetV2 (--faithful-mbv2) has no integer form")
        for i, block in enumerate(model.blocks):
            if block.shortcut is not None:
                groups.append([f"blocks.{i}.project.2", f"blocks.{i}.shortcut.2"])
    else:
        raise ConfigError(f"no residual structure known for {type(model).__name__}")
    return groups


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
