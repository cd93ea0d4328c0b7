"""The fast TFLite forms (targets/tflite/forms.py) at their exactness edges.

A hand-built program: a stem whose 8-bit codes (mult 1, offset -127: codes in [-127, 127])
feed a 1x1 conv of ``C`` input channels with weights ±127, so the accumulator bound is
``B = C 127 127``. The float sign sum is exact while ``2 B + 3 < 2**24``: one channel count
below the edge it must be chosen and exact, one above it must be refused (and the layer still
exact in another form). Thresholds sit at, next to and beyond the values that occur."""

from __future__ import annotations

import numpy as np
import pytest

from climbq_deploy.ir.graph import (
    GlobalSumPool,
    Graph,
    InputQuant,
    IntConv,
    Linear,
    TensorSpec,
    ThresholdAct,
)
from climbq_deploy.ir.passes.bound_tensors import bound_tensors
from climbq_deploy.kernels import ReferenceModel, ops
from climbq_deploy.targets.tflite import forms
from climbq_deploy.targets.tflite.flavour import int16_flavour

pytest.importorskip("ai_edge_litert")

SIZE = 3
LEVELS = 254  # codes mult * count + offset in [-127, 127]


def edge_program(channels: int, seed: int = 0) -> Graph:
    """image (3x3x1) -> stem 1x1 conv to ``channels`` 8-bit codes -> 1x1 conv (weights ±127)
    -> 4-bit count -> pool -> float head."""
    rng = np.random.default_rng(seed)
    stem_w = rng.choice([-1, 1], (channels, 1, 1, 1)).astype(np.int8)
    # stem thresholds spread over the input range, so the codes span [-127, 127]
    stem_t = np.sort(rng.integers(-300, 300, (channels, LEVELS)), axis=1)
    w = rng.choice([-127, 127], (4, 1, 1, channels)).astype(np.int8)
    bound = channels * 127 * 127
    theta = np.sort(
        np.concatenate(
            [
                rng.integers(-bound // 50, bound // 50, (4, 11)),  # where the values are
                np.array([[-bound - 5, bound + 5, 2**31 - 1, -(2**31)]] * 4),  # beyond B
            ],
            axis=1,
        ),
        axis=1,
    )
    theta[0, :] = 0  # all equal
    direction = np.array([1, -1, 1, 0], np.int8)
    theta[3] = np.r_[np.zeros(7, np.int64), np.ones(8, np.int64)]  # constant channel
    spec = TensorSpec
    tensors = {
        "image": spec("image", "uint8", (SIZE, SIZE, 1), 2),
        "x": spec("x", "int32", (SIZE, SIZE, 1), 2, 1.0 / 256),
        "stem_acc": spec("stem_acc", "int32", (SIZE, SIZE, channels), 2, 1.0),
        "codes": spec("codes", "int8", (SIZE, SIZE, channels), 2, 1.0),
        "acc": spec("acc", "int32", (SIZE, SIZE, 4), 2, 1.0),
        "q": spec("q", "int8", (SIZE, SIZE, 4), 2, 1.0),
        "pool": spec("pool", "int32", (4,), 0, 1.0 / SIZE**2),
        "logits": spec("logits", "float64", (3,), 0),
    }
    nodes = (
        InputQuant("in", ("image",), "x", "input", mean=(0.5,), std=(0.5,), step=1 / 256),
        IntConv("stem", ("x",), "stem_acc", "stem", weight=stem_w, weight_grid=(1, -1)),
        ThresholdAct(
            "stem_act",
            ("stem_acc",),
            "codes",
            "stem_act",
            thresholds=stem_t,
            direction=np.ones(channels, np.int8),
            mult=1,
            offset=-127,
            bits=8,
        ),
        IntConv("conv", ("codes",), "acc", "conv", weight=w, weight_grid=(254, -127)),
        ThresholdAct(
            "act",
            ("acc",),
            "q",
            "act",
            thresholds=theta,
            direction=direction,
            mult=2,
            offset=-15,
            bits=4,
        ),
        GlobalSumPool("pool", ("q",), "pool", "pool"),
        Linear("fc", ("pool",), "logits", "fc", weight=rng.normal(size=(3, 4)), bias=np.zeros(3)),
    )
    return bound_tensors(Graph(nodes, tensors, "image", "logits"))


def run_form(graph: Graph, kernels: str = "AUTO") -> tuple[dict, np.ndarray, list]:
    """Every code of the fast-form model on 16 random images, the reference's codes."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    content, choices = forms.write_fast_tflite(graph)
    it = Interpreter(
        model_content=content,
        experimental_op_resolver_type=getattr(OpResolverType, kernels),
        experimental_preserve_all_tensors=True,
    )
    it.allocate_tensors()
    names = {d["name"]: d["index"] for d in it.get_tensor_details()}
    images = np.random.default_rng(1).integers(0, 256, (16, SIZE, SIZE, 1), dtype=np.uint8)
    step = graph.nodes[0]
    quantized = ops.input_quant(images, step.mean, step.std, step.step)
    got = {"codes": [], "q": []}
    for i in range(len(images)):
        detail = it.get_input_details()[0]
        fed = images if detail["dtype"] == np.uint8 else quantized  # the model's own input
        it.set_tensor(detail["index"], fed[i : i + 1].astype(detail["dtype"]))
        it.invoke()
        for name in got:
            got[name].append(it.get_tensor(names[name]).astype(np.int64))
    reference = ReferenceModel(graph).run(images, keep=True)
    return {k: np.concatenate(v) for k, v in got.items()}, reference, choices


def largest_exact_channels() -> int:
    """The most input channels whose bound keeps 2 B + 3 below 2**24."""
    return (2**23 - 2) // (127 * 127)


@pytest.mark.parametrize("kernels", ["AUTO", "BUILTIN_REF"])
def test_float_signs_at_its_edge_is_chosen_and_exact(kernels: str) -> None:
    channels = largest_exact_channels()
    graph = int16_flavour(edge_program(channels))
    assert 2 * channels * 127 * 127 + 3 < 2**24 <= 2 * (channels + 1) * 127 * 127 + 3
    choice = {c.layer: c for c in forms.choose_forms(graph)}["q"]
    assert choice.costs[forms.FLOAT_SIGNS] is not None
    assert choice.costs[forms.INT8_SIGNS] is None  # 2 W = ±254 leaves int8
    assert choice.chosen == forms.FLOAT_SIGNS
    got, reference, _ = run_form(graph, kernels)
    # the codes of the edge layer span most of its levels, the extreme thresholds included
    assert len(np.unique(got["q"])) >= 6
    for name in got:
        np.testing.assert_array_equal(got[name], reference[name], err_msg=name)


def test_one_channel_past_the_edge_is_refused_and_still_exact() -> None:
    channels = largest_exact_channels() + 1
    graph = int16_flavour(edge_program(channels))
    layer = next(
        layer
        for layer in forms.iter_layers(graph)
        if getattr(layer, "act", None) is not None and layer.act.output == "q"
    )
    assert forms.float_signs_exact(graph, layer) == (
        "2 acc + 1 - 2 t leaves float32's exact integers"
    )
    choice = {c.layer: c for c in forms.choose_forms(graph)}["q"]
    assert choice.costs[forms.FLOAT_SIGNS] is None and choice.chosen != forms.FLOAT_SIGNS
    got, reference, _ = run_form(graph)
    for name in got:
        np.testing.assert_array_equal(got[name], reference[name], err_msg=name)


def test_int8_sum_bias_is_exact_or_refused() -> None:
    def act(mult: int, offset: int, n: int = 3) -> ThresholdAct:
        return ThresholdAct(
            "a", ("x",), "y", thresholds=np.zeros((1, n), np.int64), mult=mult, offset=offset
        )

    assert forms._int8_sum_bias(act(2, -3)) == 0  # ClimbQ: the sum of signs is the code
    assert forms._int8_sum_bias(act(1, 0)) == 3  # uniform counts: (S + 3) / 2
    assert forms._int8_sum_bias(act(4, -6)) == 0
    assert forms._int8_sum_bias(act(3, 0)) is None  # scale 1.5 is not a power of two
    assert forms._int8_sum_bias(act(2, 1)) == 4
    assert forms._int8_sum_bias(act(4, 1)) is None  # 2 * 1 / 4 is not an integer


def test_clamped_thresholds_keep_every_count() -> None:
    theta = np.array([[-(2**31), -11, -10, 0, 10, 11, 2**31 - 1]], np.int64)
    node = ThresholdAct("a", ("x",), "y", thresholds=theta, direction=np.ones(1, np.int8))
    clamped = forms._clamped_thresholds(node, 10)
    assert clamped.tolist() == [[-11, -11, -10, 0, 10, 11, 11]]
    values = np.arange(-10, 11)
    assert np.array_equal(
        (values[:, None] >= theta[0]).sum(1), (values[:, None] >= clamped[0]).sum(1)
    )


@pytest.mark.parametrize(
    ("input_form", "left"),
    [
        # the input step (integer CAST, MUL, ADD, GATHER: XNNPACK takes no int32) and the
        # CAST of I to float32 stay with LiteRT
        ("uint8", ["CAST", "MUL", "ADD", "GATHER", "CAST"]),
        ("int32", ["CAST"]),  # only the int32 input's CAST
    ],
)
def test_delegation_counts_a_fully_delegated_model(input_form: str, left: list[str]) -> None:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from climbq_deploy.targets.tflite.bench import delegation

    graph = int16_flavour(edge_program(8))
    content, _ = forms.write_fast_tflite(graph, input_form=input_form)
    it = Interpreter(model_content=content, experimental_op_resolver_type=OpResolverType.AUTO)
    it.allocate_tensors()
    record = delegation(it)
    assert record["left_ops"] == left and record["partitions"] == 1
    assert record["delegated_ops"] == record["total_ops"] - len(left) > 10
    it = Interpreter(
        model_content=content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    it.allocate_tensors()
    record = delegation(it)
    assert record["delegated_ops"] == 0 and record["partitions"] == 0


def test_int4_weights_need_the_int16_form(tmp_path) -> None:
    from climbq_deploy.errors import ConfigError
    from climbq_deploy.targets.tflite import TfliteTarget

    graph = int16_flavour(edge_program(8))
    with pytest.raises(ConfigError, match="--ops int16 --weights int4"):
        TfliteTarget("xnnpack", "int4").export(graph, tmp_path / "m.tflite")
    assert not (tmp_path / "m.tflite").exists()
    TfliteTarget("xnnpack", "int4", "int16").export(graph, tmp_path / "m.tflite")
    assert (tmp_path / "m.tflite").is_file()
