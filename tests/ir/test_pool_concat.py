"""``MaxPool`` and ``Concat`` in the IR: validation (clear errors naming the node), the bounds
pass, value steps, the ``.climbq`` round trip, the NumPy target, and the reference against
plain loops on the programs of :mod:`tests.pool_concat_programs`."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from climbq_deploy.errors import ArtifactError
from climbq_deploy.ir.artifact import read_artifact, write_artifact
from climbq_deploy.ir.graph import Concat, Graph, MaxPool, TensorSpec
from climbq_deploy.ir.integer_forms import value_steps
from climbq_deploy.ir.passes import lower
from climbq_deploy.ir.passes.bound_tensors import BOUND_RULES
from climbq_deploy.ir.serialize import load_program, save_program
from climbq_deploy.ir.validate import validate_program
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.targets.numpy import NumpyTarget
from tests.pool_concat_programs import CASES, POOL_CASES, concat_program, images, pool_program


def _with_node(graph: Graph, name: str, **changes) -> Graph:
    nodes = [replace(n, **changes) if n.name == name else n for n in graph.nodes]
    return graph.replace_nodes(nodes)


def _with_tensor(graph: Graph, name: str, **changes) -> Graph:
    tensors = dict(graph.tensors)
    tensors[name] = replace(tensors[name], **changes)
    return replace(graph, tensors=tensors)


# -- validation ---------------------------------------------------------------------------------


def test_the_programs_are_valid_lowered_programs() -> None:
    for case in CASES:
        graph = pool_program(*POOL_CASES[case]) if case != "concat" else concat_program()
        assert validate_program(graph) is graph
        assert lower(graph).ops() == graph.ops()  # the passes keep both ops as they are


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"kernel": 0}, r"kernel must be an integer in \[1, "),
        ({"stride": 0}, r"stride must be an integer in \[1, "),
        ({"kernel": 2.0}, r"kernel must be an integer"),
        ({"kernel": True}, r"kernel must be an integer"),
        ({"padding": 2}, r"padding must be an integer in \[0, 1\], got 2"),  # > kernel // 2
        ({"padding": -1}, r"padding must be an integer in \[0, 1\], got -1"),
        ({"kernel": 20, "padding": 2}, r"kernel 20x20 is larger than the padded input 8x8"),
        ({"stride": 1}, r"output 'maxpool' has shape \(4, 4, 4\), the op gives \(8, 8, 4\)"),
        ({"inputs": ("stem_relu", "stem_relu")}, r"max_pool takes 1 input tensor names"),
    ],
)
def test_bad_max_pool_attributes_are_refused_naming_the_node(changes, match) -> None:
    graph = _with_node(pool_program(8, 3, 2, 1), "maxpool", **changes)
    with pytest.raises(ArtifactError, match=r"model\.climbq: node 'maxpool': " + match):
        validate_program(graph, "model.climbq")


def test_max_pool_output_shape_bounds_and_scale_are_checked() -> None:
    graph = pool_program(7, 3, 2, 1, relu=False)  # (7 + 2 - 3) // 2 + 1 = 4
    assert graph.tensors["maxpool"].shape == (4, 4, 4)
    lo, hi = graph.tensors["stem_q"].bounds
    narrow = _with_tensor(graph, "maxpool", bounds=(lo + 1, hi))
    with pytest.raises(ArtifactError, match=rf"node 'maxpool'.*inputs reach \[{lo}, {hi}\]"):
        validate_program(narrow)
    rescaled = _with_tensor(graph, "maxpool", scale=0.5)
    with pytest.raises(ArtifactError, match=r"node 'maxpool': max_pool needs one scale"):
        validate_program(rescaled)


def test_concat_of_unequal_scales_is_refused_naming_the_node_and_tensors() -> None:
    graph = _with_tensor(concat_program(), "branch_a_q", scale=0.5)
    with pytest.raises(
        ArtifactError,
        match=r"node 'concat': concat needs one scale for its inputs and output, got "
        r"'branch_a_q' 0.5, 'branch_b_relu' 0.25, 'stem_q' 0.25, 'concat' 0.25",
    ):
        validate_program(graph)


def test_concat_of_unequal_spatial_shapes_is_refused() -> None:
    graph = concat_program()
    tensors = dict(graph.tensors)
    tensors["pooled"] = TensorSpec("pooled", "int8", (3, 3, 4), 2, 0.25, (-15, 15))
    nodes = list(graph.nodes)
    at = [n.name for n in nodes].index("concat")
    nodes.insert(at, MaxPool("pool2", ("stem_q",), "pooled", "pool2", 2, 2, 0))
    nodes[at + 1] = replace(nodes[at + 1], inputs=("branch_a_q", "pooled"))
    bad = replace(graph, nodes=tuple(nodes), tensors=tensors)
    with pytest.raises(
        ArtifactError,
        match=r"node 'concat': concat inputs must be \(H, W, C\) of equal H and W, got "
        r"'branch_a_q' \(6, 6, 3\), 'pooled' \(3, 3, 4\)",
    ):
        validate_program(bad)


def test_concat_arity_channels_and_bounds_are_checked() -> None:
    graph = concat_program()
    with pytest.raises(ArtifactError, match=r"node 'concat': concat takes at least 2 input"):
        validate_program(_with_node(graph, "concat", inputs=("stem_q",)))
    with pytest.raises(
        ArtifactError, match=r"output 'concat' has shape \(6, 6, 12\), the op gives \(6, 6, 16\)"
    ):
        validate_program(
            _with_node(graph, "concat", inputs=("branch_a_q", "branch_b_relu", "stem_q", "stem_q"))
        )
    with pytest.raises(ArtifactError, match=r"node 'concat'.*declares bounds \[0, 15\]"):
        validate_program(_with_tensor(graph, "concat", bounds=(0, 15)))


# -- bounds, value steps ------------------------------------------------------------------------


def test_bounds_pass_keeps_the_pool_range_and_joins_the_concat_ranges() -> None:
    signed = pool_program(8, 3, 2, 1, relu=False)
    assert signed.tensors["stem_q"].bounds == (-15, 15)
    assert signed.tensors["maxpool"].bounds == (-15, 15)
    assert signed.tensors["maxpool"].dtype == "int8"
    rectified = pool_program(8, 3, 2, 1)
    assert rectified.tensors["maxpool"].bounds == (0, 15)
    graph = concat_program()
    assert graph.tensors["branch_a_q"].bounds == (-15, 15)
    assert graph.tensors["branch_b_relu"].bounds == (0, 3)
    assert graph.tensors["concat"].bounds == (-15, 15)
    rules = {cls: BOUND_RULES[cls] for cls in (MaxPool, Concat)}
    assert rules[MaxPool](graph.node("concat"), [(-7, 3)], graph)[1] == (-7, 3)
    assert rules[Concat](graph.node("concat"), [(-3, 7), (2, 9), (-1, 1)], graph)[1] == (-3, 9)


def test_value_steps_pass_through_pool_and_take_the_gcd_at_concat() -> None:
    """Codes ``mult j + offset`` are multiples of ``gcd(mult, offset)``; a max pool keeps its
    input's step, a concat takes the gcd of its inputs' (what the ONNX Q/DQ scale relies on)."""
    pool = _with_node(pool_program(8, 3, 2, 1), "stem_act", offset=-16)
    assert value_steps(pool)["maxpool"] == value_steps(pool)["stem_q"] == 2
    graph = concat_program()
    assert value_steps(graph)["concat"] == 1  # gcd(2, -15) = 1
    graph = _with_node(graph, "stem_act", offset=-16)  # step 2
    graph = _with_node(graph, "branch_a_act", mult=4, offset=-12)  # step 4
    graph = _with_node(graph, "branch_b_act", offset=-4)  # step 2, kept by the ReLU
    steps = value_steps(graph)
    assert (steps["stem_q"], steps["branch_a_q"], steps["branch_b_relu"]) == (2, 4, 2)
    assert steps["concat"] == 2
    graph = _with_node(graph, "stem_act", mult=8, offset=-8)  # step 8
    graph = _with_node(graph, "branch_b_act", mult=4, offset=-8)  # step 4
    assert value_steps(graph)["concat"] == 4  # gcd(4, 4, 8)


# -- the reference against plain loops ----------------------------------------------------------


def _loop_max_pool(x: np.ndarray, k: int, s: int, p: int) -> list:
    """torch's max_pool2d by plain loops over the window positions inside the input."""
    n, h, w, c = x.shape
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    out = []
    for b in range(n):
        rows = []
        for i in range(ho):
            row = []
            for j in range(wo):
                inside = [
                    (s * i - p + a, s * j - p + d)
                    for a in range(k)
                    for d in range(k)
                    if 0 <= s * i - p + a < h and 0 <= s * j - p + d < w
                ]
                row.append([max(int(x[b, y, z, ch]) for y, z in inside) for ch in range(c)])
            rows.append(row)
        out.append(rows)
    return out


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_reference_max_pool_equals_a_plain_loop(case: str) -> None:
    size, k, s, p, relu = POOL_CASES[case]
    graph = pool_program(size, k, s, p, relu)
    node = graph.node("maxpool")
    values = ReferenceModel(graph).run(images(2 * size, 5, 3), keep=True)
    x = values[node.inputs[0]]
    assert values["maxpool"].tolist() == _loop_max_pool(x, k, s, p)
    assert values["maxpool"].dtype == np.int8  # the proven storage
    if case.startswith("k3s2p1") and not relu:  # data where zero padding would be wrong
        zero_padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        assert np.any(_plain_pool(zero_padded, k, s) != values["maxpool"])
    if case.startswith("k3s2p1-even"):  # TF SAME pads 0 before, 1 after: other windows
        same = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)), constant_values=-128)
        assert np.any(_plain_pool(same, k, s) != values["maxpool"])


def _plain_pool(padded: np.ndarray, k: int, s: int) -> np.ndarray:
    """VALID max pool of an already padded input (numpy windows)."""
    n, h, w, c = padded.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    out = np.full((n, ho, wo, c), np.iinfo(np.int64).min)
    for a in range(k):
        for d in range(k):
            out = np.maximum(
                out, padded[:, a : a + s * (ho - 1) + 1 : s, d : d + s * (wo - 1) + 1 : s]
            )
    return out


def test_reference_concat_equals_joined_lists() -> None:
    graph = concat_program()
    values = ReferenceModel(graph).run(images(6, 3, 4), keep=True)
    parts = [values[name] for name in graph.node("concat").inputs]
    for n, i, j in np.ndindex(*values["concat"].shape[:3]):
        joined = [v for part in parts for v in part[n, i, j].tolist()]
        assert values["concat"][n, i, j].tolist() == joined
    assert len(np.unique(values["branch_b_relu"])) > 1 and values["stem_q"].min() < 0


# -- the artifact and the NumPy target ----------------------------------------------------------


@pytest.mark.parametrize("case", ["k3s2p1-odd-signed", "k2s2p0", "concat"])
@pytest.mark.parametrize("pack", [True, False])
def test_programs_round_trip_through_the_artifact(tmp_path, case: str, pack: bool) -> None:
    graph = concat_program() if case == "concat" else pool_program(*POOL_CASES[case])
    path = save_program(graph, tmp_path / "model.climbq", pack=pack)
    loaded, _ = load_program(path)
    assert loaded.ops() == graph.ops()
    for before, after in zip(graph.nodes, loaded.nodes, strict=True):
        assert type(after) is type(before) and after.attributes() == before.attributes()
    assert loaded.tensors == graph.tensors
    x = images(graph.tensors["image"].shape[0], 4, 9)
    want = ReferenceModel(graph).run(x, keep=True)
    got = ReferenceModel(loaded).run(x, keep=True)
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    target = NumpyTarget()
    runner = target.load(target.export(graph, tmp_path / "numpy.climbq"))
    out = runner.run(x, with_codes=True)
    np.testing.assert_array_equal(out.logits, want["logits"])
    for node in graph.nodes:
        if node.op == "threshold_act":
            np.testing.assert_array_equal(out.codes[node.source], want[node.output])


def test_a_file_with_a_bad_pool_attribute_is_refused_on_load(tmp_path) -> None:
    path = save_program(pool_program(8, 3, 2, 1), tmp_path / "good.climbq")
    manifest, arrays = read_artifact(path)
    packed = {k: e["packed_bits"] for k, e in manifest["arrays"].items() if e["packed_bits"]}
    manifest = {
        k: v for k, v in manifest.items() if k not in ("arrays", "format", "schema_version")
    }
    (entry,) = [e for e in manifest["program"]["nodes"] if e["op"] == "max_pool"]
    assert (entry["kernel"], entry["stride"], entry["padding"]) == (3, 2, 1)
    entry["padding"] = 2
    bad = write_artifact(tmp_path / "bad.climbq", manifest, dict(arrays), packed)
    with pytest.raises(
        ArtifactError, match=r"bad\.climbq: node 'maxpool': padding must be an integer in \[0, 1\]"
    ):
        load_program(bad)
