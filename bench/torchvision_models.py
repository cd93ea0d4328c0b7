"""torchvision's ResNet-18 and MobileNetV2 as a user's own float CNNs (``weights=None``: nothing
is downloaded), for ``climbq train --model bench/torchvision_models.py:resnet18``."""

from __future__ import annotations

from torch import nn

from climbq_deploy.models.torchvision_compat import import_torchvision


def resnet18(num_classes: int = 10) -> nn.Module:
    return import_torchvision().models.resnet18(num_classes=num_classes, weights=None)


def mobilenet_v2(num_classes: int = 10) -> nn.Module:
    return import_torchvision().models.mobilenet_v2(num_classes=num_classes, weights=None)
