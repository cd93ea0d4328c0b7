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
