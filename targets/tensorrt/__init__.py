"""The TensorRT target: the integer program as ONNX in TensorRT's explicit-quantization form.

One exported file (``model.onnx``; ``model.int4.onnx`` with INT4 head weights) serves both
runtimes:

- ``onnxruntime`` (CPU, here): a deterministic ``InferenceSession``; the model's integer
  tensors are exact under it (see :mod:`.export`), so ``climbq check`` expects
  ``exact_match`` (every activation code and the top-1 equal the NumPy reference of the same
  program) and fails loudly otherwise. ONNX Runtime would fuse the INT4 ``DequantizeLinear +
  MatMul`` into ``MatMulNBits`` and quantize its activations; the session keeps the float
  path (``session.qdq_matmulnbits_accuracy_level=0``).
- ``tensorrt`` (Jetson / x86 NVIDIA GPU): :mod:`.engine` builds an engine with the TensorRT
  Python API and runs it; where ``tensorrt`` or a GPU is missing it says so in one line.

``--input`` picks the model's input: ``uint8`` (default) NHWC images, normalised inside the
model exactly, batch ``N`` dynamic (:mod:`~climbq_deploy.targets.contract`, the contract in
``metadata_props``); ``int32`` the float32 NCHW integer input ``I`` the host quantizes (the
earlier form). The runners feed each file what it declares (:func:`host_input`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.errors import ArtifactError, ConfigError, TargetUnavailableError
from climbq_deploy.fileio import atomic_write
from climbq_deploy.ir.graph import Graph, InputQuant, ThresholdAct
from climbq_deploy.ir.serialize import load_program_bytes, program_bytes
from climbq_deploy.kernels import ops
from climbq_deploy.targets.base import (
    BITS,
    Lowering,
    RunOutput,
    TargetBase,
    TargetOptions,
    option,
    weights_option,
)
from climbq_deploy.targets.contract import as_images, input_option

RUNTIMES = ("onnxruntime", "tensorrt")


def onnxruntime_module():
    """``onnxruntime``, or None where it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def read_model(path: Path):
    """``(onnx model, program graph, manifest)`` of an ONNX file written by this target."""
    import onnx

    from climbq_deploy.targets.tensorrt.export import read_program_bytes

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"no ONNX model at {path}")
    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except Exception as exc:  # protobuf raises DecodeError and friends from deep inside
        raise ArtifactError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    graph, manifest = load_program_bytes(
        read_program_bytes(model, path), f"{path} (climbq_program)"
    )
    return model, graph, manifest


def takes_images(model) -> bool:
    """True when the ONNX model's input is the uint8 image (the default contract: it
    normalises inside, exactly); False for a file of the int32 input form (float32 ``I``)."""
    from onnx import TensorProto

    return model.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8


def host_input(images: np.ndarray, graph: Graph, model=None) -> np.ndarray:
    """uint8 NHWC ``images`` as the ONNX model's input reads them: the images themselves
    (uint8 NHWC) when ``model`` takes images (:func:`takes_images`); else (a file of the int32
    input form, or ``model`` None) the program input ``I = input_quant(images)`` (exact
    integers) as float32 NCHW."""
    if model is not None and takes_images(model):
        return as_images(images)
    step = next(n for n in graph.nodes if isinstance(n, InputQuant))
    quantized = ops.input_quant(images, step.mean, step.std, step.step)
    return np.ascontiguousarray(quantized.transpose(0, 3, 1, 2), np.float32)


def zero_input(model, graph: Graph, batch: int) -> np.ndarray:
    """Zeros of the model's input for ``batch`` images (uint8 NHWC, or float32 NCHW ``I``):
    what latency is timed on."""
    h, w, c = graph.tensors[graph.input].shape
    if takes_images(model):
        return np.zeros((batch, h, w, c), np.uint8)
    return np.zeros((batch, c, h, w), np.float32)


def with_code_outputs(model, graph: Graph):
    """A copy of ``model`` that also outputs every ``ThresholdAct`` result (NCHW float32)."""
    import onnx
    from onnx import TensorProto, helper

    debug = onnx.ModelProto()
    debug.CopyFrom(model)
    for node in graph.nodes:
        if isinstance(node, ThresholdAct):
            h, w, c = graph.tensors[node.output].shape
            debug.graph.output.append(
                helper.make_tensor_value_info(node.output, TensorProto.FLOAT, ["N", c, h, w])
            )
    return debug


def codes_from(values: dict[str, np.ndarray], graph: Graph) -> dict[str, np.ndarray]:
    """NCHW float code outputs to NHWC int32 by training-side layer name; each value must be
    an integer (a non-integer is a runtime fault, not something to round away)."""
    codes = {}
    for node in graph.nodes:
        if isinstance(node, ThresholdAct):
            value = values[node.output]
            if not np.array_equal(value, np.rint(value)):
                raise ArtifactError(
                    f"layer {node.source!r}: the runtime returned non-integer codes"
                )
            codes[node.source] = value.transpose(0, 2, 3, 1).astype(np.int32)
    return codes


class OnnxRuntimeRunner:
    """Runs an exported ONNX model under ONNX Runtime (CPU), deterministically."""

    runtime = "onnxruntime"
    chunk = 16

    def __init__(self, path: Path, threads: int = 0) -> None:
        ort = onnxruntime_module()
        if ort is None:
            raise TargetUnavailableError(
                "onnxruntime is not installed (pip install climbq-deploy[onnx])"
            )
        self.path = Path(path)
        self.model, self.graph, self.manifest = read_model(self.path)
        self._ort = ort
        self.threads = threads
        self.session = self._session(self.model)
        self._debug = None
        self.input_name = self.model.graph.input[0].name  # "image", or I's name (int32 form)

    def _session(self, model):
        options = self._ort.SessionOptions()
        options.use_deterministic_compute = True
        options.enable_cpu_mem_arena = False  # give the large count tensors back after a run
        options.intra_op_num_threads = self.threads
        # the file's own contract (the INT4 head's accuracy level), and the same for older files
        # written before the contract travelled in them
        from climbq_deploy.targets.tensorrt.export import ORT_SESSION_CONFIG_INT4, session_config

        for key, value in {**ORT_SESSION_CONFIG_INT4, **session_config(model)}.items():
            options.add_session_config_entry(key, value)
        return self._ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    def run(self, images: np.ndarray, with_codes: bool = False) -> RunOutput:
        """Logits (and codes) in chunks of :attr:`chunk` images: the compare-and-count tensors
        are ``levels`` times the activations (MobileNetV2 4-bit, 100 images: tens of GB)."""
        parts = [
            self._run(images[i : i + self.chunk], with_codes)
            for i in range(0, len(images), self.chunk)
        ]
        if not parts:
            return RunOutput(np.zeros((0, 0)))
        codes = {k: np.concatenate([p.codes[k] for p in parts]) for k in parts[0].codes}
        return RunOutput(np.concatenate([p.logits for p in parts]), codes)

    def _run(self, images: np.ndarray, with_codes: bool) -> RunOutput:
        x = host_input(images, self.graph, self.model)
        if not with_codes:
            (logits,) = self.session.run(["logits"], {self.input_name: x})
            return RunOutput(logits.astype(np.float64))
        if self._debug is None:
            self._debug = self._session(with_code_outputs(self.model, self.graph))
        names = [o.name for o in self._debug.get_outputs()]
        values = dict(zip(names, self._debug.run(names, {self.input_name: x}), strict=True))
        return RunOutput(values["logits"].astype(np.float64), codes_from(values, self.graph))


def _has_int4_head(graph: Graph) -> bool:
    """True when the program's head already lies on a 4-bit grid (``--head int4``)."""
    from climbq_deploy.ir.graph import IntLinear

    heads = [n for n in graph.nodes if isinstance(n, IntLinear)]
    return bool(heads) and all(int(np.abs(n.weight).max(initial=0)) <= 7 for n in heads)


@dataclass(frozen=True)
class TensorrtOptions(TargetOptions):
    runtime: str = option(
        "onnxruntime",
        choices=RUNTIMES,
        help="what runs the ONNX model: ONNX Runtime (CPU) or a TensorRT engine (GPU)",
    )
    weights: str = weights_option(  # export.WEIGHTS (imported lazily: it imports onnx)
        "int8 (every weight INT8), or int4 (the head's weights INT4, block-quantized; "
        "convs stay INT8; file model.int4.onnx)"
    )
    form: str = option(  # export.FORMS
        "qdq",
        choices=("qdq", "sign_sum", "int8_dup", "ort"),
        help="how conv layers are written: qdq (TensorRT explicit quantization), or an exact "
        "ONNX Runtime form: sign_sum (float32 conv + clamped-sign sum), int8_dup (QLinearConv "
        "with channels repeated per threshold), ort (int8_dup for <= 3 thresholds, else "
        "sign_sum: fastest measured under ONNX Runtime); the ONNX Runtime forms are not "
        "TensorRT files",
        stage="export",
    )
    input: str = input_option()


class TensorrtTarget(TargetBase):
    """``weights``: ``int8`` (every weight INT8, head as the program has it) or ``int4`` (the
    head's weights INT4, block-quantized; convs stay INT8). ``runtime``: what ``load`` and
    ``bench`` run the model with. ``form``: ``qdq`` (the TensorRT file) or one of the exact,
    faster ONNX Runtime forms of :mod:`.ort_forms` (``ort`` is the measured fastest)."""

    name = "tensorrt"
    summary = "explicit-quantization ONNX for TensorRT or ONNX Runtime, model.onnx"
    suffixes = (".onnx",)
    Options = TensorrtOptions
    input_bits = 20  # 16 bits moves 2-bit codes (top-1 0.3 off torch); the stem splits digits
    exact = True  # every code equals the reference's (check fails loudly otherwise)
    rank = 20
    # Measured (bench/target_lowering.py: random ResNet-20 and MobileNetV2, 2-3 seeds; PTQ
    # models calibrated as `climbq calibrate` does), every head, --weights int8 and int4 alike.
    # Refused: 8-bit weights of the odd grids (beyond INT8, or partial sums reaching 2**24 in
    # the float32 convs that take 8-bit activations); 7-bit ClimbQ weights with 8-bit
    # activations (ResNet partial sums reach 2**24 for every seed).
    lowers = (
        Lowering(("climbq", "climbq+"), (2, 3, 4, 5, 6, 7), BITS, except_pairs=((7, 8),)),
        Lowering(("uniform",), (2, 3, 4, 5, 6, 7), BITS),
        Lowering(("lsq", "ptq"), BITS, BITS),
    )
    options: TensorrtOptions

    @property
    def suffix(self) -> str:
        return ".onnx" if self.options.weights == "int8" else ".int4.onnx"

    @property
    def engine(self) -> str:
        return self.options.runtime

    def unavailable(self) -> str | None:
        if self.options.runtime == "tensorrt":
            from climbq_deploy.targets.tensorrt.engine import tensorrt_unavailable

            return tensorrt_unavailable()
        if onnxruntime_module() is None:
            return "onnxruntime is not installed (pip install climbq-deploy[onnx])"
        return None

    def export(self, graph: Graph, out: Path) -> Path:
        import onnx

        from climbq_deploy.targets.tensorrt.export import int4_head, write_onnx
        from climbq_deploy.targets.tensorrt.rules import check_tensorrt_rules

        weights = self.options.weights
        if weights == "int4" and not _has_int4_head(graph):
            # a float or int8 head is re-quantized to 4 bits: a different program from the
            # int8-weight file's; lower with --head int4 for a pair with identical outputs
            graph = int4_head(graph)
        form = self.options.form
        if form != "qdq" and self.options.runtime == "tensorrt":
            raise ConfigError(f"--form {form} is an ONNX Runtime form; TensorRT needs qdq")
        model = write_onnx(graph, weights, program_bytes(graph), form, self.options.input)
        onnx.checker.check_model(model, full_check=True)
        if form == "qdq":  # the ONNX Runtime forms use ops TensorRT does not parse
            check_tensorrt_rules(model, out)
        with atomic_write(out, "wb") as handle:
            handle.write(model.SerializeToString())
        return Path(out)

    def load(self, path: Path, *, threads: int | None = None) -> Any:
        """The runner; ``threads``: ONNX Runtime's intra-op threads (None: all cores)."""
        if self.options.runtime == "tensorrt":
            from climbq_deploy.targets.tensorrt.engine import TensorrtRunner

            return TensorrtRunner(path)
        return OnnxRuntimeRunner(path, threads=threads or 0)

    def bench(
        self, path: Path, *, batch: int, threads: int, warmup: int, repeats: int
    ) -> dict[str, Any]:
        from climbq_deploy.targets.tensorrt.bench import bench_onnx

        return bench_onnx(path, self.options.runtime, batch, threads, warmup, repeats)


TARGET = TensorrtTarget

__all__ = [
    "RUNTIMES",
    "OnnxRuntimeRunner",
    "TensorrtTarget",
    "host_input",
    "read_model",
    "takes_images",
    "zero_input",
]
