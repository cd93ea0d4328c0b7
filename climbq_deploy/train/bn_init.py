"""BatchNorm rescaling at the start of quantization-aware training.

ClimbQ's activation quantizer reads the BatchNorm output ``y`` through ``Phi(y / sigma)`` with
``sigma = 2``: the codes are spread evenly only when ``y`` is roughly ``N(0, sigma^2)``. A
full-precision network trained with weight decay ends with small BatchNorm scales (measured on
CIFAR-10-LT ResNet-20: output std ~0.35, ``research/results/activation_codes.md``), so at 2 bits
(thresholds ``+-1.93`` and 0) only the two middle codes are ever used: the activation is binary
and QAT collapses (top-1 ~25 %). Rescaling each channel's ``gamma`` and ``beta`` by the same
factor ``k_c = target / |gamma_c|`` sets the channel's output spread to ``target`` while keeping
``beta_c / gamma_c`` (where its mean sits relative to its spread).
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def rescale_batchnorm(model: nn.Module, target: float) -> int:
    """Set ``|gamma_c| = target`` in every BatchNorm2d, scaling ``beta_c`` by the same factor
    ``target / |gamma_c|``; channels with ``gamma_c = 0`` (constant outputs) are left alone.
    Returns the number of BatchNorm layers changed."""
    changed = 0
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and module.affine:
            gamma = module.weight
            scale = torch.where(gamma.abs() > 0, target / gamma.abs(), torch.ones_like(gamma))
            module.weight.mul_(scale)
            module.bias.mul_(scale)
            changed += 1
    return changed
