"""``tensorrt_rules`` on a good exported model and on graphs that break each rule."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from climbq_deploy.errors import ArtifactError
from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.passes import lower
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.resnet import CifarResNet
from climbq_deploy.targets.tensorrt import TensorrtTarget
from climbq_deploy.targets.tensorrt.rules import check_tensorrt_rules, tensorrt_rules
from tests.conftest import MEAN, STD


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> onnx.ModelProto:
    torch.manual_seed(0)
    graph = lower(
        capture(CifarResNet(8, 10, QuantSpec("climbq+", 4, 4)), MEAN, STD, (8, 8, 3), input_bits=16)
    )
    path = tmp_path_factory.mktemp("rules") / "m.int4.onnx"
    return onnx.load(TensorrtTarget(weights="int4").export(graph, path))


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def weight_dq(model: onnx.ModelProto, int4: bool = False) -> onnx.NodeProto:
    inits = {i.name: i for i in model.graph.initializer}
    wanted = TensorProto.INT4 if int4 else TensorProto.INT8
    return next(
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].data_type == wanted
    )


def test_the_exported_model_passes(good) -> None:
    assert tensorrt_rules(good) == []
    check_tensorrt_rules(good)


def test_non_zero_zero_point_is_rejected(good) -> None:
    bad = copy(good)
    zero = next(i for i in bad.graph.initializer if i.name == "zero_int8")
    zero.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(zero) + 3, "zero_int8"))
    problems = tensorrt_rules(bad)
    assert problems and all("non-zero zero point" in p for p in problems)
    with pytest.raises(ArtifactError, match="non-zero zero point"):
        check_tensorrt_rules(bad, "bad.onnx")


def test_missing_zero_point_is_rejected(good) -> None:
    bad = copy(good)
    del weight_dq(bad).input[2]
    assert any("no zero point" in p for p in tensorrt_rules(bad))


def test_per_channel_scale_without_axis_is_rejected(good) -> None:
    bad = copy(good)
    node = weight_dq(bad)
    del node.attribute[:]
    problems = tensorrt_rules(bad)
    assert problems == [
        f"DequantizeLinear {node.name!r}: per-channel scale without an explicit axis"
    ]


def test_unsupported_op_is_rejected(good) -> None:
    bad = copy(good)
    bad.graph.node[0].op_type = "ConvInteger"
    assert any("ConvInteger" in p and "not supported" in p for p in tensorrt_rules(bad))
    custom = copy(good)
    custom.graph.node[0].domain = "com.microsoft"
    assert any("custom domain" in p for p in tensorrt_rules(custom))


def test_opset_outside_the_range_is_rejected(good) -> None:
    bad = copy(good)
    bad.opset_import[0].version = 11
    problems = tensorrt_rules(bad)
    assert "opset 11 outside [13, 21]" in problems
    assert any("INT4 weights need opset >= 21" in p for p in problems)


def test_int4_into_a_conv_and_int32_dequantize_are_rejected(good) -> None:
    bad = copy(good)
    int4 = weight_dq(bad, int4=True)
    matmul = next(n for n in bad.graph.node if n.op_type == "MatMul")
    matmul.op_type = "Conv"
    assert any("no INT4 convolution" in p for p in tensorrt_rules(bad))
    bias = copy(good)
    node = weight_dq(bias)
    name = node.input[0]
    arr = numpy_helper.to_array(next(i for i in bias.graph.initializer if i.name == name))
    for i in bias.graph.initializer:
        if i.name == name:
            i.CopyFrom(numpy_helper.from_array(arr.astype("int32"), name))
    assert any("dequantizes INT32" in p for p in tensorrt_rules(bias))
    assert int4.input[0].endswith("weight_int4")


def test_activation_quantization_must_be_per_tensor() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.INT8, [1, 2])
    scale = numpy_helper.from_array(np.array([1.0, 2.0], "float32"), "s")
    zero = numpy_helper.from_array(np.zeros(2, "int8"), "z")
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], name="q", axis=1)
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y], [scale, zero]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    assert tensorrt_rules(model) == [
        "QuantizeLinear 'q': activation quantization must be per tensor"
    ]
