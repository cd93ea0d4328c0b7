"""Build, run and time a TensorRT engine from an exported ONNX model (Jetson / x86 NVIDIA GPU).

Written for the TensorRT 10 Python API (JetPack 6.1+ and NVIDIA's TensorRT containers); device
buffers, the stream and the CUDA events come from cuda-python's runtime bindings (not torch:
PyPI's torch has no CUDA build for Jetson). Not verified on a GPU
here: ``tensorrt`` cannot be installed on the machines this toolkit is developed on, where
:func:`tensorrt_unavailable` gives the one-line reason and the CLI exits with code 3
(:class:`~climbq_deploy.errors.TargetUnavailableError`).

Build settings: explicit quantization (the model's Q/DQ nodes decide INT8 / INT4; the INT8
builder flag is set where this TensorRT still has it), TF32 off (the stem runs in FP32 and must
add integers exactly), FP16 off unless ``fp16=True`` (then the float parts may run in FP16 and
the integer program is no longer exact), one optimization profile for batch 1..``max_batch``.
TensorRT may reorder float additions; the integer tensors stay exact (all below 2**24) but the
float head is not bit-identical to ONNX Runtime's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.errors import ArtifactError, TargetUnavailableError
from climbq_deploy.targets.base import RunOutput

EXIT_UNAVAILABLE = TargetUnavailableError.exit_code


def tensorrt_unavailable() -> str | None:
    """None where TensorRT and a CUDA GPU are usable, else the reason (one line)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return (
            "the tensorrt Python package is not installed (use a JetPack 6 or NVIDIA "
            "TensorRT container: targets/jetson, targets/x86-gpu)"
        )
    cuda = _cudart()
    if cuda is None:
        return "cuda-python is not installed (pip install 'cuda-python>=12.6,<13')"
    error, count = cuda.cudaGetDeviceCount()
    if int(error) != 0 or count < 1:
        return f"no CUDA GPU ({error}; TensorRT needs an NVIDIA GPU)"
    return None


def build_engine(
    onnx_bytes: bytes, input_shape: tuple[int, int, int], max_batch: int = 64, fp16: bool = False
) -> bytes:
    """The serialized engine of an ONNX model (``input_shape`` = ``(C, H, W)``)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"TensorRT's ONNX parser rejected the model: {errors}")
    config = builder.create_builder_config()
    if hasattr(trt.BuilderFlag, "INT8"):
        config.set_flag(trt.BuilderFlag.INT8)
    config.clear_flag(trt.BuilderFlag.TF32)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, (1, *input_shape), (max_batch, *input_shape), (max_batch, *input_shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ArtifactError("TensorRT could not build an engine from the model (see its log)")
    return bytes(serialized)


class TensorrtRunner:
    """Runs an exported ONNX model as a TensorRT engine (built at load, batch 1..64).

    ``run`` feeds batches of at most ``max_batch``; with ``with_codes`` a second engine built
    from the model with every code tensor as an output (which may block some fusions) is used.
    """

    runtime = "tensorrt"

    def __init__(self, path: Path, max_batch: int = 64, fp16: bool = False) -> None:
        from climbq_deploy.targets.tensorrt import read_model

        reason = tensorrt_unavailable()
        if reason:
            raise TargetUnavailableError(f"TensorRT cannot run here: {reason}")
        self.path = Path(path)
        self.model, self.graph, self.manifest = read_model(self.path)
        h, w, c = self.graph.tensors[self.graph.input].shape
        self.input_shape = (c, h, w)
        self.max_batch, self.fp16 = max_batch, fp16
        self._plain = _Engine(self.model.SerializeToString(), self.input_shape, max_batch, fp16)
        self._debug: _Engine | None = None

    def run(self, images: np.ndarray, with_codes: bool = False) -> RunOutput:
        from climbq_deploy.targets.tensorrt import codes_from, host_input, with_code_outputs

        if with_codes and self._debug is None:
            debug = with_code_outputs(self.model, self.graph).SerializeToString()
            self._debug = _Engine(debug, self.input_shape, self.max_batch, self.fp16)
        engine = self._debug if with_codes else self._plain
        x = host_input(images, self.graph)
        parts = [engine.infer(x[i : i + self.max_batch]) for i in range(0, len(x), self.max_batch)]
        values = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        codes = codes_from(values, self.graph) if with_codes else {}
        return RunOutput(values["logits"].astype(np.float64), codes)

    def time(self, batch: int, warmup: int = 10, repeats: int = 100) -> list[float]:
        """Milliseconds per ``execute_async_v3`` of one batch, measured with CUDA events."""
        return self._plain.time(batch, warmup, repeats)


def _cudart() -> Any:
    """cuda-python's CUDA runtime bindings (``cuda.bindings.runtime``, or the older
    ``cuda.cudart``), or None."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6
        except ImportError:
            return None
    return runtime


def _call(result: Any) -> Any:
    """Unpack a cuda-python ``(error, *values)`` result, raising on a CUDA error."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise ArtifactError(f"CUDA error {error}")
    return values[0] if len(values) == 1 else values


class _Engine:
    """One deserialized engine with its execution context, stream and device buffers
    (float32 everywhere: the model's input and every output are float32)."""

    def __init__(
        self, onnx_bytes: bytes, input_shape: tuple[int, int, int], max_batch: int, fp16: bool
    ) -> None:
        import tensorrt as trt

        self.cuda = _cudart()
        self.input_shape = input_shape
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(
            build_engine(onnx_bytes, input_shape, max_batch, fp16)
        )
        self.context = self.engine.create_execution_context()
        self.stream = _call(self.cuda.cudaStreamCreate())
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input = next(n for n in names if self.engine.get_tensor_mode(n) == mode)
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _device(self, name: str, nbytes: int) -> int:
        pointer, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                _call(self.cuda.cudaFree(pointer))
            pointer = int(_call(self.cuda.cudaMalloc(nbytes)))
            self.buffers[name] = (pointer, nbytes)
        self.context.set_tensor_address(name, pointer)
        return pointer

    def _bind(self, batch: int) -> dict[str, np.ndarray]:
        """Set the input shape and every tensor address; host arrays for the outputs."""
        shape = (batch, *self.input_shape)
        self.context.set_input_shape(self.input, shape)
        self._device(self.input, int(np.prod(shape)) * 4)
        out = {}
        for name in self.outputs:
            out[name] = np.empty(tuple(self.context.get_tensor_shape(name)), np.float32)
            self._device(name, out[name].nbytes)
        return out

    def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        cuda = self.cuda
        x = np.ascontiguousarray(x, np.float32)
        out = self._bind(len(x))
        to_device, to_host = (
            cuda.cudaMemcpyKind.cudaMemcpyHostToDevice,
            (cuda.cudaMemcpyKind.cudaMemcpyDeviceToHost),
        )
        _call(
            cuda.cudaMemcpyAsync(
                self.buffers[self.input][0], x.ctypes.data, x.nbytes, to_device, self.stream
            )
        )
        if not self.context.execute_async_v3(int(self.stream)):
            raise ArtifactError("TensorRT execution failed (see its log)")
        for name, host in out.items():
            _call(
                cuda.cudaMemcpyAsync(
                    host.ctypes.data, self.buffers[name][0], host.nbytes, to_host, self.stream
                )
            )
        _call(cuda.cudaStreamSynchronize(self.stream))
        return out

    def time(self, batch: int, warmup: int, repeats: int) -> list[float]:
        """Device milliseconds per inference (``cudaEventElapsedTime`` around each one)."""
        cuda = self.cuda
        self._bind(batch)  # input left as allocated: latency does not depend on the values
        for _ in range(warmup):
            self.context.execute_async_v3(int(self.stream))
        _call(cuda.cudaStreamSynchronize(self.stream))
        start, end = _call(cuda.cudaEventCreate()), _call(cuda.cudaEventCreate())
        times = []
        for _ in range(repeats):
            _call(cuda.cudaEventRecord(start, self.stream))
            self.context.execute_async_v3(int(self.stream))
            _call(cuda.cudaEventRecord(end, self.stream))
            _call(cuda.cudaEventSynchronize(end))
            times.append(float(_call(cuda.cudaEventElapsedTime(start, end))))
        return times
