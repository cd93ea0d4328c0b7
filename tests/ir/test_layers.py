"""iter_layers: each IntConv with the ThresholdAct it feeds as one ConvLayer (stem flagged),
every other node as itself, and a clear refusal for a conv that feeds anything else."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.graph import (
    Add,
    GlobalSumPool,
    Graph,
    InputQuant,
    IntConv,
    Linear,
    Node,
    Relu,
    TensorSpec,
    ThresholdAct,
)
from climbq_deploy.ir.layers import ConvLayer, iter_layers, op_entry
from climbq_deploy.ir.passes import bound_tensors, lower
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.mobilenetv2 import CifarMobileNetV2
from climbq_deploy.models.resnet import CifarResNet
from tests.conftest import MEAN, STD, randomize_batchnorm

HW, C = (4, 4), 3


def _spec(name: str, shape: tuple[int, ...] = (*HW, C), scale: float = 1.0) -> TensorSpec:
    return TensorSpec(name, "int32", shape, len(shape) - 1, scale)


def _conv(name: str, x: str, out: str) -> IntConv:
    weight = np.ones((C, 1, 1, C), np.int8)
    return IntConv(
        name, (x,), out, f"src_{name}", weight=weight, weight_bits=2, weight_grid=(2, -3)
    )


def _act(name: str, x: str, out: str) -> ThresholdAct:
    return ThresholdAct(
        name,
        (x,),
        out,
        f"src_{name}",
        thresholds=np.array([[0, 4, 8]] * C, np.int64),
        direction=np.array([1, -1, 0], np.int8),
        mult=2,
        offset=-3,
        bits=2,
    )


def _graph(nodes: list[Node]) -> Graph:
    """A hand-built program over 4x4x3 tensors; every tensor a node names is declared."""
    tensors = {"image": TensorSpec("image", "uint8", (*HW, C), 2)}
    for node in nodes:
        for name in (*node.inputs, node.output):
            if name not in tensors:
                tensors[name] = _spec(name)
    tensors["pool"] = _spec("pool", (C,), 1.0 / 16)
    tensors["logits"] = TensorSpec("logits", "float64", (2,), 0)
    return Graph(tuple(nodes), tensors, "image", "logits")


def _head() -> list[Node]:
    return [
        GlobalSumPool("pool", ("q3",), "pool", "pool"),
        Linear("fc", ("pool",), "logits", "fc", weight=np.ones((2, C)), bias=np.zeros(2)),
    ]


def _residual_program() -> Graph:
    """x -> conv1 -> act1 -> conv2 -> act2; act1 + act2 -> act3 (a count of a sum) -> head."""
    return _graph(
        [
            InputQuant("in", ("image",), "x", "input", mean=(0.0,) * C, std=(1.0,) * C),
            _conv("c1", "x", "acc1"),
            _act("a1", "acc1", "q1"),
            _conv("c2", "q1", "acc2"),
            _act("a2", "acc2", "q2"),
            Add("add", ("q1", "q2"), "sum", "add"),
            _act("a3", "sum", "q3"),
            *_head(),
        ]
    )


def test_conv_and_its_activation_come_as_one_layer_with_the_stem_flagged() -> None:
    graph = _residual_program()
    layers = list(iter_layers(graph))
    kinds = [type(layer).__name__ for layer in layers]
    assert kinds == [
        "InputQuant",
        "ConvLayer",
        "ConvLayer",
        "Add",
        "ThresholdAct",
        "GlobalSumPool",
        "Linear",
    ]
    stem, second = layers[1], layers[2]
    assert (stem.conv.name, stem.act.name, stem.stem) == ("c1", "a1", True)
    assert (second.conv.name, second.act.name, second.stem) == ("c2", "a2", False)
    assert stem.source == "src_c1"
    assert layers[4].name == "a3"  # a count of a residual sum stays a node
    with pytest.raises(AttributeError):  # frozen
        stem.stem = False  # type: ignore[misc]


def test_a_layer_comes_at_its_convs_place_when_something_sits_between() -> None:
    nodes = list(_residual_program().nodes)
    relu = Relu("r", ("x",), "xr", "relu")
    nodes.insert(2, relu)  # between c1 and a1, reading neither
    layers = list(iter_layers(_graph(nodes)))
    assert isinstance(layers[1], ConvLayer) and layers[1].conv.name == "c1"
    assert layers[2] is relu
    assert sum(isinstance(x, ConvLayer) for x in layers) == 2
    assert len(layers) == len(nodes) - 2  # each activation folded into its conv's layer


@pytest.mark.parametrize(
    "extra",
    [
        Relu("r", ("acc2",), "r2", "relu"),  # a second reader of the accumulator
        None,  # the accumulator read by a relu alone
    ],
)
def test_a_conv_that_does_not_feed_exactly_one_activation_is_refused(extra) -> None:
    nodes = list(_residual_program().nodes)
    if extra is None:
        nodes[4] = Relu("a2", ("acc2",), "q2", "relu")
    else:
        nodes.insert(5, extra)
    with pytest.raises(LoweringError, match=r"conv 'src_c2' must feed exactly one ThresholdAct"):
        list(iter_layers(_graph(nodes)))


def test_a_conv_read_by_nothing_is_refused() -> None:
    nodes = [n for n in _residual_program().nodes if n.name not in ("a2", "add", "a3")]
    nodes.insert(-2, _act("a3", "q1", "q3"))
    with pytest.raises(LoweringError, match=r"conv 'src_c2' must feed exactly one ThresholdAct"):
        list(iter_layers(_graph(nodes)))


def test_both_emitters_refuse_through_the_iterator() -> None:
    pytest.importorskip("onnx")
    from climbq_deploy.targets.tensorrt.export import write_onnx

    nodes = list(_residual_program().nodes)
    nodes.insert(5, Relu("r", ("acc2",), "r2", "relu"))
    graph = bound_tensors(_graph(nodes))
    with pytest.raises(LoweringError, match=r"conv 'src_c2' must feed exactly one ThresholdAct"):
        write_onnx(graph)
    pytest.importorskip("ai_edge_litert")
    from climbq_deploy.targets.tflite.export import write_tflite

    with pytest.raises(LoweringError, match=r"conv 'src_c2' must feed exactly one ThresholdAct"):
        write_tflite(graph)


@pytest.mark.parametrize("arch", ["resnet", "mobilenetv2"])
def test_lowered_models_pair_every_conv_once(arch: str) -> None:
    torch.manual_seed(0)
    if arch == "resnet":
        model, size = CifarResNet(8, 10, QuantSpec("climbq+", 2, 2)), 16
    else:
        model, size = CifarMobileNetV2(10, QuantSpec("climbq", 4, 4)), 8
    randomize_batchnorm(model, 0)
    graph = lower(capture(model, MEAN, STD, (size, size, 3), input_bits=20))
    layers = list(iter_layers(graph))
    convs = [layer for layer in layers if isinstance(layer, ConvLayer)]
    assert len(convs) == graph.ops().count("int_conv") > 0
    assert [layer.stem for layer in convs] == [True] + [False] * (len(convs) - 1)
    for layer in convs:
        assert layer.act.inputs == (layer.conv.output,)
    covered = [
        n
        for layer in layers
        for n in ((layer.conv, layer.act) if isinstance(layer, ConvLayer) else (layer,))
    ]
    assert sorted(n.name for n in covered) == sorted(n.name for n in graph.nodes)


def test_op_entry_looks_up_the_exact_class() -> None:
    class MyRelu(Relu):
        op = "my_relu"

    table = {Relu: "relu", ConvLayer: "conv"}
    relu = Relu("r", ("x",), "y")
    assert op_entry(table, relu) == "relu"
    assert op_entry(table, MyRelu("m", ("x",), "y")) is None  # a new op needs its own entry
    layer = ConvLayer(_conv("c", "x", "a"), _act("t", "a", "q"), stem=False)
    assert op_entry(table, layer) == "conv"
