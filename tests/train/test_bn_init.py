"""rescale_batchnorm and the --init-bn-gamma option."""

from __future__ import annotations

import pytest
import torch

from climbq_deploy.errors import ConfigError
from climbq_deploy.models import build_model
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.train.bn_init import rescale_batchnorm
from climbq_deploy.train.config import TrainConfig


def test_every_gamma_gets_the_target_magnitude_and_beta_keeps_its_ratio() -> None:
    model = build_model("resnet20", 10, QuantSpec("climbq+", 2, 2))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    g = torch.Generator().manual_seed(0)
    for bn in bns:
        bn.weight.data = torch.randn(bn.num_features, generator=g) * 0.3
        bn.bias.data = torch.randn(bn.num_features, generator=g) * 0.1
    bns[0].weight.data[0] = 0.0  # a dead channel stays as it is
    before = [(bn.weight.clone(), bn.bias.clone()) for bn in bns]
    assert rescale_batchnorm(model, 2.0) == len(bns) == 21
    for bn, (g0, b0) in zip(bns, before, strict=True):
        alive = g0 != 0
        torch.testing.assert_close(bn.weight.abs()[alive], torch.full_like(g0[alive], 2.0))
        torch.testing.assert_close(torch.sign(bn.weight), torch.sign(g0))
        torch.testing.assert_close(bn.bias[alive] / bn.weight[alive], b0[alive] / g0[alive])
    assert bns[0].weight[0] == 0 and bns[0].bias[0] == before[0][1][0]


def test_option_needs_init_and_a_positive_value() -> None:
    with pytest.raises(ConfigError, match="give --init"):
        TrainConfig("data", init_bn_gamma=2.0)
    with pytest.raises(ConfigError, match="finite number > 0"):
        TrainConfig("data", init="fp", init_bn_gamma=0.0)
    assert TrainConfig("data", init="fp", init_bn_gamma=2.0).init_bn_gamma == 2.0
