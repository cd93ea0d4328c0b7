"""``climbq verify``: an exported model against the golden file written beside it, on every
runtime; a model altered after export fails naming the first divergent layer; bad golden
files are refused naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import climbq_deploy
from climbq_deploy.cli import main
from climbq_deploy.data.dataset import ImageDataset, load_dataset, save_dataset
from climbq_deploy.errors import ArtifactError
from climbq_deploy.golden import code_hashes, evenly_spaced, golden_path, read_golden
from climbq_deploy.ir.graph import ThresholdAct
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.verify import VerificationError
from tests.conftest import make_random_run

GOLDEN_IMAGES = 16


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A random 4-bit ClimbQ+ ResNet-20 run on 16 x 16 images (24 test images)."""
    rng = np.random.default_rng(0)
    dataset = ImageDataset(
        name="verify",
        class_names=("a", "b"),
        train_images=rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8),
        train_labels=np.array([0] * 4 + [1] * 4),
        test_images=rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8),
        test_labels=np.array([0, 1] * 12),
        info={"normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}},
    )
    root = tmp_path_factory.mktemp("verify")
    data = save_dataset(dataset, root / "data")
    return make_random_run(root / "run", data, "climbq+", 4)


EXPORTS = {
    "numpy": ("numpy", {}),
    "tflite builtin": ("tflite", {}),
    "tflite fused": ("tflite", {"ops": "climbq"}),
    "onnx": ("tensorrt", {}),
}


def _export(run: Path, case: str, folder: Path) -> Path:
    target, options = EXPORTS[case]
    suffix = {"numpy": ".climbq", "tflite": ".tflite", "tensorrt": ".onnx"}[target]
    out = folder / f"model{suffix}"
    return climbq_deploy.export(run, target, out, golden=GOLDEN_IMAGES, **options)


def test_the_golden_file_is_the_reference_on_evenly_spaced_test_images(run, tmp_path) -> None:
    model = _export(run, "numpy", tmp_path)
    golden = read_golden(golden_path(model))
    assert golden_path(model).name == "model.climbq.golden.npz"
    indices = evenly_spaced(24, GOLDEN_IMAGES)
    assert golden.meta["indices"] == indices.tolist() and len(set(indices.tolist())) == 16
    dataset = load_dataset(run.parent / "data")
    np.testing.assert_array_equal(golden.images, dataset.test_images[indices])
    np.testing.assert_array_equal(golden.labels, dataset.test_labels[indices])
    graph = ReferenceModel.load(model).graph
    acts = [n for n in graph.nodes if isinstance(n, ThresholdAct)]
    values = ReferenceModel(graph).run(golden.images, keep={n.output for n in acts})
    np.testing.assert_array_equal(golden.logits, values[graph.output])
    assert golden.layers == [n.source for n in acts]
    for row, node in enumerate(acts):
        np.testing.assert_array_equal(golden.code_hashes[row], code_hashes(values[node.output]))
        rectified = code_hashes(np.maximum(values[node.output], 0))
        np.testing.assert_array_equal(golden.rectified_hashes[row], rectified)
    # one code changed in one image changes that image's hash and only it
    codes = values[acts[0].output].copy()
    codes[3, 0, 0, 0] += 2
    changed = code_hashes(codes) != golden.code_hashes[0]
    assert changed.tolist() == [i == 3 for i in range(GOLDEN_IMAGES)]


@pytest.mark.parametrize("case", sorted(EXPORTS))
def test_every_runtime_verifies_exactly(run, tmp_path, case: str) -> None:
    model = _export(run, case, tmp_path)
    record = climbq_deploy.verify(model)
    assert record["exact_match"] is True and record["passed"] is True
    assert record["n_images"] == GOLDEN_IMAGES and record["top1_agreement"] == 1.0
    # every runtime exposes every layer's codes: all of them are compared
    assert record["layers_compared"] == record["layers_total"] == 21
    assert record["first_divergent_layer"] is None and record["model_matches_export"] is True


def _flip_stem_weight(model: Path) -> None:
    """Change one byte of the first conv's weights in the file (as a bit flip on disk would)."""
    content = bytearray(model.read_bytes())
    if model.suffix == ".tflite":
        from ai_edge_litert import schema_py_generated as schema

        tflite = schema.Model.GetRootAs(content, 0)
        graph = tflite.Subgraphs(0)
        base = np.frombuffer(content, np.uint8).ctypes.data
        width = {schema.TensorType.FLOAT32: 4, schema.TensorType.INT32: 4}
        offset = -1
        for i in range(graph.OperatorsLength()):  # the first op with a constant 4-D filter
            op = graph.Operators(i)
            if op.InputsLength() < 2 or op.Inputs(1) < 0:
                continue
            tensor = graph.Tensors(op.Inputs(1))
            buffer = tflite.Buffers(tensor.Buffer())
            if tensor.ShapeLength() == 4 and buffer.DataLength() > 0:
                # the most significant byte of its first weight (sign and exponent of a float)
                top = width.get(tensor.Type(), 1) - 1
                offset = buffer.DataAsNumpy().ctypes.data - base + top
                break
        assert offset > 0
    else:
        import onnx

        proto = onnx.load(model)
        conv = next(n for n in proto.graph.node if n.op_type in ("Conv", "ConvInteger"))
        inits = {i.name: i for i in proto.graph.initializer}
        producers = {o: n for n in proto.graph.node for o in n.output}
        name = conv.input[1]
        while name not in inits:  # through DequantizeLinear / Cast to the stored integers
            name = producers[name].input[0]
        weights = onnx.numpy_helper.to_array(inits[name])
        raw = weights.tobytes()
        assert bytes(content).count(raw) == 1
        # the most significant byte of its first weight (sign and exponent of a float)
        offset = bytes(content).find(raw) + weights.dtype.itemsize - 1
    content[offset] ^= 0x40
    model.write_bytes(bytes(content))


@pytest.mark.parametrize("case", ["tflite builtin", "tflite fused", "onnx"])
def test_a_model_altered_after_export_fails_naming_the_first_divergent_layer(
    run, tmp_path, capsys, case: str
) -> None:
    model = _export(run, case, tmp_path)
    first = read_golden(golden_path(model)).layers[0]
    _flip_stem_weight(model)
    with pytest.raises(VerificationError) as failure:
        climbq_deploy.verify(model)
    record = failure.value.record
    assert record["exact_match"] is False and record["passed"] is False
    assert record["first_divergent_layer"] == first
    assert record["model_matches_export"] is False
    assert main(["verify", str(model)]) == 1
    err = capsys.readouterr().err
    assert f"first divergent layer {first!r} (codes differ on " in err
    assert "the model file is not the one the golden file was written for" in err
    # a CI that gates on top-1 agreement alone passes or fails on that number
    lenient = climbq_deploy.verify(model, min_agreement=0.0)
    assert lenient["passed"] is True and lenient["exact_match"] is False


def test_cli_verify_prints_the_verdict_and_json(run, tmp_path, capsys) -> None:
    model = _export(run, "tflite builtin", tmp_path)
    capsys.readouterr()
    assert main(["verify", str(model)]) == 0
    out = capsys.readouterr().out
    assert "exact on 16 golden images (xnnpack); codes of 21 of 21 layers compared, 0 differ" in out
    assert main(["verify", str(model), str(golden_path(model)), "--json", "--kernels", "ref"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["kernels"] == "ref" and record["exact_match"] is True


def test_bad_golden_files_are_refused_naming_the_file(run, tmp_path, capsys) -> None:
    model = _export(run, "numpy", tmp_path)
    golden = golden_path(model)
    assert main(["verify", str(model), str(tmp_path / "none.npz")]) == 2
    assert f"no golden file at {tmp_path / 'none.npz'}" in capsys.readouterr().err
    broken = tmp_path / "broken.npz"
    broken.write_bytes(golden.read_bytes()[:100])
    with pytest.raises(ArtifactError, match=r"broken.npz: not a readable .npz"):
        climbq_deploy.verify(model, broken)
    other = tmp_path / "other.npz"
    np.savez(other, images=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ArtifactError, match=r"other.npz: not a golden file \(no labels"):
        climbq_deploy.verify(model, other)
    with pytest.raises(ArtifactError, match=r"no model file at .*missing\.climbq"):
        climbq_deploy.verify(tmp_path / "missing.climbq", golden)


def test_export_golden_zero_writes_none(run, tmp_path) -> None:
    out = climbq_deploy.export(run, "numpy", tmp_path / "m.climbq", golden=0)
    assert out.is_file() and not golden_path(out).exists()
    copy = shutil.copy(out, tmp_path / "copy.climbq")
    with pytest.raises(ArtifactError, match=r"no golden file at .*copy.climbq.golden.npz"):
        climbq_deploy.verify(copy)
