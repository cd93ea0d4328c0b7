"""Each lowering pass alone, against exact arithmetic written in the tests."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtri

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.graph import (
    ActQuant,
    BatchNorm,
    Conv,
    Graph,
    InputQuant,
    IntConv,
    TensorSpec,
    ThresholdAct,
)
from climbq_deploy.ir.passes import (
    bound_tensors,
    derive_thresholds,
    fold_batchnorm,
    integerize_weights,
    lower,
)
from climbq_deploy.ir.passes.derive_thresholds import snap_thresholds

EXTREME = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False),
    st.sampled_from([0.0, -0.0, 1e-12, -1e-12, 1e12, -1e12, 3e-7, 1.0, -1.0]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(EXTREME, EXTREME), min_size=1, max_size=4), st.integers(2, 8))
def test_snapped_thresholds_count_exactly(channels, bits) -> None:
    """j = #{t : d x >= theta_t} equals #{t : a x + b >= T_t} in exact rational arithmetic,
    for integer x at and around every snapped threshold."""
    n = 2**bits - 1
    t_float = 2.0 * ndtri((np.arange(1, n + 1) - 0.5) / n)
    scale = np.array([a for a, _ in channels])
    shift = np.array([b for _, b in channels])
    theta, direction = snap_thresholds(t_float, scale, shift)
    assert np.all(theta[:, 1:] >= theta[:, :-1])
    for c in range(len(channels)):
        a, b = Fraction(scale[c]), Fraction(shift[c])
        probes = {0, 1, -1}
        for t in theta[c][:: max(1, n // 8)]:
            s = int(direction[c]) or 1
            probes.update({s * int(t) - 1, s * int(t), s * int(t) + 1})
        for x in probes:
            if abs(x) > 2**40:
                continue
            exact = sum(a * x + b >= Fraction(t) for t in t_float)
            counted = int(np.sum(int(direction[c]) * x >= theta[c]))
            assert counted == exact, (c, x, float(a), float(b))


def _conv_graph(weight_scale=1 / 15, bits=4, weight=None, gamma=None, var=None):
    rng = np.random.default_rng(0)
    cout, cin = 3, 2
    n = 2**bits - 1
    w_int = weight if weight is not None else 2 * rng.integers(0, n + 1, (cout, 3, 3, cin)) - n
    tensors = {
        "image": TensorSpec("image", "uint8", (4, 4, cin), 2),
        "x": TensorSpec("x", "int32", (4, 4, cin), 2, 2 / 15),
        "c": TensorSpec("c", "float64", (4, 4, cout), 2),
        "bn": TensorSpec("bn", "float64", (4, 4, cout), 2),
        "q": TensorSpec("q", "int32", (4, 4, cout), 2, 2 / 15),
    }
    nodes = (
        InputQuant("in", ("image",), "x", mean=(0.5, 0.5), std=(0.25, 0.25), step=2.0**-10),
        Conv(
            "conv",
            ("x",),
            "c",
            "layer.conv",
            weight=w_int * weight_scale,
            weight_scale=weight_scale,
            weight_bits=bits,
            weight_grid=(2, -n),
            padding=1,
        ),
        BatchNorm(
            "bn",
            ("c",),
            "bn",
            "layer.bn",
            gamma=np.array([1.5, -0.7, 0.0]) if gamma is None else gamma,
            beta=np.array([0.1, 0.2, -0.3]),
            mean=np.array([0.5, -2.0, 1.0]),
            var=np.array([2.0, 1e-9, 1.0]) if var is None else var,
        ),
        ActQuant(
            "act",
            ("bn",),
            "q",
            "layer.act",
            thresholds=2 * ndtri((np.arange(1, 16) - 0.5) / 15),
            mult=2,
            offset=-15,
            step=2 / 15,
            bits=4,
        ),
    )
    return Graph(nodes, tensors, "image", "q")


def test_fold_batchnorm_is_the_batchnorm() -> None:
    graph = _conv_graph()
    folded = fold_batchnorm(graph)
    assert folded.ops() == ["input_quant", "conv", "act_quant"]
    conv = folded.node("conv")
    assert conv.output == "bn" and "c" not in folded.tensors
    bn = graph.node("bn")
    y = np.linspace(-5, 5, 11)[:, None]
    expected = bn.gamma * (y - bn.mean) / np.sqrt(bn.var + bn.eps) + bn.beta
    np.testing.assert_allclose(conv.affine_scale * y + conv.affine_shift, expected, rtol=1e-12)


def test_fold_batchnorm_refuses_bad_variance() -> None:
    with pytest.raises(LoweringError, match="channel 1"):
        fold_batchnorm(_conv_graph(var=np.array([1.0, -1.0, 1.0])))


def test_integerize_weights_recovers_codes_and_scales_the_affine() -> None:
    graph = integerize_weights(fold_batchnorm(_conv_graph()))
    conv = graph.node("conv")
    assert isinstance(conv, IntConv) and conv.weight.dtype == np.int8
    np.testing.assert_array_equal(conv.weight, _conv_graph().node("conv").weight * 15)
    assert graph.tensors["bn"].dtype == "int32"
    assert graph.tensors["bn"].scale == pytest.approx(1 / 15 * 2 / 15)


def test_integerize_weights_refuses_off_grid_weights() -> None:
    bad = 2 * np.ones((3, 3, 3, 2), np.int64)  # even: not on the odd 2j - n grid
    with pytest.raises(LoweringError, match="off the 4-bit grid"):
        integerize_weights(fold_batchnorm(_conv_graph(weight=bad)))
    with pytest.raises(LoweringError, match="not an integer multiple"):
        integerize_weights(fold_batchnorm(_conv_graph(weight=np.full((3, 3, 3, 2), 0.5))))


def test_derive_thresholds_replaces_the_quantizer() -> None:
    graph = derive_thresholds(integerize_weights(fold_batchnorm(_conv_graph())))
    assert graph.ops() == ["input_quant", "int_conv", "threshold_act"]
    act = graph.node("act")
    assert isinstance(act, ThresholdAct) and act.thresholds.shape == (3, 15)
    assert act.direction.tolist() == [1, -1, 0]  # gamma > 0, < 0, == 0
    assert graph.node("conv").affine_scale is None
    # zero gamma: y = beta = -0.3 for every input, so the code is fixed
    passed = int((2 * ndtri((np.arange(1, 16) - 0.5) / 15) <= -0.3).sum())
    assert int((act.thresholds[2] <= 0).sum()) == passed


def test_bounds_hold_and_pick_storage() -> None:
    graph = (
        lower(_conv_graph())
        if False
        else bound_tensors(derive_thresholds(integerize_weights(fold_batchnorm(_conv_graph()))))
    )
    x_lo, x_hi = graph.tensors["x"].bounds
    assert (x_lo, x_hi) == (round(-0.5 / 0.25 * 1024), round(0.5 / 0.25 * 1024))
    acc_lo, acc_hi = graph.tensors["bn"].bounds
    w = graph.node("conv").weight.astype(np.int64).reshape(3, -1)
    assert acc_hi == int(np.maximum(w * x_lo, w * x_hi).sum(1).max())
    assert acc_lo == int(np.minimum(w * x_lo, w * x_hi).sum(1).min())
    assert graph.tensors["bn"].dtype == "int32"
    assert graph.tensors["q"].bounds == (-15, 15) and graph.tensors["q"].dtype == "int8"


def test_bounds_refuse_int32_overflow() -> None:
    graph = derive_thresholds(
        integerize_weights(fold_batchnorm(_conv_graph(bits=8, weight=np.full((3, 3, 3, 2), 127))))
    )
    tensors = dict(graph.tensors)
    huge = InputQuant("in", ("image",), "x", mean=(0.5, 0.5), std=(1e-6, 1e-6), step=2.0**-10)
    graph = graph.replace_nodes([huge, *graph.nodes[1:]], tensors)
    with pytest.raises(LoweringError, match=r"layer\.conv.*exceeds int32"):
        bound_tensors(graph)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 8),
    st.integers(0, 2**31 - 1),
    st.sampled_from([(0, 15), (-15, 15), (-60, 60), (-(2**20), 2**20)]),
    st.sampled_from([0, 1]),
)
def test_proven_conv_bounds_hold_on_extreme_inputs(bits, seed, input_range, padding) -> None:
    """The accumulator bound of the bounds pass holds for the inputs that maximise and minimise
    every output (all-lo / all-hi per sign of the weight) and for random ones."""
    from climbq_deploy.ir.passes.bound_tensors import conv_channel_bounds
    from climbq_deploy.kernels import ops

    rng = np.random.default_rng(seed)
    n = 2**bits - 1
    w = (2 * rng.integers(0, n + 1, size=(4, 3, 3, 3)) - n).astype(np.int16)
    lo, hi = input_range
    bounds = conv_channel_bounds(w, lo, hi, padding)
    inputs = [
        np.full((1, 5, 5, 3), lo),
        np.full((1, 5, 5, 3), hi),
        rng.integers(lo, hi + 1, size=(8, 5, 5, 3)),
    ]
    partial = int(np.abs(w.astype(np.int64)).reshape(4, -1).sum(1).max()) * max(abs(lo), abs(hi))
    if partial > 2**31 - 1:  # the bounds pass refuses such a layer; so does the kernel
        with pytest.raises(ValueError, match="int32"):
            ops.int_conv(inputs[0].astype(np.int32), w, 1, padding, 1, partial)
        return
    for x in inputs:
        acc = ops.int_conv(x.astype(np.int32), w, 1, padding, 1, partial)
        assert np.all(acc >= bounds[:, 0]) and np.all(acc <= bounds[:, 1])
    # the extremes are reached (no padding: every tap sees the same value)
    if not padding:
        signs = np.sign(w.reshape(4, -1))
        best = np.where(signs > 0, hi, lo).reshape(4, 3, 3, 3)
        reach = (w.astype(np.int64) * best).reshape(4, -1).sum(1)
        np.testing.assert_array_equal(reach, bounds[:, 1])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([1e-12, 1e-6, 0.5, 1.0, 1e6]), min_size=3, max_size=3),
    st.lists(st.sampled_from([-50.0, -1.0, 0.0, 0.3, 1e4]), min_size=3, max_size=3),
)
def test_fold_batchnorm_extreme_parameters(var, gamma) -> None:
    graph = _conv_graph(gamma=np.array(gamma), var=np.array(var))
    conv = fold_batchnorm(graph).node("conv")
    bn = graph.node("bn")
    y = np.array([-3.0, 0.0, 7.0])[:, None]
    expected = bn.gamma * (y - bn.mean) / np.sqrt(bn.var + bn.eps) + bn.beta
    np.testing.assert_allclose(
        conv.affine_scale * y + conv.affine_shift,
        expected,
        rtol=1e-9,
        atol=1e-9 * np.abs(expected).max(),
    )
    lowered = lower(graph)  # and the whole chain accepts it
    assert lowered.ops() == ["input_quant", "int_conv", "threshold_act"]


@pytest.mark.parametrize(
    ("bits", "expected"), [(8, [[127, -64, 1], [0, 0, 0]]), (4, [[7, -4, 0], [0, 0, 0]])]
)
def test_quantize_head_per_output_channel_grid(bits: int, expected: list) -> None:
    """``W_q = round_half_even(W / (max|W[o]| / Q))``, Q = 2**(bits-1) - 1; zero rows scale 1."""
    from climbq_deploy.ir.graph import IntLinear, Linear, TensorSpec
    from climbq_deploy.ir.passes import quantize_head

    weight = np.array([[2.0, -1.0, 0.01], [0.0, 0.0, 0.0]])
    head = Linear(
        name="fc", inputs=("pool",), output="fc", source="fc", weight=weight, bias=np.zeros(2)
    )
    tensors = {
        "pool": TensorSpec("pool", "int32", (3,), 0, 1.0),
        "fc": TensorSpec("fc", "float64", (2,), 0),
    }
    graph = Graph(nodes=[head], tensors=tensors, input="pool", output="fc")
    out = quantize_head(graph, bits=bits).nodes[0]
    assert isinstance(out, IntLinear)
    assert out.weight.tolist() == expected
    q = 2 ** (bits - 1) - 1
    assert out.weight_scale.tolist() == [2.0 / q, 1.0]
    with pytest.raises(LoweringError, match="head bits"):
        quantize_head(graph, bits=3)
