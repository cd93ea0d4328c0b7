"""BatchNorm re-estimation: running statistics become the calibration set's statistics."""

import pytest
import torch
from torch import nn

from climbq_deploy.calibration.batchnorm import reestimate_batchnorm
from climbq_deploy.errors import ConfigError
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.resnet import CifarResNet
from tests.conftest import randomize_batchnorm


def model_and_data(seed: int = 0) -> tuple[CifarResNet, torch.Tensor]:
    torch.manual_seed(seed)
    model = CifarResNet(8, 10, QuantSpec("climbq", 4, 4))
    randomize_batchnorm(model, seed)
    return model, torch.randn(24, 3, 12, 12)


def test_one_batch_gives_its_mean_and_unbiased_variance() -> None:
    model, x = model_and_data()
    with torch.no_grad():  # the stem BN's input does not depend on any BN statistic
        z = model.conv1(x).double()
    reestimate_batchnorm(model, [x])
    torch.testing.assert_close(
        model.bn1.running_mean.double(), z.mean((0, 2, 3)), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        model.bn1.running_var.double(), z.var((0, 2, 3), unbiased=True), rtol=1e-5, atol=1e-6
    )
    assert not model.training
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.momentum == 0.1 for m in norms)  # restored
    assert all(int(m.num_batches_tracked) == 1 for m in norms)


def test_equal_batches_average_to_the_set_mean() -> None:
    model, x = model_and_data(1)
    with torch.no_grad():
        z = model.conv1(x).double()
    count = reestimate_batchnorm(model, [x[:8], x[8:16], x[16:]])
    assert count == 3
    torch.testing.assert_close(
        model.bn1.running_mean.double(), z.mean((0, 2, 3)), rtol=1e-5, atol=1e-6
    )
    per_batch = torch.stack([z[i : i + 8].var((0, 2, 3)) for i in (0, 8, 16)]).mean(0)
    torch.testing.assert_close(model.bn1.running_var.double(), per_batch, rtol=1e-5, atol=1e-6)


def test_every_batchnorm_changes_and_the_model_runs_in_eval() -> None:
    model, x = model_and_data(2)
    before = {
        n: m.running_mean.clone() for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
    }
    reestimate_batchnorm(model, [x])
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            assert not torch.equal(m.running_mean, before[name]), name
    logits = model(x)
    assert torch.isfinite(logits).all()


def test_no_batches_is_refused() -> None:
    model, _ = model_and_data()
    with pytest.raises(ConfigError, match="no calibration batches"):
        reestimate_batchnorm(model, [])
    with pytest.raises(ConfigError, match="no BatchNorm"):
        reestimate_batchnorm(nn.Linear(2, 2), [])
