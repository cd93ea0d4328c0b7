"""torch.export where torch.fx cannot trace: a leaf-module graph like fx's, quantize and
capture through it, and the lowered program exact against torch."""

from __future__ import annotations

import operator

import numpy as np
import pytest
import torch
from torch import fx, nn

from climbq_deploy.errors import ConfigError
from climbq_deploy.ir.capture import CaptureError, capture
from climbq_deploy.ir.passes import lower
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.models.module_graph import ExportGraphError, export_leaf_graph
from climbq_deploy.quant.convert import quantize
from climbq_deploy.quant.layers import BatchNormActQuant, QConv2d, QConv2dAct
from tests.conftest import MEAN, STD, codes_and_logits, randomize_batchnorm
from tests.quant.test_convert import U

LEAF = fx.Tracer().is_leaf_module


def test_the_export_graph_is_fxs_graph_for_that_shape() -> None:
    model = U.shape_branching_cnn(4).eval()
    with pytest.raises(Exception, match="control flow"):
        fx.symbolic_trace(model)
    graph = export_leaf_graph(model, torch.zeros(1, 3, 16, 16), LEAF)
    calls = [(n.op, n.target) for n in graph.nodes if n.op != "placeholder"]
    assert calls == [
        ("call_module", "stem"),
        ("call_module", "stem_bn"),
        ("call_function", torch.relu),
        ("call_module", "pool"),  # 16 > 8: the branch taken
        ("call_module", "body.0"),  # the Sequential inlined, its leaves kept
        ("call_module", "body.1"),
        ("call_module", "body.2"),
        ("call_function", operator.add),
        ("call_function", torch.relu),
        ("call_module", "side"),
        ("call_function", torch.relu),
        ("call_function", torch.cat),
        ("call_method", "mean"),
        ("call_function", torch.flatten),
        ("call_module", "classifier"),
        ("output", "output"),
    ]
    body = next(n for n in graph.nodes if n.target == "body.0")
    assert body.meta["climbq_module"] == "body"
    small = export_leaf_graph(model, torch.zeros(1, 3, 8, 8), LEAF)
    assert "pool" not in [n.target for n in small.nodes]  # 8 > 8 is false: no pool
    # the graph runs as the model does
    gm = fx.GraphModule(model, graph)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)


def test_export_failures_say_why() -> None:
    class ValueBranch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) if x.sum() > 0 else -x

    with pytest.raises(ExportGraphError, match="data-dependent"):
        export_leaf_graph(ValueBranch(), torch.zeros(1, 3, 4, 4), LEAF)


def test_quantize_falls_back_to_export_given_an_example_input() -> None:
    with pytest.raises(ConfigError, match=r"torch.fx cannot trace .*give quantize an example_in"):
        quantize(U.shape_branching_cnn(4))
    q = quantize(U.shape_branching_cnn(4), example_input=torch.zeros(1, 3, 16, 16))
    modules = dict(q.net.named_modules())
    assert type(modules["stem"]) is QConv2d and type(modules["stem_bn"]) is BatchNormActQuant
    assert type(modules["body.0"]) is QConv2d and type(modules["body.1"]) is BatchNormActQuant
    assert type(modules["side"]) is QConv2dAct  # a bias and no BatchNorm: its own quantizer
    assert q.head_name == "classifier" and q.num_classes == 4


@pytest.mark.parametrize("size", [16, 8])
def test_a_model_fx_cannot_trace_lowers_exactly(size: int) -> None:
    """Shape-dependent forward (both branches), a conv bias with no BatchNorm (folded into the
    thresholds as a unit BatchNorm), a concat: codes equal torch's, logits to 1e-9."""
    torch.manual_seed(size)
    example = torch.zeros(1, 3, size, size)
    model = quantize(U.shape_branching_cnn(4), example_input=example).eval()
    randomize_batchnorm(model, size)
    with torch.no_grad():
        model.net.side.bias.copy_(torch.randn(8) * 2)
    graph = capture(model, MEAN, STD, (size, size, 3), input_bits=20)
    ops = [n.op for n in graph.nodes]
    assert ops.count("max_pool") == (size > 8) and ops.count("concat") == 1
    unit = next(n for n in graph.nodes if n.source == "net.side.bias")
    np.testing.assert_array_equal(unit.beta, model.net.side.bias.detach().double().numpy())
    program = lower(graph)
    images = np.random.default_rng(size).integers(0, 256, (6, size, size, 3), dtype=np.uint8)
    values = ReferenceModel(program).run(images, keep=True)
    codes, logits = codes_and_logits(model, program, images)
    acts = [n for n in program.nodes if n.op == "threshold_act"]
    assert (
        {n.source for n in acts}
        == set(codes)
        == {
            "net.stem_bn.act",
            "net.body.1.act",
            "net.side.act",
        }
    )
    for node in acts:
        np.testing.assert_array_equal(values[node.output], codes[node.source], node.source)
    np.testing.assert_allclose(values[program.output], logits, rtol=1e-9, atol=1e-9)


def test_capture_without_a_shape_names_fx_alone() -> None:
    model = quantize(U.shape_branching_cnn(4), example_input=torch.zeros(1, 3, 16, 16)).eval()
    from climbq_deploy.ir.capture import trace

    with pytest.raises(CaptureError, match=r"^torch.fx cannot trace QuantizedModel: TraceError"):
        trace(model)
    assert isinstance(trace(model, (16, 16, 3)), fx.GraphModule)
