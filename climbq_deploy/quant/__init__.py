"""Quantizers: ClimbQ (Gaussian-CDF projection, §2-§3) and the uniform / LSQ baselines."""

from climbq_deploy.quant.functional import (
    activation_codes,
    class_scaled_sigma,
    normal_cdf,
    round_ste,
    weight_codes,
    weight_rounding_error,
)
from climbq_deploy.quant.layers import (
    ActQuant,
    BatchNormActQuant,
    QConv2d,
    QConv2dAct,
    QuantContext,
    quantized_convs,
)
from climbq_deploy.quant.quantizers import (
    METHODS,
    ActivationGrid,
    make_activation_quantizer,
    make_weight_quantizer,
)

__all__ = [
    "METHODS",
    "ActQuant",
    "ActivationGrid",
    "BatchNormActQuant",
    "QConv2d",
    "QConv2dAct",
    "QuantContext",
    "activation_codes",
    "class_scaled_sigma",
    "make_activation_quantizer",
    "make_weight_quantizer",
    "normal_cdf",
    "quantized_convs",
    "round_ste",
    "weight_codes",
    "weight_rounding_error",
]
