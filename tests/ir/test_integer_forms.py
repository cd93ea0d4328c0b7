"""The shared lowering arithmetic, exactly: digit plans recombine to the conv accumulator of
``kernels.ops.int_conv`` (at the input bounds, the int32 edge and the 2**24 edge), the count
plan equals ``ops.threshold_act`` at every threshold's floor/ceil, and the small helpers match
plain loops."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.graph import Add, Graph, IntConv, Relu, TensorSpec, ThresholdAct
from climbq_deploy.ir.integer_forms import (
    FLOAT32_EXACT,
    conv_padding,
    count_plan,
    float32_digit_bits,
    float32_digit_plan,
    int16_digit_plan,
    nhwc_pads,
    partial_sum_bound,
    signed_weight,
    undilated_weight,
    value_steps,
)
from climbq_deploy.kernels import ops

INT32_MAX = 2**31 - 1


def _exact_conv(x: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """The accumulator by the reference kernel (float64 GEMM; exact below 2**53)."""
    return ops.int_conv(x, w, stride, padding, 1, partial_sum_bound(w, *_span(x))).astype(np.int64)


def _span(x: np.ndarray) -> tuple[int, int]:
    return int(x.min()), int(x.max())


def _edge_inputs(rng, shape, lo: int, hi: int) -> np.ndarray:
    """Random integers in [lo, hi] with whole images at lo, at hi, and a checkerboard of both."""
    x = rng.integers(lo, hi + 1, shape, dtype=np.int64)
    x[0] = lo
    x[1] = hi
    x[2] = np.where(np.indices(shape[1:]).sum(axis=0) % 2 == 0, lo, hi)
    return x


def _stem_weight(rng, out: int = 8, odd_max: int = 15) -> np.ndarray:
    """A 3x3x3 stem on the 4-bit ClimbQ grid (odd values up to ``odd_max``)."""
    return (2 * rng.integers(-(odd_max + 1) // 2, (odd_max + 1) // 2, (out, 3, 3, 3)) + 1).astype(
        np.int8
    )


def test_partial_sum_bound_and_signed_weight_match_plain_loops() -> None:
    rng = np.random.default_rng(0)
    w = rng.integers(-7, 8, (4, 3, 3, 2)).astype(np.int8)
    want = max(sum(abs(int(v)) for v in w[o].ravel()) for o in range(4)) * 9
    assert partial_sum_bound(w, -9, 5) == want
    assert partial_sum_bound(np.zeros((2, 0, 1, 1), np.int8), -9, 5) == 0
    d = np.array([1, -1, 0, -1], np.int8)
    signed = signed_weight(w, d)
    for o in range(4):
        assert signed[o].tolist() == (int(d[o]) * w[o].astype(np.int64)).tolist()
    assert signed.dtype == np.int64
    as_float = signed_weight(w, d, np.float32)
    assert as_float.dtype == np.float32 and np.array_equal(as_float, signed)


def test_conv_padding_modes() -> None:
    def conv(kernel: int, stride: int, padding: int) -> IntConv:
        w = np.ones((1, kernel, kernel, 1), np.int8)
        return IntConv("c", ("x",), "y", weight=w, stride=stride, padding=padding)

    assert conv_padding(conv(3, 1, 0)) == "VALID"
    assert conv_padding(conv(3, 1, 1)) == "SAME"
    assert conv_padding(conv(1, 1, 0)) == "VALID"
    assert conv_padding(conv(3, 2, 1)) == "PAD"  # SAME pads bottom/right more at stride 2
    assert conv_padding(conv(3, 1, 2)) == "PAD"
    assert conv_padding(conv(2, 1, 1)) == "PAD"  # even kernel
    assert nhwc_pads(2).tolist() == [[0, 0], [2, 2], [2, 2], [0, 0]]
    assert nhwc_pads(2).dtype == np.int32


def test_conv_padding_of_dilated_kernels_uses_their_span() -> None:
    """TFLite's SAME pads for the dilated span ``K = d (k - 1) + 1``: p = K // 2 at stride 1."""

    def conv(kernel: int, padding: int, dilation: int, stride: int = 1) -> IntConv:
        w = np.ones((1, kernel, kernel, 1), np.int8)
        return IntConv(
            "c", ("x",), "y", weight=w, padding=padding, dilation=dilation, stride=stride
        )

    assert conv_padding(conv(3, 2, 2)) == "SAME"  # span 5
    assert conv_padding(conv(3, 3, 3)) == "SAME"  # span 7
    assert conv_padding(conv(3, 1, 2)) == "PAD"  # 1 != 5 // 2
    assert conv_padding(conv(2, 1, 2)) == "SAME"  # an even kernel dilated by 2 spans 3
    assert conv_padding(conv(2, 1, 3)) == "PAD"  # span 4: SAME would pad unevenly
    assert conv_padding(conv(3, 2, 2, stride=2)) == "PAD"
    assert conv_padding(conv(3, 0, 2)) == "VALID"


@settings(max_examples=60, deadline=None)
@given(
    kernel=st.integers(1, 4),
    dilation=st.integers(1, 3),
    stride=st.integers(1, 3),
    groups=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 2**31 - 1),
)
def test_undilated_weight_gives_the_dilated_conv(
    kernel: int, dilation: int, stride: int, groups: int, seed: int
) -> None:
    """The zero-filled undilated filter, convolved without dilation, equals the dilated conv
    (the reference), which equals torch's float64 dilated conv2d; the zeros sit where the
    definition puts them and the weight sums are unchanged."""
    import torch

    rng = np.random.default_rng(seed)
    span = dilation * (kernel - 1) + 1
    padding = int(rng.integers(0, span))
    size = int(rng.integers(max(1, span - 2 * padding), span + 6))
    w = rng.integers(-15, 16, (2 * groups, kernel, kernel, 3)).astype(np.int8)
    x = rng.integers(-20, 21, (2, size, size, 3 * groups)).astype(np.int32)
    spread = undilated_weight(w, dilation)
    assert spread.shape == (2 * groups, span, span, 3) and spread.dtype == w.dtype
    for i in range(span):
        for j in range(span):
            on_grid = i % dilation == 0 and j % dilation == 0
            tap = w[:, i // dilation, j // dilation] if on_grid else 0
            assert np.array_equal(spread[:, i, j], np.broadcast_to(tap, spread[:, i, j].shape))
    assert partial_sum_bound(spread, -20, 20) == partial_sum_bound(w, -20, 20)
    bound = partial_sum_bound(w, -20, 20)
    dilated = ops.int_conv(x, w, stride, padding, groups, bound, dilation)
    np.testing.assert_array_equal(ops.int_conv(x, spread, stride, padding, groups, bound), dilated)
    expected = torch.nn.functional.conv2d(
        torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2),
        torch.from_numpy(w.astype(np.float64)).permute(0, 3, 1, 2),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
    )
    np.testing.assert_array_equal(dilated, expected.permute(0, 2, 3, 1).numpy())


# -- the LiteRT stem: b-bit digits of u = I + 2**(B-1), int16-exact parts ------------------------


@pytest.mark.parametrize("width", [12, 16, 20, 24])
@pytest.mark.parametrize(("stride", "padding"), [(1, 1), (2, 1), (1, 0)])
def test_int16_digit_plan_recombines_to_the_accumulator(
    width: int, stride: int, padding: int
) -> None:
    rng = np.random.default_rng(width + stride)
    w = _stem_weight(rng, odd_max=3 if width == 24 else 15)  # sum |W| 2**B must fit int32
    w[3] = 0  # a constant channel (d = 0 folded in)
    w[5] = -w[5]  # a channel counting downwards
    weight_sum = int(np.abs(w.astype(np.int64)).reshape(8, -1).sum(axis=1).max())
    plan = int16_digit_plan(w, width, "stem")
    bits = max(b for b in range(1, 9) if weight_sum * (2**b - 1) < 2**15)  # the plain rule
    count = -(-width // bits)
    assert plan.bases == tuple(2 ** (bits * k) for k in reversed(range(count)))
    assert plan.offset == 2 ** (width - 1)
    assert plan.part_limit == 2**15
    for o in range(8):
        assert plan.correction[o] == -(2 ** (width - 1)) * int(w[o].astype(np.int64).sum())
    lo, hi = -(2 ** (width - 1)), 2 ** (width - 1) - 1
    x = _edge_inputs(rng, (5, 7, 7, 3), lo, hi)
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    digits = plan.split(padded)
    assert len(digits) == count
    for digit in digits:
        assert digit.min() >= 0 and digit.max() < 2**bits
    u = sum(base * digit for base, digit in zip(plan.bases, digits, strict=True))
    assert np.array_equal(u, padded + plan.offset)  # the digits are u's
    parts = [ops.int_conv(d, w, stride, 0, 1, weight_sum * (2**bits - 1)) for d in digits]
    for part in parts:  # each digit conv is exact in LiteRT's int16 output
        assert np.abs(part).max() < plan.part_limit
    acc = plan.recombine(parts)
    want = _exact_conv(x, w, stride, padding)
    assert np.array_equal(acc, want)
    assert np.abs(acc).max() <= INT32_MAX


def test_int16_digit_plan_at_the_int32_edge() -> None:
    """``sum |W| 2**B`` exactly at the largest multiple of 2**B below 2**31 is accepted and
    exact at both input extremes; one more unit of weight is refused."""
    width = 24
    w = np.zeros((2, 3, 3, 3), np.int8)
    w[0, 0, 0, 0], w[0, 1, 1, 1] = 100, 27  # sum |W| = 127 = 2**(31 - 24) - 1
    w[1, 2, 2, 2] = -127
    plan = int16_digit_plan(w, width, "stem")
    lo, hi = -(2 ** (width - 1)), 2 ** (width - 1) - 1
    x = _edge_inputs(np.random.default_rng(1), (3, 3, 3, 3), lo, hi)
    digits = plan.split(x)
    parts = [ops.int_conv(d, w, 1, 0, 1, 2**15 - 1) for d in digits]
    acc = plan.recombine(parts)
    assert np.array_equal(acc, _exact_conv(x, w, 1, 0))
    assert np.abs(acc).max() == 127 * 2 ** (width - 1)  # the extreme is reached
    w[0, 2, 2, 2] = 1  # sum |W| = 128: 128 * 2**24 = 2**31
    with pytest.raises(LoweringError, match=r"stem 'stem': 24-bit input times weights exceeds"):
        int16_digit_plan(w, width, "stem")


def test_int16_digit_plan_refuses_weights_too_large() -> None:
    w = np.zeros((1, 1, 1, 1), np.int16)
    w[0, 0, 0, 0] = 255  # beyond int8
    with pytest.raises(LoweringError, match=r"stem 'conv1': weights too large"):
        int16_digit_plan(w, 16, "conv1")
    big = np.full((1, 3, 3, 3), 127, np.int8).repeat(5, axis=3)  # sum |W| = 17145 >= 2**14
    with pytest.raises(LoweringError, match=r"stem 'conv1': weights too large"):
        int16_digit_plan(big, 16, "conv1")


# -- the ONNX stem: I = 2**D h + l, float32-exact parts ----------------------------------------


def test_float32_digit_plan_is_none_below_2_24_and_splits_from_it() -> None:
    w = np.ones((1, 1, 1, 1), np.int8)  # sum |W| = 1: the bound is max |I|
    assert float32_digit_plan(w, -(2**24 - 1), 2**24 - 1) is None
    plan = float32_digit_plan(w, 0, 2**24)
    assert plan is not None and plan.bases == (2, 1) and plan.offset == 0
    assert plan.part_limit == FLOAT32_EXACT and not plan.correction.any()
    x = np.array([0, 1, 2**24 - 1, 2**24], np.int64).reshape(1, 2, 2, 1)
    high, low = plan.split(x)
    assert high.ravel().tolist() == [0, 0, 2**23 - 1, 2**23]
    assert low.ravel().tolist() == [0, 1, 1, 0]
    assert np.array_equal(plan.recombine([high, low]), x)


@pytest.mark.parametrize("width", [20, 22])
@pytest.mark.parametrize(("stride", "padding"), [(1, 1), (2, 1)])
def test_float32_digit_plan_recombines_float32_convs_exactly(
    width: int, stride: int, padding: int
) -> None:
    rng = np.random.default_rng(width)
    w = _stem_weight(rng)
    lo, hi = -(2 ** (width - 1)), 2 ** (width - 1) - 1
    assert partial_sum_bound(w, lo, hi) >= FLOAT32_EXACT  # the plain float32 conv is not exact
    plan = float32_digit_plan(w, lo, hi)
    assert plan is not None
    bits = next(  # the smallest D by a plain loop
        d
        for d in range(1, 31)
        if max(
            partial_sum_bound(w, 0, 2**d - 1),
            partial_sum_bound(w, -(-max(-lo, hi) // 2**d), -(-max(-lo, hi) // 2**d)),
        )
        < 2**24
    )
    assert float32_digit_bits(w, lo, hi) == bits and plan.bases == (2**bits, 1)
    x = _edge_inputs(rng, (5, 7, 7, 3), lo, hi)
    high, low = plan.split(x)
    assert low.min() >= 0 and low.max() < 2**bits
    # the digits are zero-padded by the conv itself (offset 0: digits of 0 are 0)
    parts = []
    for digit in (high, low):
        bound = partial_sum_bound(w, *_span(digit))
        assert bound < FLOAT32_EXACT  # so ops.int_conv runs this digit conv in float32
        parts.append(ops.int_conv(digit, w, stride, padding, 1, bound))
    assert np.array_equal(plan.recombine(parts), _exact_conv(x, w, stride, padding))


def test_float32_digit_plan_refuses_an_impossible_split() -> None:
    w = np.full((1, 1, 1, 132200), 127, np.int8)  # sum |W| >= 2**24: even 1-bit digits reach it
    with pytest.raises(LoweringError, match=r"no exact float32 digit split"):
        float32_digit_plan(w, -1, 1)


# -- compare and count -------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 8), st.integers(1, 3), st.integers(-7, 0))
def test_count_plan_equals_the_reference_kernel_at_every_boundary(
    seed: int, bits: int, mult: int, offset: int
) -> None:
    rng = np.random.default_rng(seed)
    levels, channels = 2**bits - 1, 4
    theta = np.sort(rng.integers(-(2**20), 2**20, (channels, levels)), axis=1)
    direction = np.array([1, -1, 0, 1], np.int8)
    theta[2] = np.r_[np.zeros(levels // 2), np.ones(levels - levels // 2)]  # constant channel
    act = ThresholdAct(
        "a", ("x",), "y", thresholds=theta, direction=direction, mult=mult, offset=offset
    )
    probes = np.unique(np.r_[theta.ravel() - 1, theta.ravel(), theta.ravel() + 1, 0])
    x = np.tile(probes[:, None], (1, channels))  # every probe in every channel
    want = ops.threshold_act(x, theta, direction, mult, offset).astype(np.int64)
    assert np.array_equal(count_plan(act, folded=False).apply(x), want)
    folded = count_plan(act, folded=True)
    assert folded.direction is None
    assert np.array_equal(folded.apply(x * direction.astype(np.int64)), want)
    for c in range(channels):  # and by a plain loop, on a few probes
        for i in range(0, len(probes), max(1, len(probes) // 7)):
            v = int(direction[c]) * int(x[i, c])
            assert want[i, c] == mult * sum(v >= int(t) for t in theta[c]) + offset


def test_value_steps_by_rule() -> None:
    def spec(name: str) -> TensorSpec:
        return TensorSpec(name, "int32", (2, 2, 1), 2, 1.0)

    theta = np.zeros((1, 3), np.int64)
    one = np.ones(1, np.int8)
    nodes = (
        ThresholdAct("a", ("x",), "q1", thresholds=theta, direction=one, mult=2, offset=-4),
        ThresholdAct("b", ("x",), "q2", thresholds=theta, direction=one, mult=4, offset=-6),
        ThresholdAct("c", ("x",), "q3", thresholds=theta, direction=one, mult=2, offset=-3),
        Relu("r", ("q1",), "r1"),
        Add("s", ("q1", "q2"), "s1"),
        Add("t", ("q1", "q3"), "s2"),
    )
    tensors = {n: spec(n) for n in ("x", "q1", "q2", "q3", "r1", "s1", "s2")}
    steps = value_steps(Graph(nodes, tensors, "x", "s2"))
    assert steps == {"q1": 2, "q2": 2, "q3": 1, "r1": 2, "s1": 2, "s2": 1}
