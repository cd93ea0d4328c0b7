"""A user's own float CNNs, written as a user would (plain torch.nn), for ``quantize`` and
``climbq train --model tests/models/user_cnn.py:small_cnn``; and models it must refuse."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Branches(nn.Module):
    """Two branches joined by ``torch.cat``: a conv without BatchNorm and a conv-BN pair."""

    def __init__(self, cin: int, cout: int, bias: bool) -> None:
        super().__init__()
        self.left = nn.Conv2d(cin, cout // 2, 1, bias=bias)
        self.right = nn.Conv2d(cin, cout // 2, 3, padding=1, bias=False)
        self.right_bn = nn.BatchNorm2d(cout // 2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.left(x).relu(), self.right_bn(self.right(x)).relu()], dim=1)


class SmallCNN(nn.Module):
    """conv-BN-ReLU stem, a max pool, a residual block, two concatenated branches, a strided
    conv without BatchNorm, adaptive average pooling, flatten, linear. ``bias``: the two convs
    without BatchNorm have a bias (which no integer program has a place for)."""

    def __init__(self, num_classes: int = 10, width: int = 8, bias: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        self.pool = nn.MaxPool2d(2)
        self.block = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
        )
        self.branches = Branches(width, 2 * width, bias)
        self.down = nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1, bias=bias)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(torch.relu(self.stem_bn(self.stem(x))))
        x = torch.relu(self.block(x) + x)
        x = self.branches(x)
        x = torch.relu(self.down(x))
        return self.classifier(self.flatten(self.gap(x)))


class PooledCNN(nn.Module):
    """Local average pooling as users write it: a 2x2 ``AvgPool2d`` downsampling before a
    padded 3x3 conv, an Inception-style branch ``avg_pool2d(x, 3, 1, 1)`` -> 1x1 conv beside a
    3x3 conv, another ``AvgPool2d(2)`` before a 1x1 conv, then the global pool and the head."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()

        def unit(cin: int, cout: int, k: int) -> nn.Sequential:
            conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
            return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU())

        self.stem = unit(3, width, 3)
        self.down = nn.AvgPool2d(2)
        self.body = unit(width, width, 3)
        self.pool_branch = unit(width, width // 2, 1)
        self.conv_branch = unit(width, width // 2, 3)
        self.down2 = nn.AvgPool2d(2)
        self.tail = unit(width, 2 * width, 1)
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.body(self.down(self.stem(x)))
        pooled = nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
        x = torch.cat([self.pool_branch(pooled), self.conv_branch(x)], dim=1)
        x = self.tail(self.down2(x))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def pooled_cnn(num_classes: int = 10) -> PooledCNN:
    return PooledCNN(num_classes)


def small_cnn(num_classes: int = 10) -> SmallCNN:
    return SmallCNN(num_classes)


def exportable_cnn(num_classes: int) -> SmallCNN:
    """The same CNN without conv biases: it lowers to an integer program."""
    return SmallCNN(num_classes, bias=False)


def two_class_cnn() -> SmallCNN:
    """A factory without a ``num_classes`` parameter: always 2 classes."""
    return SmallCNN(2)


def broken_factory(num_classes: int) -> nn.Module:
    raise ValueError("this factory is broken on purpose")


def not_a_module(num_classes: int) -> dict[str, int]:
    return {"num_classes": num_classes}


class Volumetric(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(1, 4, 3), nn.ReLU())
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).mean((2, 3, 4)))


class NoHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x).mean((2, 3))


class Gate(nn.Module):
    """Python control flow on a tensor value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if x.mean() > 0:
            return self.conv(x)
        return x


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.gate = Gate()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.gate(self.stem(x)).mean((2, 3)))


class Softmaxed(nn.Module):
    """Returns probabilities, not the logits of its final Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x).mean((2, 3))).softmax(1)


class Shared(nn.Module):
    """One conv applied twice (shared weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(self.conv(self.stem(x))).mean((2, 3)))


class Functional(nn.Module):
    """A conv written with torch.nn.functional: no module to swap."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.weight = nn.Parameter(torch.randn(4, 4, 1, 1))
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(nn.functional.conv2d(self.stem(x), self.weight).mean((2, 3)))


class LinearOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.mean((2, 3)))


class Upsampler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(3, 4, 2, stride=2)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.up(x).mean((2, 3)))


class ShapeBranchingCNN(nn.Module):
    """A forward that branches on the input's size, which torch.fx cannot trace (torch.export
    decides it for one input shape): large inputs are max-pooled first. The side conv has a
    bias and no BatchNorm."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        self.pool = nn.MaxPool2d(2)
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.side = nn.Conv2d(width, width, 1, bias=True)
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.stem_bn(self.stem(x)))
        if x.shape[-1] > 8:
            x = self.pool(x)
        x = torch.relu(self.body(x) + x)
        x = torch.cat([x, self.side(x).relu()], 1)
        return self.classifier(torch.flatten(x.mean((2, 3)), 1))


def shape_branching_cnn(num_classes: int) -> ShapeBranchingCNN:
    return ShapeBranchingCNN(num_classes)
