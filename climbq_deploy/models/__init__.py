"""Models: the authors' CIFAR ResNet-20/32/56 and MobileNetV2, with any quantizer and bit width;
and a user's own CNN (``arch="custom"``, ``model="FILE.py:FACTORY"``), quantized by
:func:`climbq_deploy.quantize` into a :class:`QuantizedModel`."""

from __future__ import annotations

from climbq_deploy.errors import ConfigError
from climbq_deploy.models.common import QuantModel, QuantSpec
from climbq_deploy.models.mobilenetv2 import CifarMobileNetV2
from climbq_deploy.models.quantized import QuantizedModel
from climbq_deploy.models.resnet import CifarResNet
from climbq_deploy.models.user import USER_ARCH, ModelSource, build_user_model

ARCHS = ("resnet20", "resnet32", "resnet56", "mobilenetv2")


def build_model(
    arch: str,
    num_classes: int,
    spec: QuantSpec | None = None,
    faithful_mbv2: bool = False,
    model: str | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> QuantModel:
    """A model by name; ``spec`` defaults to full precision. ``arch="custom"`` with ``model``
    (``FILE.py:FACTORY`` or ``package.module:FACTORY``): the user's model, quantized
    (``image_shape``, H x W x C of the data, lets torch.export trace what torch.fx cannot)."""
    spec = spec or QuantSpec()
    if arch == USER_ARCH or model is not None:
        if arch != USER_ARCH or model is None:
            raise ConfigError(
                f"arch {USER_ARCH!r} and a model factory go together (arch {arch!r}, model "
                f"{model!r}); a run of a user model records both"
            )
        if faithful_mbv2:
            raise ConfigError("--faithful-mbv2 applies to mobilenetv2 only")
        return build_user_model(model, num_classes, spec, image_shape)
    if arch in ("resnet20", "resnet32", "resnet56"):
        if faithful_mbv2:
            raise ConfigError("--faithful-mbv2 applies to mobilenetv2 only")
        return CifarResNet(int(arch.removeprefix("resnet")), num_classes, spec)
    if arch == "mobilenetv2":
        return CifarMobileNetV2(num_classes, spec, faithful=faithful_mbv2)
    raise ConfigError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")


__all__ = [
    "ARCHS",
    "USER_ARCH",
    "CifarMobileNetV2",
    "CifarResNet",
    "ModelSource",
    "QuantModel",
    "QuantSpec",
    "QuantizedModel",
    "build_model",
    "build_user_model",
]
