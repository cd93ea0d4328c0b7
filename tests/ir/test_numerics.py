"""Numerical robustness of the lowering and the reference kernels: thresholds snapped exactly
near the int32 edges, accumulators refused (not wrapped) past int32, kernels that never wrap
silently, degenerate BatchNorm against torch in float64, and every bit width 2..8 of the
ClimbQ, uniform and LSQ grids. Golden values come from Python integers and fractions."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtri

from climbq_deploy.errors import ClimbQError, KernelError, LoweringError
from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.graph import (
    Add,
    GlobalSumPool,
    Graph,
    InputQuant,
    IntConv,
    TensorSpec,
    ThresholdAct,
)
from climbq_deploy.ir.passes import bound_tensors, lower
from climbq_deploy.ir.passes.derive_thresholds import snap_thresholds
from climbq_deploy.kernels import ReferenceModel, ops
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.resnet import CifarResNet
from climbq_deploy.quant.layers import ActQuant, QConv2d
from tests.conftest import MEAN, STD, codes_and_logits, randomize_batchnorm

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
EDGE_INPUTS = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX]


def gaussian_levels(bits: int) -> np.ndarray:
    n = 2**bits - 1
    return 2.0 * ndtri((np.arange(1, n + 1) - 0.5) / n)


# --- threshold snapping near +-2**31 ---------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    bits=st.integers(2, 8),
    level=st.floats(0, 1),
    sign=st.sampled_from([1.0, -1.0]),
    magnitude=st.sampled_from([1.0, 0.5, 7.0, 2.0**-20, 1e-3, 3e-7, 1e-9]),
    edge=st.sampled_from([INT32_MAX, INT32_MIN, INT32_MAX + 1, INT32_MIN + 1]),
    offset=st.integers(-3, 3),
    frac=st.sampled_from([0.0, 1e-7, 0.25, 0.5, 1 - 1e-7]),
)
def test_snapped_thresholds_are_exact_at_floor_t_ceil_near_int32_edges(
    bits: int, level: float, sign: float, magnitude: float, edge: int, offset: int, frac: float
) -> None:
    """One level's float64 threshold ``t = (T - b) / a`` is put near +-2**31; for integer x at
    ``floor(t) - 1 .. ceil(t) + 1`` of every level, ``d x >= theta`` equals ``a x + b >= T``
    in exact rational arithmetic, level by level, and the kernel counts the same."""
    levels = gaussian_levels(bits)
    k = min(int(level * len(levels)), len(levels) - 1)
    a = sign * magnitude
    b = float(levels[k] - a * (edge + offset + frac))
    theta, direction = snap_thresholds(levels, np.array([a]), np.array([b]), "layer.act")
    assert direction.tolist() == [int(sign)]
    fa, fb = Fraction(a), Fraction(b)
    for t_level, th in zip(levels, theta[0], strict=True):
        t = (Fraction(float(t_level)) - fb) / fa
        for x in range(math.floor(t) - 1, math.ceil(t) + 2):
            if abs(x) < 2**61:
                exact = fa * x + fb >= Fraction(float(t_level))
                assert (int(direction[0]) * x >= int(th)) == exact, (x, a, b, float(t_level))
    t_edge = (Fraction(float(levels[k])) - fb) / fa
    near = range(math.floor(t_edge) - 1, math.ceil(t_edge) + 2)
    inside = np.array([x for x in near if INT32_MIN <= x <= INT32_MAX], np.int64)
    if inside.size:
        got = ops.threshold_act(inside[:, None], theta, direction, 1, 0)[:, 0]
        want = [sum(fa * int(x) + fb >= Fraction(float(t)) for t in levels) for x in inside]
        np.testing.assert_array_equal(got, want)


def test_snap_lands_exactly_on_integer_thresholds_near_int32_edges() -> None:
    """``t`` exactly an integer (``a = +-1``, ``b = 0``): ``x = t`` passes, ``x = t - 1`` not."""
    levels = np.array([float(INT32_MIN + 2), -5.0, 0.0, float(INT32_MAX - 1)])
    theta, d = snap_thresholds(levels, np.array([1.0, -1.0]), np.zeros(2))
    assert theta[0].tolist() == [INT32_MIN + 2, -5, 0, INT32_MAX - 1]
    assert theta[1].tolist() == theta[0].tolist()  # a = -1: -x >= T
    x = np.array([[INT32_MIN + 1], [INT32_MIN + 2], [INT32_MAX - 2], [INT32_MAX - 1]])
    x = np.repeat(x, 2, axis=1)
    got = ops.threshold_act(x, theta, d, 1, 0)
    # channel 0: y = x; channel 1: y = -x, so -x >= T_t
    np.testing.assert_array_equal(got, [[0, 4], [1, 4], [3, 1], [4, 1]])


# --- the threshold kernel at the int32 edges ------------------------------------------------


@pytest.mark.parametrize("levels", [5, 40])  # one-compare-per-level and binary-search paths
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_threshold_act_counts_exactly_at_int32_edges(levels: int, dtype: type) -> None:
    """Inputs at +-2**31 edges (``-x`` of ``-2**31`` is not an int32) and thresholds up to
    2**31 ("never reached" by any int32) count as Python integers do."""
    rng = np.random.default_rng(levels)
    special = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX, INT32_MAX + 1]
    rows = []
    for _ in range(3):
        row = rng.choice(special, size=levels).tolist()
        rows.append(sorted(row))
    theta = np.array(rows, np.int64)
    direction = np.array([1, -1, 0], np.int8)
    x = np.array(EDGE_INPUTS, dtype)[:, None].repeat(3, axis=1)
    got = ops.threshold_act(x[None, :, None, :], theta, direction, 2, -levels)
    want = [
        [
            2 * sum(int(d) * int(v) >= int(t) for t in theta[c]) - levels
            for c, d in enumerate(direction)
        ]
        for v in EDGE_INPUTS
    ]
    np.testing.assert_array_equal(got[0, :, 0, :], want)
    assert got.dtype == np.int32


# --- kernels refuse instead of wrapping -----------------------------------------------------


def test_add_is_exact_to_the_int32_edge_and_refuses_past_it() -> None:
    edge = np.array([INT32_MAX, INT32_MIN], np.int32)
    np.testing.assert_array_equal(ops.add(edge, np.array([0, 0], np.int32)), edge)
    for a, b in [(INT32_MAX, 1), (INT32_MIN, -1)]:
        with pytest.raises(KernelError, match="leave int32") as info:
            ops.add(np.array([a], np.int32), np.array([b], np.int32))
        assert isinstance(info.value, ClimbQError)


def test_input_quant_refuses_values_past_int32() -> None:
    images = np.array([[[[0, 255]]]], np.uint8)
    # 255/255 / 1e-6 / 2**-12 = 4.1e9: would wrap to a negative int32
    with pytest.raises(KernelError, match="leave int32"):
        ops.input_quant(images, (0.0, 0.0), (1e-6, 1e-6), 2.0**-12)
    got = ops.input_quant(images, (0.0, 0.0), (1.0, 1.0), 1.0 / INT32_MAX)
    assert got.ravel().tolist() == [0, INT32_MAX]


@pytest.mark.parametrize(
    ("x", "w"),
    [
        ([INT32_MAX], [1]),  # the largest accumulator, float64 path
        ([-INT32_MAX], [1]),
        ([2**24 - 1], [1]),  # the largest float32-path accumulator
        ([2**23 + 1, 2**23], [1, 1]),  # 2**24 + 1: not a float32, needs the float64 path
        ([2**23, -(2**23)], [127, 127]),  # large terms cancelling exactly
        ([8_454_660, 8_454_659], [127, -127]),  # terms near 2**30, bound 2147483640
    ],
)
def test_int_conv_is_exact_at_float32_and_int32_edges(x: list[int], w: list[int]) -> None:
    xs = np.array(x, np.int32).reshape(1, 1, 1, -1)
    ws = np.array(w, np.int8).reshape(1, 1, 1, -1)
    bound = sum(abs(v) for v in w) * max(abs(v) for v in x)
    assert bound <= INT32_MAX
    got = ops.int_conv(xs, ws, 1, 0, 1, bound)
    assert got.dtype == np.int32
    assert int(got.ravel()[0]) == sum(a * b for a, b in zip(x, w, strict=True))


def test_int_conv_refuses_inputs_beyond_the_proven_bound() -> None:
    """A bound promised too small would put the GEMM on float32 (inexact past 2**24) and wrap
    the int32 cast; the kernel checks the inputs against it instead."""
    x = np.full((1, 1, 1, 4), 2**24, np.int32)
    w = np.full((1, 1, 1, 4), 127, np.int8)
    with pytest.raises(KernelError, match=r"beyond the proven bound 1000"):
        ops.int_conv(x, w, 1, 0, 1, 1000)


# --- the bounds pass at the int32 edge ------------------------------------------------------


def _program(
    step: float, weight: list[int], thresholds: list[int] | None = None, extra: str = ""
) -> Graph:
    """image (1x1 or 4x4, C channels, mean 0, std 1, so inputs in [0, 1/step]) -> 1x1 conv with
    ``weight`` -> threshold act; ``extra="add"`` / ``"pool"`` instead ends in x + x / a sum pool
    over the input."""
    c = len(weight)
    size = 4 if extra == "pool" else 1
    tensors = {
        "image": TensorSpec("image", "uint8", (size, size, c), 2),
        "x": TensorSpec("x", "int32", (size, size, c), 2, step),
    }
    nodes: list = [
        InputQuant("in", ("image",), "x", "input", mean=(0.0,) * c, std=(1.0,) * c, step=step)
    ]
    if extra == "add":
        tensors["s"] = TensorSpec("s", "int32", (1, 1, c), 2, step)
        nodes.append(Add("add", ("x", "x"), "s", "layer.add"))
        return Graph(tuple(nodes), tensors, "image", "s")
    if extra == "pool":
        tensors["s"] = TensorSpec("s", "int32", (c,), 0, step / 16)
        nodes.append(GlobalSumPool("pool", ("x",), "s", "layer.pool"))
        return Graph(tuple(nodes), tensors, "image", "s")
    tensors["acc"] = TensorSpec("acc", "int32", (1, 1, 1), 2, step)
    tensors["q"] = TensorSpec("q", "int32", (1, 1, 1), 2, 1.0)
    theta = np.array([thresholds or [0]], np.int64)
    nodes += [
        IntConv(
            "conv",
            ("x",),
            "acc",
            "layer.conv",
            weight=np.array(weight, np.int8).reshape(1, 1, 1, c),
            weight_bits=8,
            weight_grid=(1, -128),
        ),
        ThresholdAct(
            "act",
            ("acc",),
            "q",
            "layer.act",
            thresholds=theta,
            direction=np.array([1], np.int8),
            mult=1,
            offset=0,
            bits=8,
        ),
    ]
    return Graph(tuple(nodes), tensors, "image", "q")


def test_conv_accumulator_exactly_int32_max_is_accepted_and_runs_exactly() -> None:
    thresholds = [0, 2**30, INT32_MAX - 1, INT32_MAX]
    graph = bound_tensors(_program(1.0 / INT32_MAX, [1], thresholds))
    assert graph.tensors["x"].bounds == (0, INT32_MAX)
    assert graph.tensors["acc"].bounds == (0, INT32_MAX)
    assert graph.tensors["acc"].dtype == "int32"
    values = ReferenceModel(graph).run(np.array([[[[0]]], [[[255]]]], np.uint8), keep=True)
    assert values["acc"].ravel().tolist() == [0, INT32_MAX]
    assert values["q"].ravel().tolist() == [1, 4]  # 0 >= 0 only; INT32_MAX reaches all four


def test_threshold_above_an_int32_max_range_is_refused_naming_the_layer() -> None:
    """``theta`` above the input range is stored as ``H + 1`` ("never reached"): not an int32
    when ``H = 2**31 - 1``. Refused, naming the layer and the range, not wrapped."""
    graph = _program(1.0 / INT32_MAX, [1], [0, 2**40])
    with pytest.raises(LoweringError, match=r"threshold_act 'layer\.act'.*2147483648"):
        bound_tensors(graph)
    narrower = bound_tensors(_program(1.0 / (INT32_MAX - 1), [1], [0, 2**40]))
    assert narrower.node("act").thresholds.tolist() == [[0, INT32_MAX]]
    assert narrower.node("act").thresholds.dtype == np.int32


@pytest.mark.parametrize(
    ("step", "weight", "extra", "layer", "ok"),
    [
        (2.0**-24, [64, 63], "", "layer.conv", True),  # 2**24 * 127 = 2130706432
        (2.0**-24, [64, 64], "", "layer.conv", False),  # 2**24 * 128 = 2**31
        (2.0**-24, [-64, -64], "", "layer.conv", False),  # -2**31 fits int32, but -acc not
        (1.0 / (2**30 - 1), [1], "add", "layer.add", True),  # 2**31 - 2
        (2.0**-30, [1], "add", "layer.add", False),  # 2**31
        (1.0 / (2**27 - 1), [1], "pool", "layer.pool", True),  # 16 (2**27 - 1)
        (2.0**-27, [1], "pool", "layer.pool", False),  # 2**31
    ],
)
def test_ranges_past_int32_are_refused_naming_the_layer(
    step: float, weight: list[int], extra: str, layer: str, ok: bool
) -> None:
    graph = _program(step, weight, extra=extra)
    if ok:
        bounded = bound_tensors(graph)
        out = bounded.tensors["s" if extra else "acc"]
        assert out.dtype == "int32" and max(map(abs, out.bounds)) <= INT32_MAX
        return
    with pytest.raises(LoweringError, match=rf"{layer}.*(exceeds int32|2147483648)") as info:
        bound_tensors(graph)
    assert isinstance(info.value, ClimbQError) and layer in str(info.value)


# --- degenerate BatchNorm against torch in float64 ------------------------------------------


def degenerate_batchnorm(model: torch.nn.Module, seed: int, huge: float) -> None:
    """Trained-looking BN with, in every BN: zero gamma, zero variance, zero both, negative
    gamma, huge gamma (+-``huge``) on zero and on tiny variance."""
    randomize_batchnorm(model, seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data[:6] = torch.tensor([0.0, 1.3, 0.0, -2.5, huge, -huge])
            m.running_var[:6] = torch.tensor([3.0, 0.0, 0.0, 1.0, 0.0, 1e-12])


@pytest.mark.parametrize(("seed", "bits", "huge"), [(0, 2, 1e4), (1, 4, 1e8), (2, 8, 50.0)])
def test_degenerate_batchnorm_matches_torch_and_zero_gamma_is_constant(
    seed: int, bits: int, huge: float
) -> None:
    torch.manual_seed(seed)
    model = CifarResNet(8, 10, QuantSpec("climbq", bits, bits))
    degenerate_batchnorm(model, seed, huge)
    graph = lower(capture(model, MEAN, STD, (8, 8, 3)))
    images = np.random.default_rng(seed).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    values = ReferenceModel(graph).run(images, keep=True)
    codes, logits = codes_and_logits(model, graph, images)
    acts = [n for n in graph.nodes if isinstance(n, ThresholdAct)]
    assert len(acts) == len(codes)
    for node in acts:
        got = values[node.output]
        np.testing.assert_array_equal(got, codes[node.source], err_msg=node.source)
        assert node.direction[[0, 2]].tolist() == [0, 0], node.source  # zero gamma: constant
        for channel in (0, 2):
            assert np.unique(got[..., channel]).size == 1, (node.source, channel)
        assert node.direction[3] == -1 and node.direction[5] == -1  # negative gamma
    np.testing.assert_allclose(values[graph.output], logits, rtol=1e-9, atol=1e-9)


# --- every bit width of every activation grid -----------------------------------------------


def lsq_steps(model: torch.nn.Module, seed: int) -> None:
    """Trained-looking LSQ steps: one activation step (a residual add needs equal scales),
    per-layer weight steps."""
    g = torch.Generator().manual_seed(seed)
    act_step = 0.05 + 0.2 * float(torch.rand((), generator=g))
    for m in model.modules():
        if isinstance(m, ActQuant) and m.quantizer is not None:
            m.quantizer.step.data.fill_(act_step)
            m.quantizer.initialized.fill_(True)
        if isinstance(m, QConv2d) and m.weight_quantizer is not None:
            q = m.weight_quantizer
            peak = float(m.weight.detach().abs().max())
            q.step.data.fill_(peak / max(q.q_p, 1) * (0.5 + float(torch.rand((), generator=g))))
            q.initialized.fill_(True)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("method", ["climbq", "uniform", "lsq"])
def test_every_bit_width_and_grid_lowers_and_matches_torch(method: str, bits: int) -> None:
    torch.manual_seed(bits)
    model = CifarResNet(8, 10, QuantSpec(method, bits, bits))
    randomize_batchnorm(model, bits)
    if method == "lsq":
        lsq_steps(model, bits)
    graph = lower(capture(model, MEAN, STD, (8, 8, 3)))
    acts = [n for n in graph.nodes if isinstance(n, ThresholdAct)]
    assert acts and all(n.bits == bits and n.thresholds.shape[1] == 2**bits - 1 for n in acts)
    images = np.random.default_rng(bits).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    values = ReferenceModel(graph).run(images, keep=True)
    codes, logits = codes_and_logits(model, graph, images)
    for node in acts:
        np.testing.assert_array_equal(values[node.output], codes[node.source], err_msg=node.source)
    np.testing.assert_allclose(values[graph.output], logits, rtol=1e-9, atol=1e-9)
