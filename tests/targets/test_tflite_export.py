"""The TFLite target on small models: LiteRT's int16 program against the NumPy reference of
the same program (exact), for each kernel path."""

import numpy as np
import pytest
import torch

from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.passes import lower
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.mobilenetv2 import CifarMobileNetV2
from climbq_deploy.models.resnet import CifarResNet
from climbq_deploy.targets.tflite import TfliteTarget
from climbq_deploy.targets.tflite.flavour import int16_flavour
from tests.conftest import MEAN, STD, codes_and_logits, randomize_batchnorm

pytest.importorskip("ai_edge_litert")


def export_and_compare(model, size: int, tmp_path, kernels: str) -> tuple[int, int]:
    graph = lower(capture(model, MEAN, STD, (size, size, 3), input_bits=16))
    target = TfliteTarget(kernels)
    path = target.export(graph, tmp_path / f"m-{kernels}.tflite")
    runner = target.load(path)
    images = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    out = runner.run(images, with_codes=True)
    flavour = int16_flavour(graph)
    values = ReferenceModel(flavour).run(images, keep=True)
    mismatches = total = 0
    for node in flavour.nodes:
        if node.op == "threshold_act":
            got = out.codes[node.source]
            mismatches += int(np.count_nonzero(got != values[node.output]))
            total += got.size
    np.testing.assert_allclose(out.logits, values[flavour.output], rtol=1e-5, atol=1e-4)
    return mismatches, total


@pytest.mark.parametrize("kernels", ["ref", "optimized", "xnnpack"])
@pytest.mark.parametrize("bits", [2, 4])
def test_resnet_tflite_equals_its_reference(tmp_path, kernels: str, bits: int) -> None:
    torch.manual_seed(bits)
    model = CifarResNet(8, 10, QuantSpec("climbq+", bits, bits))
    randomize_batchnorm(model, bits)
    mismatches, total = export_and_compare(model, 16, tmp_path, kernels)
    assert total > 0 and mismatches == 0


def test_mobilenetv2_tflite_equals_its_reference(tmp_path) -> None:
    torch.manual_seed(0)
    model = CifarMobileNetV2(10, QuantSpec("climbq", 4, 4))
    randomize_batchnorm(model, 0)
    mismatches, total = export_and_compare(model, 8, tmp_path, "ref")
    assert total > 0 and mismatches == 0


def test_tflite_codes_equal_torch_float64_on_the_same_input(tmp_path) -> None:
    """The stem is computed exactly (digit split): up to the first layer LiteRT must requantize
    (thresholds beyond int16; none in the trained models measured), the codes are the model's."""
    torch.manual_seed(5)
    model = CifarResNet(8, 10, QuantSpec("climbq", 4, 4))
    randomize_batchnorm(model, 5)
    graph = lower(capture(model, MEAN, STD, (16, 16, 3), input_bits=16))
    target = TfliteTarget("ref")
    runner = target.load(target.export(graph, tmp_path / "m.tflite"))
    images = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    out = runner.run(images, with_codes=True)
    codes, _ = codes_and_logits(model, runner.graph, images)
    acts = [n for n in runner.graph.nodes if n.op == "threshold_act"]
    assert acts[0].shift == 0  # the stem keeps its exact thresholds
    for node in acts:
        if node.shift:  # an int16 requantization: from here on the flavour may differ
            break
        np.testing.assert_array_equal(out.codes[node.source], codes[node.source])
    else:
        assert len(acts) == len(out.codes)


def test_not_a_climbq_tflite_is_refused(tmp_path) -> None:
    from climbq_deploy.errors import ArtifactError

    (tmp_path / "x.tflite").write_bytes(b"garbage" * 10)
    with pytest.raises(ArtifactError, match=r"x\.tflite"):
        TfliteTarget().load(tmp_path / "x.tflite")


def test_int4_split_exact_values() -> None:
    from climbq_deploy.targets.tflite.export import int4_split

    small = np.array([-8, -3, 0, 7]).reshape(4, 1, 1, 1)
    q, e = int4_split(small)
    assert e is None and np.array_equal(q, small)
    odd = np.array([[-15, 15, 1], [0, 0, 0], [3, -1, 13]]).reshape(3, 1, 1, 3)
    q, e = int4_split(odd)
    assert e.tolist() == [1, 0, 1]
    assert q.reshape(3, 3).tolist() == [[-8, 7, 0], [0, 0, 0], [1, -1, 6]]
    assert np.array_equal(2 * q + e[:, None, None, None], odd)
    assert int4_split(np.array([2, 9]).reshape(2, 1, 1, 1)) is None  # even beyond int4
    assert int4_split(np.array([[1, 10]]).reshape(1, 1, 1, 2)) is None  # mixed parity row
    assert int4_split(np.array([17]).reshape(1, 1, 1, 1)) is None  # odd beyond the 4-bit grid


def _tensors(path) -> dict[str, int]:
    """name -> TensorType of every tensor in a .tflite."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    return {graph.Tensors(i).Name().decode(): graph.Tensors(i).Type()
            for i in range(graph.TensorsLength())}  # fmt: skip


@pytest.mark.parametrize("kernels", ["ref", "xnnpack"])
@pytest.mark.parametrize("bits", [2, 4])
def test_int4_weights_give_the_int8_model_outputs(tmp_path, kernels: str, bits: int) -> None:
    """--weights int4 changes the storage, not one output: every code and logit equal."""
    from ai_edge_litert import schema_py_generated as schema

    torch.manual_seed(10 + bits)
    model = CifarResNet(8, 10, QuantSpec("climbq+", bits, bits))
    randomize_batchnorm(model, bits)
    graph = lower(capture(model, MEAN, STD, (16, 16, 3), input_bits=16))
    images = np.random.default_rng(2).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    outs = {}
    for weights in ("int8", "int4"):
        target = TfliteTarget(kernels, weights)
        path = target.export(graph, tmp_path / f"{weights}.tflite")
        outs[weights] = target.load(path).run(images, with_codes=True)
        tensors = _tensors(path)
        assert (schema.TensorType.INT4 in tensors.values()) == (weights == "int4")
        # 4-bit odd weights go through the 2q + e split with its window-sum term
        split = any(name.endswith("/window_ones") for name in tensors)
        assert split == (weights == "int4" and bits == 4)
    assert np.array_equal(outs["int8"].logits, outs["int4"].logits)
    assert outs["int8"].codes.keys() == outs["int4"].codes.keys()
    for name, codes in outs["int8"].codes.items():
        np.testing.assert_array_equal(outs["int4"].codes[name], codes, err_msg=name)
    reference = ReferenceModel(int16_flavour(graph)).run(images, keep=True)
    assert np.array_equal(outs["int4"].logits.argmax(1), reference[graph.output].argmax(1))


def test_unknown_weight_storage_is_refused() -> None:
    from climbq_deploy.errors import ConfigError

    with pytest.raises(ConfigError, match="int2"):
        TfliteTarget("ref", "int2")
