"""The TFLite target on small models: LiteRT's int16 program against the NumPy reference of
the same program (exact), for each kernel path."""

import numpy as np
import pytest
import torch

from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.graph import (
    GlobalSumPool,
    Graph,
    InputQuant,
    IntConv,
    Linear,
    TensorSpec,
    ThresholdAct,
)
from climbq_deploy.ir.passes import bound_tensors, lower
from climbq_deploy.kernels import ReferenceModel, ops
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.mobilenetv2 import CifarMobileNetV2
from climbq_deploy.models.resnet import CifarResNet
from climbq_deploy.targets.tflite import TfliteTarget
from climbq_deploy.targets.tflite import flavour as flavour_module
from climbq_deploy.targets.tflite.flavour import int16_flavour
from tests.conftest import MEAN, STD, codes_and_logits, randomize_batchnorm

pytest.importorskip("ai_edge_litert")


def export_and_compare(
    model,
    size: int,
    tmp_path,
    kernels: str,
    ops: str = "builtin",
    input_bits: int = 16,
    rectified: set | None = None,
) -> tuple[int, int]:
    graph = lower(capture(model, MEAN, STD, (size, size, 3), input_bits=input_bits))
    target = TfliteTarget(kernels, ops=ops)
    path = target.export(graph, tmp_path / f"m-{kernels}.tflite")
    runner = target.load(path)
    images = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    out = runner.run(images, with_codes=True)
    if rectified is not None:
        rectified.update(out.rectified)
    flavour = int16_flavour(graph)
    values = ReferenceModel(flavour).run(images, keep=True)
    mismatches = total = 0
    for node in flavour.nodes:
        if node.op == "threshold_act":
            got = out.codes[node.source]
            expected = out.expected(node.source, values[node.output])
            mismatches += int(np.count_nonzero(got != expected))
            total += got.size
    np.testing.assert_allclose(out.logits, values[flavour.output], rtol=1e-5, atol=1e-4)
    return mismatches, total


OPS_AND_KERNELS = [
    (ops, kernels) for ops in ("builtin", "int16") for kernels in ("ref", "optimized", "xnnpack")
] + [("climbq", "xnnpack")]


def _skip_without_fused(ops: str) -> None:
    if ops == "climbq":
        from climbq_deploy.targets.tflite.custom_op import support

        reason = support()
        if reason is not None:
            pytest.skip(f"the fused op cannot run here: {reason}")


@pytest.mark.parametrize(("ops", "kernels"), OPS_AND_KERNELS)
@pytest.mark.parametrize("bits", [2, 4])
def test_resnet_tflite_equals_its_reference(tmp_path, ops: str, kernels: str, bits: int) -> None:
    _skip_without_fused(ops)
    torch.manual_seed(bits)
    model = CifarResNet(8, 10, QuantSpec("climbq+", bits, bits))
    randomize_batchnorm(model, bits)
    mismatches, total = export_and_compare(model, 16, tmp_path, kernels, ops, input_bits=20)
    assert total > 0 and mismatches == 0


@pytest.mark.parametrize(("ops", "kernels"), OPS_AND_KERNELS)
def test_mobilenetv2_tflite_equals_its_reference(tmp_path, ops: str, kernels: str) -> None:
    _skip_without_fused(ops)
    torch.manual_seed(0)
    model = CifarMobileNetV2(10, QuantSpec("climbq", 4, 4))
    randomize_batchnorm(model, 0)
    rectified: set[str] = set()
    mismatches, total = export_and_compare(
        model, 8, tmp_path, kernels, ops, input_bits=20, rectified=rectified
    )
    assert total > 0 and mismatches == 0
    if ops == "climbq":  # the fused op applied the ReLU after every code a ReLU follows:
        # the stem, expand and depthwise of 17 blocks, 14 stride-1 shortcuts, the head
        assert len(rectified) == 1 + 2 * 17 + 14 + 1


def test_fused_forms_fuse_relus_and_residual_counts_and_tell_apart_strided_layers() -> None:
    """MobileNetV2 in the fused forms: every layer is a fused op (the stem in the int32-input
    mode, the residual counts as 1x1 depthwise ops, the residual adds in int8), the three
    stride-2 depthwise layers that share input, filter and threshold shapes with a stride-1
    one carry one extra threshold (LiteRT infers output shapes from input shapes alone), and
    no ReLU is left: only the input step (CAST, MUL, ADD, GATHER of the uint8 image), the
    int8 adds and the pooled head are builtin ops."""
    from ai_edge_litert import schema_py_generated as schema

    from climbq_deploy.targets.tflite import forms

    torch.manual_seed(0)
    model = CifarMobileNetV2(10, QuantSpec("climbq", 4, 4))
    randomize_batchnorm(model, 0)
    flavour = int16_flavour(lower(capture(model, MEAN, STD, (8, 8, 3), input_bits=20)))
    choices = forms.choose_forms(flavour, fused=True)
    assert all(c.chosen == forms.FUSED for c in choices) and len(choices) == 81
    assert sum(1 for c in choices if not c.costs) == 14  # residual counts
    assert {c.layer: c.extra_levels for c in choices if c.extra_levels} == {
        "act63": 1,
        "act108": 1,
        "act221": 1,
    }
    content, _ = forms.write_fast_tflite(flavour, fused=True)
    model_t = schema.Model.GetRootAs(content, 0)
    graph = model_t.Subgraphs(0)
    codes = [
        model_t.OperatorCodes(graph.Operators(i).OpcodeIndex())
        for i in range(graph.OperatorsLength())
    ]
    builtin = [max(o.BuiltinCode(), o.DeprecatedBuiltinCode()) for o in codes if not o.CustomCode()]
    op = schema.BuiltinOperator
    assert len(codes) - len(builtin) == 81
    assert sorted(set(builtin)) == sorted(
        {op.CAST, op.GATHER, op.ADD, op.DEQUANTIZE, op.SUM, op.MUL, op.FULLY_CONNECTED}
    )
    assert builtin[:4] == [op.CAST, op.MUL, op.ADD, op.GATHER]  # the input step
    assert builtin.count(op.CAST) == 1 and builtin.count(op.GATHER) == 1
    assert builtin.count(op.ADD) == 14 + 1 and builtin.count(op.DEQUANTIZE) == 1


def test_tflite_codes_equal_torch_float64_on_the_same_input(tmp_path) -> None:
    """The stem is computed exactly (digit split): up to the first layer LiteRT must requantize
    (thresholds beyond int16; none in the trained models measured), the codes are the model's."""
    torch.manual_seed(5)
    model = CifarResNet(8, 10, QuantSpec("climbq", 4, 4))
    randomize_batchnorm(model, 5)
    graph = lower(capture(model, MEAN, STD, (16, 16, 3), input_bits=16))
    target = TfliteTarget("ref")
    runner = target.load(target.export(graph, tmp_path / "m.tflite"))
    images = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    out = runner.run(images, with_codes=True)
    codes, _ = codes_and_logits(model, runner.graph, images)
    acts = [n for n in runner.graph.nodes if n.op == "threshold_act"]
    assert acts[0].shift is None  # the stem keeps its exact thresholds
    for node in acts:
        if node.shift is not None:  # an int16 requantization: from here on it may differ
            break
        np.testing.assert_array_equal(out.codes[node.source], codes[node.source])
    else:
        assert len(acts) == len(out.codes)


def test_not_a_climbq_tflite_is_refused(tmp_path) -> None:
    from climbq_deploy.errors import ArtifactError

    (tmp_path / "x.tflite").write_bytes(b"garbage" * 10)
    with pytest.raises(ArtifactError, match=r"x\.tflite"):
        TfliteTarget().load(tmp_path / "x.tflite")


def test_int4_split_exact_values() -> None:
    from climbq_deploy.targets.tflite.export import int4_split

    small = np.array([-8, -3, 0, 7]).reshape(4, 1, 1, 1)
    q, e = int4_split(small)
    assert e is None and np.array_equal(q, small)
    odd = np.array([[-15, 15, 1], [0, 0, 0], [3, -1, 13]]).reshape(3, 1, 1, 3)
    q, e = int4_split(odd)
    assert e.tolist() == [1, 0, 1]
    assert q.reshape(3, 3).tolist() == [[-8, 7, 0], [0, 0, 0], [1, -1, 6]]
    assert np.array_equal(2 * q + e[:, None, None, None], odd)
    assert int4_split(np.array([2, 9]).reshape(2, 1, 1, 1)) is None  # even beyond int4
    assert int4_split(np.array([[1, 10]]).reshape(1, 1, 1, 2)) is None  # mixed parity row
    assert int4_split(np.array([17]).reshape(1, 1, 1, 1)) is None  # odd beyond the 4-bit grid


def _tensors(path) -> dict[str, int]:
    """name -> TensorType of every tensor in a .tflite."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    return {
        graph.Tensors(i).Name().decode(): graph.Tensors(i).Type()
        for i in range(graph.TensorsLength())
    }


@pytest.mark.parametrize("kernels", ["ref", "xnnpack"])
@pytest.mark.parametrize("bits", [2, 4])
def test_int4_weights_give_the_int8_model_outputs(tmp_path, kernels: str, bits: int) -> None:
    """--weights int4 changes the storage, not one output: every code and logit equal."""
    from ai_edge_litert import schema_py_generated as schema

    torch.manual_seed(10 + bits)
    model = CifarResNet(8, 10, QuantSpec("climbq+", bits, bits))
    randomize_batchnorm(model, bits)
    graph = lower(capture(model, MEAN, STD, (16, 16, 3), input_bits=16))
    images = np.random.default_rng(2).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    outs = {}
    for weights in ("int8", "int4"):
        target = TfliteTarget(kernels, weights, "int16")
        path = target.export(graph, tmp_path / f"{weights}.tflite")
        outs[weights] = target.load(path).run(images, with_codes=True)
        tensors = _tensors(path)
        assert (schema.TensorType.INT4 in tensors.values()) == (weights == "int4")
        # 4-bit odd weights go through the 2q + e split with its window-sum term
        split = any(name.endswith("/window_ones") for name in tensors)
        assert split == (weights == "int4" and bits == 4)
    assert np.array_equal(outs["int8"].logits, outs["int4"].logits)
    assert outs["int8"].codes.keys() == outs["int4"].codes.keys()
    for name, codes in outs["int8"].codes.items():
        np.testing.assert_array_equal(outs["int4"].codes[name], codes, err_msg=name)
    reference = ReferenceModel(int16_flavour(graph)).run(images, keep=True)
    assert np.array_equal(outs["int4"].logits.argmax(1), reference[graph.output].argmax(1))


def test_unknown_weight_storage_is_refused() -> None:
    from climbq_deploy.errors import ConfigError

    with pytest.raises(ConfigError, match="int2"):
        TfliteTarget("ref", "int2")


# --- per-channel requantization shifts -------------------------------------------------------

RESOLVERS = ["ref", "optimized", "xnnpack"]


def _interpret(model: bytes, x: np.ndarray, kernels: str) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = {
        "ref": OpResolverType.BUILTIN_REF,
        "xnnpack": OpResolverType.AUTO,
        "optimized": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    }[kernels]
    interpreter = Interpreter(model_content=model, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).astype(np.int64)


def _conv16x8(
    weights: np.ndarray, weight_scales: list[float], output_scale: float, depthwise: bool
) -> bytes:
    """One 1x1 16x8 conv over a (1, 256, 256, Cin) int16 input, int64 zero bias, built the way
    the export builds its layers (bias scale = input scale 1 x weight scale)."""
    from climbq_deploy.targets.tflite.builder import ModelBuilder

    c = len(weights)
    b = ModelBuilder()
    zeros = [0] * c
    x = b.add_tensor("x", (1, 256, 256, c if depthwise else 1), "int16", scale=1.0, zero_point=0)
    if depthwise:
        w = b.add_tensor(
            "w",
            (1, 1, 1, c),
            "int8",
            data=weights.reshape(1, 1, 1, c),
            scale=weight_scales,
            zero_point=zeros,
            quantized_dimension=3,
        )
    else:
        w = b.add_tensor(
            "w",
            (c, 1, 1, 1),
            "int8",
            data=weights.reshape(c, 1, 1, 1),
            scale=weight_scales,
            zero_point=zeros,
        )
    bias = b.add_tensor(
        "b", (c,), "int64", data=np.zeros(c, np.int64), scale=weight_scales, zero_point=zeros
    )
    y = b.add_tensor("y", (1, 256, 256, c), "int16", scale=output_scale, zero_point=0)
    options = {"depth_multiplier": 1} if depthwise else {}
    b.add_operator(
        "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D",
        [x, w, bias],
        [y],
        padding="VALID",
        stride_h=1,
        stride_w=1,
        **options,
    )
    b.set_io([x], [y])
    return b.build()


@pytest.mark.parametrize("kernels", RESOLVERS)
@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
def test_litert_per_channel_power_of_two_multiplier_rounds_half_up(
    kernels: str, depthwise: bool
) -> None:
    """The flavour's model of LiteRT, measured: weight scale ``2**-s`` (output scale 1) gives
    ``clamp(floor((v + 2**(s-1)) / 2**s))`` for every int16 input times weights of both signs,
    every exact tie of either sign included, s from 0 to 31."""
    shifts = [0, 1, 2, 3, 7, 13, 15, 16, 17, 22, 31]
    weights = [1, -1, 127, -128, -37]
    pairs = [(s, w) for s in shifts for w in weights]
    s = np.array([p[0] for p in pairs], np.int64)
    w = np.array([p[1] for p in pairs], np.int8)
    x = np.arange(-(2**15), 2**15, dtype=np.int64).reshape(1, 256, 256, 1)
    v = x * w.astype(np.int64)
    expected = np.clip(
        np.floor_divide(v + np.where(s > 0, 2 ** np.maximum(s - 1, 0), 0), 2**s),
        -(2**15),
        2**15 - 1,
    )
    ties = (s > 0) & (v % 2**s == 2 ** np.maximum(s - 1, 0))
    assert np.count_nonzero(ties & (v < 0)) > 1000 and np.count_nonzero(ties & (v > 0)) > 1000
    model = _conv16x8(w, [2.0**-k for k in s.tolist()], 1.0, depthwise)
    given = np.repeat(x, len(pairs), axis=3) if depthwise else x
    got = _interpret(model, given.astype(np.int16), kernels)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kernels", RESOLVERS)
@pytest.mark.parametrize("shift", [1, 5, 12])
def test_uniform_per_channel_shift_equals_the_per_layer_output_scale(
    kernels: str, shift: int
) -> None:
    """Every channel at one shift: the per-channel weight scales ``2**-s`` give the outputs of
    the former per-layer form (weight scale 1, output scale ``2**s``)."""
    w = np.array([1, -1, 127, -128, 3, -77], np.int8)
    x = np.arange(-(2**15), 2**15, dtype=np.int64).reshape(1, 256, 256, 1).astype(np.int16)
    per_channel = _interpret(_conv16x8(w, [2.0**-shift] * len(w), 1.0, False), x, kernels)
    per_layer = _interpret(_conv16x8(w, [1.0] * len(w), float(2**shift), False), x, kernels)
    np.testing.assert_array_equal(per_channel, per_layer)


def _quantile_thresholds(acc: np.ndarray, levels: int) -> np.ndarray:
    """``(C, levels)`` sorted integer thresholds spread over each channel's values of ``acc``."""
    q = np.linspace(0.01, 0.99, levels)
    flat = acc.reshape(-1, acc.shape[-1]).astype(np.float64)
    return np.floor(np.quantile(flat, q, axis=0).T).astype(np.int64)


def _shifted_program(images: np.ndarray, big: int) -> Graph:
    """image (6x6x2) -> stem 3x3 conv (8) -> 7-bit act -> 3x3 conv (8) -> 8-bit act -> 3x3
    depthwise conv -> 4-bit act -> sum pool -> float head. In the dense conv channel 0 has all
    weights ``big`` (accumulators beyond int16), the others small weights (within int16;
    channel 2 counts downwards, channel 3 is constant); in the depthwise conv channel 1 has
    weights 127, the others small. Thresholds are quantiles of the actual accumulators."""
    rng = np.random.default_rng(7)
    hw = images.shape[1:3]
    ch = 8
    step = 1.0 / 255.0

    def spec(name: str, c: int, scale: float | None = 1.0, shape=None) -> TensorSpec:
        return TensorSpec(name, "int32", shape or (*hw, c), len(shape or (*hw, c)) - 1, scale)

    x = ops.input_quant(images, (0.0, 0.0), (1.0, 1.0), step)
    stem_w = rng.integers(-3, 4, (ch, 3, 3, 2)).astype(np.int8)
    stem_acc = ops.int_conv(x, stem_w, 1, 1, 1, 2**31 - 1)
    stem_t = _quantile_thresholds(stem_acc, 127)
    codes1 = ops.threshold_act(stem_acc, stem_t, np.ones(ch, np.int8), 1, 0)
    w2 = rng.integers(-3, 4, (ch, 3, 3, ch)).astype(np.int8)
    w2[0] = big
    w2[3] = 0
    d2 = np.array([1, 1, -1, 0, 1, 1, 1, 1], np.int8)
    acc2 = ops.int_conv(codes1, w2, 1, 1, 1, 2**31 - 1) * d2.astype(np.int32)
    t2 = _quantile_thresholds(acc2, 255)
    t2[3] = 0  # constant channel: every level passed
    codes2 = ops.threshold_act(acc2, t2, np.ones(ch, np.int8), 1, 0)
    w3 = rng.integers(-10, 11, (ch, 3, 3, 1)).astype(np.int8)
    w3[1] = 127
    acc3 = ops.int_conv(codes2, w3, 1, 1, ch, 2**31 - 1)
    t3 = _quantile_thresholds(acc3, 15)
    tensors = {
        "image": TensorSpec("image", "uint8", (*hw, 2), 2),
        "x": spec("x", 2, step),
        **{name: spec(name, ch) for name in ("acc1", "q1", "acc2", "q2", "acc3", "q3")},
        "pool": spec("pool", ch, 1.0 / (hw[0] * hw[1]), (ch,)),
        "logits": TensorSpec("logits", "float64", (10,), 0),
    }
    grid = {"weight_bits": 8, "weight_grid": (1, -128)}
    nodes = (
        InputQuant("in", ("image",), "x", "input", mean=(0.0, 0.0), std=(1.0, 1.0), step=step),
        IntConv("c1", ("x",), "acc1", "stem", weight=stem_w, padding=1, **grid),
        ThresholdAct(
            "a1",
            ("acc1",),
            "q1",
            "act1",
            thresholds=stem_t,
            direction=np.ones(ch, np.int8),
            mult=1,
            offset=0,
            bits=7,
        ),
        IntConv("c2", ("q1",), "acc2", "conv2", weight=w2, padding=1, **grid),
        ThresholdAct(
            "a2", ("acc2",), "q2", "act2", thresholds=t2, direction=d2, mult=1, offset=0, bits=8
        ),
        IntConv("c3", ("q2",), "acc3", "conv3", weight=w3, padding=1, groups=ch, **grid),
        ThresholdAct(
            "a3",
            ("acc3",),
            "q3",
            "act3",
            thresholds=t3,
            direction=np.ones(ch, np.int8),
            mult=2,
            offset=-15,
            bits=4,
        ),
        GlobalSumPool("pool", ("q3",), "pool", "pool"),
        Linear(
            "fc",
            ("pool",),
            "logits",
            "fc",
            weight=rng.normal(size=(10, ch)),
            bias=rng.normal(size=10),
        ),
    )
    return bound_tensors(Graph(nodes, tensors, "image", "logits"))


@pytest.mark.parametrize("kernels", RESOLVERS)
@pytest.mark.parametrize(("weights", "big"), [("int8", 127), ("int4", 7)])
def test_one_channel_shifted_layer_equals_its_flavour_reference(
    tmp_path, monkeypatch, kernels: str, weights: str, big: int
) -> None:
    """One channel of a layer needs a large shift, the others none: the flavour shifts only that
    channel, and LiteRT's codes and logits equal the flavour reference's on every path (int4:
    the filters of the dense conv fit INT4 as they are, shifted like int8 ones). The shift is
    the form of layers whose partial sums reach 2**24; this small program's do not, so the
    float32-conv form is switched off here (the next test covers it)."""
    monkeypatch.setattr(flavour_module, "FLOAT32_EXACT", 0)
    images = np.random.default_rng(3).integers(0, 256, (6, 6, 6, 2), dtype=np.uint8)
    graph = _shifted_program(images, big)
    flavour = int16_flavour(graph)
    a2, a3 = flavour.node("a2"), flavour.node("a3")
    assert flavour.node("a1").shift is None  # the stem is exact
    for name, node in (("a2", a2), ("a3", a3)):  # the smallest shift, by a plain loop
        raw = graph.node(name).thresholds.astype(np.int64)
        want = []
        for row in raw.tolist():
            s = 0
            while not all(abs((t >> s) + (s > 0)) <= 32767 for t in row):
                s += 1
            want.append(s)
        assert node.shift.tolist() == want
    assert a2.shift[0] >= 1 and not a2.shift[1:].any()
    assert a3.shift[1] >= 3 and not a3.shift[[0, *range(2, 8)]].any()
    assert a2.thresholds.dtype == np.int16 and a3.thresholds.dtype == np.int16
    raw = graph.node("a2").thresholds.astype(np.int64)  # each channel snapped with its shift
    assert np.array_equal(a2.thresholds[0], (raw[0] >> a2.shift[0]) + 1)
    assert np.array_equal(a2.thresholds[1:], raw[1:])
    from ai_edge_litert import schema_py_generated as schema

    target = TfliteTarget(kernels, weights, "int16")
    path = target.export(graph, tmp_path / f"m-{kernels}-{weights}.tflite")
    assert (schema.TensorType.INT4 in _tensors(path).values()) == (weights == "int4")
    runner = target.load(path)
    assert runner.graph.node("a2").shift.tolist() == a2.shift.tolist()  # embedded program
    out = runner.run(images, with_codes=True)
    values = ReferenceModel(flavour).run(images, keep=True)
    for node in ("a1", "a2", "a3"):
        act = flavour.node(node)
        np.testing.assert_array_equal(out.codes[act.source], values[act.output], err_msg=node)
        assert len(np.unique(values[act.output])) > 3  # the counts are spread, not saturated
    np.testing.assert_allclose(out.logits, values[flavour.output], rtol=1e-5, atol=1e-4)
    pure = ReferenceModel(graph).run(images, keep=True)
    moved = np.count_nonzero(pure["q2"][..., 0] != values["q2"][..., 0])
    assert np.array_equal(pure["q2"][..., 1:], values["q2"][..., 1:])  # unshifted: exact
    assert moved < pure["q2"][..., 0].size // 10


@pytest.mark.parametrize("kernels", RESOLVERS)
def test_layers_beyond_int16_run_as_exact_float32_convs(tmp_path, kernels: str) -> None:
    """Thresholds beyond int16 but partial sums below 2**24: no shift, the layer is a float32
    conv on integers cast back to int32, and LiteRT's codes equal the *pure* program's exactly
    (the flavour leaves those layers alone)."""
    images = np.random.default_rng(3).integers(0, 256, (6, 6, 6, 2), dtype=np.uint8)
    graph = _shifted_program(images, 127)
    flavour = int16_flavour(graph)
    for name in ("a2", "a3"):
        assert flavour.node(name).shift is None
        np.testing.assert_array_equal(flavour.node(name).thresholds, graph.node(name).thresholds)
        assert np.abs(graph.node(name).thresholds).max() > 32767  # beyond int16 indeed
    target = TfliteTarget(kernels)
    path = target.export(graph, tmp_path / f"float-{kernels}.tflite")
    out = target.load(path).run(images, with_codes=True)
    values = ReferenceModel(graph).run(images, keep=True)
    for name in ("a1", "a2", "a3"):
        act = graph.node(name)
        np.testing.assert_array_equal(out.codes[act.source], values[act.output], err_msg=name)
    np.testing.assert_allclose(out.logits, values["logits"], rtol=1e-5, atol=1e-5)


def test_snapped_thresholds_move_each_boundary_by_at_most_half_a_step() -> None:
    """``floor(theta / 2**s) + 1`` (theta itself at s = 0): worked values, and for every v in
    a range the shifted count passes level t iff ``v >= theta' 2**s - 2**(s-1)``."""
    theta = np.array([[-5, 0, 7], [-5, 0, 7], [100, 101, 102]], np.int64)
    shift = np.array([0, 2, 3], np.int8)
    snapped = flavour_module.snap_thresholds_to_shift(theta, shift)
    assert snapped.tolist() == [[-5, 0, 7], [-1, 1, 2], [13, 13, 13]]
    for c in (1, 2):
        s = int(shift[c])
        v = np.arange(-64, 160)
        shifted = (v + 2 ** (s - 1)) >> s
        for t in range(3):
            boundary = snapped[c, t] * 2**s - 2 ** (s - 1)
            assert np.array_equal(shifted >= snapped[c, t], v >= boundary)
            assert abs(boundary - theta[c, t]) <= 2 ** (s - 1)
