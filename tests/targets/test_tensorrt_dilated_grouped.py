"""Dilated and grouped convs on the TensorRT target's ONNX, every ``--form``, under ONNX
Runtime: every code and the logits against the NumPy reference of the same program
(:mod:`tests.conv_programs`), the ONNX nodes (``dilations`` and ``group`` as the IR's, the
filter as the IR's ``k x k``, no zeros written out) and TensorRT's rules."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from climbq_deploy.ir.graph import IntConv, ThresholdAct
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.targets.tensorrt import TensorrtTarget
from climbq_deploy.targets.tensorrt.rules import tensorrt_rules
from tests.conv_programs import CASES, conv_program, images

ort = pytest.importorskip("onnxruntime")
FORMS = ("qdq", "sign_sum", "int8_dup", "ort")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", CASES)
def test_dilated_and_grouped_programs_are_exact_under_onnxruntime(
    tmp_path, case: str, form: str
) -> None:
    graph = conv_program(case)
    target = TensorrtTarget(form=form)
    path = target.export(graph, tmp_path / f"{case}-{form}.onnx")
    runner = target.load(path)
    size = graph.tensors[graph.input].shape[0]
    x = images(size, 6, seed=len(case) + 1)
    values = ReferenceModel(graph).run(x, keep=True)
    out = runner.run(x, with_codes=True)
    acts = [n for n in graph.nodes if isinstance(n, ThresholdAct)]
    assert len(out.codes) == len(acts)
    for node in acts:
        np.testing.assert_array_equal(out.codes[node.source], values[node.output], node.source)
        assert len(np.unique(out.codes[node.source])) > 2, node.source
    np.testing.assert_allclose(out.logits, values[graph.output], rtol=1e-5, atol=1e-5)
    plain = runner.run(x)
    np.testing.assert_allclose(plain.logits, values[graph.output], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_conv_nodes_carry_the_dilation_and_groups(tmp_path, case: str) -> None:
    """Every ``Conv`` / ``QLinearConv`` of a layer has ``dilations`` ``[d, d]`` where ``d > 1``
    (absent, ONNX's default 1, elsewhere), the layer's ``group`` and ``k x k`` kernel; the
    TensorRT file breaks no TensorRT rule."""
    graph = conv_program(case)
    convs = {n.output: n for n in graph.nodes if isinstance(n, IntConv)}
    acts = {n.output: convs[n.inputs[0]] for n in graph.nodes if isinstance(n, ThresholdAct)}
    for form in FORMS:
        model = onnx.load(TensorrtTarget(form=form).export(graph, tmp_path / f"{form}.onnx"))
        seen = set()
        for node in model.graph.node:
            if node.op_type not in ("Conv", "QLinearConv"):
                continue
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if attrs["kernel_shape"] == [1, 1] and "weight_sum" in "".join(node.input):
                continue  # int8_dup's block-diagonal 1x1 sum of the compares
            head = node.output[0].split("/")[0]
            conv = convs.get(head) or acts[head]
            seen.add(conv.name)
            k, d = conv.weight.shape[1], conv.dilation
            assert attrs.get("dilations", [1, 1]) == [d, d], (form, node.name)
            assert ("dilations" in attrs) == (d != 1)
            assert attrs["group"] == conv.groups and attrs["kernel_shape"] == [k, k]
            assert attrs["pads"] == [conv.padding] * 4 and attrs["strides"] == [conv.stride] * 2
        assert seen == {c.name for c in convs.values()}, form
        if form == "qdq":
            assert tensorrt_rules(model) == []
