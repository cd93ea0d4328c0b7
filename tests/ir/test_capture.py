"""The torch.fx capture: built-in models unchanged, a user CNN with a concat and a max pool
lowered exactly, and every unsupported construct refused naming the node and its module."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch import nn

from climbq_deploy.ir.capture import CaptureError, capture
from climbq_deploy.ir.passes import lower
from climbq_deploy.ir.serialize import program_bytes
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.mobilenetv2 import CifarMobileNetV2
from climbq_deploy.models.resnet import CifarResNet
from climbq_deploy.quant import ActQuant, QConv2d, QuantContext
from climbq_deploy.quant import make_activation_quantizer as act_q
from climbq_deploy.quant import make_weight_quantizer as weight_q
from tests.conftest import MEAN, STD, codes_and_logits, randomize_batchnorm

# sha256 of program_bytes(lower(capture(...))) from the hand-written walkers this capture
# replaced (commit e7db0cf), for the models and seeds below: the fx path must give the very
# same integer program, names and sources included.
WALKER_PROGRAMS = {
    ("r8", 20): "0da6fd3c26959f48142bb47cc067948707ed8fccf77d31eb2f7c60abf4f71da6",
    ("r20w2", 32): "bb885e306e51ceca3f34f70ad8834f876e6f2c6e5056c4c524d3b9fd259a1ff6",
    ("r20u", 20): "8365ca0c7f0bf69f858ba52bcd6c58b9193199b3dd93c238e640717606dcd00a",
    ("mnv2", 20): "3ffbdc50bfeb26e80d329f257c2da54cac230de67d224be86ecbdc13be9ea492",
}
BUILTINS = {
    "r8": lambda: CifarResNet(8, 10, QuantSpec("climbq+", 4, 4)),
    "r20w2": lambda: CifarResNet(20, 10, QuantSpec("climbq", 2, 2)),
    "r20u": lambda: CifarResNet(20, 10, QuantSpec("uniform", 4, 4)),
    "mnv2": lambda: CifarMobileNetV2(10, QuantSpec("climbq+", 4, 4)),
}


@pytest.mark.parametrize(("name", "bits"), sorted(WALKER_PROGRAMS))
def test_builtin_programs_are_the_walkers_byte_for_byte(name: str, bits: int) -> None:
    torch.manual_seed(0)
    model = BUILTINS[name]()
    randomize_batchnorm(model, 0)
    graph = lower(capture(model, MEAN, STD, (32, 32, 3), input_bits=bits))
    digest = hashlib.sha256(program_bytes(graph)).hexdigest()
    assert digest == WALKER_PROGRAMS[(name, bits)]


# -- a user's CNN, written with the quantized layers directly ------------------------------


def unit(ctx: QuantContext, cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    """conv (4-bit ClimbQ weights) -> BN -> activation quantizer (4-bit ClimbQ)."""
    conv = QConv2d(
        cin,
        cout,
        k,
        stride=stride,
        padding=k // 2,
        bias=False,
        weight_quantizer=weight_q("climbq", 4),
    )
    return nn.Sequential(conv, nn.BatchNorm2d(cout), ActQuant(act_q("climbq", 4), ctx))


class TwoBranchNet(nn.Module):
    """stem -> max pool -> two branches concatenated -> conv -> residual -> pool -> Linear."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        ctx = QuantContext()
        self.stem = unit(ctx, 3, 8)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.left = unit(ctx, 8, 4, 1)
        self.right = unit(ctx, 8, 4, 3)
        self.mix = unit(ctx, 8, 8)
        self.head = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.relu(self.stem(x)))
        h = torch.cat([self.left(h).relu(), self.right(h).relu()], dim=1)
        h = torch.relu(self.mix(h) + h)
        return self.fc(torch.flatten(self.head(h), 1))


def test_user_cnn_with_concat_and_max_pool_lowers_exactly() -> None:
    torch.manual_seed(3)
    model = TwoBranchNet().eval()
    randomize_batchnorm(model, 3)
    graph = capture(model, MEAN, STD, (12, 10, 3), input_bits=20)
    ops = [n.op for n in graph.nodes]
    assert ops.count("max_pool") == 1 and ops.count("concat") == 1 and ops.count("add") == 1
    cat = next(n for n in graph.nodes if n.op == "concat")
    assert cat.source == "cat" and graph.tensors[cat.output].shape == (6, 5, 8)
    program = lower(graph)
    images = np.random.default_rng(0).integers(0, 256, (4, 12, 10, 3), dtype=np.uint8)
    values = ReferenceModel(program).run(images, keep=True)
    codes, logits = codes_and_logits(model, program, images)
    acts = [n for n in program.nodes if n.op == "threshold_act"]
    assert {n.source for n in acts} == set(codes) and len(acts) == 4
    for node in acts:
        np.testing.assert_array_equal(values[node.output], codes[node.source], err_msg=node.source)
    np.testing.assert_allclose(values[program.output], logits, rtol=1e-9, atol=1e-9)


# -- refusals --------------------------------------------------------------------------------


class Base(nn.Module):
    """A quantized stem and head around ``middle`` (what each refusal test varies)."""

    def __init__(self, middle: nn.Module | None = None, width: int = 8) -> None:
        super().__init__()
        ctx = QuantContext()
        self.ctx = ctx
        self.stem = unit(ctx, 3, width)
        self.middle = middle if middle is not None else nn.Identity()
        self.fc = nn.Linear(width, 3)

    def body(self, h: torch.Tensor) -> torch.Tensor:
        return self.middle(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(torch.relu(self.stem(x)))
        return self.fc(h.mean((2, 3)))


class Sigmoid(Base):
    def body(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(h)


class SpatialCat(Base):
    def body(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([h, h], dim=2)


class DataDependent(Base):
    def body(self, h: torch.Tensor) -> torch.Tensor:
        return h if h.sum() > 0 else -h


class TwoOutputs(Base):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        h = torch.relu(self.stem(x))
        return self.fc(h.mean((2, 3))), h


REFUSALS = {
    "sigmoid": (Sigmoid(), r"node 'sigmoid' \(function sigmoid in the model's forward\)"),
    "conv3d": (Base(nn.Conv3d(8, 8, 1)), r"node 'middle' \(module 'middle', Conv3d\)"),
    "layernorm": (Base(nn.LayerNorm([6, 6])), r"node 'middle' \(module 'middle', LayerNorm\)"),
    "float conv": (
        Base(nn.Conv2d(8, 8, 3)),
        r"module 'middle', Conv2d\): a Conv2d that is not quant",
    ),
    "local avg pool read by no conv": (
        Base(nn.AvgPool2d(2)),
        r"node 'mean' \(method .mean\(\) .*\): reads the local average pool 'middle'",
    ),
    "spatial cat": (SpatialCat(), r"node 'cat' \(function cat in the model's forward\): .*dim 2"),
    "relu cap below the codes": (
        Base(nn.Hardtanh(0.0, 1.0)),
        r"module 'middle', Hardtanh\): min\(x, 1\)",
    ),
    "float input to relu": (Base(nn.Sequential(nn.BatchNorm2d(8), nn.ReLU())), r"middle.0"),
    "control flow": (DataDependent(), r"torch.fx cannot trace DataDependent"),
    "two outputs": (TwoOutputs(), r"output must be its final Linear head's logits"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_unsupported_nodes_are_refused_naming_the_node(case: str) -> None:
    model, pattern = REFUSALS[case]
    with pytest.raises(CaptureError, match=pattern):
        capture(model.eval(), MEAN, STD, (6, 6, 3))


def test_an_op_with_no_rule_lists_what_is_supported() -> None:
    with pytest.raises(CaptureError, match=r"Supported: Conv2d \(quantized"):
        capture(Sigmoid().eval(), MEAN, STD, (6, 6, 3))
