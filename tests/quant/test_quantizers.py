import numpy as np
import pytest
import torch
from scipy.stats import norm

from climbq_deploy.errors import ConfigError
from climbq_deploy.quant import (
    activation_codes,
    class_scaled_sigma,
    make_activation_quantizer,
    make_weight_quantizer,
    weight_codes,
    weight_rounding_error,
)
from climbq_deploy.quant.functional import climbq_activation, climbq_weight_unit, normal_cdf


def scipy_codes(values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """round-half-even(n * u) from scipy's CDF, and a mask of entries not near a .5 tie."""
    scaled = n * values
    away_from_tie = np.abs(scaled - np.floor(scaled) - 0.5) > 1e-9
    return np.round(scaled).astype(np.int64), away_from_tie


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("seed", [0, 1])
def test_weight_codes_equal_scipy(bits: int, seed: int) -> None:
    w = np.random.default_rng(seed).normal(0.01, 0.2, size=(16, 8, 3, 3))
    n = 2**bits - 1
    u = norm.cdf((w - w.mean()) / w.std(ddof=1))
    expected, ok = scipy_codes(u, n)
    got = weight_codes(torch.from_numpy(w).float(), bits).numpy()
    got64 = weight_codes(torch.from_numpy(w), bits).numpy()
    assert got.dtype == np.int64 and got.min() >= 0 and got.max() <= n
    np.testing.assert_array_equal(got64[ok], expected[ok])
    # float32 input: the same float64 math on the float32 values
    w32 = w.astype(np.float32).astype(np.float64)
    e32, ok32 = scipy_codes(norm.cdf((w32 - w32.mean()) / w32.std(ddof=1)), n)
    np.testing.assert_array_equal(got[ok32], e32[ok32])


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_activation_codes_equal_scipy(bits: int) -> None:
    rng = np.random.default_rng(bits)
    x = rng.normal(0, 1.5, size=(4, 8, 5, 5))
    sigma = rng.uniform(1.98, 2.0, size=(4, 1, 1, 1))
    n = 2**bits - 1
    for s in (2.0, sigma):
        expected, ok = scipy_codes(norm.cdf(x / s), n)
        s_arg = s if isinstance(s, float) else torch.from_numpy(s)
        got = activation_codes(torch.from_numpy(x), bits, s_arg).numpy()
        np.testing.assert_array_equal(got[ok], expected[ok])
        assert ok.mean() > 0.99


def test_codes_cover_the_grid_ends() -> None:
    w = torch.linspace(-10, 10, 1001, dtype=torch.float64)
    codes = weight_codes(w, 2)
    assert codes.min() == 0 and codes.max() == 3
    assert set(codes.tolist()) == {0, 1, 2, 3}


def test_straight_through_on_round_only() -> None:
    w = torch.randn(32, 16, 3, 3, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn_like(w)
    (climbq_weight_unit(w, 4) * upstream).sum().backward()
    ste_grad = w.grad.clone()
    w.grad = None
    smooth = 2.0 * normal_cdf((w - w.mean()) / w.std()) - 1.0  # same map without the round
    (smooth * upstream).sum().backward()
    torch.testing.assert_close(ste_grad, w.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_fused_activation_equals_the_unfused_formula(bits: int) -> None:
    """Values equal (2 round(n Phi(x/sigma)) - n) R/n exactly; the gradient is the pdf slope."""
    n = 2**bits - 1
    x = (3 * torch.randn(6, 4, 5, 5, dtype=torch.float64)).requires_grad_()
    sigma = 2 - torch.rand(6, 1, 1, 1, dtype=torch.float64) / 50
    upstream = torch.randn(6, 4, 5, 5, dtype=torch.float64)
    for s in (2.0, sigma):
        x.grad = None
        out = climbq_activation(x, bits, s, 2.0)
        (out * upstream).sum().backward()
        u = x.detach() / s
        expected = (2 * torch.round(n * normal_cdf(u)) - n) * (2.0 / n)
        assert torch.equal(out.detach(), expected)
        slope = 2 * 2.0 * torch.exp(-u.square() / 2) / np.sqrt(2 * np.pi) / s
        torch.testing.assert_close(x.grad, upstream * slope, rtol=1e-12, atol=1e-12)


def test_fused_activation_leaves_its_input_unchanged() -> None:
    x = torch.randn(2, 3, 4, 4)
    before = x.clone()
    climbq_activation(x, 4, 2.0)
    assert torch.equal(x, before)


@pytest.mark.parametrize("method", ["climbq", "uniform", "lsq"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_integer_weights_reproduce_the_forward(method: str, bits: int) -> None:
    quantizer = make_weight_quantizer(method, bits)
    w = torch.randn(8, 4, 3, 3) * 0.1
    w_hat = quantizer(w)  # LSQ initialises its step here
    w_int, scale = quantizer.integer_weights(w)
    torch.testing.assert_close(w_int.float() * scale, w_hat, rtol=0, atol=1e-6)
    if method != "lsq":
        n = 2**bits - 1
        assert set(torch.unique(w_int).tolist()) <= set(range(-n, n + 1, 2))  # odd grid


@pytest.mark.parametrize("method", ["climbq", "uniform", "lsq"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_activation_grid_counts_thresholds_to_the_forward(method: str, bits: int) -> None:
    quantizer = make_activation_quantizer(method, bits).eval()
    x = torch.randn(4000, dtype=torch.float64) * 1.7
    if method == "lsq":
        quantizer.train()(x.float())  # initialise the learned step
        quantizer.eval()
    x_hat = quantizer(x).detach().numpy()
    grid = quantizer.grid()
    assert np.all(np.diff(grid.thresholds) > 0)
    j = (x.numpy()[:, None] >= grid.thresholds[None, :]).sum(axis=1)
    x_int = grid.mult * j + grid.offset
    np.testing.assert_allclose(x_int * grid.step, x_hat, rtol=0, atol=1e-5)


def test_class_scaled_sigma_by_hand() -> None:
    # counts (2, 1): sum of squares 5, so p = (2/5, 2/5, 1/5)
    sigma = class_scaled_sigma(torch.tensor([0, 0, 1]), num_classes=3)
    torch.testing.assert_close(sigma, torch.tensor([1.6, 1.6, 1.8]))


def test_fp32_and_32_bits_mean_no_quantizer() -> None:
    assert make_weight_quantizer("fp32", 4) is None
    assert make_activation_quantizer("climbq", 32) is None


@pytest.mark.parametrize("bits", [1, 9, 16, 0, True])
def test_bad_bits(bits) -> None:
    with pytest.raises(ConfigError, match="bits"):
        make_weight_quantizer("climbq", bits)


def test_bad_method_and_degenerate_weights() -> None:
    with pytest.raises(ConfigError, match="unknown method"):
        make_weight_quantizer("binary", 4)
    with pytest.raises(ConfigError, match="positive finite std"):
        weight_codes(torch.zeros(3, 3), 4)


@pytest.mark.parametrize("bits", [2, 4])
def test_weight_rounding_error_is_the_residual_of_the_codes(bits: int) -> None:
    w = np.random.default_rng(7).normal(-0.02, 0.1, size=(8, 4, 3, 3))
    n = 2**bits - 1
    scaled = n * norm.cdf((w - w.mean()) / w.std(ddof=1))
    got = weight_rounding_error(torch.from_numpy(w), bits).numpy()
    np.testing.assert_allclose(got, scaled - np.round(scaled), rtol=0, atol=1e-12)
    assert np.abs(got).max() <= 0.5
    codes = weight_codes(torch.from_numpy(w), bits).numpy()
    np.testing.assert_allclose(
        n * norm.cdf((w - w.mean()) / w.std(ddof=1)) - codes, got, rtol=0, atol=1e-12
    )
    # two weights: z = -/+ 1/sqrt(2), n Phi(z) = 3 * 0.23975 = 0.71925 -> residual -0.28075
    pair = weight_rounding_error(torch.tensor([-1.0, 1.0], dtype=torch.float64), 2)
    expected = 3 * norm.cdf(-1 / np.sqrt(2)) - 1
    assert pair.tolist() == pytest.approx([expected, -expected], abs=1e-12)
    with pytest.raises(ConfigError, match="32 bits"):
        weight_rounding_error(torch.ones(3), 32)


def test_unrounded_maps_are_the_quantizers_before_their_rounding() -> None:
    from climbq_deploy.quant.functional import (
        activation_codes,
        climbq_activation_unrounded,
        climbq_weight_unrounded,
    )

    x = torch.linspace(-6.0, 6.0, 241, dtype=torch.float64)
    soft = climbq_activation_unrounded(x, 2.0, 2.0)
    expected = 2.0 * (2.0 * norm.cdf(x.numpy() / 2.0) - 1.0)  # R (2 Phi(x / sigma) - 1)
    np.testing.assert_allclose(soft.numpy(), expected, rtol=0, atol=1e-15)
    for bits in (2, 4):
        n = 2**bits - 1
        codes = torch.round(n * (soft / 2.0 + 1.0) / 2.0).long()  # j = round(n Phi(x / sigma))
        assert torch.equal(codes, activation_codes(x, bits, 2.0))
        dequantized = (2 * codes - n).double() * (2.0 / n)
        assert torch.allclose(dequantized, climbq_activation(x, bits, 2.0, 2.0), rtol=0, atol=1e-15)
    w = torch.randn(64, 16, 3, 3, generator=torch.Generator().manual_seed(0))
    soft_w = climbq_weight_unrounded(w)
    z = (w.double().numpy() - w.double().numpy().mean()) / w.double().numpy().std(ddof=1)
    np.testing.assert_allclose(soft_w.double().numpy(), 2.0 * norm.cdf(z) - 1.0, atol=1e-7)
    assert soft_w.dtype == w.dtype and float(soft_w.abs().max()) < 1.0
    for bits in (2, 4):
        n = 2**bits - 1
        u = (climbq_weight_unrounded(w.double()) + 1.0) / 2.0
        assert torch.equal(
            (2.0 * torch.round(n * u) / n - 1.0).float(), climbq_weight_unit(w, bits)
        )
