"""Run and time an exported ONNX model as a TensorRT engine, through Polygraphy's ``TrtRunner``
(Jetson / x86 NVIDIA GPU).

Polygraphy is NVIDIA's own tool for this (``polygraphy run model.onnx --trt --onnxrt``): it
parses the ONNX model, builds the engine and owns the device buffers, the stream and the
copies; this module only says how to build it and maps the outputs back. TensorRT cannot be
installed on the machines this toolkit is developed on: there :func:`tensorrt_unavailable`
gives the one-line reason and the CLI exits with code 3
(:class:`~climbq_deploy.errors.TargetUnavailableError`). The wiring (build settings, batches,
output mapping) is tested with Polygraphy's runner stood in by ONNX Runtime
(tests/targets/test_tensorrt_engine.py); the engine itself has not run on a GPU here.

Build settings (``CreateConfig``): **explicit quantization** (the model's Q/DQ nodes decide
INT8 / INT4; ``int8=True`` as TensorRT 10 still expects for Q/DQ networks), **TF32 off** (the
float stem must add integers exactly), FP16 off unless ``fp16=True`` (then the float parts
may run in FP16 and the integer program is no longer exact), one optimization profile for
batch 1..``max_batch`` on the input's batch axis. TensorRT may reorder float additions; the
integer tensors stay exact (all below 2**24) but the float head is not bit-identical to ONNX
Runtime's. What users run by hand is the same build::

    trtexec --onnx=model.onnx --int8 --noTF32 --minShapes=input:1x... --maxShapes=input:64x...
    polygraphy run model.onnx --trt --int8 --onnxrt   # TensorRT against ONNX Runtime
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.errors import ArtifactError, TargetUnavailableError
from climbq_deploy.targets.base import RunOutput

EXIT_UNAVAILABLE = TargetUnavailableError.exit_code
MAX_BATCH = 64


def tensorrt_unavailable() -> str | None:
    """None where Polygraphy, TensorRT and a CUDA GPU are usable, else the reason (one line)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return (
            "the tensorrt Python package is not installed (use a JetPack 6 or NVIDIA "
            "TensorRT container: targets/jetson, targets/x86-gpu)"
        )
    try:
        import polygraphy  # noqa: F401
    except ImportError:
        return "polygraphy is not installed (pip install 'climbq-deploy[tensorrt]')"
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]  # cuda-python < 12.6
        except ImportError:
            return "cuda-python is not installed (pip install 'cuda-python>=12.6,<13')"
    error, count = cudart.cudaGetDeviceCount()
    if int(error) != 0 or count < 1:
        return f"no CUDA GPU ({error}; TensorRT needs an NVIDIA GPU)"
    return None


def engine_loader(
    onnx_bytes: bytes,
    input_name: str,
    input_shape: tuple[int, ...],
    *,
    max_batch: int = MAX_BATCH,
    fp16: bool = False,
) -> Any:
    """Polygraphy's lazy engine builder for ``onnx_bytes``: explicit-quantization INT8, TF32
    off, FP16 only when asked, batch 1..``max_batch`` on axis 0 of ``input_name`` (whose
    other dimensions are ``input_shape``)."""
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineFromNetwork,
        NetworkFromOnnxBytes,
        Profile,
    )

    profile = Profile().add(
        input_name,
        min=(1, *input_shape),
        opt=(max_batch, *input_shape),
        max=(max_batch, *input_shape),
    )
    config = CreateConfig(int8=True, tf32=False, fp16=fp16, profiles=[profile])
    return EngineFromNetwork(NetworkFromOnnxBytes(onnx_bytes), config=config)


def _trt_runner(loader: Any) -> Any:
    """Polygraphy's ``TrtRunner`` over ``loader`` (a seam for tests without a GPU)."""
    from polygraphy.backend.trt import TrtRunner

    return TrtRunner(loader)


class TensorrtRunner:
    """Runs an exported ONNX model as a TensorRT engine via Polygraphy (built at load, batch
    1..``max_batch``).

    ``run`` feeds batches of at most ``max_batch``; with ``with_codes`` a second engine, built
    from the model with every code tensor as an output (which may block some fusions), is used.
    """

    runtime = "tensorrt"

    def __init__(self, path: Path, max_batch: int = MAX_BATCH, fp16: bool = False) -> None:
        from climbq_deploy.targets.tensorrt import read_model

        reason = tensorrt_unavailable()
        if reason:
            raise TargetUnavailableError(f"TensorRT cannot run here: {reason}")
        self.path = Path(path)
        self.model, self.graph, self.manifest = read_model(self.path)
        first = self.model.graph.input[0]
        self.input_name = first.name
        dims = first.type.tensor_type.shape.dim[1:]
        self.input_shape = tuple(int(d.dim_value) for d in dims)
        self.max_batch, self.fp16 = max_batch, fp16
        self._plain = self._open(self.model)
        self._debug: Any = None

    def _open(self, model: Any) -> Any:
        loader = engine_loader(
            model.SerializeToString(),
            self.input_name,
            self.input_shape,
            max_batch=self.max_batch,
            fp16=self.fp16,
        )
        runner = _trt_runner(loader)
        try:
            runner.activate()  # builds the engine, allocates buffers
        except Exception as exc:  # TensorRT's parser/builder errors come as many kinds
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ArtifactError(
                f"{self.path}: TensorRT could not build an engine: {first}"
            ) from None
        return runner

    def _infer(self, runner: Any, x: np.ndarray) -> dict[str, np.ndarray]:
        parts = [
            runner.infer({self.input_name: x[i : i + self.max_batch]})
            for i in range(0, len(x), self.max_batch)
        ]
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}

    def run(self, images: np.ndarray, with_codes: bool = False) -> RunOutput:
        from climbq_deploy.targets.tensorrt import codes_from, host_input, with_code_outputs

        if with_codes and self._debug is None:
            self._debug = self._open(with_code_outputs(self.model, self.graph))
        values = self._infer(
            self._debug if with_codes else self._plain,
            host_input(images, self.graph, self.model),
        )
        codes = codes_from(values, self.graph) if with_codes else {}
        return RunOutput(values["logits"].astype(np.float64), codes)

    def time(self, batch: int, warmup: int = 10, repeats: int = 100) -> list[float]:
        """Milliseconds per ``TrtRunner.infer`` of one batch of zeros (wall clock, host to
        device copy, execution and device to host copy, as ``polygraphy run`` reports)."""
        x = np.zeros((batch, *self.input_shape), self._input_dtype())
        for _ in range(warmup):
            self._plain.infer({self.input_name: x})
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            self._plain.infer({self.input_name: x})
            times.append((time.perf_counter() - began) * 1000)
        return times

    def _input_dtype(self) -> Any:
        from onnx import helper

        elem = self.model.graph.input[0].type.tensor_type.elem_type
        return helper.tensor_dtype_to_np_dtype(elem)

    def close(self) -> None:
        for runner in (self._plain, self._debug):
            if runner is not None:
                runner.deactivate()
