"""Quantized layers: a conv whose weights pass through a weight quantizer, and an activation
quantizer slot that reads the per-sample sigma of class scaling from a shared context."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from climbq_deploy.quant.quantizers import (
    INFERENCE_SIGMA,
    ActivationQuantizer,
    WeightQuantizer,
)


@dataclass
class QuantContext:
    """State shared by a model's activation quantizers for one forward pass.

    ``sigma`` is ``INFERENCE_SIGMA`` (2.0) except while training with class scaling, when the
    model sets it to a ``B x 1 x 1 x 1`` tensor of ``2 - p_i`` before the forward.
    """

    sigma: float | Tensor = INFERENCE_SIGMA


class QConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weights are quantized on the fly (full precision if no quantizer)."""

    def __init__(self, *args, weight_quantizer: WeightQuantizer | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.weight_quantizer = weight_quantizer

    def quantized_weight(self) -> Tensor:
        if self.weight_quantizer is None:
            return self.weight
        return self.weight_quantizer(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(
            x,
            self.quantized_weight(),
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )


class ActQuant(nn.Module):
    """Activation quantizer slot (identity when ``quantizer`` is None)."""

    def __init__(self, quantizer: ActivationQuantizer | None, context: QuantContext) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.context = context

    def forward(self, x: Tensor) -> Tensor:
        if self.quantizer is None:
            return x
        sigma = self.context.sigma if self.training else INFERENCE_SIGMA
        # Quantizers always run in float32 or wider: under bf16 autocast the conv/BN output is
        # bf16, whose 8-bit mantissa would move codes near thresholds.
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return self.quantizer(x, sigma)


def quantized_convs(model: nn.Module) -> list[tuple[str, QConv2d]]:
    """Every QConv2d of a model with its qualified name, in definition order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QConv2d)]


__all__ = ["ActQuant", "QConv2d", "QuantContext", "quantized_convs"]
