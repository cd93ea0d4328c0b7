"""The plain int8 yardstick: a real LiteRT model of the program's shape with only the ops an
ordinary int8 network has."""

import numpy as np
import pytest
import torch

from bench.plain_int8 import write_plain_int8
from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.passes import lower
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.mobilenetv2 import CifarMobileNetV2
from climbq_deploy.models.resnet import CifarResNet
from tests.conftest import MEAN, STD, randomize_batchnorm

pytest.importorskip("ai_edge_litert")

PLAIN_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MAXIMUM", "MEAN", "FULLY_CONNECTED", "PAD"}


def _ops_and_run(content: bytes, kernels: str) -> tuple[set[str], np.ndarray]:
    from ai_edge_litert import schema_py_generated as schema

    from climbq_deploy.targets.tflite import RESOLVERS, interpreter_module

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(content, 0)
    codes = [model.OperatorCodes(i).BuiltinCode() for i in range(model.OperatorCodesLength())]
    module = interpreter_module()
    it = module.Interpreter(
        model_content=content,
        experimental_op_resolver_type=getattr(module.OpResolverType, RESOLVERS[kernels]),
    )
    it.allocate_tensors()
    detail = it.get_input_details()[0]
    assert detail["dtype"] == np.int8
    x = np.random.default_rng(0).integers(-64, 64, detail["shape"]).astype(np.int8)
    it.set_tensor(detail["index"], x)
    it.invoke()
    return {names[c] for c in codes}, it.get_tensor(it.get_output_details()[0]["index"])


@pytest.mark.parametrize("kernels", ["ref", "xnnpack"])
def test_plain_int8_resnet_runs_with_ordinary_ops_only(kernels: str) -> None:
    torch.manual_seed(0)
    model = CifarResNet(8, 10, QuantSpec("climbq+", 4, 4))
    randomize_batchnorm(model, 0)
    graph = lower(capture(model, MEAN, STD, (16, 16, 3), input_bits=16))
    ops, logits = _ops_and_run(write_plain_int8(graph), kernels)
    assert ops <= PLAIN_OPS and "CONV_2D" in ops and "ADD" in ops
    assert "GREATER_EQUAL" not in ops and logits.shape == (1, 10) and logits.dtype == np.int8


def test_plain_int8_mobilenetv2_has_depthwise_convs() -> None:
    torch.manual_seed(1)
    model = CifarMobileNetV2(10, QuantSpec("climbq", 4, 4))
    randomize_batchnorm(model, 1)
    graph = lower(capture(model, MEAN, STD, (8, 8, 3), input_bits=16))
    ops, logits = _ops_and_run(write_plain_int8(graph), "ref")
    assert "DEPTHWISE_CONV_2D" in ops and ops <= PLAIN_OPS and logits.shape == (1, 10)


@pytest.mark.parametrize("case", ["k3s2p1-even", "k3s2p1-odd-signed", "concat"])
def test_plain_int8_yardsticks_pool_and_concat_in_int8(case: str) -> None:
    """A program with a max pool or a concat: the LiteRT yardstick runs them as int8
    MAX_POOL_2D (explicit padding: PAD after a ReLU, copied edges before signed codes) and
    CONCATENATION, the ONNX one as DQ -> MaxPool / Concat -> Q, and both run."""
    from tests.pool_concat_programs import program

    graph = program(case)
    ops, logits = _ops_and_run(write_plain_int8(graph), "xnnpack")
    moved = {"CONCATENATION"} if case == "concat" else {"MAX_POOL_2D"}
    padding = {"k3s2p1-even": {"PAD"}, "k3s2p1-odd-signed": {"SLICE", "CONCATENATION"}}
    assert ops <= PLAIN_OPS | moved | padding.get(case, set()) and moved <= ops
    assert logits.shape == (1, 5) and logits.dtype == np.int8
    ort = pytest.importorskip("onnxruntime")
    from bench.onnx_plain_int8 import write_plain_int8_onnx

    model = write_plain_int8_onnx(graph)
    types = {n.op_type for n in model.graph.node}
    assert ("Concat" if case == "concat" else "MaxPool") in types
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    size = graph.tensors[graph.input].shape[0]
    x = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
    (out,) = session.run(["logits"], {"input": x})
    assert out.shape == (2, 5) and np.isfinite(out).all()
