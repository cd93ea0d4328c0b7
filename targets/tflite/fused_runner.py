"""Run a ``.tflite`` with ``CLIMBQ_CONV_COUNT`` custom ops through LiteRT's public C API.

Route (issue 40): ``libLiteRt.so``, shipped in the ai-edge-litert wheel, exports LiteRT's
versioned C API (symbol version ``VERS_1.0``): environment, model, options with
``LiteRtAddCustomOpKernelOption``, compiled model, tensor buffers. The small C shim
``native/climbq_litert_runner.c`` opens it and the fused kernel library with ``dlopen``,
registers the op's kernel and runs the compiled model; this module drives the shim with ctypes.
The builtin ops of the model still run in XNNPACK (LiteRT's CPU accelerator).

What the route cannot do: LiteRT's compiled model exposes only the model's inputs and outputs,
not its intermediate tensors; :func:`with_outputs` rewrites a model so that named intermediate
tensors (the per-layer codes a check compares) become extra outputs. The fused kernel runs on
the invoking thread (``threads`` sets XNNPACK's threads for the builtin ops).

Libraries: the kernel is ``climbq_deploy.kernels.native.library_path()`` (the environment
variable ``CLIMBQ_NATIVE_LIB`` names another build, e.g. for tests); the shim is the packaged
``_climbq_litert_runner*.so`` next to this module, else it is compiled once with ``cc`` (or
``$CC``) into ``$XDG_CACHE_HOME/climbq_deploy``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path

import numpy as np

from climbq_deploy.errors import ArtifactError, TargetUnavailableError
from climbq_deploy.targets.tflite import custom_op
from climbq_deploy.targets.tflite.custom_op import (
    CUSTOM_CODE,
    PARAM_FIELDS,
    conv_count_options,
    parse_conv_count_options,
    runner_source,
)

__all__ = [
    "TESTED_LITERT",
    "FusedRunner",
    "kernel_library",
    "probe",
    "tensor_names",
    "with_outputs",
]

# ai-edge-litert releases (major.minor) whose libLiteRt.so this route was run against. The C
# API's symbols are versioned, but LiteRtCreateModelFromBuffer gained an argument in 2026-06
# under the same VERS_1.0: a release not listed here is refused (the builtin form is used).
TESTED_LITERT = ("2.3",)
_ERR = 512
# TFLite TensorType -> (LiteRtElementType, NumPy dtype) of model inputs and outputs
_TYPES = {
    0: (1, np.dtype("<f4")),
    2: (2, np.dtype("<i4")),
    3: (3, np.dtype(np.uint8)),
    4: (4, np.dtype("<i8")),
    6: (6, np.dtype(np.bool_)),
    7: (7, np.dtype("<i2")),
    9: (9, np.dtype(np.int8)),
}


def kernel_library() -> Path | None:
    """The fused kernel's shared library, or None when it is not built."""
    override = os.environ.get("CLIMBQ_NATIVE_LIB")
    if override:
        return Path(override) if Path(override).is_file() else None
    try:
        from climbq_deploy.kernels import native
    except ImportError:
        return None
    path = native.library_path()
    return Path(path) if path is not None and Path(path).is_file() else None


def _litert_library() -> Path:
    import ai_edge_litert

    return Path(ai_edge_litert.__file__).with_name("libLiteRt.so")


def _runner_library() -> Path:
    """The shim: packaged next to this module, else compiled once into the user cache."""
    here = Path(__file__).parent
    packaged = sorted(here.glob("_climbq_litert_runner*.so"))
    if packaged:
        return packaged[0]
    source = runner_source()
    header = Path(__file__).parents[2] / "kernels" / "csrc" / "climbq_conv_count.h"
    if not source.is_file() or not header.is_file():
        raise TargetUnavailableError(f"the LiteRT runner shim is not built ({source} missing)")
    digest = hashlib.sha256(source.read_bytes() + header.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "climbq_deploy"
    target = cache / f"climbq_litert_runner-{digest}.so"
    if target.is_file():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise TargetUnavailableError("no C compiler to build the LiteRT runner shim")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        built = Path(tmp) / target.name
        command = [compiler, "-O2", "-fPIC", "-shared", "-I", str(header.parent), str(source)]
        done = subprocess.run(
            [*command, "-o", str(built), "-ldl"], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise TargetUnavailableError(
                f"building the LiteRT runner shim failed: {done.stderr.strip()[:300]}"
            )
        built.replace(target)
    return target


_LIB: dict[str, ctypes.CDLL] = {}


def _shim() -> ctypes.CDLL:
    """The loaded shim, with libLiteRt.so and the kernel opened (TargetUnavailableError)."""
    if "lib" in _LIB:
        return _LIB["lib"]
    if sys.byteorder != "little":
        raise TargetUnavailableError("the custom options are little-endian; this CPU is not")
    try:
        version = metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        raise TargetUnavailableError("ai-edge-litert is not installed") from None
    if ".".join(version.split(".")[:2]) not in TESTED_LITERT:
        raise TargetUnavailableError(
            f"ai-edge-litert {version} is not a release the LiteRT C API route was tested "
            f"with ({', '.join(TESTED_LITERT)})"
        )
    litert = _litert_library()
    if not litert.is_file():
        raise TargetUnavailableError(f"ai-edge-litert {version} ships no {litert.name}")
    kernel = kernel_library()
    if kernel is None:
        raise TargetUnavailableError("the fused kernel library (_climbq_native) is not built")
    lib = ctypes.CDLL(str(_runner_library()))
    lib.cqlr_load.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.cqlr_create.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_char_p,
    ]
    lib.cqlr_io_data.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_size_t)]
    lib.cqlr_io_data.restype = ctypes.c_void_p
    lib.cqlr_run.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.cqlr_counts.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_long)] * 1 + [
        ctypes.POINTER(ctypes.c_long)
    ]
    lib.cqlr_destroy.argtypes = [ctypes.c_void_p]
    err = ctypes.create_string_buffer(_ERR)
    if lib.cqlr_load(str(litert).encode(), str(kernel).encode(), err) != 0:
        raise TargetUnavailableError(err.value.decode(errors="replace"))
    _LIB["lib"] = lib
    return lib


def _nodes(content: bytes, where: str) -> list[tuple[dict[str, int], np.ndarray, np.ndarray]]:
    """``(params, weight, thresholds)`` of every CLIMBQ_CONV_COUNT operator, in file order."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    custom = {
        i
        for i in range(model.OperatorCodesLength())
        if (model.OperatorCodes(i).CustomCode() or b"").decode("ascii", "replace") == CUSTOM_CODE
    }
    graph = model.Subgraphs(0)
    nodes = []
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        if op.OpcodeIndex() not in custom:
            continue
        here = f"{where}: operator {k} ({CUSTOM_CODE})"
        params = parse_conv_count_options(op.CustomOptionsAsNumpy().tobytes(), here)
        if op.InputsLength() != 3:
            raise ArtifactError(f"{here}: {op.InputsLength()} inputs, not 3")
        data = []
        for position, dtype in ((1, np.int8), (2, np.dtype("<i4"))):
            tensor = graph.Tensors(op.Inputs(position))
            raw = model.Buffers(tensor.Buffer()).DataAsNumpy()
            data.append(np.frombuffer(bytes(raw) if not isinstance(raw, int) else b"", dtype))
        p = params
        cin = p["in_c"] if p["groups"] == 1 else 1
        sizes = (p["out_c"] * p["kernel_h"] * p["kernel_w"] * cin, p["out_c"] * p["levels"])
        if (data[0].size, data[1].size) != sizes:
            raise ArtifactError(
                f"{here}: constant weight/thresholds of {data[0].size}/{data[1].size} "
                f"elements; the options need {sizes[0]}/{sizes[1]}"
            )
        nodes.append((params, data[0], data[1]))
    return nodes


def _io(content: bytes, where: str) -> tuple[list[tuple[str, int, tuple[int, ...]]], int]:
    """``([(name, TensorType, shape)] of inputs then outputs, number of inputs)``."""
    from ai_edge_litert import schema_py_generated as schema

    graph = schema.Model.GetRootAs(content, 0).Subgraphs(0)
    io = []
    for index in [*graph.InputsAsNumpy().tolist(), *graph.OutputsAsNumpy().tolist()]:
        tensor = graph.Tensors(index)
        if tensor.Type() not in _TYPES or tensor.ShapeLength() > 8:
            raise ArtifactError(f"{where}: model input/output {index} of type {tensor.Type()}")
        name = (tensor.Name() or b"").decode("utf-8", "replace")
        io.append((name, tensor.Type(), tuple(int(d) for d in tensor.ShapeAsNumpy())))
    return io, graph.InputsLength()


@contextlib.contextmanager
def _quiet_stderr(log: list[str]) -> Iterator[None]:
    """Hold back what native code writes to fd 2 (LiteRT logs INFO lines on every compile);
    the text is appended to ``log`` for an error message."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            log.append(held.read().decode(errors="replace"))


def _errors(log: list[str]) -> str:
    """LiteRT's ERROR lines of a held-back log, joined (at most 400 characters)."""
    lines = [line.strip() for text in log for line in text.splitlines() if "ERROR" in line]
    return "; ".join(lines)[-400:]


class FusedRunner:
    """One compiled LiteRT model with ``CLIMBQ_CONV_COUNT`` registered (CPU, XNNPACK).

    ``content``: the ``.tflite`` bytes (checked by the reader first); ``threads``: XNNPACK
    threads for the builtin ops (0: LiteRT's choice); ``register``: False compiles without the
    op (to time plain models through this route). Raises TargetUnavailableError when the route
    cannot run here, ArtifactError when LiteRT or the kernel refuses the model.
    """

    def __init__(
        self, content: bytes, threads: int = 1, *, path: object = "model", register: bool = True
    ) -> None:
        self.path = str(path)
        lib = _shim()
        self._lib = lib
        nodes = _nodes(content, self.path)
        if nodes and not register:  # LiteRT would compile it and fail at the first run
            raise TargetUnavailableError(custom_op.missing_op_message(self.path))
        io, self._n_in = _io(content, self.path)
        self.input_names = [name for name, _, _ in io[: self._n_in]]
        self.output_names = [name for name, _, _ in io[self._n_in :]]
        self._shapes = [shape for _, _, shape in io]
        self._dtypes = [_TYPES[kind][1] for _, kind, _ in io]
        params = np.array([[p[f] for f in PARAM_FIELDS] for p, _, _ in nodes], "<i4").reshape(
            -1, len(PARAM_FIELDS)
        )
        keep = [np.ascontiguousarray(a) for _, w, t in nodes for a in (w, t)]
        weights = (ctypes.c_void_p * max(len(nodes), 1))(*[a.ctypes.data for a in keep[0::2]])
        thresholds = (ctypes.c_void_p * max(len(nodes), 1))(*[a.ctypes.data for a in keep[1::2]])
        types = np.array([_TYPES[kind][0] for _, kind, _ in io], "<i4")
        ranks = np.array([len(shape) for shape in self._shapes], "<i4")
        dims = np.zeros((len(io), 8), "<i4")
        for k, shape in enumerate(self._shapes):
            dims[k, : len(shape)] = shape
        blob = ctypes.create_string_buffer(bytes(content), len(content))
        handle = ctypes.c_void_p()
        err = ctypes.create_string_buffer(_ERR)
        log: list[str] = []
        with _quiet_stderr(log):
            status = lib.cqlr_create(
                ctypes.addressof(blob),
                len(content),
                int(threads),
                int(register),
                len(nodes),
                params.ctypes.data,
                weights,
                thresholds,
                self._n_in,
                len(io) - self._n_in,
                types.ctypes.data,
                ranks.ctypes.data,
                dims.ctypes.data,
                ctypes.byref(handle),
                err,
            )
        if status != 0:
            detail = _errors(log)
            raise ArtifactError(
                f"{self.path}: {err.value.decode(errors='replace')}"
                + (f" (LiteRT: {detail})" if detail else "")
            )
        self._handle = handle
        self._views = []
        for k in range(len(io)):
            size = ctypes.c_size_t()
            address = lib.cqlr_io_data(handle, k, ctypes.byref(size))
            raw = (ctypes.c_char * size.value).from_address(address)
            count = int(np.prod(self._shapes[k]))
            # a shim built before it sized 1-byte types right reports 4 bytes per element:
            # the tensor is the first `count` elements either way
            flat = np.frombuffer(raw, self._dtypes[k])
            if flat.size < count:
                raise ArtifactError(
                    f"{self.path}: model input/output {k} has {flat.size} elements in the "
                    f"runner, its shape {self._shapes[k]} needs {count}"
                )
            self._views.append(flat[:count].reshape(self._shapes[k]))

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """One invoke: ``inputs`` in the model's input order (each of its shape, cast to its
        dtype); returns copies of the outputs in the model's output order."""
        if len(inputs) != self._n_in:
            raise ArtifactError(
                f"{self.path}: {len(inputs)} inputs given, the model has {self._n_in}"
            )
        for k, array in enumerate(inputs):
            array = np.asarray(array)
            if array.shape != self._shapes[k]:
                raise ArtifactError(
                    f"{self.path}: input {self.input_names[k]!r} has shape {array.shape}, "
                    f"the model's is {self._shapes[k]}"
                )
            self._views[k][...] = array
        err = ctypes.create_string_buffer(_ERR)
        if self._lib.cqlr_run(self._handle, err) != 0:
            raise ArtifactError(f"{self.path}: {err.value.decode(errors='replace')}")
        return [view.copy() for view in self._views[self._n_in :]]

    def zero_input(self, k: int = 0) -> np.ndarray:
        """Zeros of model input ``k``'s shape and dtype (for timing and warm-up)."""
        return np.zeros(self._shapes[k], self._dtypes[k])

    def counts(self) -> tuple[int, int]:
        """How often LiteRT called the op's Init and Run so far (proof that the op ran)."""
        init, run = ctypes.c_long(), ctypes.c_long()
        self._lib.cqlr_counts(self._handle, ctypes.byref(init), ctypes.byref(run))
        return init.value, run.value

    def close(self) -> None:
        """Free the compiled model (the runner is unusable after)."""
        if getattr(self, "_handle", None):
            self._views = []
            self._lib.cqlr_destroy(self._handle)
            self._handle = None

    def __del__(self) -> None:
        self.close()


def tensor_names(content: bytes) -> list[str]:
    """The names of the model's tensors (first subgraph), in index order."""
    from ai_edge_litert import schema_py_generated as schema

    graph = schema.Model.GetRootAs(bytes(content), 0).Subgraphs(0)
    return [graph.Tensors(i).Name().decode() for i in range(graph.TensorsLength())]


def with_outputs(content: bytes, names: Sequence[str]) -> bytes:
    """``content`` with the tensors ``names`` appended to the model's outputs (so that a
    compiled model, which exposes only outputs, returns those intermediates too)."""
    from ai_edge_litert import schema_py_generated as schema

    from climbq_deploy.targets.tflite.builder import pack_model

    model = schema.ModelT.InitFromPackedBuf(bytes(content), 0)
    graph = model.subgraphs[0]
    index = {
        t.name.decode() if isinstance(t.name, bytes) else t.name: i
        for i, t in enumerate(graph.tensors)
    }
    missing = [n for n in names if n not in index]
    if missing:
        raise ArtifactError(f"the model has no tensors named {missing[:4]}")
    graph.outputs = [*list(graph.outputs), *(index[n] for n in names)]
    return pack_model(model)


def _selftest_model() -> tuple[bytes, np.ndarray, np.ndarray]:
    """A one-layer model (4x4x2 input, 3x3 conv pad 1, 3 channels, 2 levels), an input and
    its codes from a plain loop."""
    from climbq_deploy.targets.tflite.builder import CUSTOM, ModelBuilder

    rng = np.random.default_rng(7)
    x = rng.integers(-3, 4, (1, 4, 4, 2)).astype(np.int8)
    w = rng.integers(-2, 3, (3, 3, 3, 2)).astype(np.int8)
    t = np.sort(rng.integers(-6, 7, (3, 2)), axis=1).astype(np.int32)
    p = dict(zip(PARAM_FIELDS, (4, 4, 2, 4, 4, 3, 3, 3, 1, 1, 1, 2, 2, -1, 0, 0), strict=True))
    b = ModelBuilder()
    xi = b.add_tensor("x", x.shape, "int8")
    wi = b.add_tensor("w", w.shape, "int8", data=w)
    ti = b.add_tensor("t", t.shape, "int32", data=t)
    yi = b.add_tensor("y", (1, 4, 4, 3), "int8")
    b.add_operator(
        CUSTOM, [xi, wi, ti], [yi], custom_code=CUSTOM_CODE, custom_options=conv_count_options(p)
    )
    b.set_io([xi], [yi])
    padded = np.pad(x.astype(np.int64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = np.zeros((1, 4, 4, 3), np.int8)
    for i in range(4):
        for j in range(4):
            for o in range(3):
                acc = int((padded[0, i : i + 3, j : j + 3, :] * w[o]).sum())
                y[0, i, j, o] = 2 * int((acc >= t[o]).sum()) - 1
    return b.build(), x, y


def probe() -> str | None:
    """None when the route runs here (libraries load, self-test exact), else the reason."""
    try:
        content, x, expected = _selftest_model()
        runner = FusedRunner(content, threads=1, path="self-test model")
        (got,) = runner.run(x)
        init, run = runner.counts()
        runner.close()
    except (TargetUnavailableError, ArtifactError, OSError) as error:
        return str(error)
    if run != 1 or not np.array_equal(got, expected):
        return (
            f"the LiteRT C API route's self-test failed ({run} kernel runs, "
            f"{int((got != expected).sum())} of {got.size} codes differ)"
        )
    del init
    return None
