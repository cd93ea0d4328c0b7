"""The TensorRT runner through Polygraphy: the engine's build settings, and the runner's wiring
(input name and shape, batches split at max_batch, logits and every layer's codes mapped back)
with Polygraphy's TrtRunner stood in by ONNX Runtime, since no GPU or TensorRT is here. The
exactness of a real TensorRT engine is not tested by this file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.targets.tensorrt import engine
from tests.conftest import resnet8_onnx

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("polygraphy")


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    return resnet8_onnx(tmp_path_factory.mktemp("trt") / "m.onnx")


def test_the_engine_is_built_for_explicit_int8_without_tf32() -> None:
    loader = engine.engine_loader(b"onnx", "input", (3, 8, 8), max_batch=16)
    config = loader._config
    assert (config.int8, config.tf32, config.fp16) == (True, False, False)
    (profile,) = config.profiles
    shapes = profile["input"]
    assert (shapes.min, shapes.opt, shapes.max) == ((1, 3, 8, 8), (16, 3, 8, 8), (16, 3, 8, 8))
    assert engine.engine_loader(b"onnx", "x", (3, 8, 8), fp16=True)._config.fp16 is True


class OrtAsTrtRunner:
    """Polygraphy's TrtRunner interface (activate / infer / deactivate) over ONNX Runtime, on
    the model bytes the engine would have been built from; records every batch it gets."""

    def __init__(self, loader: Any) -> None:
        self.onnx_bytes = loader._network._model_bytes
        self.batches: list[int] = []

    def activate(self) -> None:
        self.session = ort.InferenceSession(self.onnx_bytes, providers=["CPUExecutionProvider"])

    def infer(self, feed_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        (x,) = feed_dict.values()
        self.batches.append(len(x))
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(None, feed_dict), strict=True))

    def deactivate(self) -> None:
        pass


def test_the_runner_wiring_gives_the_references_codes(onnx_model, monkeypatch) -> None:
    runners: list[OrtAsTrtRunner] = []

    def make(loader: Any) -> OrtAsTrtRunner:
        runners.append(OrtAsTrtRunner(loader))
        return runners[-1]

    monkeypatch.setattr(engine, "tensorrt_unavailable", lambda: None)
    monkeypatch.setattr(engine, "_trt_runner", make)
    runner = engine.TensorrtRunner(onnx_model, max_batch=4)
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    out = runner.run(images, with_codes=True)
    assert runners[-1].batches == [4, 4, 2]  # split at max_batch
    graph = runner.graph
    values = ReferenceModel(graph).run(images, keep=True)
    for node in graph.nodes:
        if node.op == "threshold_act":
            np.testing.assert_array_equal(out.codes[node.source], values[node.output])
    assert np.array_equal(out.logits.argmax(1), values[graph.output].argmax(1))
    plain = runner.run(images)
    assert plain.codes == {} and len(runners) == 2  # the plain engine and the debug one
    np.testing.assert_allclose(plain.logits, out.logits, rtol=0, atol=1e-5)
    times = runner.time(batch=2, warmup=1, repeats=3)
    assert len(times) == 3 and all(t > 0 for t in times)
    runner.close()
