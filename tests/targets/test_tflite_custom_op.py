"""The CLIMBQ_CONV_COUNT custom op: its on-file form, the reader's check, and the fused kernel
run inside LiteRT (C API route) against the reference kernels ``int_conv`` + ``threshold_act``."""

from __future__ import annotations

import dataclasses
import re
import struct

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from climbq_deploy.errors import ArtifactError, ConfigError, TargetUnavailableError
from climbq_deploy.kernels import ops
from climbq_deploy.targets.tflite import custom_op, fused_runner
from climbq_deploy.targets.tflite.builder import CUSTOM, ModelBuilder
from climbq_deploy.targets.tflite.reader import check_model

CODE = custom_op.CUSTOM_CODE


@dataclasses.dataclass
class Layer:
    """One fused layer: its params, W_int, direction d, thresholds theta."""

    params: dict[str, int]
    weight: np.ndarray  # int8 OHWI, direction not folded
    direction: np.ndarray  # int8 (out_c,) in {-1, 0, 1}
    thresholds: np.ndarray  # int32 (out_c, levels), sorted

    @property
    def folded(self) -> np.ndarray:
        return (self.weight * self.direction[:, None, None, None]).astype(np.int8)

    def reference(self, x: np.ndarray) -> np.ndarray:
        """The oracle: ops.int_conv, ops.threshold_act (direction unfolded), ops.relu."""
        p = self.params
        bound = int(np.abs(self.weight.astype(np.int64)).reshape(p["out_c"], -1).sum(1).max())
        x_max = 128 if x.dtype == np.int8 else int(np.abs(x.astype(np.int64)).max(initial=1))
        acc = ops.int_conv(x, self.weight, p["stride"], p["pad"], p["groups"], bound * x_max)
        codes = ops.threshold_act(acc, self.thresholds, self.direction, p["mult"], p["offset"])
        return (ops.relu(codes) if p["relu"] else codes).astype(np.int8)


def make_layer(
    rng: np.random.Generator,
    hw: int,
    in_c: int,
    out_c: int,
    *,
    stride: int = 1,
    depthwise: bool = False,
    bits: int = 2,
    relu: bool = False,
    input_type: int = 0,
) -> Layer:
    levels = 2**bits - 1
    cin = 1 if depthwise else in_c
    weight = rng.integers(-7, 8, (out_c, 3, 3, cin)).astype(np.int8)
    direction = rng.choice(np.array([-1, 1, 1, 0], np.int8), out_c)
    direction[0] = -1  # a negative direction in every case
    # thresholds where the accumulators lie (codes of all levels appear); int32 input: |x| up
    # to 2**19 (int32_input), int8 codes: |x| <= 15 (codes_input)
    spread = (2**17 if input_type else 4) * 9 * cin
    thresholds = np.sort(rng.integers(-spread, spread + 1, (out_c, levels)), axis=1)
    out = (hw + 2 - 3) // stride + 1
    params = dict(
        in_h=hw, in_w=hw, in_c=in_c, out_h=out, out_w=out, out_c=out_c, kernel_h=3,
        kernel_w=3, stride=stride, pad=1, groups=in_c if depthwise else 1, levels=levels,
        mult=1 if relu else 2, offset=-(levels // 2) if relu else -levels, relu=int(relu),
        input_type=input_type,
    )  # fmt: skip
    return Layer(params, weight, direction, thresholds.astype(np.int32))


def add_layer(b: ModelBuilder, layer: Layer, x: int, name: str, batch: int = 1) -> int:
    p = layer.params
    w = b.add_tensor(f"{name}_w", layer.folded.shape, "int8", data=layer.folded)
    t = b.add_tensor(f"{name}_t", layer.thresholds.shape, "int32", data=layer.thresholds)
    y = b.add_tensor(name, (batch, p["out_h"], p["out_w"], p["out_c"]), "int8", scale=1.0)
    b.add_operator(
        CUSTOM,
        [x, w, t],
        [y],
        custom_code=CODE,
        custom_options=custom_op.conv_count_options(p),
    )
    return y


def one_layer_model(layer: Layer, batch: int = 1, x_type: str | None = None) -> bytes:
    """x -> CLIMBQ_CONV_COUNT -> codes; x int8, or int32 for an int32-input layer (x_type
    overrides it, to write a mismatched model)."""
    p = layer.params
    b = ModelBuilder()
    x_type = x_type or ("int32" if p.get("input_type") else "int8")
    x = b.add_tensor("x", (batch, p["in_h"], p["in_w"], p["in_c"]), x_type, scale=1.0)
    y = add_layer(b, layer, x, "codes", batch)
    b.set_io([x], [y])
    return b.build()


def codes_input(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(-15, 16, shape).astype(np.int8)


def int32_input(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A stem's input: integers within +-2**19 (|acc| <= 2**19 * 9 * 7 * in_c fits int32)."""
    return rng.integers(-(2**19), 2**19 + 1, shape).astype(np.int32)


@pytest.fixture(scope="module")
def fused() -> None:
    """Skips when the kernel library is not built; otherwise the route must work here."""
    if fused_runner.kernel_library() is None:
        pytest.skip(
            "the fused kernel library (climbq_deploy.kernels._climbq_native) is not built; "
            "set CLIMBQ_NATIVE_LIB to a build of kernels/csrc/climbq_conv_count.h"
        )
    assert custom_op.support() is None


# ---- on-file form -------------------------------------------------------------------------


def test_options_layout_is_magic_version_and_fields_in_header_order() -> None:
    for input_type in (0, 1):
        layer = make_layer(np.random.default_rng(0), 8, 4, 6, stride=2, input_type=input_type)
        blob = custom_op.conv_count_options(layer.params)
        fields = [layer.params[name] for name in custom_op.PARAM_FIELDS]
        assert custom_op.PARAM_FIELDS[-1] == "input_type" and fields[-1] == input_type
        expected = b"CQCC" + b"".join(v.to_bytes(4, "little", signed=True) for v in [2, *fields])
        assert blob == expected and len(blob) == custom_op.OPTIONS_SIZE == 72
        assert custom_op.parse_conv_count_options(blob) == layer.params
        as_dataclass = dataclasses.make_dataclass("P", custom_op.PARAM_FIELDS)(**layer.params)
        assert custom_op.conv_count_options(as_dataclass) == blob


def test_options_without_input_type_mean_int8_input() -> None:
    """A params mapping (or dataclass) without input_type is an int8-input node."""
    params = make_layer(np.random.default_rng(0), 8, 4, 6).params
    without = {k: v for k, v in params.items() if k != "input_type"}
    assert custom_op.DEFAULT_INPUT_TYPE == 0
    assert custom_op.conv_count_options(without) == custom_op.conv_count_options(params)
    assert custom_op.parse_conv_count_options(custom_op.conv_count_options(without)) == params
    fields = [f for f in custom_op.PARAM_FIELDS if f != "input_type"]
    as_dataclass = dataclasses.make_dataclass("P", fields)(**without)
    assert custom_op.conv_count_options(as_dataclass) == custom_op.conv_count_options(params)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"out_h": 5}, "out_h = 5"),
        ({"groups": 2}, "groups 2"),
        ({"levels": 0}, "levels 0"),
        ({"mult": 100}, "beyond int8"),
        ({"relu": 2}, "relu"),
        ({"input_type": 2}, r"input_type must be 0 \(int8\) or 1 \(int32\); got 2"),
        ({"input_type": -1}, "input_type must be 0"),
        ({"input_type": 1.0}, "'input_type' must be an int32"),
    ],
)
def test_options_refuse_params_outside_the_kernel_contract(change, message) -> None:
    params = make_layer(np.random.default_rng(0), 8, 4, 6).params | change
    with pytest.raises(ConfigError, match=message):
        custom_op.conv_count_options(params)


def test_parse_refuses_other_magic_size_and_version() -> None:
    blob = custom_op.conv_count_options(make_layer(np.random.default_rng(0), 8, 4, 6).params)
    for bad in (b"XQCC" + blob[4:], blob[:-4], blob[:4] + struct.pack("<i", 3) + blob[8:]):
        with pytest.raises(ArtifactError, match=CODE):
            custom_op.parse_conv_count_options(bad, "m.tflite")
    # a version-1 file (68 bytes, no input_type) is named by its version
    old = blob[:4] + struct.pack("<i", 1) + blob[8:-4]
    with pytest.raises(ArtifactError, match="ABI version 1; this climbq_deploy reads 2"):
        custom_op.parse_conv_count_options(old, "m.tflite")
    # input_type outside 0..1 in the file
    with pytest.raises(ArtifactError, match=r"m\.tflite: CLIMBQ_CONV_COUNT: input_type must be"):
        custom_op.parse_conv_count_options(blob[:-4] + struct.pack("<i", 5), "m.tflite")


def test_builder_writes_the_custom_operator_code_and_options() -> None:
    from ai_edge_litert import schema_py_generated as schema

    layer = make_layer(np.random.default_rng(1), 6, 3, 4)
    model = schema.Model.GetRootAs(one_layer_model(layer), 0)
    code = model.OperatorCodes(0)
    assert (code.CustomCode(), code.BuiltinCode(), code.DeprecatedBuiltinCode()) == (
        CODE.encode(),
        32,
        32,
    )
    op = model.Subgraphs(0).Operators(0)
    assert op.CustomOptionsAsNumpy().tobytes() == custom_op.conv_count_options(layer.params)
    b = ModelBuilder()
    x = b.add_tensor("x", (1, 2), "int8")
    with pytest.raises(ConfigError, match="custom_code"):
        b.add_operator(CUSTOM, [x], [x])
    with pytest.raises(ConfigError, match="bytes"):
        b.add_operator(CUSTOM, [x], [x], custom_code=CODE, custom_options="CQCC")


# ---- the reader ---------------------------------------------------------------------------


def test_reader_accepts_exactly_the_fused_op() -> None:
    layer = make_layer(np.random.default_rng(2), 6, 3, 4)
    check_model(one_layer_model(layer), "m.tflite", None)  # passes

    def variant(code: str = CODE, inputs: int = 3, options: bytes | None = None) -> bytes:
        p = layer.params
        b = ModelBuilder()
        x = b.add_tensor("x", (1, 6, 6, 3), "int8")
        w = b.add_tensor("w", layer.folded.shape, "int8", data=layer.folded)
        t = b.add_tensor("t", layer.thresholds.shape, "int32", data=layer.thresholds)
        y = b.add_tensor("y", (1, p["out_h"], p["out_w"], p["out_c"]), "int8")
        blob = custom_op.conv_count_options(p) if options is None else options
        b.add_operator(CUSTOM, [x, w, t][:inputs], [y], custom_code=code, custom_options=blob)
        b.set_io([x], [y])
        return b.build()

    blob = custom_op.conv_count_options(layer.params)
    wrong_shape = custom_op.conv_count_options(layer.params | {"out_c": 5})
    cases = {
        "custom operator 'OTHER_OP'": variant(code="OTHER_OP"),
        "has 2 inputs": variant(inputs=2),
        "ABI version 1": variant(options=blob[:4] + struct.pack("<i", 1) + blob[8:]),
        "weight is type": variant(options=wrong_shape),
    }
    for message, content in cases.items():
        with pytest.raises(ArtifactError, match=message):
            check_model(content, "m.tflite", None)


def test_reader_checks_the_input_type_of_x() -> None:
    """x is int32 exactly when the options' input_type is 1."""
    int32_layer = make_layer(np.random.default_rng(2), 6, 3, 4, input_type=1)
    int8_layer = make_layer(np.random.default_rng(2), 6, 3, 4)
    check_model(one_layer_model(int32_layer), "m.tflite", None)  # passes
    for layer, x_type, message in (
        (int32_layer, "int8", r"input x is type 9 .* its options need type 2 "),
        (int8_layer, "int32", r"input x is type 2 .* its options need type 9 "),
    ):
        with pytest.raises(ArtifactError, match=message):
            check_model(one_layer_model(layer, x_type=x_type), "m.tflite", None)


# ---- runtime without the op, fallback -----------------------------------------------------


def test_plain_interpreter_names_the_op_and_the_fix() -> None:
    content = one_layer_model(make_layer(np.random.default_rng(3), 6, 3, 4))
    with pytest.raises(TargetUnavailableError) as caught:
        custom_op.interpreter(content, "model.tflite")
    message = str(caught.value)
    assert "model.tflite uses the custom op CLIMBQ_CONV_COUNT" in message
    assert "--ops builtin" in message and "climbq check/bench" in message


def test_a_fused_model_where_the_op_cannot_run_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from climbq_deploy.targets.tflite import TfliteRunner, TfliteTarget

    monkeypatch.setattr(custom_op, "support", lambda: "no kernel here")
    assert TfliteTarget(ops="climbq").unavailable() == "no kernel here"
    assert TfliteTarget(ops="builtin").unavailable() is None
    from climbq_deploy.ir.capture import capture
    from climbq_deploy.ir.passes import lower
    from climbq_deploy.models.common import QuantSpec
    from climbq_deploy.models.resnet import CifarResNet

    model = CifarResNet(8, 10, QuantSpec("climbq", 2, 2)).eval()
    graph = lower(capture(model, (0.5,) * 3, (0.25,) * 3, (8, 8, 3), input_bits=20))
    path = TfliteTarget(ops="climbq").export(graph, tmp_path / "m.tflite")
    assert custom_op.uses_custom_op(path.read_bytes())
    with pytest.raises(TargetUnavailableError) as caught:
        TfliteRunner(path)
    message = str(caught.value)
    assert "CLIMBQ_CONV_COUNT" in message and "no kernel here" in message
    assert "--ops builtin" in message


def test_unavailable_route_raises_target_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fused_runner, "_LIB", {})
    monkeypatch.setattr(fused_runner, "TESTED_LITERT", ("0.1",))
    content = one_layer_model(make_layer(np.random.default_rng(3), 6, 3, 4))
    with pytest.raises(TargetUnavailableError, match="not a release"):
        fused_runner.FusedRunner(content)
    assert "not a release" in (fused_runner.probe() or "")


# ---- the op inside LiteRT -----------------------------------------------------------------

CASES = {
    "dense s1 2-bit": dict(hw=8, in_c=5, out_c=7, stride=1, bits=2),
    "dense s2 4-bit": dict(hw=9, in_c=6, out_c=4, stride=2, bits=4),
    "dense s1 4-bit relu": dict(hw=7, in_c=3, out_c=8, stride=1, bits=4, relu=True),
    "depthwise s1 2-bit": dict(hw=8, in_c=6, out_c=6, stride=1, bits=2, depthwise=True),
    "depthwise s2 4-bit": dict(hw=9, in_c=5, out_c=5, stride=2, bits=4, depthwise=True),
}


CASES |= {
    "int32 stem s1 4-bit relu": dict(hw=8, in_c=3, out_c=7, stride=1, bits=4, relu=True),
    "int32 stem s2 2-bit": dict(hw=9, in_c=3, out_c=20, stride=2, bits=2),
    "int32 depthwise s1 4-bit": dict(hw=8, in_c=5, out_c=5, stride=1, bits=4, depthwise=True),
}


@pytest.mark.parametrize("case", CASES)
def test_one_layer_equals_reference_kernels(fused, case: str) -> None:
    rng = np.random.default_rng(abs(hash(case)) % 2**32)
    input_type = int(case.startswith("int32"))
    layer = make_layer(rng, **CASES[case], input_type=input_type)
    p = layer.params
    runner = fused_runner.FusedRunner(one_layer_model(layer, batch=2), threads=1)
    for _ in range(3):
        make_input = int32_input if input_type else codes_input
        x = make_input(rng, (2, p["in_h"], p["in_w"], p["in_c"]))
        (got,) = runner.run(x)
        expected = layer.reference(x)
        assert got.dtype == np.int8 and got.shape == expected.shape
        assert np.array_equal(got, expected), f"{int((got != expected).sum())} codes differ"
    assert len(np.unique(expected)) > 2  # the thresholds split the accumulators
    assert runner.counts() == (1, 3)  # the custom op ran (not a fallback)


def test_two_layers_with_a_builtin_add_between(fused) -> None:
    """x -> CONV_COUNT -> codes1 -> ADD(+bias) -> CONV_COUNT -> out; both layers have the same
    shapes (the op must tell them apart by their constants) and codes1 is read back too."""
    rng = np.random.default_rng(11)
    first = make_layer(rng, 8, 4, 4, bits=2)
    second = make_layer(rng, 8, 4, 4, bits=4)
    bias = rng.integers(-3, 4, (1, 1, 1, 4)).astype(np.int8)
    b = ModelBuilder()
    x = b.add_tensor("x", (1, 8, 8, 4), "int8", scale=1.0)
    codes1 = add_layer(b, first, x, "codes1")
    c = b.add_tensor("bias", bias.shape, "int8", data=bias, scale=1.0)
    summed = b.add_tensor("summed", (1, 8, 8, 4), "int8", scale=1.0)
    b.add_operator("ADD", [codes1, c], [summed])
    out = add_layer(b, second, summed, "codes2")
    b.set_io([x], [out])
    content = fused_runner.with_outputs(b.build(), ["codes1"])
    check_model(content, "two.tflite", None)
    runner = fused_runner.FusedRunner(content, threads=2)
    assert runner.output_names == ["codes2", "codes1"]
    x_in = codes_input(rng, (1, 8, 8, 4))
    got2, got1 = runner.run(x_in)
    want1 = first.reference(x_in)
    want2 = second.reference(np.clip(ops.add(want1, bias), -128, 127).astype(np.int8))
    assert np.array_equal(got1, want1) and np.array_equal(got2, want2)
    assert runner.counts()[1] == 2


def test_x_type_other_than_the_node_input_type_is_refused_at_run(fused) -> None:
    """The shim checks x's element type against the node's input_type (a model the reader
    would refuse, run without it)."""
    rng = np.random.default_rng(9)
    for input_type, x_type, message in (
        (1, "int8", "input x is int8 but the node's input_type 1 needs int32"),
        (0, "int32", "input x is int32 but the node's input_type 0 needs int8"),
    ):
        layer = make_layer(rng, 6, 3, 4, input_type=input_type)
        runner = fused_runner.FusedRunner(one_layer_model(layer, x_type=x_type), path="m.tflite")
        with pytest.raises(
            ArtifactError, match=re.escape(f"m.tflite: CLIMBQ_CONV_COUNT: {message}")
        ):
            runner.run(runner.zero_input())


def test_route_without_registration_is_refused_by_name(fused) -> None:
    """LiteRT compiles a model with an unregistered custom op and fails only at the first run
    (status 3, the op named only in its log): the runner refuses it up front instead."""
    content = one_layer_model(make_layer(np.random.default_rng(5), 6, 3, 4))
    with pytest.raises(TargetUnavailableError, match=r"m\.tflite uses the custom op CLIMBQ_CONV"):
        fused_runner.FusedRunner(content, register=False, path="m.tflite")


def test_plain_model_through_the_route_equals_the_interpreter(fused) -> None:
    """A builtin-only int8 model (CONV_2D + ADD) compiled through the C API route."""
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(6)
    b = ModelBuilder()
    x = b.add_tensor("x", (1, 8, 8, 4), "int8", scale=0.1)
    w = rng.integers(-127, 128, (4, 3, 3, 4)).astype(np.int8)
    wi = b.add_tensor("w", w.shape, "int8", data=w, scale=[0.01] * 4, quantized_dimension=0)
    bi = b.add_tensor("b", (4,), "int32", data=np.arange(4, dtype=np.int32), scale=[0.001] * 4)
    y = b.add_tensor("y", (1, 8, 8, 4), "int8", scale=0.2)
    b.add_operator("CONV_2D", [x, wi, bi], [y], padding="SAME")
    z = b.add_tensor("z", (1, 8, 8, 4), "int8", scale=0.3)
    b.add_operator("ADD", [y, x], [z])
    b.set_io([x], [z])
    content = b.build()
    x_in = rng.integers(-128, 128, (1, 8, 8, 4)).astype(np.int8)
    it = Interpreter(model_content=content)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x_in)
    it.invoke()
    want = it.get_tensor(it.get_output_details()[0]["index"])
    (got,) = fused_runner.FusedRunner(content, register=False).run(x_in)
    assert np.array_equal(got, want) and len(np.unique(want)) > 10
