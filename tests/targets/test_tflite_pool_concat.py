"""``MaxPool`` and ``Concat`` on the TFLite target, every ``--ops`` form and kernel path: the
codes, the pooled and joined tensors themselves and the logits against the NumPy reference of
the same program (:mod:`tests.pool_concat_programs`), and the structure each form promises
(explicit padding with a VALID pool, int8 between fused ops)."""

from __future__ import annotations

import numpy as np
import pytest

from climbq_deploy.ir.graph import Graph, ThresholdAct
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.targets.tflite import TfliteTarget
from climbq_deploy.targets.tflite.flavour import int16_flavour
from tests.pool_concat_programs import CASES, images, program
from tests.tflite_codes import codes_as_outputs

pytest.importorskip("ai_edge_litert")

OPS_AND_KERNELS = [
    (form, kernels) for form in ("builtin", "int16") for kernels in ("ref", "optimized", "xnnpack")
] + [("climbq", "xnnpack")]


def _skip_without_fused(form: str) -> None:
    if form == "climbq":
        from climbq_deploy.targets.tflite.custom_op import support

        reason = support()
        if reason is not None:
            pytest.skip(f"the fused op cannot run here: {reason}")


@pytest.mark.parametrize(("form", "kernels"), OPS_AND_KERNELS)
@pytest.mark.parametrize("case", CASES)
def test_pool_and_concat_programs_equal_their_reference(
    tmp_path, case: str, form: str, kernels: str
) -> None:
    """The runner's codes (``check``'s path) and logits, then every pool, concat and code
    tensor read as model outputs, each equal to the reference exactly (logits: float32 head
    against float64, within 1e-5)."""
    _skip_without_fused(form)
    graph = program(case)
    target = TfliteTarget(kernels, ops=form)
    path = target.export(graph, tmp_path / f"{case}-{form}-{kernels}.tflite")
    runner = target.load(path)
    # the flavour requantizes nothing here: the embedded program is the pure one
    assert all(n.shift is None for n in runner.graph.nodes if isinstance(n, ThresholdAct))
    size = graph.tensors[graph.input].shape[0]
    x = images(size, 5, seed=len(case))
    values = ReferenceModel(graph).run(x, keep=True)
    out = runner.run(x, with_codes=True)
    acts = [n for n in graph.nodes if isinstance(n, ThresholdAct)]
    assert len(out.codes) == len(acts) == (4 if case == "concat" else 2)
    for node in acts:
        got = out.codes[node.source]
        np.testing.assert_array_equal(got, out.expected(node.source, values[node.output]))
    if form == "climbq":  # the ReLUs after the stem (and branch b) are the fused op's
        relus = {n.inputs[0] for n in graph.nodes if n.op == "relu"}
        assert out.rectified == {n.source for n in acts if n.output in relus}
    np.testing.assert_allclose(out.logits, values[graph.output], rtol=1e-5, atol=1e-5)
    plain = runner.run(x)  # the plain interpreter (XNNPACK where asked)
    np.testing.assert_allclose(plain.logits, values[graph.output], rtol=1e-5, atol=1e-5)
    moved = codes_as_outputs(path.read_bytes(), graph, x, kernels, also=("max_pool", "concat"))
    assert ("concat" if case == "concat" else "maxpool") in moved
    assert len(moved) == len(acts) + 1
    for name, value in moved.items():
        np.testing.assert_array_equal(value, values[name], err_msg=name)
        assert len(np.unique(value)) > 2, name  # the values spread (not one saturated code)


def _operators(content: bytes) -> list[tuple[str, list[tuple[str, str]], tuple[str, str], dict]]:
    """``(op, [(input name, type)], (output name, type), options)`` per operator."""
    from ai_edge_litert import schema_py_generated as schema

    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    graph = model.subgraphs[0]

    def tensor(i: int) -> tuple[str, str]:
        t = graph.tensors[i]
        return t.name.decode(), types[t.type]

    listed = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = op_names[max(code.builtinCode, code.deprecatedBuiltinCode)]
        options = vars(op.builtinOptions) if op.builtinOptions is not None else {}
        listed.append((name, [tensor(i) for i in op.inputs], tensor(op.outputs[0]), options))
    return listed


def _constant(content: bytes, name: str) -> np.ndarray:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    (t,) = [t for t in model.subgraphs[0].tensors if t.name.decode() == name]
    assert t.type == schema.TensorType.INT32
    return np.frombuffer(bytes(model.buffers[t.buffer].data), "<i4")


@pytest.mark.parametrize("fused", [False, True])
def test_the_pool_pads_explicitly_then_pools_valid(fused: bool) -> None:
    """ResNet-18's pool (k3 s2 p1) on an even 8x8 input: PAD with zeros after a ReLU; without
    one (codes down to -15, where a zero could win) the first and last row, then column,
    repeated by SLICE and CONCATENATION; then a VALID 3x3 stride-2 MAX_POOL_2D, int8 in the
    fused form (between two fused ops), float32 after the float-signs stem otherwise."""
    from climbq_deploy.targets.tflite.forms import write_fast_tflite

    for case in ("k3s2p1-even", "k3s2p1-even-signed"):
        graph = int16_flavour(program(case))
        content, choices = write_fast_tflite(graph, fused=fused)
        listed = _operators(content)
        (pool,) = [op for op in listed if op[0] == "MAX_POOL_2D"]
        dtype = "INT8" if fused else "FLOAT32"
        edge = case.endswith("signed")
        padded = "maxpool/padded_cols" if edge else "maxpool/padded"
        assert pool[1] == [(padded, dtype)] and pool[2] == ("maxpool", dtype)
        assert pool[3]["padding"] == 1  # Padding.VALID
        assert (pool[3]["filterHeight"], pool[3]["filterWidth"]) == (3, 3)
        assert (pool[3]["strideH"], pool[3]["strideW"]) == (2, 2)
        producers = {op[2][0]: op for op in listed}
        assert producers[padded][0] == ("CONCATENATION" if edge else "PAD")
        assert all(op[0] != "PADV2" for op in listed)
        if edge:  # rows 0 and 7 of the 8x8 codes, then columns 0 and 7 of the 10x8 result
            slices = {
                op[2][0]: (
                    _constant(content, op[1][1][0]).tolist(),
                    _constant(content, op[1][2][0]).tolist(),
                )
                for op in listed
                if op[0] == "SLICE"
            }
            assert slices == {
                "maxpool/first_row": ([0, 0, 0, 0], [1, 1, 8, 4]),
                "maxpool/last_row": ([0, 7, 0, 0], [1, 1, 8, 4]),
                "maxpool/first_col": ([0, 0, 0, 0], [1, 10, 1, 4]),
                "maxpool/last_col": ([0, 0, 7, 0], [1, 10, 1, 4]),
            }
            rows, cols = producers["maxpool/padded_rows"], producers["maxpool/padded_cols"]
            assert [n for n, _ in rows[1]] == [
                "maxpool/first_row",
                "stem_q",  # the fused op's int8 codes, or the float sign sum
                "maxpool/last_row",
            ]
            assert rows[3]["axis"] == 1 and cols[3]["axis"] == 2
        readers = [op for op in listed if ("maxpool", dtype) in op[1]]
        if fused:
            assert [c.chosen for c in choices] == ["fused", "fused"]
            assert [op[0] for op in readers] == ["CUSTOM"]  # the next layer reads int8 codes
            assert all(op[0] != "QUANTIZE" for op in listed)


def test_concat_stays_int8_between_fused_ops_and_is_int32_in_the_int16_form() -> None:
    from climbq_deploy.targets.tflite.export import write_tflite
    from climbq_deploy.targets.tflite.forms import write_fast_tflite

    graph = int16_flavour(program("concat"))
    content, choices = write_fast_tflite(graph, fused=True)
    assert all(c.chosen == "fused" for c in choices)
    listed = _operators(content)
    (concat,) = [op for op in listed if op[0] == "CONCATENATION"]
    # the branch b ReLU is its fused op's: the concat reads that op's output
    assert concat[1] == [("branch_a_q", "INT8"), ("branch_b_relu", "INT8"), ("stem_q", "INT8")]
    assert concat[2] == ("concat", "INT8") and concat[3]["axis"] == 3
    producers = {op[2][0]: op[0] for op in listed}
    assert [producers[name] for name, _ in concat[1]] == ["CUSTOM"] * 3
    assert [op[0] for op in listed if ("concat", "INT8") in op[1]] == ["CUSTOM"]
    (wide,) = [op for op in _operators(write_tflite(graph)) if op[0] == "CONCATENATION"]
    assert [t for _, t in wide[1]] == ["INT32"] * 3 and wide[2] == ("concat", "INT32")


def test_pool_dtype_is_the_narrowest_exact_one_or_a_clear_refusal() -> None:
    from dataclasses import replace

    from climbq_deploy.errors import LoweringError
    from climbq_deploy.targets.tflite.pooling import pool_dtype

    graph = program("k3s2p1-even")
    node = graph.node("maxpool")

    def with_bounds(lo: int, hi: int) -> Graph:
        tensors = dict(graph.tensors)
        tensors["stem_relu"] = replace(tensors["stem_relu"], bounds=(lo, hi))
        return replace(graph, tensors=tensors)

    cases = [
        ((-128, 127), "int8"),
        ((-129, 0), "int16"),
        ((0, 128), "int16"),
        ((-32768, 32767), "int16"),
        ((0, 32768), "float32"),
        ((-(2**24) + 1, 2**24 - 1), "float32"),
    ]
    for (lo, hi), dtype in cases:
        assert pool_dtype(with_bounds(lo, hi), node) == dtype, (lo, hi)
    with pytest.raises(LoweringError, match=r"max pool 'maxpool': input range \[0, 16777216\]"):
        pool_dtype(with_bounds(0, 2**24), node)
