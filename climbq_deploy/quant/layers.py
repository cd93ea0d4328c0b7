"""Quantized layers: a conv whose weights pass through a weight quantizer, and an activation
quantizer slot that reads the per-sample sigma of class scaling from a shared context.

Two fused forms carry an activation quantizer as a child named ``act``, so that
:func:`climbq_deploy.quantize` can put a quantizer into a user's model without adding a module
name the model did not have: :class:`BatchNormActQuant` (``act(bn(x))``: the paper's placement,
after the BatchNorm and before the ReLU) and :class:`QConv2dAct` (``act(conv(x))``: a conv that
no BatchNorm follows). Every class here is a leaf for ``torch.fx`` tracing in the capture pass;
none of their ``forward`` methods branch on data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from climbq_deploy.distributed import GlobalBatchNorm2d
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


class QConv2dAct(QConv2d):
    """A :class:`QConv2d` followed by its own activation quantizer: ``act(conv(x))``.

    What :func:`climbq_deploy.quantize` makes of a user's ``nn.Conv2d`` whose output does not go
    straight into a BatchNorm (a conv with a bias and no BN, or one whose output is used twice):
    the quantizer then sits on the conv's output, under the conv's own name (state-dict keys
    ``<name>.weight``, ``<name>.bias``, ``<name>.act.quantizer.*``).
    """

    def __init__(self, *args: Any, act: ActQuant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        return self.act(super().forward(x))


class BatchNormActQuant(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` followed by an activation quantizer: ``act(bn(x))``.

    ClimbQ quantizes the BatchNorm output, before the ReLU (§3: the quantizer reads
    ``Phi(y / sigma)`` of a roughly ``N(0, sigma^2)`` BN output). Swapping the user's BatchNorm
    for this subclass puts the quantizer there while keeping the user's module name and every
    BatchNorm state-dict key (``<name>.weight``, ``.bias``, ``.running_mean``, ``.running_var``,
    ``.num_batches_tracked``), plus ``<name>.act.quantizer.*``. It is still an
    ``nn.BatchNorm2d``: BatchNorm rescaling (``--init-bn-gamma``) and checks by type see it.

    Under ``torchrun`` :func:`climbq_deploy.distributed.use_global_batchnorm` swaps it for
    :attr:`global_batchnorm` (:class:`GlobalBatchNormActQuant`: the same, with the statistics
    of the global batch).
    """

    global_batchnorm: ClassVar[type[nn.BatchNorm2d] | None] = None  # set below

    def __init__(self, *args: Any, act: ActQuant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        return self.act(super().forward(x))


class GlobalBatchNormActQuant(BatchNormActQuant, GlobalBatchNorm2d):
    """:class:`BatchNormActQuant` whose training statistics are the global batch's
    (:class:`~climbq_deploy.distributed.GlobalBatchNorm2d`); data-parallel training only."""


BatchNormActQuant.global_batchnorm = GlobalBatchNormActQuant


def quantized_convs(model: nn.Module) -> list[tuple[str, QConv2d]]:
    """Every QConv2d of a model with its qualified name, in definition order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QConv2d)]


__all__ = [
    "ActQuant",
    "BatchNormActQuant",
    "GlobalBatchNormActQuant",
    "QConv2d",
    "QConv2dAct",
    "QuantContext",
    "quantized_convs",
]
