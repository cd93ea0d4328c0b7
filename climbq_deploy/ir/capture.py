"""Capture a trained model as a float-level IR graph (before lowering).

Walks the known architectures explicitly (ResNet §4, MobileNetV2) rather than tracing, so every
node knows the torch module it came from. Weights enter the graph as the quantizer's own
integer weights times their scale (float64): the codes the exporter sees are the codes
training used. Activation quantizers enter as their :class:`ActivationGrid` at inference
(sigma = 2, no labels).

Per-output-channel weight scales ``s_o`` (post-training quantization) enter through the
BatchNorm that follows the conv: the conv carries ``W_int`` (scale 1) and
``BN(s_o z) = (gamma s_o) (z - mean / s_o) / sqrt(var + eps) + beta``, so the BatchNorm node
gets ``gamma' = gamma s_o`` and ``mean' = mean / s_o`` (float64); the folding pass is unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from climbq_deploy.errors import ConfigError
from climbq_deploy.ir.graph import (
    ActQuant,
    Add,
    BatchNorm,
    Conv,
    GlobalSumPool,
    Graph,
    InputQuant,
    Linear,
    Node,
    Relu,
    TensorSpec,
)
from climbq_deploy.models.common import QuantModel
from climbq_deploy.models.mobilenetv2 import CifarMobileNetV2, InvertedResidual
from climbq_deploy.models.resnet import CifarResNet
from climbq_deploy.quant.layers import ActQuant as TorchActQuant
from climbq_deploy.quant.layers import QConv2d

MAX_INPUT_BITS = 24
SHORT_NAMES = {
    "input_quant": "input",
    "batchnorm": "bn",
    "act_quant": "act",
    "global_sum_pool": "pool",
    "linear": "fc",
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
        self.nodes.append(cls(name=name, inputs=inputs, output=name, source=source, **attrs))
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
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    out_hw = ((h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
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
    )
    if channel_scale is not None:
        b.channel_scales[out] = channel_scale
    return out


def _bn(b: _Builder, x: str, bn: nn.BatchNorm2d, source: str) -> str:
    def arr(t: torch.Tensor) -> np.ndarray:
        return t.detach().double().numpy().copy()

    gamma, mean = arr(bn.weight), arr(bn.running_mean)
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


def _seq(b: _Builder, x: str, seq: nn.Sequential, prefix: str, relu: bool) -> str:
    conv, bn, act = seq[0], seq[1], seq[2]
    h = _act(b, _bn(b, _conv(b, x, conv, f"{prefix}.0"), bn, f"{prefix}.1"), act, f"{prefix}.2")
    return _relu(b, h, f"{prefix}.3") if relu else h


def _relu(b: _Builder, x: str, source: str) -> str:
    spec = b.tensors[x]
    return b.add(Relu, (x,), spec.shape, spec.dtype, spec.scale, source=source)


def _add(b: _Builder, x: str, y: str, source: str) -> str:
    sx, sy = b.tensors[x].scale, b.tensors[y].scale
    if sx is None or sy is None or not math.isclose(sx, sy, rel_tol=1e-12):
        raise ConfigError(
            f"residual add {source!r}: operands have scales {sx} and {sy}; an exact integer add "
            "needs equal scales (lsq learns one step per quantizer, climbq and uniform share R/n)"
        )
    return b.add(Add, (x, y), b.shape(x), "int32", sx, source=source)


def _resnet(b: _Builder, model: CifarResNet, x: str) -> str:
    h = _conv(b, x, model.conv1, "conv1")
    h = _act(b, _bn(b, h, model.bn1, "bn1"), model.act1, "act1")
    h = _relu(b, h, "act1.relu")
    for i, block in enumerate(model.layers):
        p = f"layers.{i}"
        y = _conv(b, h, block.conv1, f"{p}.conv1")
        y = _act(b, _bn(b, y, block.bn1, f"{p}.bn1"), block.act1, f"{p}.act1")
        y = _relu(b, y, f"{p}.act1.relu")
        y = _conv(b, y, block.conv2, f"{p}.conv2")
        y = _act(b, _bn(b, y, block.bn2, f"{p}.bn2"), block.act2, f"{p}.act2")
        short = h
        if isinstance(block.shortcut, nn.Sequential):
            short = _seq(b, h, block.shortcut, f"{p}.shortcut", relu=False)
        h = _relu(b, _add(b, y, short, f"{p}.add"), f"{p}.relu")
    return h


def _mobilenet(b: _Builder, model: CifarMobileNetV2, x: str) -> str:
    if model.faithful:
        raise ConfigError(
            "the authors' MobileNetV2 (--faithful-mbv2) leaves its shortcut and block output "
            "unquantized, so the next conv sees non-integer input; retrain without "
            "--faithful-mbv2 (the integer-friendly default) to export it"
        )
    h = _seq(b, x, model.stem, "stem", relu=True)
    for i, block in enumerate(model.blocks):
        if not isinstance(block, InvertedResidual):  # pragma: no cover - model invariant
            raise ConfigError(f"blocks.{i} is not an inverted residual block")
        p = f"blocks.{i}"
        y = _seq(b, h, block.expand, f"{p}.expand", relu=True)
        y = _seq(b, y, block.depthwise, f"{p}.depthwise", relu=True)
        y = _seq(b, y, block.project, f"{p}.project", relu=False)
        if block.shortcut is not None:
            short = _seq(b, h, block.shortcut, f"{p}.shortcut", relu=True)
            y = _act(b, _add(b, y, short, f"{p}.add"), block.out_act, f"{p}.out_act")
        h = y
    return _seq(b, h, model.head, "head", relu=True)


def capture(
    model: QuantModel,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    image_shape: tuple[int, int, int] = (32, 32, 3),
    meta: dict[str, Any] | None = None,
    input_bits: int = 32,
) -> Graph:
    """The float-level IR of ``model`` in eval mode, fed uint8 images normalised by mean/std."""
    channels, stats = image_shape[2], [*mean, *std]
    if not len(mean) == len(std) == channels or not all(map(math.isfinite, stats)) or min(std) <= 0:
        raise ConfigError(
            f"input normalization must be {channels} finite means and stds > 0, "
            f"got mean {tuple(mean)}, std {tuple(std)}"
        )
    model = model.eval()
    b = _Builder(image_shape)
    stem = next(m for m in model.modules() if isinstance(m, QConv2d))
    if stem.weight_quantizer is None:
        raise ConfigError(
            "the model's first conv has full-precision weights; only quantized "
            "runs lower to integers"
        )
    mult, offset = stem.weight_quantizer.integer_grid()
    n = 2**stem.weight_quantizer.bits - 1
    taps = stem.in_channels // stem.groups * stem.kernel_size[0] * stem.kernel_size[1]
    peak = max(abs(offset), abs(mult * n + offset))
    scale = input_scale(tuple(mean), tuple(std), taps, peak, input_bits)
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
    with torch.no_grad():
        if isinstance(model, CifarResNet):
            feats = _resnet(b, model, x)
        elif isinstance(model, CifarMobileNetV2):
            feats = _mobilenet(b, model, x)
        else:
            raise ConfigError(f"no integer lowering for {type(model).__name__}")
        if b.channel_scales:
            raise ConfigError(
                f"convs {sorted(b.channel_scales)} have per-channel weight scales "
                "but no BatchNorm after them to absorb the scales"
            )
        h_out, w_out, c_out = b.shape(feats)
        pool_scale = b.tensors[feats].scale / (h_out * w_out)
        pooled = b.add(GlobalSumPool, (feats,), (c_out,), "int32", pool_scale, source="pool")
        logits = b.add(
            Linear,
            (pooled,),
            (model.num_classes,),
            source="fc",
            weight=model.fc.weight.detach().numpy().copy(),
            bias=model.fc.bias.detach().numpy().copy(),
        )
    return Graph(tuple(b.nodes), b.tensors, "image", logits, dict(meta or {})).validate()
