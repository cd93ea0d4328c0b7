"""Models: the authors' CIFAR ResNet-20/32/56 and MobileNetV2, with any quantizer and bit width."""

from __future__ import annotations

from climbq_deploy.errors import ConfigError
from climbq_deploy.models.common import QuantModel, QuantSpec
from climbq_deploy.models.mobilenetv2 import CifarMobileNetV2
from climbq_deploy.models.resnet import CifarResNet

ARCHS = ("resnet20", "resnet32", "resnet56", "mobilenetv2")


def build_model(
    arch: str, num_classes: int, spec: QuantSpec | None = None, faithful_mbv2: bool = False
) -> QuantModel:
    """A model by name; ``spec`` defaults to full precision."""
    spec = spec or QuantSpec()
    if arch in ("resnet20", "resnet32", "resnet56"):
        if faithful_mbv2:
            raise ConfigError("--faithful-mbv2 applies to mobilenetv2 only")
        return CifarResNet(int(arch.removeprefix("resnet")), num_classes, spec)
    if arch == "mobilenetv2":
        return CifarMobileNetV2(num_classes, spec, faithful=faithful_mbv2)
    raise ConfigError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")


__all__ = ["ARCHS", "CifarMobileNetV2", "CifarResNet", "QuantModel", "QuantSpec", "build_model"]
