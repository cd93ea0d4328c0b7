"""PTQ models lower through the same IR: per-channel weight scales enter through the BatchNorm,
tied activation ranges make residual adds exact, and the NumPy reference equals torch codes."""

import numpy as np
import pytest
import torch

from climbq_deploy.calibration.ranges import residual_groups, tie_ranges
from climbq_deploy.errors import ConfigError
from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.graph import BatchNorm, Conv, ThresholdAct
from climbq_deploy.ir.passes import lower
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.mobilenetv2 import CifarMobileNetV2
from climbq_deploy.models.resnet import CifarResNet
from climbq_deploy.quant.layers import ActQuant
from tests.conftest import MEAN, STD, codes_and_logits, randomize_batchnorm


def calibrate_randomly(model: torch.nn.Module, seed: int, tie: bool = True) -> None:
    rng = np.random.default_rng(seed)
    ranges = {
        n: float(rng.uniform(0.5, 6.0)) for n, m in model.named_modules() if isinstance(m, ActQuant)
    }
    if tie:
        ranges = tie_ranges(ranges, residual_groups(model))
    for name, module in model.named_modules():
        if isinstance(module, ActQuant):
            module.quantizer.set_range(ranges[name])


def assert_codes_match(model: torch.nn.Module, size: int, seed: int) -> None:
    graph = lower(capture(model, MEAN, STD, (size, size, 3)))
    images = np.random.default_rng(seed).integers(0, 256, (6, size, size, 3), dtype=np.uint8)
    values = ReferenceModel(graph).run(images, keep=True)
    codes, logits = codes_and_logits(model, graph, images)
    acts = [n for n in graph.nodes if isinstance(n, ThresholdAct)]
    assert len(acts) == len(codes)
    for node in acts:
        np.testing.assert_array_equal(values[node.output], codes[node.source], err_msg=node.source)
        assert node.offset == -(2 ** (node.bits - 1) - 1) and node.mult == 1
    np.testing.assert_allclose(values[graph.output], logits, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("bits", [4, 8])
def test_ptq_resnet_codes_match_exactly(bits: int) -> None:
    torch.manual_seed(bits)
    model = CifarResNet(8, 10, QuantSpec("ptq", bits, bits))
    randomize_batchnorm(model, bits)
    calibrate_randomly(model, bits)
    assert_codes_match(model, 16, bits)


def test_ptq_mobilenetv2_codes_match_exactly() -> None:
    torch.manual_seed(5)
    model = CifarMobileNetV2(10, QuantSpec("ptq", 4, 4))
    randomize_batchnorm(model, 5)
    calibrate_randomly(model, 5)
    assert_codes_match(model, 8, 5)


def test_per_channel_scales_move_into_the_batchnorm() -> None:
    torch.manual_seed(0)
    model = CifarResNet(8, 10, QuantSpec("ptq", 4, 4))
    randomize_batchnorm(model, 0)
    calibrate_randomly(model, 0)
    graph = capture(model, MEAN, STD, (16, 16, 3))
    conv, bn = graph.nodes[1], graph.nodes[2]
    assert isinstance(conv, Conv) and isinstance(bn, BatchNorm)
    w_int, scale = model.conv1.weight_quantizer.integer_weights(model.conv1.weight)
    assert conv.weight_scale == 1.0 and conv.weight_grid == (1, -7)
    np.testing.assert_array_equal(conv.weight, w_int.permute(0, 2, 3, 1).double().numpy())
    s = scale.numpy()
    np.testing.assert_allclose(bn.gamma, model.bn1.weight.double().detach().numpy() * s)
    np.testing.assert_allclose(bn.mean, model.bn1.running_mean.double().numpy() / s)


def test_untied_ranges_are_refused_at_the_residual_add() -> None:
    model = CifarResNet(8, 10, QuantSpec("ptq", 4, 4))
    calibrate_randomly(model, 3, tie=False)
    with pytest.raises(ConfigError, match="residual add"):
        capture(model, MEAN, STD, (16, 16, 3))
