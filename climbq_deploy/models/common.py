"""Pieces shared by the model definitions: quantized conv + BN + activation-quantizer units, and
the class-scaling wrapper that sets each forward's sigma."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from torch import Tensor, nn

from climbq_deploy.distributed import global_bincount
from climbq_deploy.errors import ConfigError
from climbq_deploy.quant import (
    ActQuant,
    QConv2d,
    QuantContext,
    class_scaled_sigma,
    make_activation_quantizer,
    make_weight_quantizer,
)
from climbq_deploy.quant.quantizers import INFERENCE_SIGMA, check_method

ACT_SCALING = ("faithful", "off")


@dataclass(frozen=True)
class QuantSpec:
    """Which quantizers a model uses: method (fp32, climbq, climbq+, uniform, lsq), bit widths,
    and whether ClimbQ's class scaling of sigma is on during training (§3)."""

    method: str = "fp32"
    wbits: int = 32
    abits: int = 32
    act_scaling: str = "faithful"

    def __post_init__(self) -> None:
        check_method(self.method)
        if self.act_scaling not in ACT_SCALING:
            raise ConfigError(f"act_scaling must be one of {ACT_SCALING}, got {self.act_scaling!r}")
        make_weight_quantizer(self.method, self.wbits)  # validates bits
        make_activation_quantizer(self.method, self.abits)


class QuantModel(nn.Module):
    """Base of every model: owns the QuantContext and sets sigma from labels in training.

    ``forward(x, labels=None, return_features=False)``: with class scaling on, a training forward
    given labels uses ``sigma_i = 2 - p_i`` (§3); every other forward uses sigma = 2.
    """

    def __init__(self, spec: QuantSpec, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.spec = spec
        self.num_classes = num_classes
        self.context = QuantContext()

    def conv(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> QConv2d:
        return QConv2d(
            cin,
            cout,
            kernel,
            stride=stride,
            padding=kernel // 2,
            groups=groups,
            bias=False,
            weight_quantizer=make_weight_quantizer(self.spec.method, self.spec.wbits),
        )

    def act(self) -> ActQuant:
        return ActQuant(make_activation_quantizer(self.spec.method, self.spec.abits), self.context)

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    @contextmanager
    def class_scaling(self, x: Tensor, labels: Tensor | None) -> Iterator[None]:
        """Within the block, the context's sigma is the forward's: ``2 - p_i`` per sample for
        a ClimbQ training forward given labels (class scaling on), else 2; back to 2 after."""
        scaling = (
            self.training
            and labels is not None
            and self.spec.act_scaling == "faithful"
            and self.spec.method in ("climbq", "climbq+")
        )
        if scaling:
            counts = global_bincount(labels, self.num_classes)  # global batch under DDP
            sigma = class_scaled_sigma(labels, self.num_classes, INFERENCE_SIGMA, counts)
            self.context.sigma = sigma.to(x.dtype).view(-1, 1, 1, 1)
        else:
            self.context.sigma = INFERENCE_SIGMA
        try:
            yield
        finally:
            self.context.sigma = INFERENCE_SIGMA

    def forward(
        self, x: Tensor, labels: Tensor | None = None, return_features: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        with self.class_scaling(x, labels):
            feats = self.features(x)
        logits = self.fc(feats)
        return (logits, feats) if return_features else logits


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan_out), unit BN, default Linear."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
