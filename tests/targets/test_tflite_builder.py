"""ModelBuilder: tiny models built here, run in LiteRT, checked against NumPy written here.

The int8 golden values re-implement TFLite's reference requantization (``QuantizeMultiplier``,
``SaturatingRoundingDoublingHighMul``, ``RoundingDivideByPOT``) independently of the builder;
with the reference kernels (``BUILTIN_REF``) the outputs must match exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="LiteRT (pip install ai-edge-litert) is not installed")

from ai_edge_litert.interpreter import Interpreter, OpResolverType

from climbq_deploy.errors import ConfigError
from climbq_deploy.targets.tflite.builder import ModelBuilder, pack_int4

REF = OpResolverType.BUILTIN_REF
AUTO = OpResolverType.AUTO  # optimized kernels plus the XNNPACK delegate
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def run(model: bytes, inputs: Sequence[np.ndarray], resolver: OpResolverType) -> list[np.ndarray]:
    interpreter = Interpreter(model_content=model, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    for detail, value in zip(interpreter.get_input_details(), inputs, strict=True):
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


# --- TFLite's reference requantization, written from the kernel headers ---------------------


def quantize_multiplier(multiplier: float) -> tuple[int, int]:
    """``tflite::QuantizeMultiplier``: ``multiplier = q * 2**(shift - 31)``, q in [2**30, 2**31)."""
    if multiplier == 0.0:
        return 0, 0
    fraction, shift = math.frexp(multiplier)
    scaled = fraction * 2**31  # exact: scaling by a power of two
    q_fixed = int(math.copysign(math.floor(abs(scaled) + 0.5), scaled))  # std::round
    if q_fixed == 2**31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: int) -> np.ndarray:
    """gemmlowp's SaturatingRoundingDoublingHighMul on int32 values held in int64."""
    product = a.astype(np.int64) * np.int64(b)
    nudged = product + np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(nudged >= 0, nudged >> 31, -((-nudged) >> 31))  # C++ division truncates
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high)


def rounding_divide_by_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(acc: np.ndarray, q: int, shift: int) -> np.ndarray:
    left, right = max(shift, 0), max(-shift, 0)
    shifted = acc.astype(np.int64) * (1 << left)
    assert np.all((shifted >= INT32_MIN) & (shifted <= INT32_MAX)), "test data overflows int32"
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, q), right)


def requantize(
    acc: np.ndarray, s_in: np.float32, s_w: np.ndarray, s_out: np.float32, zp_out: int
) -> np.ndarray:
    """int32 accumulators (..., C) -> int8 with per-channel multipliers s_in * s_w[c] / s_out."""
    assert np.all((acc >= INT32_MIN) & (acc <= INT32_MAX))
    out = np.empty(acc.shape, dtype=np.int64)
    for c in range(acc.shape[-1]):
        q, shift = quantize_multiplier(float(s_in) * float(s_w[c]) / float(s_out))
        out[..., c] = multiply_by_quantized_multiplier(acc[..., c], q, shift)
    return np.clip(out + zp_out, -128, 127).astype(np.int8)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_accumulators(
    x: np.ndarray, zp_in: int, w_hwio: np.ndarray, bias: np.ndarray, padding: str, stride: int
) -> np.ndarray:
    """int64 sum over (ky, kx, ci) of (x - zp_in) * w, plus bias; x NHWC, w (kh, kw, ci, co)."""
    kh, kw = w_hwio.shape[:2]
    centered = x.astype(np.int64) - zp_in
    if padding == "SAME":
        pads = (same_padding(x.shape[1], kh, stride), same_padding(x.shape[2], kw, stride))
        centered = np.pad(centered, ((0, 0), pads[0], pads[1], (0, 0)))  # zeros = zp_in
    out_h = (centered.shape[1] - kh) // stride + 1
    out_w = (centered.shape[2] - kw) // stride + 1
    acc = np.zeros((x.shape[0], out_h, out_w, w_hwio.shape[3]), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            window = centered[
                :, ky : ky + stride * out_h : stride, kx : kx + stride * out_w : stride
            ]
            acc += window @ w_hwio[ky, kx].astype(np.int64)
    return acc + bias.astype(np.int64)


# --- 1. int32 elementwise ops and compare-and-count ------------------------------------------


@pytest.mark.parametrize("resolver", [REF, AUTO], ids=["ref", "auto"])
def test_int32_broadcast_ops_and_compare_count(resolver: OpResolverType) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(-50, 50, (2, 3, 4), dtype=np.int32)
    c_add = rng.integers(-9, 9, (4,), dtype=np.int32)
    c_mul = rng.integers(-3, 4, (3, 1), dtype=np.int32)
    c_max = rng.integers(-40, 0, (1, 1, 4), dtype=np.int32)
    y = np.maximum((x + c_add) * c_mul, c_max)
    thresholds = rng.integers(-30, 30, (4,), dtype=np.int32)
    thresholds[1] = y[0, 0, 1]  # exercise equality: x >= t at x == t
    thresholds[2] = y[1, 2, 2] + 1
    count = (y >= thresholds).astype(np.int32).sum(axis=-1)

    m = ModelBuilder()
    t_x = m.add_tensor("x", x.shape, "int32")
    t_a = m.add_tensor("added", x.shape, "int32")
    t_m = m.add_tensor("scaled", x.shape, "int32")
    t_y = m.add_tensor("y", x.shape, "int32")
    t_ge = m.add_tensor("ge", x.shape, "bool")
    t_ci = m.add_tensor("ge_int", x.shape, "int32")
    t_n = m.add_tensor("count", (2, 3), "int32")
    m.add_operator("ADD", [t_x, m.add_tensor("c_add", (4,), "int32", data=c_add)], [t_a])
    m.add_operator("MUL", [t_a, m.add_tensor("c_mul", (3, 1), "int32", data=c_mul)], [t_m])
    m.add_operator("MAXIMUM", [t_m, m.add_tensor("c_max", (1, 1, 4), "int32", data=c_max)], [t_y])
    t_thr = m.add_tensor("thresholds", (4,), "int32", data=thresholds)
    m.add_operator("GREATER_EQUAL", [t_y, t_thr], [t_ge])
    m.add_operator("CAST", [t_ge], [t_ci])
    t_axes = m.add_tensor("axes", (1,), "int32", data=np.array([2]))
    m.add_operator("SUM", [t_ci, t_axes], [t_n], keep_dims=False)
    m.set_io([t_x], [t_y, t_n])

    got_y, got_count = run(m.build(), [x], resolver)
    assert got_y.dtype == np.int32 and got_count.dtype == np.int32
    np.testing.assert_array_equal(got_y, y)
    np.testing.assert_array_equal(got_count, count)


# --- 2-4. int8 convolutions ------------------------------------------------------------------


def conv_case(seed: int, shape: tuple[int, int, int, int], depthwise: bool = False):
    """Random int8 input/weights/bias and float32 scales for a 3x3 (depthwise) convolution."""
    rng = np.random.default_rng(seed)
    c_in = shape[3]
    c_out = c_in if depthwise else int(rng.integers(1, 5))
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    weights = rng.integers(-127, 128, (c_out, 3, 3, c_in), dtype=np.int8)  # OHWI
    s_in = np.float32(rng.uniform(0.01, 0.05))
    s_w = rng.uniform(0.002, 0.02, c_out).astype(np.float32)
    s_out = np.float32(rng.uniform(0.05, 0.4) * (1 if depthwise else np.sqrt(c_in)))
    bias_scale = (np.float64(s_in) * s_w.astype(np.float64)).astype(np.float32)
    bias = rng.integers(-3000, 3000, c_out, dtype=np.int32)
    return x, int(rng.integers(-20, 20)), weights, s_in, s_w, s_out, bias_scale, bias


def conv_model(
    x: np.ndarray,
    zp_in: int,
    weights: np.ndarray,
    s_in: np.float32,
    s_w: np.ndarray,
    s_out: np.float32,
    zp_out: int,
    bias_scale: np.ndarray,
    bias: np.ndarray,
    out_shape: tuple[int, ...],
    padding: str,
    stride: int,
    filter_dtype: str = "int8",
) -> bytes:
    m = ModelBuilder()
    t_x = m.add_tensor("x", x.shape, "int8", scale=s_in, zero_point=zp_in)
    t_w = m.add_tensor("w", weights.shape, filter_dtype, data=weights, scale=s_w, zero_point=0)
    t_b = m.add_tensor("b", bias.shape, "int32", data=bias, scale=bias_scale, zero_point=0)
    t_y = m.add_tensor("y", out_shape, "int8", scale=s_out, zero_point=zp_out)
    m.add_operator(
        "CONV_2D", [t_x, t_w, t_b], [t_y], padding=padding, stride_h=stride, stride_w=stride
    )
    m.set_io([t_x], [t_y])
    return m.build()


CONV_CASES = [
    (1, (1, 6, 7, 3), "SAME", 1),
    (2, (1, 7, 5, 2), "VALID", 1),
    (3, (2, 8, 7, 4), "SAME", 2),
    (4, (1, 7, 8, 1), "VALID", 2),
]


@pytest.mark.parametrize(("seed", "shape", "padding", "stride"), CONV_CASES)
def test_conv2d_int8_per_channel(
    seed: int, shape: tuple[int, int, int, int], padding: str, stride: int
) -> None:
    x, zp_in, weights, s_in, s_w, s_out, bias_scale, bias = conv_case(seed, shape)
    zp_out = 5 - seed
    acc = conv_accumulators(x, zp_in, weights.transpose(1, 2, 3, 0), bias, padding, stride)
    expected = requantize(acc, s_in, s_w, s_out, zp_out)
    assert np.mean((expected > -128) & (expected < 127)) > 0.05, "scales saturate the output"

    model = conv_model(
        x,
        zp_in,
        weights,
        s_in,
        s_w,
        s_out,
        zp_out,
        bias_scale,
        bias,
        expected.shape,
        padding,
        stride,
    )
    (ref,) = run(model, [x], REF)
    np.testing.assert_array_equal(ref, expected)
    (fast,) = run(model, [x], AUTO)  # XNNPACK requantizes in float: one step off is allowed
    assert np.abs(fast.astype(np.int32) - expected).max() <= 1


def test_conv2d_int8_rounding_ties_follow_tflite_double_rounding() -> None:
    """Power-of-two scales put many accumulators exactly on rounding ties, where TFLite's
    fixed-point requantization (SRDHM rounds ties up, then RoundingDivideByPOT rounds ties away
    from zero) differs from a single float rounding: e.g. 1 * 0.25 gives 1, not 0."""
    rng = np.random.default_rng(21)
    x = rng.integers(-8, 9, (1, 6, 6, 3), dtype=np.int8)
    weights = rng.integers(-2, 3, (3, 3, 3, 3), dtype=np.int8)
    bias = rng.integers(-5, 6, 3, dtype=np.int32)
    s_in, s_out = np.float32(2.0**-4), np.float32(2.0**-4)
    s_w = np.array([2.0**-1, 2.0**-2, 2.0**-3], dtype=np.float32)  # multipliers 1/2, 1/4, 1/8
    acc = conv_accumulators(x, 0, weights.transpose(1, 2, 3, 0), bias, "SAME", 1)
    expected = requantize(acc, s_in, s_w, s_out, 0)
    real = acc * s_w.astype(np.float64)
    single = np.clip(np.sign(real) * np.floor(np.abs(real) + 0.5), -128, 127)
    assert np.sum(real % 1 == 0.5) > 20 and np.any(single != expected)  # the data has ties

    model = conv_model(
        x, 0, weights, s_in, s_w, s_out, 0, s_in * s_w, bias, expected.shape, "SAME", 1
    )
    (ref,) = run(model, [x], REF)
    np.testing.assert_array_equal(ref, expected)


@pytest.mark.parametrize(("seed", "shape", "padding", "stride"), CONV_CASES)
def test_depthwise_conv2d_int8_per_channel(
    seed: int, shape: tuple[int, int, int, int], padding: str, stride: int
) -> None:
    x, zp_in, weights, s_in, s_w, s_out, bias_scale, bias = conv_case(seed, shape, True)
    weights = weights[:, :, :, :1].transpose(3, 1, 2, 0)  # 1 x kh x kw x C
    zp_out = seed - 3
    c = x.shape[3]
    acc = np.concatenate(  # each channel is a 1-in, 1-out convolution
        [
            conv_accumulators(
                x[..., ch : ch + 1],
                zp_in,
                weights[0, :, :, ch, None, None],
                bias[ch : ch + 1],
                padding,
                stride,
            )
            for ch in range(c)
        ],
        axis=-1,
    )
    expected = requantize(acc, s_in, s_w, s_out, zp_out)
    assert np.mean((expected > -128) & (expected < 127)) > 0.05, "scales saturate the output"

    m = ModelBuilder()
    t_x = m.add_tensor("x", x.shape, "int8", scale=s_in, zero_point=zp_in)
    t_w = m.add_tensor("w", weights.shape, "int8", data=weights, scale=s_w, quantized_dimension=3)
    t_b = m.add_tensor("b", (c,), "int32", data=bias, scale=bias_scale)
    t_y = m.add_tensor("y", expected.shape, "int8", scale=s_out, zero_point=zp_out)
    m.add_operator(
        "DEPTHWISE_CONV_2D",
        [t_x, t_w, t_b],
        [t_y],
        padding=padding,
        stride_h=stride,
        stride_w=stride,
        depth_multiplier=1,
    )
    m.set_io([t_x], [t_y])
    model = m.build()

    (ref,) = run(model, [x], REF)
    np.testing.assert_array_equal(ref, expected)
    (fast,) = run(model, [x], AUTO)
    assert np.abs(fast.astype(np.int32) - expected).max() <= 1


# Observed with ai-edge-litert 2.3.0: every resolver accepts an INT4 CONV_2D filter (none
# refuses it). The XNNPACK delegate of AUTO takes the int8-filter convolution (float
# requantization, within one step) but leaves the int4 one to the builtin kernel (exact), so
# under AUTO the two filters may differ by one output step; elsewhere they must be identical.
# (BUILTIN_WITHOUT_DEFAULT_DELEGATES runs the optimized kernel: same for both filters, but
# off by one from the reference on some rounding ties, see the power-of-two test above.)
EXACT_INT4 = {"ref": REF, "builtin_no_xnnpack": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}


@pytest.mark.parametrize("resolver", [*EXACT_INT4.values(), AUTO], ids=[*EXACT_INT4, "auto"])
def test_conv2d_int4_filter_matches_int8(resolver: OpResolverType) -> None:
    x, zp_in, weights, s_in, s_w, s_out, bias_scale, bias = conv_case(7, (1, 6, 6, 3))
    weights = np.clip(weights // 16, -7, 7).astype(np.int8)
    s_out = np.float32(s_out / 8)
    acc = conv_accumulators(x, zp_in, weights.transpose(1, 2, 3, 0), bias, "SAME", 1)
    expected = requantize(acc, s_in, s_w, s_out, -3)
    assert np.mean((expected > -128) & (expected < 127)) > 0.5, "scales saturate the output"
    args = (x, zp_in, weights, s_in, s_w, s_out, -3, bias_scale, bias, expected.shape, "SAME", 1)

    (as_int8,) = run(conv_model(*args), [x], resolver)
    (as_int4,) = run(conv_model(*args, filter_dtype="int4"), [x], resolver)
    if resolver == AUTO:
        assert np.abs(as_int4.astype(np.int32) - as_int8).max() <= 1
        assert np.abs(as_int4.astype(np.int32) - expected).max() <= 1
    else:  # the optimized builtin kernel is not bit-exact on rounding ties: compare to REF only
        np.testing.assert_array_equal(as_int4, as_int8)
        if resolver == REF:
            np.testing.assert_array_equal(as_int4, expected)


# --- 5. fully connected ----------------------------------------------------------------------


def test_fully_connected_int8_per_channel() -> None:
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, (3, 16), dtype=np.int8)
    weights = rng.integers(-127, 128, (5, 16), dtype=np.int8)
    bias = rng.integers(-2000, 2000, 5, dtype=np.int32)
    s_in, zp_in, s_out, zp_out = np.float32(0.03), 7, np.float32(0.25), -4
    s_w = rng.uniform(0.002, 0.02, 5).astype(np.float32)
    acc = (x.astype(np.int64) - zp_in) @ weights.T.astype(np.int64) + bias
    expected = requantize(acc, s_in, s_w, s_out, zp_out)
    assert np.mean((expected > -128) & (expected < 127)) > 0.2

    m = ModelBuilder()
    t_x = m.add_tensor("x", x.shape, "int8", scale=s_in, zero_point=zp_in)
    t_w = m.add_tensor("w", weights.shape, "int8", data=weights, scale=s_w)
    bias_scale = (np.float64(s_in) * s_w.astype(np.float64)).astype(np.float32)
    t_b = m.add_tensor("b", bias.shape, "int32", data=bias, scale=bias_scale)
    t_y = m.add_tensor("y", expected.shape, "int8", scale=s_out, zero_point=zp_out)
    m.add_operator("FULLY_CONNECTED", [t_x, t_w, t_b], [t_y])
    m.set_io([t_x], [t_y])
    model = m.build()

    (ref,) = run(model, [x], REF)
    np.testing.assert_array_equal(ref, expected)
    (fast,) = run(model, [x], AUTO)
    assert np.abs(fast.astype(np.int32) - expected).max() <= 1


@pytest.mark.parametrize("resolver", [REF, AUTO], ids=["ref", "auto"])
def test_fully_connected_float32_without_bias(resolver: OpResolverType) -> None:
    rng = np.random.default_rng(12)
    x = rng.integers(-8, 9, (2, 6)).astype(np.float32)  # small integers: every sum is exact
    weights = rng.integers(-8, 9, (4, 6)).astype(np.float32)
    expected = np.maximum(x.astype(np.float64) @ weights.T.astype(np.float64), 0.0)

    m = ModelBuilder()
    t_x = m.add_tensor("x", x.shape, "float32")
    t_w = m.add_tensor("w", weights.shape, "float32", data=weights)
    t_y = m.add_tensor("y", (2, 4), "float32")
    m.add_operator("FULLY_CONNECTED", [t_x, t_w, -1], [t_y], fused_activation="RELU")
    m.set_io([t_x], [t_y])

    (got,) = run(m.build(), [x], resolver)
    np.testing.assert_array_equal(got, expected.astype(np.float32))


# --- 6. the file itself, read back with the independent `tflite` schema package --------------


def test_metadata_int4_packing_and_layout_read_back() -> None:
    tflite = pytest.importorskip("tflite", reason="the `tflite` schema package is not installed")
    payload = bytes(range(256)) + b"climbq"
    nibbles = np.array([1, -2, 7, -8, 3], dtype=np.int8)

    m = ModelBuilder(description="test model")
    t_x = m.add_tensor("x", (2,), "int32")
    t_q = m.add_tensor("q4", (5,), "int4", data=nibbles, scale=0.5)
    t_y = m.add_tensor("y", (2,), "int32")
    m.add_operator("RELU", [t_x], [t_y])
    m.add_metadata("climbq_program", payload)
    m.add_metadata("empty", b"")
    m.set_io([t_x], [t_y])
    data = m.build()

    assert data[4:8] == b"TFL3"
    model = tflite.Model.GetRootAsModel(data, 0)
    assert model.Version() == 3 and model.Description() == b"test model"
    assert model.Buffers(0).DataLength() == 0
    found = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        found[entry.Name().decode()] = model.Buffers(entry.Buffer()).DataAsNumpy()
    assert bytes(found["climbq_program"]) == payload
    assert isinstance(found["empty"], np.ndarray) and found["empty"].size == 0

    graph = model.Subgraphs(0)
    q4 = graph.Tensors(t_q)
    assert q4.Type() == tflite.TensorType.INT4 and q4.Name() == b"q4"
    assert q4.Quantization().ScaleAsNumpy().tolist() == [0.5]
    assert bytes(model.Buffers(q4.Buffer()).DataAsNumpy()) == bytes([0xE1, 0x87, 0x03])
    assert pack_int4(nibbles) == bytes([0xE1, 0x87, 0x03])
    buffer = model.Buffers(q4.Buffer())
    assert buffer._tab.Vector(buffer._tab.Offset(4)) % 16 == 0  # data 16-byte aligned
    code = model.OperatorCodes(graph.Operators(0).OpcodeIndex())
    assert code.BuiltinCode() == tflite.BuiltinOperator.RELU
    assert code.DeprecatedBuiltinCode() == tflite.BuiltinOperator.RELU
    assert graph.Tensors(t_x).Buffer() == 0 and graph.Tensors(t_y).Buffer() == 0


# --- 7. a truncated file is refused, not a crash ---------------------------------------------


def test_truncated_model_raises_value_error() -> None:
    m = ModelBuilder()
    t_x = m.add_tensor("x", (4,), "int32")
    t_y = m.add_tensor("y", (4,), "int32")
    m.add_operator("ADD", [t_x, m.add_tensor("c", (4,), "int32", data=np.arange(4))], [t_y])
    m.set_io([t_x], [t_y])
    data = m.build()
    for length in (1, 8, 24, len(data) // 2, len(data) - 1):
        # the interpreter verifies the flatbuffer first: ValueError
        # "The model is not a valid Flatbuffer buffer"
        with pytest.raises(ValueError, match="not a valid Flatbuffer"):
            Interpreter(model_content=data[:length])
    (got,) = run(data, [np.array([5, 6, 7, 8], dtype=np.int32)], REF)
    np.testing.assert_array_equal(got, [5, 7, 9, 11])


# --- the builder's own checks ----------------------------------------------------------------


def test_builder_refuses_bad_input_with_config_error() -> None:
    m = ModelBuilder()
    t_x = m.add_tensor("x", (2, 2), "int8", scale=0.1)
    cases = [
        lambda: m.add_tensor("x", (1,), "int8"),  # duplicate name
        lambda: m.add_tensor("a", (2,), "int7"),
        lambda: m.add_tensor("b", (2,), "int8", data=np.zeros((3,), np.int8)),  # shape mismatch
        lambda: m.add_tensor("c", (2,), "int8", data=np.array([0, 128])),  # out of range
        lambda: m.add_tensor("d", (2,), "int4", data=np.array([0, -9])),
        lambda: m.add_tensor("e", (2,), "int32", data=np.array([0.5, 1.0])),
        lambda: m.add_tensor("g", (2, 3), "int8", scale=[0.1, 0.2], quantized_dimension=1),
        lambda: m.add_tensor("h", (2,), "int8", zero_point=3),
        lambda: m.add_operator("CONV_3D", [t_x], [t_x]),
        lambda: m.add_operator("ADD", [t_x, 7], [t_x]),
        lambda: m.add_operator("CONV_2D", [t_x], [t_x], padding="FULL"),
        lambda: m.add_operator("CONV_2D", [t_x], [t_x], strides=2),
        lambda: m.add_operator("AVERAGE_POOL_2D", [t_x], [t_x], filter_h=2),  # no filter_w
        lambda: ModelBuilder().build(),  # set_io never called
    ]
    for case in cases:
        with pytest.raises(ConfigError):
            case()
    assert m.add_tensor("second", (1,), "int8") == 1  # refused tensors were not half-added
    per_channel = m.add_tensor("f", (2, 3), "int8", scale=[0.1, 0.2], zero_point=0)
    assert per_channel == 2
