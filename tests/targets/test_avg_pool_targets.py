"""Local average pools on every target: the lowered program of a CNN with four of them
(:class:`tests.ir.test_avg_pool.PooledNet`: 2x2 stride 2 before a padded 3x3 conv, Inception's
3x3 stride 1 padding 1 before a 1x1 conv, an adaptive pool to 2x2, a divisor_override) on each
TFLite ``--ops`` form and kernel path and each ONNX ``--form`` under ONNX Runtime: every code and
the logits against the NumPy reference. The pools are inside the convs (no target has a pool op
for them), so the files hold no average pool at all."""

from __future__ import annotations

import numpy as np
import pytest

from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.graph import Graph, IntConv, ThresholdAct
from climbq_deploy.ir.passes import lower
from climbq_deploy.kernels import ReferenceModel
from tests.conftest import MEAN, STD
from tests.ir.test_avg_pool import pooled_net
from tests.tflite_codes import operator_names

SIZE = 8


@pytest.fixture(scope="module")
def program() -> Graph:
    return lower(capture(pooled_net(0), MEAN, STD, (SIZE, SIZE, 3), input_bits=20))


def _images() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)


def _assert_exact(graph: Graph, out, values: dict[str, np.ndarray], expected=None) -> None:
    acts = [n for n in graph.nodes if isinstance(n, ThresholdAct)]
    assert len(out.codes) == len(acts) == 6
    for node in acts:
        want = (
            values[node.output] if expected is None else expected(node.source, values[node.output])
        )
        np.testing.assert_array_equal(out.codes[node.source], want, err_msg=node.source)
        assert len(np.unique(want)) > 2, node.source
    np.testing.assert_allclose(out.logits, values[graph.output], rtol=1e-5, atol=1e-5)


def test_the_program_holds_the_composite_convs(program: Graph) -> None:
    convs = {n.source: n for n in program.nodes if isinstance(n, IntConv)}
    shapes = {s: (c.weight.shape[1], c.stride, c.padding) for s, c in convs.items()}
    assert shapes["body.0"] == (6, 2, 2)  # 2x2/2 pool + 3x3 p1 conv
    assert shapes["branch_pool.0"] == (3, 1, 1)  # 3x3/1 p1 pool + 1x1 conv
    assert shapes["tail.0"] == (2, 2, 0) and shapes["extra.0"] == (2, 2, 0)
    assert "avg_pool" not in program.ops()


TFLITE = [
    (form, kernels) for form in ("builtin", "int16") for kernels in ("ref", "optimized", "xnnpack")
] + [("climbq", "xnnpack")]


@pytest.mark.parametrize(("form", "kernels"), TFLITE)
def test_tflite_runs_the_average_pools_exactly(tmp_path, program, form, kernels) -> None:
    pytest.importorskip("ai_edge_litert")
    from climbq_deploy.targets.tflite import TfliteTarget

    if form == "climbq":
        from climbq_deploy.targets.tflite.custom_op import support

        if (reason := support()) is not None:
            pytest.skip(f"the fused op cannot run here: {reason}")
    target = TfliteTarget(kernels, ops=form)
    path = target.export(program, tmp_path / f"pooled-{form}-{kernels}.tflite")
    operators = operator_names(path.read_bytes())
    assert "CONV_2D" in operators or "CLIMBQ_CONV_COUNT" in operators, operators
    assert not any("POOL" in name for name in operators), operators
    runner = target.load(path)
    x = _images()
    values = ReferenceModel(program).run(x, keep=True)
    out = runner.run(x, with_codes=True)
    _assert_exact(program, out, values, out.expected)
    plain = runner.run(x)
    np.testing.assert_allclose(plain.logits, values[program.output], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["qdq", "sign_sum", "int8_dup", "ort"])
def test_onnx_runs_the_average_pools_exactly(tmp_path, program, form) -> None:
    pytest.importorskip("onnxruntime")
    import onnx

    from climbq_deploy.targets.tensorrt import TensorrtTarget
    from climbq_deploy.targets.tensorrt.rules import tensorrt_rules

    target = TensorrtTarget(form=form)
    path = target.export(program, tmp_path / f"pooled-{form}.onnx")
    model = onnx.load(path)
    assert not any("Pool" in n.op_type and "Global" not in n.op_type for n in model.graph.node)
    if form == "qdq":
        assert tensorrt_rules(model) == []
    x = _images()
    values = ReferenceModel(program).run(x, keep=True)
    _assert_exact(program, target.load(path).run(x, with_codes=True), values)
