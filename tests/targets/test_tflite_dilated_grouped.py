"""Dilated and grouped convs on the TFLite target, every ``--ops`` form and kernel path: every
code and the logits against the NumPy reference of the same program
(:mod:`tests.conv_programs`), and the structure each form promises (LiteRT's own dilation,
grouped ``CONV_2D`` and depth multiplier in the builtin forms; the fused op's rewrite: filters
written out undilated, one op per group joined by CONCATENATION)."""

from __future__ import annotations

import numpy as np
import pytest

from climbq_deploy.ir.graph import Graph, IntConv, ThresholdAct
from climbq_deploy.ir.integer_forms import dilated_span
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.targets.tflite import TfliteTarget
from climbq_deploy.targets.tflite.flavour import int16_flavour
from tests.conv_programs import (
    CASES,
    DILATED_LAYERS,
    GROUPED_LAYERS,
    conv_program,
    images,
    many_groups_program,
)
from tests.tflite_codes import codes_as_outputs

pytest.importorskip("ai_edge_litert")

FORMS = [
    (form, kernels, "int8")
    for form in ("builtin", "builtin-float", "int16")
    for kernels in ("ref", "optimized", "xnnpack")
] + [("int16", "ref", "int4"), ("int16", "xnnpack", "int4"), ("climbq", "xnnpack", "int8")]
"""``(--ops, --kernels, --weights)``; ``builtin-float`` is ``builtin`` with the int8 sign form
switched off, so every layer takes the float sign form (the cost model gives these small
layers the int8 one)."""


def _form(form: str, monkeypatch) -> str:
    """The ``--ops`` value of a :data:`FORMS` entry (``builtin-float``: see there)."""
    if form == "builtin-float":
        from climbq_deploy.targets.tflite import forms

        monkeypatch.setattr(forms, "int8_signs_exact", lambda graph, layer: "off in this test")
        return "builtin"
    return form


def _skip_without_fused(form: str) -> None:
    if form == "climbq":
        from climbq_deploy.targets.tflite.custom_op import support

        reason = support()
        if reason is not None:
            pytest.skip(f"the fused op cannot run here: {reason}")


@pytest.mark.parametrize(("form", "kernels", "weights"), FORMS)
@pytest.mark.parametrize("case", CASES)
def test_dilated_and_grouped_programs_equal_their_reference(
    tmp_path, monkeypatch, case: str, form: str, kernels: str, weights: str
) -> None:
    """The runner's codes (``check``'s path) and logits, then every code read as a model
    output (XNNPACK delegated where asked), each equal to the reference exactly (logits:
    float32 head against float64, within 1e-5)."""
    _skip_without_fused(form)
    graph = conv_program(case)
    target = TfliteTarget(kernels, weights, _form(form, monkeypatch))
    path = target.export(graph, tmp_path / f"{case}-{form}-{kernels}-{weights}.tflite")
    runner = target.load(path)
    # the flavour requantizes nothing here: the embedded program is the pure one
    assert all(n.shift is None for n in runner.graph.nodes if isinstance(n, ThresholdAct))
    assert [getattr(n, "dilation", 1) for n in runner.graph.nodes] == [
        getattr(n, "dilation", 1) for n in graph.nodes
    ]
    size = graph.tensors[graph.input].shape[0]
    x = images(size, 6, seed=len(case))
    values = ReferenceModel(graph).run(x, keep=True)
    out = runner.run(x, with_codes=True)
    acts = [n for n in graph.nodes if isinstance(n, ThresholdAct)]
    assert len(out.codes) == len(acts)
    for node in acts:
        got = out.codes[node.source]
        np.testing.assert_array_equal(got, out.expected(node.source, values[node.output]))
        assert len(np.unique(got)) > 2, node.source  # the codes spread over their levels
    np.testing.assert_allclose(out.logits, values[graph.output], rtol=1e-5, atol=1e-5)
    plain = runner.run(x)  # the plain interpreter (XNNPACK where asked)
    np.testing.assert_allclose(plain.logits, values[graph.output], rtol=1e-5, atol=1e-5)
    moved = codes_as_outputs(path.read_bytes(), graph, x, kernels)
    assert len(moved) == len(acts)
    relus = {n.inputs[0]: n.output for n in graph.nodes if n.op == "relu"}
    for node in acts:
        name = node.output if node.output in moved else relus[node.output]
        want = values[node.output] if name == node.output else np.maximum(values[node.output], 0)
        np.testing.assert_array_equal(moved[name], want, err_msg=name)


def _operators(content: bytes) -> list[tuple[str, list[tuple[str, tuple]], str, dict, bytes]]:
    """``(op, [(input name, shape)], output name, options, custom options)`` per operator."""
    from ai_edge_litert import schema_py_generated as schema

    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    graph = model.subgraphs[0]

    def tensor(i: int) -> tuple[str, tuple]:
        t = graph.tensors[i]
        return t.name.decode(), tuple(int(d) for d in t.shape)

    listed = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = op_names[max(code.builtinCode, code.deprecatedBuiltinCode)]
        options = vars(op.builtinOptions) if op.builtinOptions is not None else {}
        custom = bytes(op.customOptions) if op.customOptions is not None else b""
        listed.append(
            (name, [tensor(i) for i in op.inputs], tensor(op.outputs[0])[0], options, custom)
        )
    return listed


def _convs(graph: Graph) -> dict[str, IntConv]:
    return {n.source.removesuffix(".conv"): n for n in graph.nodes if isinstance(n, IntConv)}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("form", ["int16", "builtin", "builtin-float"])
def test_builtin_forms_use_litert_dilation_and_groups(case: str, form: str, monkeypatch) -> None:
    """Every conv of a dilated layer carries LiteRT's dilation factors and its own ``k x k``
    filter (no zeros written out); a grouped layer is a ``CONV_2D`` with the ``(O, k, k,
    C / G)`` filter or, one input channel per group, a ``DEPTHWISE_CONV_2D`` with the
    channel multiplier."""
    from climbq_deploy.targets.tflite.export import write_tflite
    from climbq_deploy.targets.tflite.forms import write_fast_tflite

    graph = int16_flavour(conv_program(case))
    if form == "int16":
        content = write_tflite(graph)
    else:
        _form(form, monkeypatch)
        content, choices = write_fast_tflite(graph)
        want = "int8-signs" if form == "builtin" else "float-signs"
        assert {c.chosen for c in choices if not c.layer.startswith("stem")} == {want}
    convs = _convs(graph)
    seen = set()
    for op, inputs, output, options, _ in _operators(content):
        if op not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        if inputs[1][0].endswith(("sign_blocks", "sign_weight")):
            continue  # the sign forms' 1x1 sign stage and sums
        # conv outputs are named after the layer's accumulator or code: "{layer}_acc/..."
        layer = output.split("/")[0].removesuffix("_acc").removesuffix("_q")
        conv = convs[layer]
        seen.add(layer)
        _, k, _, per_group = conv.weight.shape
        assert (options["dilationHFactor"], options["dilationWFactor"]) == (conv.dilation,) * 2
        filt = inputs[1][1]
        if op == "DEPTHWISE_CONV_2D":
            assert per_group == 1 and conv.groups > 1
            assert filt[1:3] == (k, k) and options["depthMultiplier"] == filt[3] // conv.groups
        else:
            assert filt[1:] == (k, k, per_group), (layer, filt)  # LiteRT infers G from it
            assert conv.groups == 1 or per_group > 1
    assert seen == set(convs)


def test_fused_form_writes_dilated_filters_out_and_splits_groups() -> None:
    """Every layer fused; a dilated layer's op has the dilated span as its kernel (zeros
    between the taps, the taps the IR's); a grouped (non-depthwise) layer is G ops, each on a
    SLICE of C / G input channels, joined by one CONCATENATION named after the code."""
    from climbq_deploy.targets.tflite.custom_op import parse_conv_count_options
    from climbq_deploy.targets.tflite.forms import FUSED, choose_forms, write_fast_tflite

    for case in CASES:
        graph = int16_flavour(conv_program(case))
        assert all(c.chosen == FUSED for c in choose_forms(graph, fused=True)), case
        content, _ = write_fast_tflite(graph, fused=True)
        listed = _operators(content)
        fused = [op for op in listed if op[0] == "CUSTOM"]
        convs = _convs(graph)
        for name, conv in convs.items():
            act = f"{name}_q"
            mine = [op for op in fused if op[2] == act or op[2].startswith(f"{act}/")]
            c_in = graph.tensors[conv.inputs[0]].shape[-1]
            depthwise = conv.groups == c_in == conv.weight.shape[0]
            pieces = 1 if conv.groups == 1 or depthwise else conv.groups
            assert len(mine) == pieces, (case, name)
            span = dilated_span(conv.weight.shape[1], conv.dilation)
            for op in mine:
                p = parse_conv_count_options(op[4], "test")
                assert (p["kernel_h"], p["kernel_w"]) == (span, span)
                assert p["groups"] == (conv.groups if pieces == 1 else 1)
                assert p["in_c"] == c_in // pieces and p["out_c"] == conv.weight.shape[0] // pieces
            if pieces > 1:
                assert name in GROUPED_LAYERS[case]
                slices = [op for op in listed if op[0] == "SLICE" and op[2].startswith(f"{act}/")]
                assert len(slices) == pieces
                (joined,) = [
                    op
                    for op in listed
                    if op[0] == "CONCATENATION" and op[1][0][0].startswith(f"{act}/group")
                ]
                assert len(joined[1]) == pieces and joined[3]["axis"] == 3
            if name in DILATED_LAYERS[case]:
                assert span > conv.weight.shape[1]


def test_a_layer_of_more_groups_than_fused_ops_stays_builtin_and_exact(tmp_path) -> None:
    """20 groups would be 20 fused ops: that layer keeps its builtin form (LiteRT's depthwise
    conv with multiplier 2 and dilation 2), the stem is fused, and the codes are exact."""
    from climbq_deploy.ir.layers import ConvLayer, iter_layers
    from climbq_deploy.targets.tflite.forms import FUSED, choose_forms, fused_exact

    _skip_without_fused("climbq")
    graph = many_groups_program(20)
    layers = [x for x in iter_layers(int16_flavour(graph)) if isinstance(x, ConvLayer)]
    assert fused_exact(graph, layers[1]) == "20 groups would take 20 fused ops (at most 16)"
    choices = choose_forms(int16_flavour(graph), fused=True)
    assert [c.chosen for c in choices] == [FUSED, "int8-signs"]
    target = TfliteTarget("xnnpack", ops="climbq")
    runner = target.load(target.export(graph, tmp_path / "many.tflite"))
    x = images(8, 4, seed=3)
    values = ReferenceModel(graph).run(x, keep=True)
    out = runner.run(x, with_codes=True)
    for node in graph.nodes:
        if isinstance(node, ThresholdAct):
            got = out.codes[node.source]
            np.testing.assert_array_equal(got, out.expected(node.source, values[node.output]))
    np.testing.assert_allclose(out.logits, values[graph.output], rtol=1e-5, atol=1e-5)
    sixteen = many_groups_program(16)
    split = [x for x in iter_layers(int16_flavour(sixteen)) if isinstance(x, ConvLayer)]
    assert fused_exact(sixteen, split[1]) is None  # 16 ops: still fused
