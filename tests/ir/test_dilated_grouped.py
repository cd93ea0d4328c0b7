"""Dilated and grouped convs in the IR: a user CNN with ``nn.Conv2d(..., dilation=2)`` and
``nn.Conv2d(..., groups=2)`` captured and lowered exactly, the reference's accumulators
against torch, validation (clear errors naming the node), and the ``.climbq`` round trip with
its program version (2 only where a conv is dilated)."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

import climbq_deploy
from climbq_deploy.errors import ArtifactError
from climbq_deploy.ir.artifact import read_artifact, write_artifact
from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.graph import Graph, IntConv
from climbq_deploy.ir.passes import lower
from climbq_deploy.ir.serialize import load_program, save_program
from climbq_deploy.ir.validate import validate_program
from climbq_deploy.kernels import ReferenceModel
from tests.conftest import MEAN, STD, codes_and_logits, randomize_batchnorm
from tests.conv_programs import CASES, DILATED_LAYERS, GROUPED_LAYERS, conv_program, images
from tests.pool_concat_programs import pool_program


class DilatedGroupedNet(nn.Module):
    """A user CNN in plain torch.nn: stem -> dilated 3x3 (d = 2) -> grouped 3x3 (2 groups) ->
    depthwise dilated 3x3 (d = 2, stride 2) -> grouped 1x1 (4 groups) -> pool -> Linear."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2, bias=False)
        self.dilated_bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 12, 3, padding=1, groups=2, bias=False)
        self.grouped_bn = nn.BatchNorm2d(12)
        self.depthwise = nn.Conv2d(12, 12, 3, stride=2, padding=1, dilation=2, groups=12)
        self.depthwise_bn = nn.BatchNorm2d(12)
        self.mix = nn.Conv2d(12, 8, 1, groups=4, bias=False)
        self.mix_bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem_bn(self.stem(x)))
        h = torch.relu(self.dilated_bn(self.dilated(h)))
        h = torch.relu(self.grouped_bn(self.grouped(h)))
        h = torch.relu(self.depthwise_bn(self.depthwise(h)))
        h = self.mix_bn(self.mix(h))
        return self.fc(h.mean((2, 3)))


def test_user_cnn_with_dilated_and_grouped_convs_lowers_exactly() -> None:
    """``climbq_deploy.quantize`` then capture: each conv keeps its dilation and groups, the
    output shapes are torch's, and every code and the logits equal torch float64 on the
    program's own input (top-1 agrees)."""
    torch.manual_seed(5)
    model = climbq_deploy.quantize(DilatedGroupedNet(), "climbq+", 4, 4).eval()
    randomize_batchnorm(model, 5)
    graph = capture(model, MEAN, STD, (14, 12, 3), input_bits=20)
    convs = {n.source: n for n in graph.nodes if n.op == "conv"}
    geometry = {k: (v.dilation, v.groups, v.stride) for k, v in convs.items()}
    assert geometry == {
        "net.stem": (1, 1, 1),
        "net.dilated": (2, 1, 1),
        "net.grouped": (1, 2, 1),
        "net.depthwise": (2, 12, 2),
        "net.mix": (1, 4, 1),
    }
    with torch.no_grad():  # torch's own shapes, NCHW
        x = torch.zeros(1, 3, 14, 12)
        h = model.net.dilated(model.net.stem(x))
        h = model.net.depthwise(model.net.grouped(h))
    assert graph.tensors[convs["net.depthwise"].output].shape == (*h.shape[2:], 12)
    program = lower(graph)
    lowered = [n for n in program.nodes if isinstance(n, IntConv)]
    assert [(n.dilation, n.groups) for n in lowered] == [(1, 1), (2, 1), (1, 2), (2, 12), (1, 4)]
    assert validate_program(program) is program
    x = np.random.default_rng(0).integers(0, 256, (6, 14, 12, 3), dtype=np.uint8)
    values = ReferenceModel(program).run(x, keep=True)
    codes, logits = codes_and_logits(model, program, x)
    acts = [n for n in program.nodes if n.op == "threshold_act"]
    assert {n.source for n in acts} == set(codes) and len(acts) == 5
    for node in acts:
        np.testing.assert_array_equal(values[node.output], codes[node.source], err_msg=node.source)
        assert len(np.unique(values[node.output])) > 2, node.source
    np.testing.assert_allclose(values[program.output], logits, rtol=1e-9, atol=1e-9)
    assert np.array_equal(values[program.output].argmax(1), logits.argmax(1))


@pytest.mark.parametrize("case", CASES)
def test_the_reference_accumulators_are_torch_conv2d(case: str) -> None:
    """Every accumulator of the hand-built programs against torch's float64 ``conv2d`` of the
    reference's own input codes (an independent conv), and the layers are what they say."""
    graph = conv_program(case)
    assert validate_program(graph) is graph
    assert lower(graph).ops() == graph.ops()
    convs = {n.source.removesuffix(".conv"): n for n in graph.nodes if isinstance(n, IntConv)}
    assert {k for k, n in convs.items() if n.dilation > 1 and n.weight.shape[1] > 1} == set(
        DILATED_LAYERS[case]
    )
    assert {k for k, n in convs.items() if n.groups > 1} == set(GROUPED_LAYERS[case])
    size = graph.tensors[graph.input].shape[0]
    values = ReferenceModel(graph).run(images(size, 3, seed=9), keep=True)
    for conv in convs.values():
        x = torch.from_numpy(values[conv.inputs[0]].astype(np.float64)).permute(0, 3, 1, 2)
        w = torch.from_numpy(conv.weight.astype(np.float64)).permute(0, 3, 1, 2)
        expected = F.conv2d(
            x, w, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
            groups=conv.groups,
        )  # fmt: skip
        got = values[conv.output]
        np.testing.assert_array_equal(got, expected.permute(0, 2, 3, 1).numpy(), conv.name)


def _with_node(graph: Graph, name: str, **changes) -> Graph:
    return graph.replace_nodes(
        [replace(n, **changes) if n.name == name else n for n in graph.nodes]
    )


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"dilation": 0}, r"dilation must be an integer in \[1, 32768\], got 0"),
        ({"dilation": 2.0}, r"dilation must be an integer"),
        ({"dilation": True}, r"dilation must be an integer"),
        ({"padding": 5}, r"padding must be an integer in \[0, 4\], got 5"),  # > d (k - 1)
        ({"dilation": 1}, r"output 'dil2_acc' has shape \(12, 12, 8\), the op gives \(14, 14, 8\)"),
        ({"dilation": 7, "padding": 0}, r"kernel 3x3 dilated by 7 \(15x15\) is larger than"),
        ({"groups": 3}, r"weight \(8, 3, 3, 6\) with groups=3 does not fit 6 input channels"),
    ],
)
def test_bad_conv_geometry_is_refused_naming_the_node(changes, match) -> None:
    graph = _with_node(conv_program("dilated"), "dil2_conv", **changes)
    with pytest.raises(ArtifactError, match=r"model\.climbq: node 'dil2_conv': " + match):
        validate_program(graph, "model.climbq")


def _manifest(path) -> dict:
    return json.loads(zipfile.ZipFile(path).read("manifest.json"))


def test_dilation_is_written_only_where_it_is_not_1_and_then_as_program_version_2(
    tmp_path,
) -> None:
    plain = save_program(pool_program(8, 3, 2, 1), tmp_path / "plain.climbq")
    assert _manifest(plain)["program"]["version"] == 1
    assert not any("dilation" in n for n in _manifest(plain)["program"]["nodes"])
    for case in CASES:
        graph = conv_program(case)
        path = save_program(graph, tmp_path / f"{case}.climbq")
        manifest = _manifest(path)
        assert manifest["program"]["version"] == 2
        written = {
            n["name"]: n["dilation"] for n in manifest["program"]["nodes"] if "dilation" in n
        }
        dilated = {n.name: n.dilation for n in graph.nodes if getattr(n, "dilation", 1) != 1}
        assert written == dilated and dilated
        loaded, _ = load_program(path)
        for a, b in zip(graph.nodes, loaded.nodes, strict=True):
            assert type(a) is type(b) and a.attributes() == b.attributes(), a.name
        size = graph.tensors[graph.input].shape[0]
        x = images(size, 3, seed=2)
        np.testing.assert_array_equal(
            ReferenceModel(loaded).predict(x), ReferenceModel(graph).predict(x)
        )


def test_a_grouped_program_without_dilation_stays_version_1(tmp_path) -> None:
    graph = conv_program("grouped")
    undilated = _with_node(graph, "g4_1x1_conv", dilation=1)
    undilated = _with_node(undilated, "g2_dil2_conv", dilation=1, padding=1)
    path = save_program(undilated, tmp_path / "grouped.climbq")
    assert _manifest(path)["program"]["version"] == 1
    loaded, _ = load_program(path)
    assert [n.groups for n in loaded.nodes if isinstance(n, IntConv)] == [1, 2, 4, 4, 2]


def test_a_version_1_file_with_a_dilation_is_refused(tmp_path) -> None:
    """Version 1 never had dilation: a file claiming both is refused naming the node (an older
    reader, which knows only version 1, refuses every version 2 file by its version)."""
    path = save_program(conv_program("dilated"), tmp_path / "model.climbq")
    manifest, arrays = read_artifact(path)
    manifest = {
        k: v for k, v in manifest.items() if k not in ("arrays", "format", "schema_version")
    }
    manifest["program"]["version"] = 1
    packed = {name: 4 for name in arrays if name.startswith("weights/")}
    old = write_artifact(tmp_path / "old.climbq", manifest, dict(arrays), packed)
    with pytest.raises(
        ArtifactError, match=r"'dil2_conv'\): dilation needs program version 2, the file says 1"
    ):
        load_program(old)
