"""The model contract (issue 42 item 3): exported ``.tflite`` and ``.onnx`` files take uint8 NHWC
images, normalise them inside the graph exactly (a ``256 C`` table of the reference's own
``input_quant``), run at any batch and give float32 logits; the contract travels in the file.

Every ``--ops`` x ``--kernels`` and every ONNX ``--form`` is checked code for code against the
NumPy reference of its program on uint8 images, beside the ``--input int32`` export of the
same program (identical codes and logits)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from climbq_deploy.errors import ArtifactError, DataError
from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.graph import Graph, InputQuant, TensorSpec, ThresholdAct
from climbq_deploy.ir.passes import lower
from climbq_deploy.kernels import ReferenceModel, ops
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.resnet import CifarResNet
from climbq_deploy.targets.contract import (
    CONTRACT_KEY,
    INPUT_FORMS,
    as_images,
    contract,
    input_table,
)
from tests.conftest import MEAN, STD, randomize_batchnorm

SIZE = 12


def resnet(bits: int, input_bits: int, seed: int = 3) -> Graph:
    """A small trained-looking ResNet's program (``input_bits`` 16: the int16 input type of
    the int32 form; 20: int32, the digit-split stem)."""
    torch.manual_seed(seed)
    model = CifarResNet(8, 10, QuantSpec("climbq+", bits, bits))
    randomize_batchnorm(model, seed)
    return lower(capture(model, MEAN, STD, (SIZE, SIZE, 3), input_bits=input_bits))


def images(n: int, seed: int = 0) -> np.ndarray:
    """Random pixels, with the extremes 0 and 255 of every channel present."""
    x = np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    x[0, 0, 0], x[0, 0, 1] = 0, 255
    return x


def loop_table(mean, std, step: float) -> np.ndarray:
    """``I`` of every pixel value and channel by a plain Python loop (float64 arithmetic,
    Python's ``round``: half to even), independent of the toolkit's kernels."""
    c = len(mean)
    out = np.zeros(256 * c, np.int64)
    for p in range(256):
        for k in range(c):
            out[p * c + k] = round((p / 255.0 - mean[k]) / std[k] / step)
    return out


def assert_codes_equal(out, graph: Graph, x: np.ndarray) -> None:
    """Every code of the runner's output equals the reference's (as the runner reports it);
    logits within float32 rounding of the float64 head."""
    values = ReferenceModel(graph).run(x, keep=True)
    acts = [n for n in graph.nodes if isinstance(n, ThresholdAct)]
    assert len(out.codes) == len(acts) > 0
    for node in acts:
        expected = out.expected(node.source, values[node.output])
        np.testing.assert_array_equal(out.codes[node.source], expected, err_msg=node.source)
    np.testing.assert_allclose(out.logits, values[graph.output], rtol=1e-5, atol=1e-4)
    assert np.array_equal(out.logits.argmax(1), values[graph.output].argmax(1))


# -- the table ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mean", "std", "step"),
    [
        (MEAN, STD, 2.0**-16),
        ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 2.0**-8),
        ((0.0, 1.0, 0.3), (1e-3, 2.0, 0.07), 2.0**-4),  # a tiny std: large |I|
        ((0.25,), (0.5,), 2.0**-20),  # one channel
    ],
)
def test_the_table_is_input_quant_for_every_pixel_value_and_channel(mean, std, step) -> None:
    c = len(mean)
    quant = InputQuant("q", ("image",), "x", "input", mean=mean, std=std, step=step)
    tensors = {
        "image": TensorSpec("image", "uint8", (SIZE, SIZE, c), 2),
        "x": TensorSpec("x", "int32", (SIZE, SIZE, c), 2, step),
    }
    graph = Graph((quant,), tensors, "image", "x")
    table = input_table(graph)
    assert table.dtype == np.int32 and table.shape == (256 * c,)
    np.testing.assert_array_equal(table, loop_table(mean, std, step))
    # and the reference kernel on an image holding every value in every channel
    pixels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], c, axis=1)
    values = ops.input_quant(pixels[None, None], mean, std, step)[0, 0]
    for p in range(256):
        for k in range(c):
            assert table[p * c + k] == values[p, k]


# -- TFLite --------------------------------------------------------------------------------

litert = pytest.importorskip("ai_edge_litert")

OPS_AND_KERNELS = [
    (ops_, kernels) for ops_ in ("builtin", "int16") for kernels in ("ref", "optimized", "xnnpack")
] + [("climbq", "xnnpack")]


def _skip_without_fused(ops_: str) -> None:
    if ops_ == "climbq":
        from climbq_deploy.targets.tflite.custom_op import support

        reason = support()
        if reason is not None:
            pytest.skip(f"the fused op cannot run here: {reason}")


def _tflite_constant(content: bytes, name: str) -> np.ndarray:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    graph = model.Subgraphs(0)
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        if tensor.Name().decode() == name:
            raw = model.Buffers(tensor.Buffer()).DataAsNumpy()
            return np.frombuffer(bytes(raw), "<i4")
    raise AssertionError(f"no tensor {name!r}")


@pytest.mark.parametrize("input_bits", [16, 20])
@pytest.mark.parametrize(("ops_", "kernels"), OPS_AND_KERNELS)
def test_uint8_tflite_is_exact_and_equals_the_int32_input_export(
    tmp_path, ops_: str, kernels: str, input_bits: int
) -> None:
    """The uint8 model: input ``image`` uint8 ``(1, H, W, C)`` (batch axis open), every code
    equal to the reference on uint8 images; the ``--input int32`` file of the same program
    reads ``I`` (int16 or int32) and gives the same codes and logits."""
    from climbq_deploy.targets.tflite import TfliteTarget

    _skip_without_fused(ops_)
    graph = resnet(2 if input_bits == 16 else 4, input_bits)
    x = images(3, seed=input_bits)
    outs = {}
    for form in INPUT_FORMS:
        target = TfliteTarget(kernels, ops=ops_, input=form)
        path = target.export(graph, tmp_path / f"m-{form}.tflite")
        runner = target.load(path)
        wanted = np.uint8 if form == "uint8" else (np.int16 if input_bits == 16 else np.int32)
        if runner.fused:
            assert runner._plain.zero_input().shape == (1, SIZE, SIZE, 3)
            assert runner._plain.zero_input().dtype == wanted
        else:
            detail = runner._plain.get_input_details()[0]
            assert detail["dtype"] == wanted
            assert list(detail["shape"]) == [1, SIZE, SIZE, 3]
            assert list(detail["shape_signature"]) == [-1, SIZE, SIZE, 3]
            assert (detail["name"] == "image") == (form == "uint8")
        assert runner.takes_images == (form == "uint8")
        outs[form] = runner.run(x, with_codes=True)
        assert_codes_equal(outs[form], runner.graph, x)  # the file's own (flavour) program
        if form == "uint8":
            name = next(n.output for n in runner.graph.nodes if isinstance(n, InputQuant))
            table = _tflite_constant(path.read_bytes(), f"{name}/table")
            np.testing.assert_array_equal(table, loop_table(MEAN, STD, runner.graph.nodes[0].step))
    np.testing.assert_array_equal(outs["uint8"].logits, outs["int32"].logits)
    for name, codes in outs["int32"].codes.items():
        np.testing.assert_array_equal(outs["uint8"].codes[name], codes)


def _interpreter(content: bytes, kernels: str = "xnnpack"):
    from climbq_deploy.targets.tflite import RESOLVERS

    return litert.interpreter.Interpreter(
        model_content=content,
        experimental_op_resolver_type=getattr(
            litert.interpreter.OpResolverType, RESOLVERS[kernels]
        ),
    )


@pytest.mark.parametrize("kernels", ["ref", "optimized", "xnnpack"])
@pytest.mark.parametrize("ops_", ["builtin", "int16"])
def test_a_tflite_file_runs_at_batch_n(tmp_path, ops_: str, kernels: str) -> None:
    """``resize_tensor_input`` on axis 0 to N = 5 (what a C++ user does with
    ``ResizeInputTensor``): the logits of the 5 images in one invoke equal the reference's
    (float32 head), shape ``(5, classes)`` float32. (A fused-form file needs the custom op,
    which only the toolkit's C API route registers; that route runs the stored batch.)"""
    from climbq_deploy.targets.tflite import TfliteTarget

    graph = resnet(4, 20)
    target = TfliteTarget(kernels, ops=ops_)
    path = target.export(graph, tmp_path / "m.tflite")
    program = target.load(path).graph
    x = images(5, seed=9)
    it = _interpreter(path.read_bytes(), kernels)
    detail = it.get_input_details()[0]
    it.resize_tensor_input(detail["index"], [5, SIZE, SIZE, 3])
    it.allocate_tensors()
    it.set_tensor(detail["index"], x)
    it.invoke()
    out = it.get_output_details()[0]
    logits = it.get_tensor(out["index"])
    assert logits.dtype == np.float32 and logits.shape == (5, 10)
    assert list(out["shape_signature"]) == [-1, 10]
    reference = ReferenceModel(program).predict(x)
    np.testing.assert_allclose(logits, reference, rtol=1e-5, atol=1e-4)
    assert np.array_equal(logits.argmax(1), reference.argmax(1))


def test_the_tflite_contract_travels_in_the_file(tmp_path) -> None:
    from climbq_deploy.targets.tflite import TfliteTarget
    from climbq_deploy.targets.tflite.reader import read_contract

    graph = resnet(4, 20)
    graph = Graph(
        graph.nodes, graph.tensors, graph.input, graph.output, {"class_names": list("abcdefghij")}
    )
    uint8 = read_contract(TfliteTarget().export(graph, tmp_path / "a.tflite").read_bytes())
    assert uint8["input"]["name"] == "image" and uint8["input"]["dtype"] == "uint8"
    assert uint8["input"]["layout"] == "NHWC" and uint8["input"]["shape"] == [-1, SIZE, SIZE, 3]
    assert uint8["input"]["quantization"] is None  # raw pixels: no scale, no zero point
    norm = uint8["input"]["normalization"]
    assert norm["mean"] == list(MEAN) and norm["std"] == list(STD)
    assert norm["applied"].startswith("inside the model")
    assert uint8["output"] == {
        "name": "logits",
        "dtype": "float32",
        "shape": [-1, 10],
        "quantization": None,
        "meaning": "logits (unnormalised class scores); argmax over axis 1 is the class",
        "class_names": list("abcdefghij"),
    }
    old = read_contract(
        TfliteTarget(input="int32").export(graph, tmp_path / "b.tflite").read_bytes()
    )
    assert old["input"]["name"] == "input" and old["input"]["dtype"] == "int32"
    assert old["input"]["normalization"]["applied"] == "on the host, before the model"
    fused = TfliteTarget(ops="climbq").export(graph, tmp_path / "c.tflite")
    assert read_contract(fused.read_bytes())["input"] == uint8["input"]


def _without_contract(content: bytes) -> bytes:
    """A file as written before the contract: no ``climbq_contract`` metadata, no shape
    signatures."""
    from ai_edge_litert import schema_py_generated as schema

    from climbq_deploy.targets.tflite.builder import pack_model

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    model.metadata = [m for m in model.metadata if m.name.decode() != CONTRACT_KEY]
    for tensor in model.subgraphs[0].tensors:
        tensor.shapeSignature = None
    return pack_model(model)


@pytest.mark.parametrize("ops_", ["builtin", "int16"])
def test_an_int32_input_file_without_the_contract_still_loads_and_runs(tmp_path, ops_: str) -> None:
    from climbq_deploy.targets.tflite import TfliteRunner, TfliteTarget
    from climbq_deploy.targets.tflite.reader import read_contract

    graph = resnet(4, 20)
    path = TfliteTarget(ops=ops_, input="int32").export(graph, tmp_path / "new.tflite")
    old = tmp_path / "old.tflite"
    old.write_bytes(_without_contract(path.read_bytes()))
    assert read_contract(old.read_bytes()) is None
    runner = TfliteRunner(old)
    assert not runner.takes_images
    x = images(2, seed=4)
    assert_codes_equal(runner.run(x, with_codes=True), runner.graph, x)


def test_tflite_bench_times_uint8_images_at_batch_n(tmp_path) -> None:
    from climbq_deploy.errors import ConfigError
    from climbq_deploy.targets.tflite import TfliteTarget
    from climbq_deploy.targets.tflite.bench import bench_tflite

    graph = resnet(4, 20)
    path = TfliteTarget().export(graph, tmp_path / "m.tflite")
    record = bench_tflite(path, warmup=1, repeats=2, batch=3)
    assert record["batch"] == 3 and record["latency_ms"]["p50"] > 0
    fused = TfliteTarget(ops="climbq")
    if fused.unavailable() is None:
        path = fused.export(graph, tmp_path / "f.tflite")
        assert bench_tflite(path, warmup=1, repeats=2)["batch"] == 1
        with pytest.raises(ConfigError, match="batch 1"):
            bench_tflite(path, warmup=1, repeats=2, batch=3)


def test_runners_refuse_pixels_outside_uint8() -> None:
    assert as_images(np.array([[0, 255]], np.int64)).dtype == np.uint8
    with pytest.raises(DataError, match=r"\[0, 255\]"):
        as_images(np.array([[0, 256]], np.int64))
    with pytest.raises(DataError, match="uint8 pixels"):
        as_images(np.array([[0.5]]))


# -- ONNX ----------------------------------------------------------------------------------

FORMS = ("qdq", "sign_sum", "int8_dup", "ort")


@pytest.mark.parametrize("input_bits", [16, 20])
@pytest.mark.parametrize("form", FORMS)
def test_uint8_onnx_is_exact_and_equals_the_int32_input_export(
    tmp_path, form: str, input_bits: int
) -> None:
    """Input ``image`` uint8 ``(N, H, W, C)`` (N dynamic), every code equal to the reference
    under ONNX Runtime; the ``--input int32`` file (float32 NCHW ``I``) gives the same codes
    and logits; the table in the file is the loop's."""
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import TensorProto, numpy_helper

    from climbq_deploy.targets.tensorrt import TensorrtTarget

    graph = resnet(2 if input_bits == 16 else 4, input_bits)
    x = images(5, seed=input_bits + 1)
    outs = {}
    for input_form in INPUT_FORMS:
        target = TensorrtTarget(form=form, input=input_form)
        path = target.export(graph, tmp_path / f"m-{input_form}.onnx")
        model = onnx.load(path)
        given = model.graph.input[0]
        dims = [d.dim_param or d.dim_value for d in given.type.tensor_type.shape.dim]
        if input_form == "uint8":
            assert given.name == "image" and given.type.tensor_type.elem_type == TensorProto.UINT8
            assert dims == ["N", SIZE, SIZE, 3]
            name = next(n.output for n in graph.nodes if isinstance(n, InputQuant))
            table = next(i for i in model.graph.initializer if i.name == f"{name}/table")
            values = numpy_helper.to_array(table)
            assert values.dtype == np.float32
            np.testing.assert_array_equal(values, loop_table(MEAN, STD, graph.nodes[0].step))
        else:
            assert given.type.tensor_type.elem_type == TensorProto.FLOAT
            assert dims == ["N", 3, SIZE, SIZE]
        runner = target.load(path)
        outs[input_form] = runner.run(x, with_codes=True)
        assert_codes_equal(outs[input_form], graph, x)
        (logits,) = runner.session.run(["logits"], {runner.input_name: runner_feed(runner, x)})
        assert logits.dtype == np.float32 and logits.shape == (5, 10)  # batch 5 in one run
    np.testing.assert_array_equal(outs["uint8"].logits, outs["int32"].logits)
    for name, codes in outs["int32"].codes.items():
        np.testing.assert_array_equal(outs["uint8"].codes[name], codes)


def runner_feed(runner, x: np.ndarray) -> np.ndarray:
    from climbq_deploy.targets.tensorrt import host_input

    return host_input(x, runner.graph, runner.model)


def test_the_onnx_contract_travels_in_the_file_and_old_files_still_run(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    import onnx

    from climbq_deploy.targets.tensorrt import TensorrtTarget
    from climbq_deploy.targets.tensorrt.export import read_contract

    graph = resnet(4, 20)
    model = onnx.load(TensorrtTarget().export(graph, tmp_path / "m.onnx"))
    record = read_contract(model)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props[CONTRACT_KEY]) == record
    given = record["input"]
    assert (given["name"], given["dtype"], given["layout"]) == ("image", "uint8", "NHWC")
    assert given["shape"] == [-1, SIZE, SIZE, 3]
    assert record["output"]["shape"] == [-1, 10] and record["output"]["dtype"] == "float32"
    assert record["input"]["normalization"]["mean"] == list(MEAN)
    # an int32-input file without the contract (as written before it) loads and is exact
    path = TensorrtTarget(input="int32").export(graph, tmp_path / "int32.onnx")
    old = onnx.load(path)
    kept = [p for p in old.metadata_props if p.key != CONTRACT_KEY]
    del old.metadata_props[:]
    old.metadata_props.extend(kept)
    assert read_contract(old) is None
    onnx.save(old, tmp_path / "old.onnx")
    runner = TensorrtTarget().load(tmp_path / "old.onnx")
    x = images(3, seed=2)
    assert_codes_equal(runner.run(x, with_codes=True), graph, x)
    with pytest.raises(ArtifactError, match="not JSON"):
        from climbq_deploy.targets.contract import parse_contract

        parse_contract("{", "m.onnx")


def test_the_uint8_input_keeps_tensorrts_rules(tmp_path) -> None:
    """The qdq file passes the lint with its uint8 input; uint8 fed to anything but a Cast to
    float32/float16, or a Gather on float indices, is named."""
    pytest.importorskip("onnx")
    import onnx
    from onnx import TensorProto, helper

    from climbq_deploy.targets.tensorrt import TensorrtTarget
    from climbq_deploy.targets.tensorrt.rules import tensorrt_rules

    model = onnx.load(TensorrtTarget().export(resnet(4, 20), tmp_path / "m.onnx"))
    assert tensorrt_rules(model) == []
    ops_ = [n.op_type for n in model.graph.node[:6]]
    assert ops_ == ["Cast", "Cast", "Mul", "Add", "Gather", "Transpose"]
    first = model.graph.node[0]
    first.attribute[0].i = TensorProto.INT32  # uint8 straight to int32: TensorRT refuses
    problems = tensorrt_rules(model)
    assert len(problems) == 1 and "reads uint8 'image' (Cast to INT32)" in problems[0]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    i = helper.make_tensor_value_info("i", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    bad = helper.make_model(
        helper.make_graph([helper.make_node("Gather", ["x", "i"], ["y"])], "g", [x, i], [y]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    assert any("indices of type FLOAT" in p for p in tensorrt_rules(bad))
    # an intermediate uint8 tensor (TensorRT 10's parser refuses it)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    casts = [
        helper.make_node("Cast", ["x"], ["u"], to=TensorProto.UINT8),
        helper.make_node("Cast", ["u"], ["y"], to=TensorProto.FLOAT),
    ]
    bad = helper.make_model(
        helper.make_graph(casts, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]
    )
    assert [p for p in tensorrt_rules(bad) if "uint8" in p] == [
        "Cast 'u': writes the uint8 tensor 'u' (TensorRT allows uint8 only as a graph input or "
        "output)"
    ]


def test_the_contract_of_a_program_without_class_names() -> None:
    graph = resnet(2, 16)
    record = contract(graph, form="uint8", input_name="image", input_dtype="uint8", layout="NHWC")
    assert record["output"]["class_names"] is None
    assert record["input"]["normalization"]["step"] == graph.nodes[0].step


def test_climbq_export_writes_the_run_s_contract_and_takes_input_int32(tmp_path) -> None:
    """``climbq export RUN --target tflite`` (default ``--input uint8``) and ``--target
    tensorrt --input int32``: the contract names the dataset's normalisation and class
    names; the int32 file reads ``I``."""
    pytest.importorskip("onnxruntime")
    import onnx

    from climbq_deploy.cli import main
    from climbq_deploy.data.dataset import ImageDataset, save_dataset
    from climbq_deploy.targets.tensorrt.export import read_contract as onnx_contract
    from climbq_deploy.targets.tflite.reader import read_contract as tflite_contract
    from tests.conftest import make_random_run

    rng = np.random.default_rng(0)
    dataset = ImageDataset(
        name="contract",
        class_names=("cat", "dog"),
        train_images=rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8),
        train_labels=np.array([0, 0, 1, 1]),
        test_images=rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8),
        test_labels=np.array([0, 1, 0, 1]),
        info={"normalization": {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3]}},
    )
    data = save_dataset(dataset, tmp_path / "data")
    run = make_random_run(tmp_path / "run", data, "climbq+", 4)
    out = tmp_path / "m.tflite"
    assert main(["export", str(run), "--target", "tflite", "--out", str(out), "--golden", "0"]) == 0
    record = tflite_contract(out.read_bytes())
    assert record["input"]["dtype"] == "uint8" and record["input"]["shape"] == [-1, 16, 16, 3]
    assert record["input"]["normalization"]["mean"] == [0.5, 0.4, 0.3]
    assert record["input"]["normalization"]["std"] == [0.25, 0.2, 0.3]
    assert record["output"]["class_names"] == ["cat", "dog"]
    assert record["program"] == {"arch": "resnet20", "method": "climbq+", "wbits": 4, "abits": 4}
    onnx_out = tmp_path / "m.onnx"
    argv = ["export", str(run), "--target", "tensorrt", "--input", "int32", "--out", str(onnx_out)]
    assert main([*argv, "--golden", "0"]) == 0
    model = onnx.load(onnx_out)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert onnx_contract(model)["input"]["layout"] == "NCHW"
    with pytest.raises(SystemExit):  # argparse's choices
        main(["export", str(run), "--target", "tflite", "--input", "float32"])
