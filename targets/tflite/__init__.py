"""The LiteRT (TFLite) target: the integer program as LiteRT ops, run by ``ai_edge_litert``
(or ``tflite_runtime``'s Interpreter where a device only has that).

``--ops`` picks the form (all exact, the same codes and logits):

- ``builtin`` (default): per layer the fastest exact form on builtin ops that XNNPACK runs
  (:mod:`.forms`: float32 or int8 convs and the sign sum), any stock LiteRT;
- ``climbq``: the layers as climbq_deploy's fused conv-and-count kernel, the custom op
  ``CLIMBQ_CONV_COUNT`` (:mod:`.custom_op`), registered by ``climbq check``/``bench``
  through LiteRT's C API (:mod:`.fused_runner`); layers it cannot take stay builtin;
- ``int16``: the first exact form (16x8 convs, GREATER_EQUAL/CAST/SUM counts), kept for
  comparison: mostly outside XNNPACK, ~100x slower.

``--input`` picks the model's input: ``uint8`` (default) NHWC images, normalised inside the
model exactly, any batch (:mod:`~climbq_deploy.targets.contract`, the contract in the file's
metadata); ``int32`` the integer input ``I`` the host quantizes (the earlier form).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.errors import ArtifactError, ConfigError, TargetUnavailableError
from climbq_deploy.fileio import atomic_write
from climbq_deploy.ir.graph import Graph, InputQuant, ThresholdAct
from climbq_deploy.ir.serialize import program_bytes
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

KERNELS = ("xnnpack", "optimized", "ref")
OPS = ("builtin", "climbq", "int16")
# our kernel names -> LiteRT's OpResolverType member
RESOLVERS = {
    "xnnpack": "AUTO",
    "optimized": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
    "ref": "BUILTIN_REF",
}


def interpreter_module():
    """The LiteRT interpreter module, or tflite-runtime's where only that is installed."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:  # a device with only tflite-runtime
        try:
            from tflite_runtime import interpreter  # type: ignore[no-redef]
        except ImportError:
            return None
    return interpreter


class TfliteRunner:
    """Runs an exported ``.tflite`` one image at a time (the file's stored batch, 1). A model
    of the uint8 contract is fed the images as they are; a file of the int32 input form, the
    integer input ``I`` quantized here (:meth:`feed`)."""

    def __init__(self, path: Path, kernels: str = "xnnpack") -> None:
        from climbq_deploy.targets.tflite.reader import read_tflite

        if kernels not in KERNELS:
            raise ConfigError(f"kernels must be one of {KERNELS}, got {kernels!r}")
        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactError(f"no .tflite model at {self.path}")
        content = self.path.read_bytes()
        # The whole file is checked before LiteRT's C++ parser sees it (a crafted flatbuffer
        # can crash the interpreter's process).
        self.graph, self.manifest = read_tflite(content, self.path)
        self.kernels = kernels
        self._step = next(n for n in self.graph.nodes if isinstance(n, InputQuant))
        self._acts = {n.output: n.source for n in self.graph.nodes if isinstance(n, ThresholdAct)}
        self._content = content
        self._rectify_acts(content)
        from climbq_deploy.targets.tflite.custom_op import uses_custom_op

        self.fused = uses_custom_op(content)
        if self.fused:
            self._open_fused(content)
            return
        module = interpreter_module()
        if module is None:
            raise TargetUnavailableError(
                "no LiteRT interpreter (pip install climbq-deploy[tflite])"
            )
        resolver = RESOLVERS[kernels]

        def make(keep: bool):
            try:
                with warnings.catch_warnings():  # keep=True (codes for check) is deliberate
                    warnings.simplefilter("ignore", UserWarning)
                    interpreter = module.Interpreter(
                        model_content=content,
                        experimental_op_resolver_type=getattr(module.OpResolverType, resolver),
                        experimental_preserve_all_tensors=keep,
                    )
                interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as exc:  # LiteRT's verifier and kernel Prepare
                raise ArtifactError(f"{self.path}: LiteRT refuses the model: {exc}") from None
            return interpreter

        self._make = make
        self._plain = self._make(False)
        self._debug = None
        # uint8 (images), or int16/int32 (I) in a file of the int32 input form
        self._input_dtype = self._plain.get_input_details()[0]["dtype"]

    def _rectify_acts(self, content: bytes) -> None:
        """A layer whose ReLU the writer fused into it (forms.rectifier) stores only the
        rectified code, under the ReLU's name: read that tensor, compared as max(code, 0)."""
        from climbq_deploy.targets.tflite.forms import rectifier
        from climbq_deploy.targets.tflite.fused_runner import tensor_names

        present = set(tensor_names(content))
        self._rectified: set[str] = set()
        acts = {}
        for name, source in self._acts.items():
            relu = rectifier(self.graph, name)
            if name not in present and relu is not None and relu.output in present:
                acts[relu.output] = source
                self._rectified.add(source)
            else:
                acts[name] = source
        self._acts = acts

    def _open_fused(self, content: bytes) -> None:
        """A model with the ``CLIMBQ_CONV_COUNT`` op runs through LiteRT's C API with the
        op registered (:class:`.fused_runner.FusedRunner`, XNNPACK for the builtin ops)."""
        from climbq_deploy.targets.tflite import custom_op
        from climbq_deploy.targets.tflite.fused_runner import FusedRunner, with_outputs

        if self.kernels != "xnnpack":
            raise ConfigError(
                f"{self.path} holds the fused {custom_op.CUSTOM_CODE} op, which runs through "
                f"LiteRT's C API with XNNPACK only; --kernels {self.kernels} applies to "
                "models exported with --ops builtin or int16"
            )
        reason = custom_op.support()
        if reason is not None:
            raise TargetUnavailableError(
                f"{self.path} uses the custom op {custom_op.CUSTOM_CODE} (climbq_deploy's "
                f"fused kernel), which cannot run here: {reason}; export with --ops builtin"
            )
        self._plain = FusedRunner(content, threads=1, path=self.path)
        self._debug = None
        self._make_debug = lambda: FusedRunner(
            with_outputs(content, list(self._acts)), threads=1, path=self.path
        )
        self._input_dtype = self._plain.zero_input().dtype

    @property
    def takes_images(self) -> bool:
        """True for a model of the uint8 image contract (it normalises inside, exactly)."""
        return self._input_dtype == np.uint8

    def feed(self, images: np.ndarray) -> np.ndarray:
        """What the model's input reads for uint8 NHWC ``images``: the images themselves
        (uint8 contract), else the integer input ``I`` quantized here
        (:func:`~climbq_deploy.kernels.ops.input_quant`) in the model's int16/int32."""
        if self.takes_images:
            return as_images(images)
        step = self._step
        return ops.input_quant(images, step.mean, step.std, step.step).astype(self._input_dtype)

    def run(self, images: np.ndarray, with_codes: bool = False) -> RunOutput:
        """Logits (and with ``with_codes`` every layer's codes) of uint8 NHWC ``images``, one
        image per invoke."""
        if self.fused:
            return self._run_fused(images, with_codes)
        if with_codes and self._debug is None:
            self._debug = self._make(True)
        it = self._debug if with_codes else self._plain
        names = {d["name"]: d["index"] for d in it.get_tensor_details()} if with_codes else {}
        missing = sorted(set(self._acts) - set(names)) if with_codes else []
        if missing:
            raise ArtifactError(
                f"{self.path}: the model lacks the code tensors {missing[:4]} of "
                "its embedded program"
            )
        feed = self.feed(images)
        logits, codes = [], {source: [] for source in self._acts.values()}
        for i in range(len(images)):
            it.set_tensor(it.get_input_details()[0]["index"], feed[i : i + 1])
            try:
                it.invoke()
            except RuntimeError as exc:
                raise ArtifactError(f"{self.path}: LiteRT fails to run the model: {exc}") from None
            logits.append(it.get_tensor(it.get_output_details()[0]["index"]).astype(np.float64))
            for name, source in self._acts.items() if with_codes else ():
                codes[source].append(it.get_tensor(names[name]).astype(np.int64))
        joined = {k: np.concatenate(v) for k, v in codes.items()} if with_codes else {}
        return RunOutput(np.concatenate(logits), joined, frozenset(self._rectified))

    def _run_fused(self, images: np.ndarray, with_codes: bool) -> RunOutput:
        if with_codes and self._debug is None:
            self._debug = self._make_debug()
        runner = self._debug if with_codes else self._plain
        feed = self.feed(images)
        logits, codes = [], {source: [] for source in self._acts.values()}
        for i in range(len(images)):
            outputs = runner.run(feed[i : i + 1])
            logits.append(outputs[0].astype(np.float64))
            if with_codes:
                for source, value in zip(self._acts.values(), outputs[1:], strict=True):
                    codes[source].append(value.astype(np.int64))
        joined = {k: np.concatenate(v) for k, v in codes.items()} if with_codes else {}
        return RunOutput(np.concatenate(logits), joined, frozenset(self._rectified))


@dataclass(frozen=True)
class TfliteOptions(TargetOptions):
    kernels: str = option(
        "xnnpack",
        choices=KERNELS,
        help="LiteRT kernels: its default (XNNPACK), builtin optimized, or reference",
    )
    weights: str = weights_option(  # export.WEIGHT_FORMS (imported lazily: it is not cheap)
        "filters as int8, or as packed INT4 wherever that is exact (same outputs; int16 "
        "layers only)"
    )
    ops: str = option(
        "builtin",
        choices=OPS,
        help="layer form: builtin (fast exact XNNPACK forms, any LiteRT), climbq (fused "
        "CLIMBQ_CONV_COUNT custom op, registered by climbq check/bench), int16 (first form)",
        stage="export",
    )
    input: str = input_option()


class TfliteTarget(TargetBase):
    """``weights``: how the exported file stores weights; ``kernels``: the LiteRT kernels
    that ``load`` and ``bench`` run it with."""

    name = "tflite"
    summary = "LiteRT (TFLite) builtin integer ops, model.tflite"
    suffixes = (".tflite",)
    Options = TfliteOptions
    input_bits = 20  # 16 bits moves 2-bit codes (top-1 0.3 off torch); the stem splits digits
    rank = 10
    # Declared for every --ops: the int16 form's limits (the builtin forms fall back to it
    # per layer where neither of theirs is exact; they lower more, e.g. ClimbQ w7, which is
    # not declared). Measured (bench/target_lowering.py: random ResNet-20 and MobileNetV2,
    # 2-3 seeds; PTQ models calibrated as `climbq calibrate` does), the same for --weights
    # int8 and int4.
    # Refused: the int8 and int4 heads (no TFLite form of the integer head yet); 8-bit weights
    # of the odd grids (stem weights too large for the int16 digit split); 7-bit ClimbQ weights
    # (the 20-bit input times the stem's weights exceeds int32 for 1 in 2-3 random models, and
    # for the trained 7-bit run of issue 44: a 7-bit grid reaches 127, 27 taps x 127 > 2047).
    lowers = (
        Lowering(("climbq", "climbq+"), (2, 3, 4, 5, 6), BITS, ("float",)),
        Lowering(("uniform",), (2, 3, 4, 5, 6, 7), BITS, ("float",)),
        Lowering(("lsq", "ptq"), BITS, BITS, ("float",)),
    )
    options: TfliteOptions

    @property
    def engine(self) -> str:
        return self.options.kernels

    def unavailable(self) -> str | None:
        if interpreter_module() is None:
            return "no LiteRT interpreter (pip install climbq-deploy[tflite])"
        if self.options.ops == "climbq":
            from climbq_deploy.targets.tflite.custom_op import support

            return support()
        return None

    def export(self, graph: Graph, out: Path) -> Path:
        from climbq_deploy.targets.tflite.export import write_tflite
        from climbq_deploy.targets.tflite.flavour import int16_flavour

        if self.options.weights == "int4" and self.options.ops != "int16":
            raise ConfigError(
                f"--weights int4 packs the int16 form's filters; --ops {self.options.ops} "
                "stores int8 (and float32) filters: export with --ops int16 --weights int4"
            )
        flavour = int16_flavour(graph)
        program, weights = program_bytes(flavour), self.options.weights
        form = self.options.input
        if self.options.ops == "int16":
            content = write_tflite(flavour, 1, program, weights, input_form=form)
        else:
            from climbq_deploy.targets.tflite.forms import write_fast_tflite

            fused = self.options.ops == "climbq"
            content, _ = write_fast_tflite(
                flavour, 1, program, weights, fused=fused, input_form=form
            )
        with atomic_write(out, "wb") as handle:
            handle.write(content)
        return Path(out)

    def load(self, path: Path, *, threads: int | None = None) -> TfliteRunner:
        """The runner (LiteRT's default thread count; ``bench`` times with ``threads``)."""
        return TfliteRunner(path, self.options.kernels)

    def bench(
        self, path: Path, *, batch: int, threads: int, warmup: int, repeats: int
    ) -> dict[str, Any]:
        """LiteRT invokes of one batch of ``batch`` inputs (the model's batch axis resized;
        1 for the fused op's C API route)."""
        from climbq_deploy.targets.tflite.bench import bench_tflite

        return bench_tflite(path, threads, self.options.kernels, warmup, repeats, batch=batch)


TARGET = TfliteTarget
