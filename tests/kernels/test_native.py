"""The fused native conv-and-count kernel equals the NumPy oracle bit for bit, on every path.

Oracle: ``threshold_act(int_conv(x, W), theta, d=1, mult, offset)`` (then relu) of
:mod:`climbq_deploy.kernels.ops`, an independent implementation (im2col + float GEMM, exact by
its bound). Every output element is compared (``np.array_equal``) for every SIMD path this CPU
has, forced through ``CLIMBQ_NATIVE_ISA`` (read by the library when a layer is packed), for
int8 inputs and for the int32-input mode (``input_dtype=np.int32``: the stem's ~20-bit inputs;
its portable C loop has one compiled copy per path).
"""

from __future__ import annotations

import ctypes
import os
import re
from typing import Any

import numpy as np
import pytest

from climbq_deploy.errors import KernelError
from climbq_deploy.kernels import native, ops

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

if native.available() is not None:
    pytest.skip(f"native kernel unavailable: {native.available()}", allow_module_level=True)


def _supported_isas() -> list[str]:
    found = []
    saved = os.environ.get("CLIMBQ_NATIVE_ISA")
    try:
        for name in native.ISA_NAMES:
            os.environ["CLIMBQ_NATIVE_ISA"] = name
            if native.isa() == name:
                found.append(name)
    finally:
        if saved is None:
            os.environ.pop("CLIMBQ_NATIVE_ISA", None)
        else:
            os.environ["CLIMBQ_NATIVE_ISA"] = saved
    return found


ISAS = _supported_isas()


@pytest.fixture(params=ISAS)
def isa(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Force one SIMD path for the test (every path the CPU supports, scalar included)."""
    monkeypatch.setenv("CLIMBQ_NATIVE_ISA", request.param)
    return request.param


def reference(
    x: np.ndarray,
    weight: np.ndarray,
    thresholds: np.ndarray,
    *,
    stride: int,
    padding: int,
    groups: int,
    mult: int,
    offset: int,
    relu: bool,
) -> np.ndarray:
    """The oracle's codes; the accumulator bound is ``max_o sum |W_o| * max |x|`` (128 for
    int8 inputs), which must fit int32 (the int32 mode's caller guarantee)."""
    x_max = 128 if x.dtype == np.int8 else int(np.abs(x.astype(np.int64)).max(initial=0))
    bound = int(np.abs(weight.astype(np.int64)).reshape(len(weight), -1).sum(1).max()) * x_max
    acc = ops.int_conv(x, weight, stride, padding, groups, bound)
    direction = np.ones(len(weight), np.int8)
    y = ops.threshold_act(acc, thresholds.astype(np.int64), direction, mult, offset)
    if relu:
        y = ops.relu(y)
    assert y.min(initial=0) >= -128 and y.max(initial=0) <= 127  # test setup, not validation
    return y.astype(np.int8)


def thresholds_for(acc: np.ndarray, levels: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted thresholds drawn from the accumulators themselves (so every count occurs), with
    ties, neighbours (acc +- 1) and the int32 extremes mixed in."""
    out_c = acc.shape[-1]
    values = acc.reshape(-1, out_c).astype(np.int64)
    picks = values[rng.integers(0, len(values), (out_c, levels)), np.arange(out_c)[:, None]]
    picks += rng.integers(-1, 2, picks.shape)
    extremes = np.array([INT32_MIN, INT32_MIN + 1, INT32_MAX - 1, INT32_MAX])
    special = rng.random(picks.shape) < 0.05
    picks[special] = rng.choice(extremes, special.sum())
    if levels > 1:
        picks[:, 1] = picks[:, 0]  # a tie in every channel
    theta = np.sort(np.clip(picks, INT32_MIN, INT32_MAX), axis=1).astype(np.int32)
    if out_c > 1:
        theta[0] = theta[0, levels // 2]  # all equal
    return theta


def codes_for(levels: int, variant: int) -> tuple[int, int]:
    """(mult, offset): ClimbQ's symmetric 2j - n, or uniform codes j (+ shift) within int8."""
    if variant == 0 and 2 * levels <= 255:
        return 2, -levels
    if levels <= 127:
        return 1, 0
    return 1, -128


def make_case(
    rng: np.random.Generator,
    *,
    batch: int,
    hw: tuple[int, int],
    in_c: int,
    out_c: int,
    kernel: int,
    stride: int,
    padding: int,
    depthwise: bool,
    levels: int,
    relu: bool,
    variant: int = 0,
    x_range: tuple[int, int] = (-128, 128),
    w_range: tuple[int, int] = (-15, 16),
    input_dtype: type[np.integer] = np.int8,
    x_max: int = 2**19,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict, np.ndarray]:
    """One random layer: ``(x, weight, thresholds, kwargs, want)`` with ``want`` the NumPy
    kernels' codes (:func:`reference`); also the arm64 test's cases.

    int8 ``x`` is drawn from ``x_range``; int32 ``x`` (``input_dtype=np.int32``) from
    ``[-m, m]`` with ``m = min(x_max, (2**31 - 1) // max_o sum |W_o|)``, so that every
    accumulator fits int32 (the int32 mode's caller guarantee) and reaches up to ``2**19 sum |W|``.
    """
    groups = in_c if depthwise else 1
    if depthwise:
        out_c = in_c
    w_shape = (out_c, kernel, kernel, 1 if depthwise else in_c)
    if np.dtype(input_dtype) == np.int8:
        x = rng.integers(*x_range, (batch, *hw, in_c), dtype=np.int8)
        weight = rng.integers(*w_range, w_shape, np.int8)
    else:
        weight = rng.integers(*w_range, w_shape, np.int8)
        weight_sum = int(np.abs(weight.astype(np.int64)).reshape(out_c, -1).sum(1).max())
        limit = min(x_max, INT32_MAX // max(weight_sum, 1))
        x = rng.integers(-limit, limit + 1, (batch, *hw, in_c), dtype=np.int32)
    acc = ops.int_conv(x, weight, stride, padding, groups, INT32_MAX)
    theta = thresholds_for(acc, levels, rng)
    mult, offset = codes_for(levels, variant)
    kw = dict(stride=stride, padding=padding, groups=groups, mult=mult, offset=offset, relu=relu)
    return x, weight, theta, kw, reference(x, weight, theta, **kw)


def check(rng: np.random.Generator, **case: Any) -> None:
    """The native kernel's codes of :func:`make_case`'s layer equal the reference's."""
    x, weight, theta, kw, want = make_case(rng, **case)
    got = native.conv_count(x, weight, theta, **kw)
    assert got.dtype == np.int8 and got.shape == want.shape
    mismatched = np.argwhere(got != want)
    assert np.array_equal(got, want), (
        f"{len(mismatched)} of {got.size} codes differ, first at {mismatched[:3].tolist()}: "
        f"got {got[tuple(mismatched[0])]}, want {want[tuple(mismatched[0])]} ({kw}, "
        f"levels {case['levels']}, isa {native.isa()})"
    )


SHAPES = [
    # (batch, hw, in_c, out_c, kernel, stride, padding, depthwise)
    (1, (8, 8), 16, 16, 3, 1, 1, False),
    (3, (7, 9), 3, 17, 3, 2, 1, False),
    (1, (6, 5), 33, 70, 1, 1, 0, False),
    (1, (9, 9), 5, 33, 5, 1, 2, False),
    (3, (5, 11), 17, 5, 5, 2, 0, False),
    (1, (4, 4), 64, 64, 3, 1, 1, False),
    (1, (10, 7), 70, 3, 1, 2, 2, False),
    (1, (3, 3), 1, 1, 3, 1, 0, False),
    (1, (9, 10), 33, 33, 3, 1, 1, True),
    (3, (8, 8), 17, 17, 3, 2, 1, True),
    (1, (7, 7), 70, 70, 5, 1, 2, True),
    (1, (6, 9), 5, 5, 3, 2, 0, True),
    (1, (8, 8), 192, 192, 3, 1, 1, True),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}_{}x{}_c{}-{}_k{}s{}p{}{}".format(
    s[0], *s[1], *s[2:7], "_dw" if s[7] else ""))  # fmt: skip
def test_shapes_every_path(isa: str, shape: tuple) -> None:
    batch, hw, in_c, out_c, kernel, stride, padding, depthwise = shape
    rng = np.random.default_rng(abs(hash((isa, shape))) % 2**32)
    for levels, relu in ((15, True), (3, False)):
        check(
            rng, batch=batch, hw=hw, in_c=in_c, out_c=out_c, kernel=kernel, stride=stride,
            padding=padding, depthwise=depthwise, levels=levels, relu=relu,
        )  # fmt: skip


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("variant", [0, 1])
def test_bit_widths_every_path(isa: str, bits: int, variant: int) -> None:
    rng = np.random.default_rng(1000 * bits + variant)
    levels = 2**bits - 1
    for depthwise in (False, True):
        check(
            rng, batch=2, hw=(6, 7), in_c=19, out_c=21, kernel=3, stride=1, padding=1,
            depthwise=depthwise, levels=levels, relu=bool(variant), variant=variant,
        )  # fmt: skip


def test_random_layers_every_path(isa: str) -> None:
    """40 seeded random layers: kernel 1-5, stride 1-3, padding 0-2, any channel count."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        kernel = int(rng.integers(1, 6))
        padding = int(rng.integers(0, 3))
        hw = (int(rng.integers(max(1, kernel - 2 * padding), 10)),) * 2
        check(
            rng, batch=int(rng.integers(1, 4)), hw=hw, in_c=int(rng.integers(1, 40)),
            out_c=int(rng.integers(1, 40)), kernel=kernel, stride=int(rng.integers(1, 4)),
            padding=padding, depthwise=bool(rng.random() < 0.3),
            levels=int(rng.choice([1, 2, 3, 7, 15, 16, 17, 31, 127, 255])),
            relu=bool(rng.random() < 0.5), variant=int(rng.integers(0, 2)),
            x_range=(-30, 31) if rng.random() < 0.5 else (-128, 128),
            w_range=(-127, 128) if rng.random() < 0.3 else (-15, 16),
        )  # fmt: skip


def test_accumulators_at_the_int32_edge(isa: str) -> None:
    """A 1x1 conv over 132105 channels with sum |W| = 2**24 - 1 (the largest the bound allows):
    accumulators reach +-(2**31 - 128); thresholds at acc - 1, acc, acc + 1 and the extremes."""
    in_c = 132105
    magnitude = np.full(in_c, 127, np.int64)
    magnitude[-1] = 7  # 132104 * 127 + 7 = 2**24 - 1
    signs = np.array([1, -1, 1, -1])[:, None] * np.where(np.arange(in_c) % 2, -1, 1)[None]
    signs[:2] = np.array([1, -1])[:, None]
    weight = (magnitude * signs).astype(np.int8).reshape(4, 1, 1, in_c)
    x = np.empty((3, 1, 2, in_c), np.int8)
    x[0, 0, 0], x[0, 0, 1] = -128, 127
    x[1, 0, 0] = np.where(np.arange(in_c) % 2, 127, -128)
    x[1, 0, 1] = np.where(np.arange(in_c) % 2, -128, 127)
    x[2] = np.random.default_rng(3).integers(-128, 128, (1, 2, in_c), dtype=np.int8)
    acc = ops.int_conv(x, weight, 1, 0, 1, INT32_MAX).astype(np.int64)
    assert int(np.abs(acc).max()) == 128 * (2**24 - 1)  # the edge is reached (test setup)
    edge = acc.max()
    for levels in (3, 15, 127):
        rows = []
        for o in range(4):
            candidates = [INT32_MIN, INT32_MAX, -edge, -edge + 1, edge - 1, edge, edge + 1]
            candidates += [int(a) + d for a in acc[..., o].ravel() for d in (-1, 0, 1)]
            rows.append(np.sort(np.resize(np.array(candidates), levels)))
        theta = np.clip(np.array(rows), INT32_MIN, INT32_MAX).astype(np.int32)
        mult, offset = codes_for(levels, 0)
        kw = dict(stride=1, padding=0, groups=1, mult=mult, offset=offset, relu=False)
        got = native.conv_count(x, weight, theta, **kw)
        np.testing.assert_array_equal(got, reference(x, weight, theta, **kw))


def test_forced_path_is_used(isa: str) -> None:
    layer = native.PackedConvCount(
        np.ones((4, 3, 3, 4), np.int8), np.zeros((4, 3), np.int32), input_hw=(5, 5)
    )
    assert layer.isa == isa == native.isa()
    layer.close()
    layer.close()  # idempotent


def test_unknown_isa_name_falls_back_to_best(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLIMBQ_NATIVE_ISA", raising=False)
    best = native.isa()
    assert best == ISAS[0]  # ISA_NAMES lists the paths best first
    monkeypatch.setenv("CLIMBQ_NATIVE_ISA", "no-such-isa")
    assert native.isa() == best


def test_packed_layer_runs_many_batches(isa: str) -> None:
    rng = np.random.default_rng(11)
    weight = rng.integers(-15, 16, (20, 3, 3, 12), np.int8)
    theta = np.sort(rng.integers(-2000, 2000, (20, 15)), axis=1).astype(np.int32)
    kw = dict(stride=1, padding=1, groups=1, mult=2, offset=-15, relu=True)
    with native.PackedConvCount(weight, theta, input_hw=(8, 8), **kw) as layer:
        assert layer.output_shape == (8, 8, 20) and layer.input_shape == (8, 8, 12)
        for batch in (1, 3, 0):
            x = rng.integers(-30, 31, (batch, 8, 8, 12), dtype=np.int8)
            np.testing.assert_array_equal(layer.run(x), reference(x, weight, theta, **kw))
        strided = rng.integers(-30, 31, (2, 8, 16, 12), dtype=np.int8)[:, :, ::2]
        np.testing.assert_array_equal(
            layer.run(strided), reference(np.ascontiguousarray(strided), weight, theta, **kw)
        )
    with pytest.raises(KernelError, match="closed"):
        layer.run(x)


# ---------------------------------------------------------------------------------------------
# The int32-input mode (the stem: ~20-bit integer images), every path.

INT32_SHAPES = [
    # (batch, hw, in_c, out_c, kernel, stride, padding, depthwise)
    (1, (32, 32), 3, 32, 3, 1, 1, False),  # the stem
    (3, (9, 11), 3, 40, 3, 2, 1, False),
    (1, (8, 8), 1, 1, 3, 1, 0, False),
    (1, (7, 9), 4, 17, 5, 1, 2, False),
    (3, (10, 7), 4, 16, 5, 3, 2, False),
    (1, (6, 6), 3, 7, 1, 1, 0, False),
    (1, (9, 9), 1, 33, 3, 3, 0, False),
    (1, (13, 5), 3, 64, 3, 2, 1, False),
    (1, (8, 8), 3, 70, 3, 1, 1, False),  # two channel blocks (64 + 16)
    (2, (5, 6), 4, 48, 1, 2, 2, False),
    (1, (9, 10), 33, 33, 3, 1, 1, True),
    (3, (8, 8), 17, 17, 3, 2, 1, True),
    (1, (7, 7), 70, 70, 5, 1, 2, True),
    (1, (16, 16), 32, 32, 3, 1, 1, True),
    (1, (6, 9), 5, 5, 3, 3, 0, True),
]


@pytest.mark.parametrize("shape", INT32_SHAPES, ids=lambda s: "b{}_{}x{}_c{}-{}_k{}s{}p{}{}".format(
    s[0], *s[1], *s[2:7], "_dw" if s[7] else ""))  # fmt: skip
def test_int32_input_shapes_every_path(isa: str, shape: tuple) -> None:
    batch, hw, in_c, out_c, kernel, stride, padding, depthwise = shape
    rng = np.random.default_rng(abs(hash(("int32", isa, shape))) % 2**32)
    for levels, relu, w_range in ((15, True, (-127, 128)), (3, False, (-15, 16))):
        check(
            rng, batch=batch, hw=hw, in_c=in_c, out_c=out_c, kernel=kernel, stride=stride,
            padding=padding, depthwise=depthwise, levels=levels, relu=relu, w_range=w_range,
            input_dtype=np.int32,
        )  # fmt: skip


@pytest.mark.parametrize("levels", [1, 3, 15, 16, 17, 63, 64, 100, 255])
def test_int32_input_levels_every_path(isa: str, levels: int) -> None:
    """The linear count (up to 63 levels in the int32 mode) and the binary search (beyond),
    relu on and off, both code variants, dense and depthwise."""
    rng = np.random.default_rng(levels)
    for relu, variant in ((False, 0), (True, 1)):
        for depthwise in (False, True):
            check(
                rng, batch=2, hw=(6, 7), in_c=19 if depthwise else 3, out_c=21, kernel=3,
                stride=1, padding=1, depthwise=depthwise, levels=levels, relu=relu,
                variant=variant, w_range=(-127, 128), input_dtype=np.int32,
            )  # fmt: skip


def test_int32_input_random_layers_every_path(isa: str) -> None:
    """30 seeded random layers: in_c 1-4 (dense) or 1-40 (depthwise), out_c 1-40, kernel 1-5,
    stride 1-3, padding 0-2, inputs up to +-2**19 (less where the weight sum needs it)."""
    rng = np.random.default_rng(19)
    for _ in range(30):
        kernel = int(rng.integers(1, 6))
        padding = int(rng.integers(0, 3))
        hw = (int(rng.integers(max(1, kernel - 2 * padding), 12)),) * 2
        depthwise = bool(rng.random() < 0.3)
        check(
            rng, batch=int(rng.integers(1, 4)), hw=hw,
            in_c=int(rng.integers(1, 41 if depthwise else 5)), out_c=int(rng.integers(1, 41)),
            kernel=kernel, stride=int(rng.integers(1, 4)), padding=padding, depthwise=depthwise,
            levels=int(rng.choice([1, 2, 3, 7, 15, 16, 17, 31, 255])),
            relu=bool(rng.random() < 0.5), variant=int(rng.integers(0, 2)),
            w_range=(-127, 128) if rng.random() < 0.5 else (-15, 16),
            x_max=int(rng.choice([2**7, 2**15, 2**19])), input_dtype=np.int32,
        )  # fmt: skip


def _edge_thresholds(acc: np.ndarray, levels: int) -> np.ndarray:
    """Per channel: the int32 extremes and every accumulator - 1, itself and + 1 (sorted,
    resized to ``levels``)."""
    rows = []
    for o in range(acc.shape[-1]):
        edge = int(np.abs(acc[..., o]).max())
        candidates = [INT32_MIN, INT32_MAX, -edge, -edge + 1, edge - 1, edge, edge + 1]
        candidates += [int(a) + d for a in acc[..., o].ravel() for d in (-1, 0, 1)]
        rows.append(np.sort(np.resize(np.array(candidates), levels)))
    return np.clip(np.array(rows), INT32_MIN, INT32_MAX).astype(np.int32)


def test_int32_input_accumulators_at_the_int32_edge(isa: str) -> None:
    """Inputs +-M with the signs of W_0 (M = (2**31 - 1) // sum |W_0|, sum |W_0| < 2**10 the
    largest weight sum): accumulators reach +-(2**31 - 2**10) and beyond, without overflow;
    thresholds at acc - 1, acc, acc + 1 and the extremes. Dense 3x3x3 and depthwise 3x3."""
    rng = np.random.default_rng(31)
    for depthwise in (False, True):
        in_c = 5 if depthwise else 3
        out_c = in_c if depthwise else 4
        cin = 1 if depthwise else in_c
        magnitude = rng.integers(100 if depthwise else 20, 114 if depthwise else 38,
                                 (out_c, 3, 3, cin))  # fmt: skip
        sign = rng.choice(np.array([-1, 1]), (out_c, 3, 3, cin))
        weight = (magnitude * sign).astype(np.int8)
        if not depthwise:
            weight[1] = -weight[0]
            weight[2] = weight[2] // 3
        sums = np.abs(weight.astype(np.int64)).reshape(out_c, -1).sum(1)
        weight_sum = int(sums.max())
        assert weight_sum < 2**10  # test setup
        m = INT32_MAX // weight_sum
        signs = np.sign(weight.astype(np.int64))
        # images 5x5, padding 1: the centre pixel sees the full 3x3 pattern +-M sign(W_o)
        x = rng.integers(-m, m + 1, (3, 5, 5, in_c)).astype(np.int32)
        if depthwise:
            x[0, 1:4, 1:4, :] = m * signs[..., 0].transpose(1, 2, 0)
            x[1, 1:4, 1:4, :] = -m * signs[..., 0].transpose(1, 2, 0)
        else:
            x[0, 1:4, 1:4, :] = m * signs[0]
            x[1, 1:4, 1:4, :] = -m * signs[0]
        kw = dict(stride=1, padding=1, groups=in_c if depthwise else 1)
        acc = ops.int_conv(x, weight, 1, 1, kw["groups"], INT32_MAX).astype(np.int64)
        assert int(np.abs(acc).max()) >= 2**31 - 2**10  # the edge is reached (test setup)
        for levels in (3, 15, 17, 255):
            theta = _edge_thresholds(acc, levels)
            mult, offset = codes_for(levels, 0)
            kw.update(mult=mult, offset=offset, relu=levels == 15)
            got = native.conv_count(x, weight, theta, **kw)
            np.testing.assert_array_equal(got, reference(x, weight, theta, **kw))


@pytest.mark.parametrize("levels", [15, 63, 64, 100, 255])
def test_int32_input_extreme_values_every_path(isa: str, levels: int) -> None:
    """x * 1 over the whole int32 range (acc = x: -2**31, 2**31 - 1 and their neighbours)
    against thresholds that include the extremes: a count of levels reached by
    acc = 2**31 - 1 only, none by acc = -2**31 unless a threshold is -2**31."""
    rng = np.random.default_rng(levels)
    extremes = np.array([INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX])
    values = np.concatenate([extremes, rng.integers(INT32_MIN, INT32_MAX, 25, endpoint=True)])
    x = values.astype(np.int32).reshape(1, 4, 8, 1)
    weight = np.ones((3, 1, 1, 1), np.int8)
    picks = [rng.choice(np.concatenate([extremes, values]), levels) for _ in range(3)]
    theta = np.sort(np.array(picks), axis=1).astype(np.int32)
    theta[0, -1] = INT32_MAX  # the top level: reached by 2**31 - 1 alone
    theta[1, 0] = INT32_MIN  # the bottom level: reached by everything
    mult, offset = codes_for(levels, 1)
    kw = dict(stride=1, padding=0, groups=1, mult=mult, offset=offset, relu=False)
    got = native.conv_count(x, weight, theta, **kw)
    acc = np.repeat(x.astype(np.int64), 3, axis=3)  # W = 1: acc = x in every channel
    want = ops.threshold_act(acc, theta.astype(np.int64), np.ones(3, np.int8), mult, offset)
    np.testing.assert_array_equal(got, want.astype(np.int8))


def test_int32_input_wraps_modulo_2_32_outside_the_guarantee(isa: str) -> None:
    """Beyond the caller's guarantee the kernel's sum wraps modulo 2**32 (defined behaviour):
    the codes are those of the wrapped accumulator (1x1 conv, int64 sums wrapped here)."""
    rng = np.random.default_rng(5)
    x = rng.integers(INT32_MIN, INT32_MAX, (2, 3, 4, 6), dtype=np.int64, endpoint=True)
    x[0, 0, 0] = INT32_MIN
    x = x.astype(np.int32)
    weight = rng.integers(-128, 128, (20, 1, 1, 6), dtype=np.int8)
    exact = np.einsum("nhwc,oc->nhwo", x.astype(np.int64), weight[:, 0, 0].astype(np.int64))
    wrapped = ((exact + 2**31) % 2**32 - 2**31).astype(np.int64)
    assert np.abs(exact).max() > INT32_MAX  # the guarantee is broken (test setup)
    theta = np.sort(rng.integers(INT32_MIN, INT32_MAX, (20, 15), dtype=np.int64), axis=1)
    theta = theta.astype(np.int32)
    want = ops.threshold_act(wrapped, theta.astype(np.int64), np.ones(20, np.int8), 2, -15)
    got = native.conv_count(x, weight, theta, mult=2, offset=-15)
    np.testing.assert_array_equal(got, want.astype(np.int8))


def test_int32_input_has_no_weight_sum_bound(isa: str) -> None:
    """The int8 refusal ``max_o sum |W_o| * 128 > 2**31 - 1`` does not apply to int32 input
    (the caller's guarantee): sum |W| = 16777335 with inputs in -1..1 runs exactly."""
    rng = np.random.default_rng(8)
    weight = np.full((2, 1, 1, 132105), 127, np.int8)
    weight[1, ..., ::2] = -127
    x = rng.integers(-1, 2, (2, 1, 2, 132105), dtype=np.int32)
    acc = ops.int_conv(x, weight, 1, 0, 1, INT32_MAX)
    theta = _edge_thresholds(acc, 7)
    kw = dict(stride=1, padding=0, groups=1, mult=1, offset=0, relu=False)
    with pytest.raises(KernelError, match="beyond int32"):
        native.PackedConvCount(weight, theta, input_hw=(1, 2), **kw)
    with native.PackedConvCount(
        weight, theta, input_hw=(1, 2), input_dtype=np.int32, **kw
    ) as layer:
        np.testing.assert_array_equal(layer.run(x), reference(x, weight, theta, **kw))


def test_int32_packed_layer_runs_many_batches(isa: str) -> None:
    rng = np.random.default_rng(12)
    weight = rng.integers(-127, 128, (20, 3, 3, 3), np.int8)
    theta = np.sort(rng.integers(-(2**28), 2**28, (20, 15)), axis=1).astype(np.int32)
    kw = dict(stride=2, padding=1, groups=1, mult=2, offset=-15, relu=True)
    with native.PackedConvCount(
        weight, theta, input_hw=(9, 8), input_dtype=np.int32, **kw
    ) as layer:
        assert layer.isa == isa and layer.params["input_type"] == 1
        assert layer.input_dtype == np.int32 and layer.output_shape == (5, 4, 20)
        for batch in (1, 3, 0):
            x = rng.integers(-(2**19), 2**19, (batch, 9, 8, 3), dtype=np.int32)
            np.testing.assert_array_equal(layer.run(x), reference(x, weight, theta, **kw))
        strided = rng.integers(-(2**19), 2**19, (2, 9, 16, 3), dtype=np.int32)[:, :, ::2]
        np.testing.assert_array_equal(
            layer.run(strided), reference(np.ascontiguousarray(strided), weight, theta, **kw)
        )


def test_int32_input_dtype_is_checked() -> None:
    with native.PackedConvCount(W, T, input_hw=(5, 6), input_dtype=np.int32) as layer:
        with pytest.raises(
            KernelError, match=r"x must be an int32 NHWC array, got int8 .* input_dtype int32"
        ):
            layer.run(np.zeros((1, 5, 6, 4), np.int8))
        with pytest.raises(KernelError, match=r"x must be an int32 NHWC array, got int64"):
            layer.run(np.zeros((1, 5, 6, 4), np.int64))
    with native.PackedConvCount(W, T, input_hw=(5, 6)) as layer:
        assert layer.input_dtype == np.int8 and layer.params["input_type"] == 0
        with pytest.raises(
            KernelError, match=r"x must be an int8 NHWC array, got int32 .* input_dtype int8\)"
        ):
            layer.run(np.zeros((1, 5, 6, 4), np.int32))
    for bad in (np.int16, np.uint8, "float32", None):
        with pytest.raises(KernelError, match="input_dtype must be int8 or int32"):
            native.PackedConvCount(W, T, input_hw=(5, 6), input_dtype=bad)  # type: ignore[arg-type]
    with pytest.raises(
        KernelError, match=r"input_dtype must be int8 or int32, got dtype\('int16'\)"
    ):
        native.conv_count(np.zeros((1, 5, 5, 4), np.int16), W, T)


@pytest.mark.parametrize("input_type", [-1, 2, 7])
def test_input_type_outside_0_1_is_refused_by_the_params_check(input_type: int) -> None:
    """climbq_cc_pack itself (not only the Python wrapper) names the field."""
    lib = native._require()
    params = native._Params(5, 5, 4, 3, 3, 4, 3, 3, 1, 0, 1, 3, 1, 0, 0, input_type)
    weight, theta = np.ascontiguousarray(W), np.ascontiguousarray(T)
    handle = ctypes.c_void_p()
    err = ctypes.create_string_buffer(256)
    code = lib.climbq_cc_pack(
        ctypes.byref(params), weight.ctypes.data, theta.ctypes.data, ctypes.byref(handle), err
    )
    assert code != 0 and not handle.value
    assert err.value.decode() == f"input_type must be 0 (int8) or 1 (int32), got {input_type}"
    for valid in (0, 1):
        params.input_type = valid
        assert (
            lib.climbq_cc_pack(
                ctypes.byref(params),
                weight.ctypes.data,
                theta.ctypes.data,
                ctypes.byref(handle),
                err,
            )
            == 0
        ), err.value
        lib.climbq_cc_free(handle)


# ---------------------------------------------------------------------------------------------
# Validation: every field the C contract needs is checked in Python, with its name and value.

W = np.ones((4, 3, 3, 4), np.int8)
T = np.zeros((4, 3), np.int32)


@pytest.mark.parametrize(
    ("weight", "thresholds", "kwargs", "message"),
    [
        (W.astype(np.int16), T, {}, "weight must be an int8 OHWI array, got int16"),
        (W[0], T, {}, r"weight must be an int8 OHWI array, got int8 shape \(3, 3, 4\)"),
        (W, T.astype(np.float32), {}, "thresholds must be an integer"),
        (W, T[:3], {}, r"thresholds shape \(3, 3\) does not match out_c 4"),
        (W, np.zeros((4, 0), np.int32), {}, "levels = 0"),
        (W, np.zeros((4, 256), np.int32), {}, "levels = 256"),
        (W, np.array([[0, 2, 1]] * 4), {}, r"channel 0 decrease \(\[0, 2, 1\]\)"),
        (W, np.full((4, 3), 2**31, np.int64), {}, r"thresholds in \[2147483648"),
        (W, T, {"mult": 2, "offset": 122}, r"codes .* reach 122\.\.128"),
        (W, np.zeros((4, 127), np.int32), {"mult": 2, "offset": 0}, "beyond int8"),
        (W, T, {"offset": -129}, r"reach -129\.\.-126"),
        (
            np.full((2, 1, 1, 132105), 127, np.int8),
            np.zeros((2, 3), np.int32),
            {"input_hw": (1, 1)},
            r"weight sum \|W\| 16777335 .* beyond int32",
        ),
        (W, T, {"groups": 2}, "groups = 2 with weight shape"),
        (W, T, {"stride": 0}, r"stride = 0 outside 1\.\.65535"),
        (W, T, {"padding": -1}, "padding = -1"),
        (W, T, {"stride": 1.5}, "stride must be an integer"),
        (W, T, {"relu": 1}, "relu must be a bool"),
        (W, T, {"input_hw": (2, 5)}, r"kernel 3x3 larger than the padded input 2x5"),
        (W, T, {"input_hw": (0, 5)}, "input height = 0"),
    ],
)
def test_bad_parameters_are_refused(
    weight: np.ndarray, thresholds: np.ndarray, kwargs: dict, message: str
) -> None:
    kwargs = {"input_hw": (5, 5), **kwargs}
    with pytest.raises(KernelError, match=message):
        native.PackedConvCount(weight, thresholds, **kwargs)


def test_bad_inputs_are_refused() -> None:
    with native.PackedConvCount(W, T, input_hw=(5, 6)) as layer:
        for x, message in [
            (np.zeros((1, 5, 6, 4), np.uint8), "x must be an int8 NHWC array, got uint8"),
            (np.zeros((5, 6, 4), np.int8), r"got int8 shape \(5, 6, 4\)"),
            (np.zeros((1, 6, 5, 4), np.int8), re.escape("(1, 6, 5, 4) does not match")),
            (np.zeros((1, 5, 6, 3), np.int8), r"packed input \(N, 5, 6, 4\)"),
            ([[1]], "x must be an int8 NHWC array, got list"),
        ]:
            with pytest.raises(KernelError, match=message):
                layer.run(x)  # type: ignore[arg-type]
    with pytest.raises(KernelError, match="x must be an int8 NHWC array"):
        native.conv_count(np.zeros((5, 5), np.int8), W, T)


def test_library_reports_itself() -> None:
    path = native.library_path()
    assert path is not None and path.is_file() and "_climbq_native" in path.name
    assert native.available() is None
    assert set(ISAS) >= {"scalar"} and set(ISAS) <= set(native.ISA_NAMES)
    assert native.ABI_VERSION == 2 and native.PARAM_FIELDS[-1] == "input_type"
    assert ctypes.sizeof(native._Params) == 4 * len(native.PARAM_FIELDS) == 64
