"""The authors' CIFAR ResNet-20/32/56 (method §4), every conv quantized, the first included.

stem:  conv3x3_q(3->16) -> BN -> actQ -> ReLU
block(x, stride):
    short = actQ(BN(conv1x1_q(x, stride)))   if stride != 1   else x
    h = ReLU(actQ(BN(conv3x3_q(x, stride))))
    h = actQ(BN(conv3x3_q(h)))
    out = ReLU(h + short)
3 stages of (depth - 2) / 6 blocks, widths 16/32/64, strides 1/2/2; global average pool;
full-precision Linear.
"""

from __future__ import annotations

from torch import Tensor, nn

from climbq_deploy.errors import ConfigError
from climbq_deploy.models.common import QuantModel, QuantSpec, init_weights


class BasicBlock(nn.Module):
    def __init__(self, model: QuantModel, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = (
            model.conv(cin, cout, 3, stride),
            nn.BatchNorm2d(cout),
            model.act(),
        )
        self.conv2, self.bn2, self.act2 = (
            model.conv(cout, cout, 3),
            nn.BatchNorm2d(cout),
            model.act(),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                model.conv(cin, cout, 1, stride), nn.BatchNorm2d(cout), model.act()
            )

    def forward(self, x: Tensor) -> Tensor:
        h = self.act1(self.bn1(self.conv1(x))).relu()
        h = self.act2(self.bn2(self.conv2(h)))
        return (h + self.shortcut(x)).relu()


class CifarResNet(QuantModel):
    def __init__(self, depth: int, num_classes: int, spec: QuantSpec) -> None:
        super().__init__(spec, num_classes)
        if (depth - 2) % 6 or depth < 8:
            raise ConfigError(f"CIFAR ResNet depth must be 6k + 2 (20, 32, 56, ...), got {depth}")
        blocks = (depth - 2) // 6
        self.depth = depth
        self.conv1, self.bn1, self.act1 = self.conv(3, 16, 3), nn.BatchNorm2d(16), self.act()
        layers, cin = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks):
                layers.append(BasicBlock(self, cin, width, stride if i == 0 else 1))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        init_weights(self)

    def features(self, x: Tensor) -> Tensor:
        h = self.act1(self.bn1(self.conv1(x))).relu()
        return self.pool(self.layers(h)).flatten(1)
