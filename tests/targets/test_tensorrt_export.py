"""The TensorRT target's ONNX (explicit quantization) on small models: structure, ONNX checker,
and exactness under ONNX Runtime against the NumPy reference and torch float64."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.graph import ThresholdAct
from climbq_deploy.ir.passes import lower
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.mobilenetv2 import CifarMobileNetV2
from climbq_deploy.models.resnet import CifarResNet
from climbq_deploy.targets.tensorrt import TensorrtTarget
from climbq_deploy.targets.tensorrt.export import _Builder, _count, read_program_bytes
from climbq_deploy.targets.tensorrt.rules import tensorrt_rules
from tests.conftest import MEAN, STD, codes_and_logits, randomize_batchnorm

ort = pytest.importorskip("onnxruntime")


def resnet(bits: int, seed: int, head: str = "float"):
    torch.manual_seed(seed)
    model = CifarResNet(8, 10, QuantSpec("climbq+", bits, bits))
    randomize_batchnorm(model, seed)
    return model, lower(capture(model, MEAN, STD, (16, 16, 3), input_bits=16), head=head)


def images(size: int, n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def assert_exact(runner, x: np.ndarray) -> None:
    """Every code of the ONNX model equals the reference's; logits within float32 rounding."""
    out = runner.run(x, with_codes=True)
    values = ReferenceModel(runner.graph).run(x, keep=True)
    acts = [n for n in runner.graph.nodes if isinstance(n, ThresholdAct)]
    assert len(out.codes) == len(acts) > 0
    for node in acts:
        np.testing.assert_array_equal(out.codes[node.source], values[node.output])
    np.testing.assert_allclose(out.logits, values[runner.graph.output], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weights", ["int8", "int4"])
@pytest.mark.parametrize("bits", [2, 4])
def test_resnet_onnx_is_exact_under_onnxruntime(tmp_path, bits: int, weights: str) -> None:
    _, graph = resnet(bits, bits)
    target = TensorrtTarget(weights=weights)
    assert_exact(target.load(target.export(graph, tmp_path / f"m{target.suffix}")), images(16))


def test_codes_equal_torch_float64_on_the_same_input(tmp_path) -> None:
    """Independent golden side: the torch model's own quantizer outputs, in float64."""
    model, graph = resnet(4, 7)
    target = TensorrtTarget()
    runner = target.load(target.export(graph, tmp_path / "m.onnx"))
    x = images(16, seed=3)
    out = runner.run(x, with_codes=True)
    codes, logits = codes_and_logits(model, runner.graph, x)
    for name, value in out.codes.items():
        np.testing.assert_array_equal(value, codes[name])
    np.testing.assert_allclose(out.logits, logits, rtol=1e-5, atol=1e-5)


def test_mobilenetv2_and_int8_head_are_exact(tmp_path) -> None:
    torch.manual_seed(0)
    model = CifarMobileNetV2(10, QuantSpec("climbq", 4, 4))
    randomize_batchnorm(model, 0)
    graph = lower(capture(model, MEAN, STD, (8, 8, 3), input_bits=16))
    target = TensorrtTarget()
    assert_exact(target.load(target.export(graph, tmp_path / "mb.onnx")), images(8, 3))
    _, int8_head = resnet(2, 1, head="int8")
    assert_exact(target.load(target.export(int8_head, tmp_path / "h.onnx")), images(16))


def test_structure_follows_tensorrt_explicit_quantization(tmp_path) -> None:
    _, graph = resnet(4, 4)
    path = TensorrtTarget().export(graph, tmp_path / "m.onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert tensorrt_rules(model) == []
    assert model.opset_import[0].version == 17
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    n_convs = sum(n.op == "int_conv" for n in graph.nodes)
    assert len(convs) == n_convs
    dq_weights = [
        n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
    ]
    assert len(dq_weights) == n_convs - 1  # every conv but the float32 stem
    for node in dq_weights:
        assert [a.i for a in node.attribute if a.name == "axis"] == [0]
        assert inits[node.input[0]].dtype == np.int8 and not inits[node.input[2]].any()
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert not inits[node.input[2]].any()  # symmetric: zero point 0
    residual = {n.output for n in graph.nodes if n.op == "add"}
    adds = [n for n in model.graph.node if n.name in residual]
    assert len(adds) == len(residual) > 0
    assert all(i.endswith("/dq") for n in adds for i in n.input)  # int8 Q/DQ on both inputs


def test_int4_head_is_int4_block_quantized_at_opset_21(tmp_path) -> None:
    _, graph = resnet(2, 2)
    path = TensorrtTarget(weights="int4").export(graph, tmp_path / "m.int4.onnx")
    model = onnx.load(path)
    assert model.opset_import[0].version == 21
    int4 = [i for i in model.graph.initializer if i.data_type == TensorProto.INT4]
    weight = next(i for i in int4 if i.name.endswith("weight_int4"))
    values = numpy_helper.to_array(weight)
    assert values.shape == (64, 10)  # (K, classes) of the MatMul
    assert values.min() >= -7 and values.max() <= 7 and np.abs(values).max() == 7
    dq = next(n for n in model.graph.node if n.input and n.input[0] == weight.name)
    assert {a.name: a.i for a in dq.attribute} == {"axis": 0, "block_size": 64}


def test_program_travels_in_the_metadata(tmp_path) -> None:
    from climbq_deploy.errors import ArtifactError

    _, graph = resnet(4, 4)
    runner = TensorrtTarget().load(TensorrtTarget().export(graph, tmp_path / "m.onnx"))
    assert runner.graph.ops() == graph.ops()
    for ours, theirs in zip(runner.graph.nodes, graph.nodes, strict=True):
        if isinstance(ours, ThresholdAct):
            np.testing.assert_array_equal(ours.thresholds, theirs.thresholds)
    model = onnx.load(tmp_path / "m.onnx")
    del model.metadata_props[:]
    with pytest.raises(ArtifactError, match="no climbq_program"):
        read_program_bytes(model, "x.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"garbage" * 10)
    with pytest.raises(ArtifactError, match=r"bad\.onnx"):
        TensorrtTarget().load(tmp_path / "bad.onnx")


def test_count_is_exact_at_floor_t_and_ceil_of_each_threshold() -> None:
    """``mult * #{t : x >= theta_t} + offset`` against a plain loop, at theta - 1, theta,
    theta + 1 of every level (the integer boundaries) and at large values below 2**24."""
    theta = np.array([[-5, 0, 7], [3, 3, 1_000_000], [0, 1, 1]], np.int64)  # channel 2: constant
    act = ThresholdAct(
        "act",
        ("x",),
        "y",
        thresholds=theta,
        direction=np.array([1, 1, 0], np.int8),
        mult=2,
        offset=-3,
    )
    b = _Builder()
    _count(b, act, "x")
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 1, None])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(
        helper.make_graph(b.nodes, "count", [x_info], [y_info], b.initializers),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    probes = sorted({int(v) + d for v in theta[:2].ravel() for d in (-1, 0, 1)} | {16_000_000})
    x = np.zeros((1, 3, 1, len(probes)), np.float32)
    x[0, :2, 0] = probes  # channel 2 (direction 0) reads the 0 its all-zero conv writes
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x})
    for i, v in enumerate(probes):
        for c in range(2):
            assert y[0, c, 0, i] == 2 * sum(1 for t in theta[c] if v >= t) - 3, (c, v)
        assert y[0, 2, 0, i] == 2 * 1 - 3  # constant channel: one level passed


@pytest.mark.parametrize("bits", [2, 4])
def test_int4_and_int8_storage_of_an_int4_head_program_give_identical_outputs(
    tmp_path, bits: int
) -> None:
    """``--head int4`` puts the 4-bit head in the program; storing it as INT8 or INT4 then
    changes the file, not one output (a float head re-quantized to INT4 is another program)."""
    _, graph = resnet(bits, 20 + bits, head="int4")
    head = next(n for n in graph.nodes if n.op == "int_linear")
    assert np.abs(head.weight).max() <= 7
    x = images(16, n=8, seed=3)
    outs = {}
    for weights in ("int8", "int4"):
        target = TensorrtTarget("onnxruntime", weights)
        runner = target.load(target.export(graph, tmp_path / f"m-{weights}.onnx"))
        outs[weights] = runner.run(x, with_codes=True)
        assert_exact(runner, x)
    np.testing.assert_array_equal(outs["int4"].logits, outs["int8"].logits)
    for name, codes in outs["int8"].codes.items():
        np.testing.assert_array_equal(outs["int4"].codes[name], codes)


def test_int4_file_carries_its_onnxruntime_contract(tmp_path) -> None:
    """A plain ``InferenceSession`` (what Polygraphy and users create) given the settings the
    file's metadata names computes the program: logits equal the reference's to float32
    rounding. Without them ONNX Runtime may fuse the INT4 head into MatMulNBits with int8
    activations (measured: up to 0.01 off on a trained ResNet-20); the INT8 file needs none."""
    import json

    from climbq_deploy.targets.tensorrt import host_input
    from climbq_deploy.targets.tensorrt.export import ORT_SESSION_CONFIG_KEY, session_config

    _, graph = resnet(4, 7, head="int4")
    paths = {
        w: TensorrtTarget(weights=w).export(graph, tmp_path / f"m-{w}.onnx")
        for w in ("int8", "int4")
    }
    assert session_config(onnx.load(paths["int8"])) == {}
    model = onnx.load(paths["int4"])
    config = session_config(model)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props[ORT_SESSION_CONFIG_KEY]) == config
    assert config == {"session.qdq_matmulnbits_accuracy_level": "0"}
    options = ort.SessionOptions()
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(str(paths["int4"]), options, providers=["CPUExecutionProvider"])
    x = images(16, n=16, seed=5)
    assert host_input(x, graph, model) is not None and model.graph.input[0].name == "image"
    (logits,) = session.run(["logits"], {"image": x})  # uint8 images as they are
    reference = ReferenceModel(graph).predict(x)
    np.testing.assert_allclose(logits, reference, rtol=1e-5, atol=1e-5)
