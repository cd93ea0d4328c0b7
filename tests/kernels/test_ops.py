"""Each kernel against an independent computation: torch float64 convolution, a plain
broadcast count, Python integers."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from climbq_deploy.errors import KernelError
from climbq_deploy.kernels import ops


@st.composite
def conv_case(draw):
    """A random conv: dense, depthwise (multiplier 1 or 2) or grouped (2 or 4 groups), kernel
    1, 2 or 3, stride 1-3, dilation 1-3, padding 0 up to the dilated kernel's reach."""
    groups_kind = draw(st.sampled_from(["dense", "depthwise", "multiplier", "grouped"]))
    kernel = draw(st.sampled_from([1, 2, 3]))
    stride = draw(st.sampled_from([1, 2, 3]))
    dilation = draw(st.sampled_from([1, 2, 3]))
    reach = dilation * (kernel - 1)  # the dilated kernel spans reach + 1 positions
    padding = draw(st.integers(0, reach))
    size = draw(st.integers(max(1, reach + 1 - 2 * padding), 9))
    if groups_kind in ("depthwise", "multiplier"):
        cin = draw(st.integers(1, 6))
        groups = cin
        cout = cin * (2 if groups_kind == "multiplier" else 1)
    elif groups_kind == "grouped":
        groups = draw(st.sampled_from([2, 4]))
        cin, cout = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    else:
        cin, cout, groups = draw(st.integers(1, 6)), draw(st.integers(1, 6)), 1
    bits = draw(st.integers(2, 8))
    wide = draw(st.booleans())  # inputs needing the float64 path
    seed = draw(st.integers(0, 2**31 - 1))
    return cin, cout, groups, kernel, stride, padding, dilation, size, bits, wide, seed


@settings(max_examples=150, deadline=None)
@given(conv_case())
def test_int_conv_equals_torch_float64(case) -> None:
    """Every output of ``int_conv`` equals torch's float64 ``conv2d`` (exact integers there:
    every product and sum is below 2**53) for random shapes, groups in {1, 2, 4, C},
    dilation 1-3, strides and paddings."""
    cin, cout, groups, kernel, stride, padding, dilation, size, bits, wide, seed = case
    rng = np.random.default_rng(seed)
    n = 2**bits - 1
    w = 2 * rng.integers(0, n + 1, size=(cout, kernel, kernel, cin // groups)) - n
    w = w.clip(-127, 127).astype(np.int8)
    weight_sum = int(np.abs(w.astype(np.int64)).reshape(cout, -1).sum(1).max())
    limit = max(1, (2**31 - 1) // max(weight_sum, 1)) if wide else 2**7  # int32 contract
    x = rng.integers(-limit, limit + 1, size=(2, size, size, cin)).astype(np.int32)
    bound = weight_sum * limit
    got = ops.int_conv(x, w, stride, padding, groups, bound, dilation)
    expected = (
        torch.nn.functional.conv2d(
            torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2),
            torch.from_numpy(w.astype(np.float64)).permute(0, 3, 1, 2),
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
        )
        .permute(0, 2, 3, 1)
        .numpy()
    )
    assert got.dtype == np.int32
    assert got.shape[1] == (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    np.testing.assert_array_equal(got, expected.astype(np.int64))


def test_dilated_grouped_conv_equals_a_plain_loop() -> None:
    """One dilated (d = 2), strided, padded conv with 2 groups against the definition written
    as Python loops over integers (no torch, no NumPy arithmetic)."""
    rng = np.random.default_rng(7)
    x = rng.integers(-9, 10, (1, 7, 6, 4)).astype(np.int32)
    w = rng.integers(-5, 6, (6, 3, 3, 2)).astype(np.int8)
    s, p, d, g = 2, 1, 2, 2
    got = ops.int_conv(x, w, s, p, g, 10_000, d)
    ho, wo = (7 + 2 * p - d * 2 - 1) // s + 1, (6 + 2 * p - d * 2 - 1) // s + 1
    assert got.shape == (1, ho, wo, 6)
    for y in range(ho):
        for z in range(wo):
            for o in range(6):
                total = 0
                for i in range(3):
                    for j in range(3):
                        r, q = s * y + d * i - p, s * z + d * j - p
                        if 0 <= r < 7 and 0 <= q < 6:
                            for c in range(2):
                                total += int(w[o, i, j, c]) * int(x[0, r, q, (o // 3) * 2 + c])
                assert got[0, y, z, o] == total, (y, z, o)


def test_int_conv_refuses_sums_beyond_int32() -> None:
    with pytest.raises(ValueError, match="int32"):
        ops.int_conv(
            np.zeros((1, 3, 3, 1), np.int32), np.ones((1, 1, 1, 1), np.int8), 1, 0, 1, 2**31
        )


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(1, 40), st.integers(0, 2**31 - 1))
def test_threshold_act_equals_a_plain_count(channels: int, levels: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    theta = np.sort(rng.integers(-50, 50, size=(channels, levels)), axis=1)
    direction = rng.integers(-1, 2, size=channels).astype(np.int8)
    # every value at, just below and just above each threshold, plus random ones
    at = np.concatenate(
        [theta.ravel() - 1, theta.ravel(), theta.ravel() + 1, rng.integers(-80, 80, size=20)]
    )
    x = np.stack([at * (d if d else 1) for d in direction], axis=-1)[None, :, None, :]
    got = ops.threshold_act(x, theta, direction, 2, -levels)
    value = x.astype(np.int64) * direction
    count = (value[..., None] >= theta).sum(-1)
    np.testing.assert_array_equal(got, 2 * count - levels)


def test_threshold_act_by_hand() -> None:
    theta = np.array([[-1, 0, 2], [0, 1, 1]])
    x = np.array([[[[-1, 5], [0, -1], [2, 1]]]])  # (1, 1, 3, 2)
    got = ops.threshold_act(x, theta, np.array([1, -1], np.int8), 1, 0)
    # channel 0 (d=+1): -1 -> 1, 0 -> 2, 2 -> 3; channel 1 (d=-1, so -5, 1, -1): 0, 3, 0
    np.testing.assert_array_equal(got[0, 0], [[1, 0], [2, 3], [3, 0]])


def _round_half_up(numerator: int, shift: int) -> int:
    """``numerator / 2**shift`` rounded half up, with Python fractions (independent of >>)."""
    return math.floor(Fraction(numerator, 2**shift) + Fraction(1, 2))


def test_threshold_act_per_channel_shift_by_hand_at_ties() -> None:
    """Channel shifts (0, 1, 2, 3) on every value -9..9: ties ``v = (k + 1/2) 2**s`` round up
    for both signs. The thresholds are every integer -5..5 (11 levels), so the count minus 6
    reads the counted value back (clipped to -6..5)."""
    v = np.arange(-9, 10)
    x = np.stack([v, v, -v, v], axis=-1)[None, None]  # (1, 1, 19, 4); channel 2 has d = -1
    direction = np.array([1, 1, -1, 1], np.int8)
    shift = np.array([0, 1, 2, 3], np.int8)
    theta = np.tile(np.arange(-5, 6), (4, 1))
    got = ops.threshold_act(x, theta, direction, 1, -6, shift)[0, 0]
    # hand-computed: v / 2 for v = -3, -1, 1, 3 is -1.5, -0.5, 0.5, 1.5 -> -1, 0, 1, 2
    assert got[[6, 8, 10, 12], 1].tolist() == [-1, 0, 1, 2]
    # v / 4 for v = -6, -2, 2, 6 (d x = v) is -1.5, -0.5, 0.5, 1.5 -> -1, 0, 1, 2
    assert got[[3, 7, 11, 15], 2].tolist() == [-1, 0, 1, 2]
    # v / 8 for v = -4, 4 is -0.5, 0.5 -> 0, 1; -9 -> -1.125 -> -1; 9 -> 1.125 -> 1
    assert got[[5, 13, 0, 18], 3].tolist() == [0, 1, -1, 1]
    for c in range(4):
        want = [min(max(_round_half_up(int(val), int(shift[c])), -6), 5) for val in v]
        assert got[:, c].tolist() == want, c


@pytest.mark.parametrize("levels", [3, 40])  # the one-level-at-a-time and binary-search counts
def test_threshold_act_per_channel_shift_equals_a_plain_loop(levels: int) -> None:
    rng = np.random.default_rng(levels)
    channels = 6
    shift = np.array([0, 1, 4, 9, 17, 31], np.int8)
    direction = np.array([1, -1, 1, -1, 1, 0], np.int8)
    theta = np.sort(rng.integers(-300, 300, (channels, levels)), axis=1)
    scale = 2 ** shift.astype(np.int64)
    # values at each level's lower boundary 2**s theta - 2**(s-1), one below, one above
    edge = theta * scale[:, None] - np.where(shift > 0, scale // 2, 0)[:, None]
    values = np.concatenate(
        [edge - 1, edge, edge + 1, rng.integers(-(2**40), 2**40, (channels, 9))], axis=1
    )
    x = (values * np.where(direction == 0, 1, direction)[:, None]).T[None, None]
    got = ops.threshold_act(x, theta, direction, 2, 1, shift)[0, 0]
    for c in range(channels):
        for i, raw in enumerate(x[0, 0, :, c].tolist()):
            d = int(direction[c])
            value = d * raw if shift[c] == 0 else _round_half_up(d * raw, int(shift[c]))
            count = sum(value >= int(t) for t in theta[c])
            assert got[i, c] == 2 * count + 1, (c, raw)


def test_threshold_act_shift_none_zeros_and_bad_shapes() -> None:
    x = np.arange(-8, 8).reshape(1, 1, 8, 2)
    theta, direction = np.array([[-1, 0, 3], [-2, 2, 2]]), np.array([1, -1], np.int8)
    plain = ops.threshold_act(x, theta, direction, 1, 0)
    np.testing.assert_array_equal(ops.threshold_act(x, theta, direction, 1, 0, None), plain)
    np.testing.assert_array_equal(
        ops.threshold_act(x, theta, direction, 1, 0, np.zeros(2, np.int8)), plain
    )
    for bad in (np.array([1, 2, 3]), np.array([[1, 1]]), np.array([1, 32]), np.array([-1, 1])):
        with pytest.raises(KernelError, match="shift must be"):
            ops.threshold_act(x, theta, direction, 1, 0, bad)


def test_small_ops() -> None:
    x = np.array([[[[3, -2]], [[-1, 4]]]], np.int32)  # (1, 2, 1, 2)
    np.testing.assert_array_equal(ops.relu(x), np.maximum(x, 0))
    np.testing.assert_array_equal(ops.add(x, x), 2 * x)
    np.testing.assert_array_equal(ops.global_sum_pool(x), [[2, 2]])
    w, b = np.array([[1.0, 2.0]]), np.array([0.5])
    np.testing.assert_allclose(ops.linear(np.array([[2, 2]]), w, b, 0.25), [[2.0]])
    got = ops.int_linear(np.array([[2, 2]]), np.array([[3, -1]], np.int8), np.array([0.5]), b, 1.0)
    np.testing.assert_allclose(got, [[2.5]])


def test_input_quant_rounds_half_to_even() -> None:
    images = np.array([[[[0, 128, 255]]]], np.uint8)
    got = ops.input_quant(images, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 2.0**-8)
    expected = [round(0 / 255 * 256), round(128 / 255 * 256), 256]
    np.testing.assert_array_equal(got.ravel(), expected)


@st.composite
def pool_case(draw):
    kernel = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    padding = draw(st.integers(0, kernel // 2))
    h = draw(st.integers(max(1, kernel - 2 * padding), 9))
    w = draw(st.integers(max(1, kernel - 2 * padding), 9))
    dtype = draw(st.sampled_from([np.int8, np.int16, np.int32]))
    seed = draw(st.integers(0, 2**31 - 1))
    return kernel, stride, padding, h, w, dtype, seed


@settings(max_examples=80, deadline=None)
@given(pool_case())
def test_max_pool_equals_torch_float64(case) -> None:
    """torch's max_pool2d (padding -inf, floor output size) in float64, on values reaching the
    dtype's extremes (the kernel pads with the dtype's minimum: a tie with it is harmless)."""
    kernel, stride, padding, h, w, dtype, seed = case
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, (2, h, w, 3), endpoint=True).astype(dtype)
    x.flat[:: max(1, x.size // 5)] = info.min
    got = ops.max_pool(x, kernel, stride, padding)
    expected = (
        torch.nn.functional.max_pool2d(
            torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2), kernel, stride, padding
        )
        .permute(0, 2, 3, 1)
        .numpy()
    )
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, expected.astype(np.int64))


def test_max_pool_by_hand_ignores_padding_on_negative_values() -> None:
    """k3 s2 p1 on a 4x4 input of negative values: output 2x2, each the max of its window
    clipped to the input (zero padding would give 0 at every output)."""
    x = -np.arange(1, 17, dtype=np.int32).reshape(1, 4, 4, 1)  # -1 .. -16, row major
    got = ops.max_pool(x, 3, 2, 1)[0, :, :, 0]
    # windows rows/cols {-1..1} x {-1..1} -> x[0:2, 0:2]; {-1..1} x {1..3} -> x[0:2, 1:4] ...
    assert got.tolist() == [[-1, -2], [-5, -6]]


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "match"),
    [
        (0, 1, 0, "kernel >= 1"),
        (3, 0, 1, "stride >= 1"),
        (3, 2, 2, "padding <= kernel // 2"),
        (2, 1, -1, "padding"),
        (7, 1, 1, "larger than the padded input"),
    ],
)
def test_max_pool_refuses_bad_attributes(kernel: int, stride: int, padding: int, match) -> None:
    with pytest.raises(KernelError, match=match):
        ops.max_pool(np.zeros((1, 4, 4, 1), np.int32), kernel, stride, padding)


def test_concat_joins_channels_in_order() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.integers(-9, 9, (2, 3, 4, c)).astype(np.int32) for c in (1, 3, 2)]
    got = ops.concat(parts)
    assert got.shape == (2, 3, 4, 6)
    for n, i, j in np.ndindex(2, 3, 4):
        joined = [v for p in parts for v in p[n, i, j].tolist()]
        assert got[n, i, j].tolist() == joined
    with pytest.raises(KernelError, match="share batch and spatial shape"):
        ops.concat([parts[0], parts[1][:, :2]])
