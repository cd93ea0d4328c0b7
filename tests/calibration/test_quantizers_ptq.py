"""The PTQ quantizers: per-channel symmetric weights, calibrated per-tensor activations."""

import numpy as np
import pytest
import torch

from climbq_deploy.errors import ConfigError
from climbq_deploy.quant import make_activation_quantizer, make_weight_quantizer
from climbq_deploy.quant.quantizers import PTQActivation, PTQWeight


def test_weights_per_channel_exact_values() -> None:
    w = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [0.3, 0.1, -0.2]]).view(3, 3, 1, 1)
    quantizer = make_weight_quantizer("ptq", 4)
    assert isinstance(quantizer, PTQWeight) and quantizer.integer_grid() == (1, -7)
    w_int, scale = quantizer.integer_weights(w)
    # channel 0: s = 1/7; 0.5*7 = 3.5 -> 4 (half to even), -7, 1.75 -> 2
    # channel 1: all zero, s = 1; channel 2: s = 0.3/7: 7, 0.1/0.3*7 = 2.33 -> 2, -4.67 -> -5
    assert w_int.view(3, 3).tolist() == [[4, -7, 2], [0, 0, 0], [7, 2, -5]]
    np.testing.assert_allclose(scale.numpy(), [1 / 7, 1.0, float(np.float32(0.3)) / 7], rtol=1e-12)
    expected = w_int.double() * scale.view(-1, 1, 1, 1)
    torch.testing.assert_close(quantizer(w), expected.float())


@pytest.mark.parametrize("bits", [4, 8])
def test_weights_lie_on_the_symmetric_grid(bits: int) -> None:
    torch.manual_seed(bits)
    w = torch.randn(8, 4, 3, 3) * torch.rand(8, 1, 1, 1)
    w_int, scale = PTQWeight(bits).integer_weights(w)
    q = 2 ** (bits - 1) - 1
    assert w_int.abs().max() == q  # each channel's largest weight lands on +-Q
    assert (w_int.flatten(1).abs().amax(1) == q).all()
    err = (w.double() - w_int * scale.view(-1, 1, 1, 1)).abs()
    assert (err <= scale.view(-1, 1, 1, 1) / 2 + 1e-12).all()


def test_activation_needs_a_calibrated_range() -> None:
    quantizer = make_activation_quantizer("ptq", 4)
    assert isinstance(quantizer, PTQActivation)
    with pytest.raises(ConfigError, match="no calibrated range"):
        quantizer(torch.zeros(2))
    with pytest.raises(ConfigError, match="finite and > 0"):
        quantizer.set_range(0.0)
    with pytest.raises(ConfigError, match="finite and > 0"):
        quantizer.set_range(float("inf"))


def test_activation_exact_codes_and_grid() -> None:
    quantizer = PTQActivation(4)
    quantizer.set_range(2.1)  # Q = 7, s = 0.3
    x = torch.tensor([-5.0, -2.1, -0.44, 0.0, 0.16, 0.44, 1.0, 2.0, 9.0], dtype=torch.float64)
    codes = torch.round(quantizer(x) / 0.3)
    assert codes.tolist() == [-7, -7, -1, 0, 1, 1, 3, 7, 7]
    grid = quantizer.grid()
    assert grid.mult == 1 and grid.offset == -7 and grid.step == pytest.approx(0.3, rel=1e-15)
    np.testing.assert_allclose(grid.thresholds, 0.3 * (np.arange(-7, 7) + 0.5), rtol=1e-15)
    counted = (x.numpy()[:, None] >= grid.thresholds[None, :]).sum(1) * grid.mult + grid.offset
    assert counted.tolist() == codes.tolist()


def test_activation_grid_counts_match_forward_on_random_values() -> None:
    quantizer = PTQActivation(8)
    quantizer.set_range(3.7)
    x = torch.randn(10000, dtype=torch.float64) * 2
    grid = quantizer.grid()
    counted = np.searchsorted(grid.thresholds, x.numpy(), side="right") + grid.offset
    np.testing.assert_array_equal(counted, torch.round(quantizer(x) / grid.step).numpy())
