"""Whole models: capture + lower + the NumPy reference against the torch model in float64 on
the same (quantized) input. Every activation code must match exactly."""

from pathlib import Path

import numpy as np
import pytest
import torch

from climbq_deploy.errors import ArtifactError, ConfigError
from climbq_deploy.ir.artifact import artifact_size_report
from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.graph import ThresholdAct
from climbq_deploy.ir.passes import lower
from climbq_deploy.ir.serialize import PROGRAM_VERSION, load_program, save_program
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.models import build_model
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.mobilenetv2 import CifarMobileNetV2
from climbq_deploy.models.resnet import CifarResNet
from climbq_deploy.quant.layers import ActQuant
from tests.conftest import MEAN, STD, codes_and_logits, randomize_batchnorm


def assert_reference_matches_torch(model, size: int, seed: int = 0) -> None:
    randomize_batchnorm(model, seed)
    graph = lower(capture(model, MEAN, STD, (size, size, 3)))
    images = np.random.default_rng(seed).integers(0, 256, (6, size, size, 3), dtype=np.uint8)
    values = ReferenceModel(graph).run(images, keep=True)
    codes, logits = codes_and_logits(model, graph, images)
    acts = [n for n in graph.nodes if isinstance(n, ThresholdAct)]
    assert len(acts) == len(codes)
    for node in acts:
        np.testing.assert_array_equal(values[node.output], codes[node.source], err_msg=node.source)
    np.testing.assert_allclose(values[graph.output], logits, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("method", "bits"), [("climbq", 2), ("climbq+", 4), ("climbq", 8), ("uniform", 3)]
)
def test_resnet_codes_match_exactly(method: str, bits: int) -> None:
    torch.manual_seed(bits)
    assert_reference_matches_torch(CifarResNet(8, 10, QuantSpec(method, bits, bits)), 16, bits)


@pytest.mark.parametrize("bits", [2, 4])
def test_mobilenetv2_codes_match_exactly(bits: int) -> None:
    torch.manual_seed(bits)
    assert_reference_matches_torch(CifarMobileNetV2(10, QuantSpec("climbq", bits, bits)), 8, bits)


def test_int8_head_stays_close_to_the_float_head() -> None:
    model = CifarResNet(8, 10, QuantSpec("climbq", 4, 4))
    randomize_batchnorm(model, 1)
    graph = capture(model, MEAN, STD, (16, 16, 3))
    images = np.random.default_rng(1).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    float_logits = ReferenceModel(lower(graph)).predict(images)
    int8 = lower(graph, head="int8")
    assert int8.ops()[-1] == "int_linear"
    int8_logits = ReferenceModel(int8).predict(images)
    spread = np.abs(float_logits).max()
    assert np.abs(int8_logits - float_logits).max() <= 0.02 * spread


def test_unlowerable_models_are_refused_clearly() -> None:
    lsq = CifarResNet(8, 10, QuantSpec("lsq", 4, 4)).eval()
    for i, m in enumerate(m for m in lsq.modules() if isinstance(m, ActQuant)):
        m.quantizer.step.data.fill_(0.1 + 0.01 * i)  # trained LSQ steps differ per quantizer
    with pytest.raises(ConfigError, match=r"residual add.*scales"):
        capture(lsq, MEAN, STD, (16, 16, 3))
    with pytest.raises(ConfigError, match="faithful-mbv2"):
        model = CifarMobileNetV2(10, QuantSpec("climbq", 4, 4), faithful=True)
        capture(model, MEAN, STD, (8, 8, 3))
    with pytest.raises(ConfigError, match="full-precision"):
        capture(CifarResNet(8, 10, QuantSpec("fp32", 32, 32)), MEAN, STD, (16, 16, 3))


@pytest.fixture(scope="module")
def resnet20_graphs():
    graphs = {}
    for bits in (2, 4):
        torch.manual_seed(bits)
        model = build_model("resnet20", 10, QuantSpec("climbq+", bits, bits))
        randomize_batchnorm(model, bits)
        graphs[bits] = lower(capture(model, MEAN, STD))
    return graphs


def test_artifact_round_trip_runs_identically(resnet20_graphs, tmp_path: Path) -> None:
    graph = resnet20_graphs[4]
    path = save_program(graph, tmp_path / "model.climbq", {"method": "climbq+"})
    loaded = ReferenceModel.load(path)
    assert loaded.manifest["provenance"] == {"method": "climbq+"}
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(loaded.predict(images), ReferenceModel(graph).predict(images))
    again, _ = load_program(path)
    for a, b in zip(graph.nodes, again.nodes, strict=True):
        assert a.attributes() == b.attributes()
        for key, value in a.arrays().items():
            np.testing.assert_array_equal(value, b.arrays()[key])
    assert again.tensors == graph.tensors


def test_corrupt_artifacts_are_refused(resnet20_graphs, tmp_path: Path) -> None:
    path = save_program(resnet20_graphs[2], tmp_path / "model.climbq")
    data = path.read_bytes()
    (tmp_path / "cut.climbq").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"cut\.climbq"):
        ReferenceModel.load(tmp_path / "cut.climbq")
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0x10
    (tmp_path / "flip.climbq").write_bytes(bytes(flipped))
    with pytest.raises(ArtifactError):
        ReferenceModel.load(tmp_path / "flip.climbq")


@pytest.mark.parametrize(("bits", "limit"), [(4, 0.55), (2, 0.35)])
def test_packed_artifact_size(resnet20_graphs, tmp_path: Path, bits: int, limit: float) -> None:
    graph = resnet20_graphs[bits]
    packed = save_program(graph, tmp_path / "packed.climbq")
    plain = save_program(graph, tmp_path / "int8.climbq", pack=False)
    ratio = artifact_size_report(packed)["file_bytes"] / artifact_size_report(plain)["file_bytes"]
    assert ratio <= limit, ratio
    images = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        ReferenceModel.load(packed).predict(images), ReferenceModel.load(plain).predict(images)
    )


def test_newer_program_version_is_refused(resnet20_graphs, tmp_path: Path) -> None:
    import json
    import zipfile

    from climbq_deploy.ir.artifact import read_artifact, write_artifact

    path = save_program(resnet20_graphs[2], tmp_path / "model.climbq")
    manifest, arrays = read_artifact(path)
    manifest = {
        k: v for k, v in manifest.items() if k not in ("arrays", "format", "schema_version")
    }
    assert manifest["program"]["version"] == 1  # no dilated conv: written as version 1
    manifest["program"]["version"] = PROGRAM_VERSION + 1
    packed = {name: 2 for name in arrays if name.startswith("weights/")}
    newer = write_artifact(tmp_path / "newer.climbq", manifest, dict(arrays), packed)
    with pytest.raises(ArtifactError, match=r"program version 3 is not one of 1\.\.2"):
        ReferenceModel.load(newer)
    assert json.loads(zipfile.ZipFile(newer).read("manifest.json"))["program"]["version"] == 3


def test_int16_input_option_keeps_the_input_in_int16() -> None:
    model = CifarResNet(8, 10, QuantSpec("climbq", 4, 4))
    randomize_batchnorm(model, 3)
    wide = lower(capture(model, MEAN, STD, (16, 16, 3)))
    narrow = lower(capture(model, MEAN, STD, (16, 16, 3), input_bits=16))
    lo, hi = narrow.tensors[narrow.nodes[0].output].bounds
    assert (
        lo >= -(2**15)
        and hi <= 2**15 - 1
        and narrow.tensors[narrow.nodes[0].output].dtype == "int16"
    )
    assert narrow.nodes[0].step > wide.nodes[0].step
    images = np.random.default_rng(3).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    values = ReferenceModel(narrow).run(images, keep=True)
    codes, _ = codes_and_logits(model, narrow, images)  # exact on its own (coarser) input too
    for node in (n for n in narrow.nodes if isinstance(n, ThresholdAct)):
        np.testing.assert_array_equal(values[node.output], codes[node.source])
