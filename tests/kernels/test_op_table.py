"""The op tables: a new IR op runs in the reference with one table entry and its kernel, and
an op without an entry gets each backend's clear error."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from climbq_deploy.errors import ArtifactError, DataError, LoweringError
from climbq_deploy.ir.graph import (
    GlobalSumPool,
    Graph,
    InputQuant,
    IntConv,
    Linear,
    Node,
    TensorSpec,
    ThresholdAct,
)
from climbq_deploy.ir.passes.bound_tensors import BOUND_RULES, bound_tensors
from climbq_deploy.ir.validate import validate_program
from climbq_deploy.kernels import REFERENCE_KERNELS, ReferenceModel

FLOOR = 100
CONV_W = np.array([[1, -2], [3, 1]], np.int8).reshape(2, 1, 1, 2)  # OHWI, 1x1
THETA = np.array([[-50, 0, 200], [-700, -400, -100]], np.int64)
DIRECTION = np.array([1, -1], np.int8)
FC_W = np.array([[0.5, -1.0], [2.0, 0.25]])
FC_B = np.array([0.125, -3.0])


@dataclass(frozen=True)
class ClampMin(Node):
    """Toy op: ``max(x, floor)`` on integers (scale unchanged)."""

    floor: int = 0
    op = "clamp_min"


def clamp_min_kernel(node: ClampMin, inputs: list[np.ndarray], graph: Graph) -> np.ndarray:
    """The toy op's NumPy kernel: ``max(x, floor)``, dtype unchanged."""
    return np.maximum(inputs[0], node.floor)


def _program(with_bounds: bool = True) -> Graph:
    """image (3x3x2) -> I = p -> ClampMin(100) -> 1x1 conv -> count -> sum pool -> float head."""

    def spec(name, shape=(3, 3, 2), bounds=None, scale=1.0):
        return TensorSpec(
            name, "int32", shape, len(shape) - 1, scale, bounds if with_bounds else None
        )

    tensors = {
        "image": TensorSpec("image", "uint8", (3, 3, 2), 2),
        "x": spec("x", bounds=(0, 255)),
        "clamped": spec("clamped", bounds=(FLOOR, 255)),
        "acc": spec("acc", bounds=(-510, 1020)),
        "q": spec("q", bounds=(-3, 3)),
        "pool": spec("pool", (2,), (-27, 27), 1.0 / 9),
        "logits": TensorSpec("logits", "float64", (2,), 0),
    }
    nodes = (
        InputQuant("in", ("image",), "x", "input", mean=(0.0, 0.0), std=(1.0, 1.0), step=1 / 255),
        ClampMin("clamp", ("x",), "clamped", "clamp_src", floor=FLOOR),
        IntConv("conv", ("clamped",), "acc", "conv_src", weight=CONV_W, weight_grid=(1, -128)),
        ThresholdAct(
            "act",
            ("acc",),
            "q",
            "act_src",
            thresholds=THETA,
            direction=DIRECTION,
            mult=2,
            offset=-3,
            bits=2,
        ),
        GlobalSumPool("pool", ("q",), "pool", "pool"),
        Linear("fc", ("pool",), "logits", "fc", weight=FC_W, bias=FC_B),
    )
    return Graph(nodes, tensors, "image", "logits")


def _expected(images: np.ndarray) -> tuple[list, list]:
    """Codes and logits by plain Python loops over pixels (independent of the kernels)."""
    codes, logits = [], []
    for image in images.tolist():
        sums = [0, 0]
        rows = []
        for row in image:
            out_row = []
            for pixel in row:
                clamped = [max(p, FLOOR) for p in pixel]
                out = []
                for o in range(2):
                    acc = sum(int(CONV_W[o, 0, 0, c]) * clamped[c] for c in range(2))
                    v = int(DIRECTION[o]) * acc
                    x = 2 * sum(v >= int(t) for t in THETA[o]) - 3
                    out.append(x)
                    sums[o] += x
                out_row.append(out)
            rows.append(out_row)
        codes.append(rows)
        logits.append([sum(FC_W[k, c] * sums[c] / 9 for c in range(2)) + FC_B[k] for k in range(2)])
    return codes, logits


IMAGES = np.random.default_rng(0).integers(0, 256, (5, 3, 3, 2), dtype=np.uint8)


def test_a_new_op_runs_in_the_reference_with_its_table_entry_and_kernel(monkeypatch) -> None:
    monkeypatch.setitem(REFERENCE_KERNELS, ClampMin, clamp_min_kernel)  # restored afterwards
    values = ReferenceModel(_program()).run(IMAGES, keep=True)
    assert values["clamped"].min() == FLOOR and values["x"].min() < FLOOR  # the op did clamp
    assert values["clamped"].tolist() == [
        [[[max(int(p), FLOOR) for p in px] for px in row] for row in image] for image in IMAGES
    ]
    codes, logits = _expected(IMAGES)
    assert values["q"].tolist() == codes
    assert len(np.unique(values["q"])) > 2  # the thresholds split the values
    np.testing.assert_allclose(values["logits"], logits, rtol=0, atol=1e-12)


def test_the_table_is_restored_and_an_unregistered_op_gets_the_clear_error() -> None:
    assert ClampMin not in REFERENCE_KERNELS
    model = ReferenceModel(_program())
    with pytest.raises(
        DataError,
        match=r"node 'clamp': op 'clamp_min' has no reference kernel \(lower the graph first\)",
    ):
        model.run(IMAGES)


def test_a_new_op_joins_the_bounds_pass_by_its_rule(monkeypatch) -> None:
    graph = _program(with_bounds=False)
    with pytest.raises(LoweringError, match=r"int_conv 'conv_src' reads 'clamped', which has no"):
        bound_tensors(graph)  # no rule: the op's output stays unbounded, the conv cannot be

    def clamp_bounds(node: ClampMin, ins, graph):
        lo, hi = ins[0]
        return node, (max(lo, node.floor), max(hi, node.floor))

    monkeypatch.setitem(BOUND_RULES, ClampMin, clamp_bounds)
    bounded = bound_tensors(graph)
    assert bounded.tensors["clamped"].bounds == (FLOOR, 255)
    assert bounded.tensors["acc"].bounds == (-2 * 255 + FLOOR, 3 * 255 + 255)


def test_backends_without_an_entry_refuse_the_op_clearly() -> None:
    graph = _program()
    with pytest.raises(ArtifactError, match=r"op 'clamp_min' is not an op of a lowered program"):
        validate_program(graph)
    pytest.importorskip("onnx")
    from climbq_deploy.targets.tensorrt.export import write_onnx

    with pytest.raises(LoweringError, match=r"op 'clamp_min' \('clamp_src'\) has no TensorRT form"):
        write_onnx(graph)
    pytest.importorskip("ai_edge_litert")
    from climbq_deploy.targets.tflite.export import write_tflite

    with pytest.raises(
        LoweringError, match=r"op 'clamp_min' \('clamp_src'\) has no TFLite form yet"
    ):
        write_tflite(graph)


def test_every_op_of_a_lowered_program_has_an_entry_in_every_op_table() -> None:
    """Each class of :data:`INTEGER_OPS` and :data:`HEAD_OPS` is validated, run by the
    reference, bounded and written by every target (a conv and its count are one
    :class:`ConvLayer` there; the heads have no bounds rule, the float TFLite head only)."""
    from climbq_deploy.ir.graph import HEAD_OPS, INTEGER_OPS, OPS, Concat, MaxPool
    from climbq_deploy.ir.layers import ConvLayer
    from climbq_deploy.ir.validate import PROGRAM_OPS

    program = {OPS[op] for op in INTEGER_OPS + HEAD_OPS}
    assert {MaxPool, Concat} <= program
    assert program == set(PROGRAM_OPS)
    assert program <= set(REFERENCE_KERNELS)
    assert {OPS[op] for op in INTEGER_OPS} == set(BOUND_RULES)
    layers = (program - {IntConv, ThresholdAct}) | {ConvLayer, ThresholdAct}
    pytest.importorskip("onnx")
    from climbq_deploy.targets.tensorrt.export import ONNX_EMITTERS
    from climbq_deploy.targets.tensorrt.ort_forms import form_emitters

    assert set(ONNX_EMITTERS) == layers
    assert all(set(form_emitters(f, ONNX_EMITTERS)) == layers for f in ("sign_sum", "ort"))
    pytest.importorskip("ai_edge_litert")
    from climbq_deploy.targets.tflite.export import TFLITE_EMITTERS
    from climbq_deploy.targets.tflite.forms import FAST_EMITTERS

    tflite = layers - {OPS["int_linear"]}  # no TFLite form of the integer head yet
    assert set(TFLITE_EMITTERS) == set(FAST_EMITTERS) == tflite
