"""MobileNetV2, CIFAR variant (32x32 input, stem stride 1, final 4x4 average pool), quantized.

Each conv is quantized and an activation quantizer follows each BatchNorm (§4). The authors'
version (``faithful=True``) has a conv shortcut ``conv1x1_q -> BN -> ReLU`` on every stride-1
block, left unquantized, and an unquantized block output ``h + short``: the next conv then sees
non-integer input, so it cannot be lowered to integers. The default integer-friendly version
quantizes the shortcut (``conv1x1_q -> BN -> actQ -> ReLU``) and the block output
(``actQ(h + short)``), so every tensor entering a conv is on an integer grid.
"""

from __future__ import annotations

from torch import Tensor, nn

from climbq_deploy.models.common import QuantModel, QuantSpec, init_weights

# (expansion, out channels, blocks, first stride), CIFAR strides
CONFIG = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    def __init__(
        self, model: QuantModel, cin: int, cout: int, expansion: int, stride: int, faithful: bool
    ) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand = nn.Sequential(
            model.conv(cin, hidden, 1), nn.BatchNorm2d(hidden), model.act(), nn.ReLU()
        )
        self.depthwise = nn.Sequential(
            model.conv(hidden, hidden, 3, stride, groups=hidden),
            nn.BatchNorm2d(hidden),
            model.act(),
            nn.ReLU(),
        )
        self.project = nn.Sequential(model.conv(hidden, cout, 1), nn.BatchNorm2d(cout), model.act())
        self.stride = stride
        self.shortcut: nn.Module | None = None
        self.out_act: nn.Module = nn.Identity()
        if stride == 1:
            if faithful:
                self.shortcut = nn.Sequential(
                    model.conv(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU()
                )
            else:
                self.shortcut = nn.Sequential(
                    model.conv(cin, cout, 1), nn.BatchNorm2d(cout), model.act(), nn.ReLU()
                )
                self.out_act = model.act()

    def forward(self, x: Tensor) -> Tensor:
        h = self.project(self.depthwise(self.expand(x)))
        if self.shortcut is None:
            return h
        return self.out_act(h + self.shortcut(x))


class CifarMobileNetV2(QuantModel):
    def __init__(self, num_classes: int, spec: QuantSpec, faithful: bool = False) -> None:
        super().__init__(spec, num_classes)
        self.faithful = faithful
        self.stem = nn.Sequential(self.conv(3, 32, 3), nn.BatchNorm2d(32), self.act(), nn.ReLU())
        blocks, cin = [], 32
        for expansion, cout, count, stride in CONFIG:
            for i in range(count):
                blocks.append(
                    InvertedResidual(self, cin, cout, expansion, stride if i == 0 else 1, faithful)
                )
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            self.conv(320, 1280, 1), nn.BatchNorm2d(1280), self.act(), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1280, num_classes)
        init_weights(self)

    def features(self, x: Tensor) -> Tensor:
        return self.pool(self.head(self.blocks(self.stem(x)))).flatten(1)
