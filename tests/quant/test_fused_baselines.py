"""The fused uniform and LSQ quantizers against autograd through their unfused expressions:
values and both gradients bit-identical (torch.equal), including the clip ends, round ties and
values outside the range."""

import pytest
import torch

from climbq_deploy.quant.functional import (
    lsq_quantize,
    lsq_quantize_reference,
    uniform_activation,
    uniform_activation_reference,
)


def awkward_values(
    shape: tuple[int, ...], scale: float, ends: list[float], seed: int
) -> torch.Tensor:
    """Normal values with exact clip ends, their neighbours and zeros planted among them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * scale
    flat = x.view(-1)
    planted = torch.tensor([*ends, 0.0, -0.0], dtype=x.dtype)
    planted = torch.cat(
        [planted, torch.nextafter(planted, planted + 1), torch.nextafter(planted, planted - 1)]
    )
    flat[: planted.numel()] = planted
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_activation_matches_autograd_bit_for_bit(bits: int, dtype: torch.dtype) -> None:
    n, r = 2**bits - 1, 2.0
    ties = [-r + 2 * r * (k + 0.5) / n for k in range(n)]  # x whose n (x + R) / 2R is k + 1/2
    x = awkward_values((8, 6, 7, 7), 1.6, [-r, r, *ties], bits).to(dtype)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=dtype)
    results = []
    for fn in (uniform_activation, uniform_activation_reference):
        leaf = x.clone().requires_grad_(True)
        out = fn(leaf, bits, r)
        (out * upstream).sum().backward()
        results.append((out.detach(), leaf.grad))
    (fused, fused_grad), (ref, ref_grad) = results
    assert torch.equal(fused, ref)
    assert torch.equal(fused_grad, ref_grad)
    # spot-check the meaning, not just the agreement: gradient 1 on [-R, R], 0 outside
    assert torch.equal(fused_grad != 0, (x.abs() <= r) & (upstream != 0))
    assert fused.abs().max() <= r and torch.equal(fused[x >= r], torch.full_like(fused[x >= r], r))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("shape", [(8, 6, 7, 7), (16, 8, 3, 3), (12, 10)])
def test_lsq_matches_autograd_bit_for_bit(bits: int, shape: tuple[int, ...]) -> None:
    q_n, q_p = 2 ** (bits - 1), 2 ** (bits - 1) - 1
    step = 0.37
    ends = [-q_n * step, q_p * step, 0.5 * step, 1.5 * step, -2.5 * step]
    v = awkward_values(shape, 3 * step * q_p + 0.1, ends, bits)
    upstream = torch.randn(v.shape, generator=torch.Generator().manual_seed(7))
    results = []
    for fn in (lsq_quantize, lsq_quantize_reference):
        leaf_v = v.clone().requires_grad_(True)
        leaf_s = torch.tensor(step, requires_grad=True)
        scaled = leaf_s * 0.5 + leaf_s * 0.5  # s reaches the quantizer as a non-leaf, as in _LSQ
        out = fn(leaf_v, scaled, q_n, q_p)
        (out * upstream).sum().backward()
        results.append((out.detach(), leaf_v.grad, leaf_s.grad))
    (fused, fused_dv, fused_ds), (ref, ref_dv, ref_ds) = results
    assert torch.equal(fused, ref)
    assert torch.equal(fused_dv, ref_dv)
    assert torch.equal(fused_ds, ref_ds)
    assert fused_ds != 0


def test_fused_quantizers_leave_their_input_unchanged() -> None:
    x = torch.randn(2, 3, 4, 4) * 3
    before = x.clone()
    uniform_activation(x, 2)
    lsq_quantize(x, torch.tensor(0.5), 2, 1)
    assert torch.equal(x, before)
