"""The exact ONNX Runtime forms of the TensorRT target (``--form``): every code of every layer
equal to the NumPy reference under ONNX Runtime, the structure each form promises, and the
compare tricks at the integer boundaries against a plain loop."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from climbq_deploy.errors import ConfigError
from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.passes import lower
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.mobilenetv2 import CifarMobileNetV2
from climbq_deploy.targets.tensorrt import TensorrtTarget
from tests.conftest import MEAN, STD, randomize_batchnorm
from tests.targets.test_tensorrt_export import assert_exact, images, resnet

ort = pytest.importorskip("onnxruntime")
FORMS = ("sign_sum", "int8_dup", "ort")


def export(graph, tmp_path, form: str):
    target = TensorrtTarget(form=form)
    path = target.export(graph, tmp_path / f"{form}.onnx")
    return target.load(path), onnx.load(path)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("bits", [2, 4])
def test_resnet_forms_are_exact(tmp_path, bits: int, form: str) -> None:
    _, graph = resnet(bits, bits + 10)
    runner, _ = export(graph, tmp_path, form)
    assert_exact(runner, images(16, n=6, seed=bits))


@pytest.mark.parametrize("form", FORMS)
def test_mobilenetv2_forms_are_exact(tmp_path, form: str) -> None:
    torch.manual_seed(1)
    model = CifarMobileNetV2(10, QuantSpec("climbq+", 4, 4))
    randomize_batchnorm(model, 1)
    graph = lower(capture(model, MEAN, STD, (8, 8, 3), input_bits=16))
    runner, _ = export(graph, tmp_path, form)
    assert_exact(runner, images(8, n=3, seed=5))


def test_structure_of_each_form(tmp_path) -> None:
    _, graph = resnet(2, 3)  # 2-bit: three thresholds per channel
    n_convs = sum(n.op == "int_conv" for n in graph.nodes)
    ops = {}
    for form in ("qdq", *FORMS):
        _, model = export(graph, tmp_path, form)
        ops[form] = [n.op_type for n in model.graph.node]
        assert {p.key: p.value for p in model.metadata_props}["form"] == form
    assert "Clip" not in ops["qdq"] and "QLinearConv" not in ops["qdq"]
    # sign-sum: every conv but the stem float32, one Clip per layer, no Q/DQ, no compare
    assert ops["sign_sum"].count("Clip") == n_convs - 1
    assert ops["sign_sum"].count("GreaterOrEqual") == 1  # the digit-split stem's int32 count
    assert "QuantizeLinear" not in ops["sign_sum"]
    # int8_dup at 2 bits: two QLinearConv per non-stem layer, none left in sign-sum
    assert ops["int8_dup"].count("QLinearConv") == 2 * (n_convs - 1)
    assert "Clip" not in ops["int8_dup"]
    assert ops["ort"] == ops["int8_dup"]  # n = 3 <= ORT_DUP_MAX_LEVELS
    _, graph4 = resnet(4, 3)
    _, model4 = export(graph4, tmp_path, "ort")
    assert "QLinearConv" not in [n.op_type for n in model4.graph.node]  # n = 15: sign-sum


def test_duplicated_weights_and_thresholds(tmp_path) -> None:
    """The dup conv repeats each ``d_c W`` row ``n`` times with bias ``-theta`` (clamped)."""
    _, graph = resnet(2, 4)
    _, model = export(graph, tmp_path, "int8_dup")
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    act = next(
        n for n in graph.nodes if n.op == "threshold_act" and f"{n.output}/weight_dup" in inits
    )
    conv = next(n for n in graph.nodes if n.output == act.inputs[0])
    dup, minus_t = inits[f"{act.output}/weight_dup"], inits[f"{act.output}/minus_t"]
    c, n = act.thresholds.shape
    signed = np.transpose(conv.weight * act.direction[:, None, None, None], (0, 3, 1, 2))
    for channel in range(c):
        for level in range(n):
            np.testing.assert_array_equal(dup[channel * n + level], signed[channel])
    bound = int(np.abs(conv.weight).reshape(c, -1).sum(1).max()) * 127
    assert np.all(np.abs(minus_t) <= bound + 1)


def _one_op_model(nodes, inputs, output, inits, opset=17):
    graph = helper.make_graph(nodes, "t", inputs, [output], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_sign_sum_equals_count_at_theta_minus_one_theta_theta_plus_one() -> None:
    """``sum_t clip(2 (x - t) + 1, -1, 1) = 2 #{t : x >= t} - n`` in ONNX Runtime float32, at
    every threshold's integer neighbours and near the float32 limit, against a plain loop."""
    theta = np.array([[-5, 0, 7], [3, 3, 4_000_000]], np.int64)
    xs = sorted({int(v + d) for v in theta.ravel() for d in (-1, 0, 1)} | {-8_000_000})
    x = np.array(xs, np.float32)[None, None, :].repeat(2, axis=1)  # (1, C, L) integers
    nodes = [
        helper.make_node("Unsqueeze", ["x", "axis"], ["wide"]),
        helper.make_node("Mul", ["wide", "two"], ["x2"]),
        helper.make_node("Add", ["x2", "bias"], ["odd"]),
        helper.make_node("Clip", ["odd", "lo", "hi"], ["signs"]),
        helper.make_node("ReduceSum", ["signs", "axis"], ["y"], keepdims=0),
    ]
    inits = [
        numpy_helper.from_array(np.array([2], np.int64), "axis"),
        numpy_helper.from_array(np.float32(2), "two"),
        numpy_helper.from_array((1 - 2 * theta).astype(np.float32)[:, :, None], "bias"),
        numpy_helper.from_array(np.float32(-1), "lo"),
        numpy_helper.from_array(np.float32(1), "hi"),
    ]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, len(xs)])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, len(xs)])
    (y,) = _one_op_model(nodes, [x_info], y_info, inits).run(None, {"x": x})
    for c in range(2):
        for i, value in enumerate(xs):
            count = sum(1 for t in theta[c] if value >= t)
            assert y[0, c, i] == 2 * count - theta.shape[1]


def test_saturating_compare_of_qlinearconv() -> None:
    """``sat_u8(256 (acc - t) + 255) = 255 [acc >= t]`` in ONNX Runtime's QLinearConv, for
    ``acc - t`` from -135 to 120 (a 1x1 conv of one uint8 input with weight 1, bias -t)."""
    acc = np.arange(0, 256, dtype=np.int64)  # input codes q - 128 = -128..127
    t = 7
    nodes = [
        helper.make_node(
            "QLinearConv",
            ["x", "one", "z128", "w", "ws", "wz", "ys", "yz", "bias"],
            ["y"],
            kernel_shape=[1, 1],
        )
    ]
    inits = [
        numpy_helper.from_array(np.float32(1), "one"),
        numpy_helper.from_array(np.uint8(128), "z128"),
        numpy_helper.from_array(np.ones((1, 1, 1, 1), np.int8), "w"),
        numpy_helper.from_array(np.ones(1, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(1, np.int8), "wz"),
        numpy_helper.from_array(np.float32(1 / 256), "ys"),
        numpy_helper.from_array(np.uint8(255), "yz"),
        numpy_helper.from_array(np.array([-t], np.int32), "bias"),
    ]
    x_info = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 1, 256])
    y_info = helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 1, 1, 256])
    x = acc.astype(np.uint8).reshape(1, 1, 1, 256)
    (y,) = _one_op_model(nodes, [x_info], y_info, inits).run(None, {"x": x})
    expected = np.where(acc - 128 >= t, 255, 0)
    np.testing.assert_array_equal(y.ravel(), expected)


def test_onnxruntime_forms_refused_for_tensorrt_and_unknown_form(tmp_path) -> None:
    _, graph = resnet(2, 5)
    with pytest.raises(ConfigError, match="TensorRT needs qdq"):
        TensorrtTarget(form="ort", runtime="tensorrt").export(graph, tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="form must be one of"):
        TensorrtTarget(form="fast")
