"""``MaxPool`` and ``Concat`` on the TensorRT target's ONNX, every ``--form``, under ONNX
Runtime: the codes, the pooled and joined tensors and the logits against the NumPy reference
of the same program (:mod:`tests.pool_concat_programs`), TensorRT's rules, and the ONNX nodes
written (explicit symmetric pads, the channel axis)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from climbq_deploy.ir.graph import ThresholdAct
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.targets.tensorrt import TensorrtTarget, host_input
from climbq_deploy.targets.tensorrt.rules import tensorrt_rules
from tests.pool_concat_programs import CASES, POOL_CASES, images, program

ort = pytest.importorskip("onnxruntime")
FORMS = ("qdq", "sign_sum", "int8_dup", "ort")


def _moved(model: onnx.ModelProto, graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """The max pool and concat outputs (NCHW float32 -> NHWC int64) of the ONNX model under
    ONNX Runtime, added as model outputs."""
    names = [n.output for n in graph.nodes if n.op in ("max_pool", "concat")]
    debug = onnx.ModelProto()
    debug.CopyFrom(model)
    for name in names:
        debug.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(debug.SerializeToString(), providers=["CPUExecutionProvider"])
    values = session.run(names, {session.get_inputs()[0].name: host_input(x, graph, model)})
    out = {}
    for name, value in zip(names, values, strict=True):
        assert np.array_equal(value, np.rint(value)), f"{name} holds non-integers"
        out[name] = value.transpose(0, 2, 3, 1).astype(np.int64)
    return out


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", CASES)
def test_pool_and_concat_programs_are_exact_under_onnxruntime(
    tmp_path, case: str, form: str
) -> None:
    graph = program(case)
    target = TensorrtTarget(form=form)
    path = target.export(graph, tmp_path / f"{case}-{form}.onnx")
    runner = target.load(path)
    size = graph.tensors[graph.input].shape[0]
    x = images(size, 5, seed=len(case) + 1)
    values = ReferenceModel(graph).run(x, keep=True)
    out = runner.run(x, with_codes=True)
    acts = [n for n in graph.nodes if isinstance(n, ThresholdAct)]
    assert len(out.codes) == len(acts) == (4 if case == "concat" else 2)
    for node in acts:
        np.testing.assert_array_equal(out.codes[node.source], values[node.output])
    np.testing.assert_allclose(out.logits, values[graph.output], rtol=1e-5, atol=1e-5)
    moved = _moved(onnx.load(path), graph, x)
    assert set(moved) == ({"concat"} if case == "concat" else {"maxpool"})
    for name, value in moved.items():
        np.testing.assert_array_equal(value, values[name], err_msg=name)
        assert len(np.unique(value)) > 2


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_max_pool_nodes_carry_torchs_attributes(tmp_path, case: str) -> None:
    """``MaxPool`` with kernel, strides and symmetric ``pads`` as torch (no auto_pad, no ceil
    mode), its input behind a Q/DQ pair in the TensorRT file (int8 codes) and plain in the
    ONNX Runtime forms; the TensorRT file breaks no TensorRT rule."""
    _, k, s, p, _ = POOL_CASES[case]
    graph = program(case)
    for form in FORMS:
        target = TensorrtTarget(form=form)
        model = onnx.load(target.export(graph, tmp_path / f"{form}.onnx"))
        (pool,) = [n for n in model.graph.node if n.op_type == "MaxPool"]
        attrs = {a.name: helper.get_attribute_value(a) for a in pool.attribute}
        assert attrs == {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4}
        reads = graph.node("maxpool").inputs[0]
        assert list(pool.input) == [f"{reads}/dq" if form == "qdq" else reads]
        assert list(pool.output) == ["maxpool"]
        if form == "qdq":
            assert tensorrt_rules(model) == []


def test_concat_joins_on_the_channel_axis_in_order(tmp_path) -> None:
    graph = program("concat")
    for form in FORMS:
        model = onnx.load(TensorrtTarget(form=form).export(graph, tmp_path / f"{form}.onnx"))
        (concat,) = [n for n in model.graph.node if n.op_type == "Concat"]
        assert list(concat.input) == ["branch_a_q", "branch_b_relu", "stem_q"]
        assert [helper.get_attribute_value(a) for a in concat.attribute] == [1]
        if form == "qdq":
            assert tensorrt_rules(model) == []


def test_rules_accept_pool_and_concat_but_still_refuse_unknown_ops() -> None:
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1] * 4)
    join = helper.make_node("Concat", ["y", "y"], ["z"], axis=1)
    other = helper.make_node("LpPool", ["z"], ["w"], kernel_shape=[2, 2])
    value = helper.make_tensor_value_info
    model = helper.make_model(
        helper.make_graph(
            [node, join, other],
            "g",
            [value("x", onnx.TensorProto.FLOAT, [1, 1, 4, 4])],
            [value("w", onnx.TensorProto.FLOAT, None)],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    assert tensorrt_rules(model) == ["LpPool 'w': op not supported by the TensorRT target"]
