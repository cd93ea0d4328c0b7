"""The fused native conv-and-count kernel equals the NumPy oracle bit for bit, on every path.

Oracle: ``threshold_act(int_conv(x, W), theta, d=1, mult, offset)`` (then relu) of
:mod:`climbq_deploy.kernels.ops`, an independent implementation (im2col + float GEMM, exact by
its bound). Every output element is compared (``np.array_equal``) for every SIMD path this CPU
has, forced through ``CLIMBQ_NATIVE_ISA`` (read by the library when a layer is packed).
"""

from __future__ import annotations

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
    bound = int(np.abs(weight.astype(np.int64)).reshape(len(weight), -1).sum(1).max()) * 128
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict, np.ndarray]:
    """One random layer: ``(x, weight, thresholds, kwargs, want)`` with ``want`` the NumPy
    kernels' codes (:func:`reference`); also the arm64 test's cases."""
    groups = in_c if depthwise else 1
    if depthwise:
        out_c = in_c
    x = rng.integers(*x_range, (batch, *hw, in_c), dtype=np.int8)
    weight = rng.integers(*w_range, (out_c, kernel, kernel, 1 if depthwise else in_c), np.int8)
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
