"""The fused native ClimbQ layer: exact integer convolution and compare-and-count in one C kernel.

For int8 or int32 NHWC ``x``, int8 OHWI ``W`` (direction folded in), int32 thresholds ``theta``
``(out_c, levels)`` non-decreasing along ``t``::

    acc[n, y, x, o] = sum_{i, j, c} W[o, i, j, c] * X[n, s y + i - p, s x + j - p, g(o) c]
    count           = #{t : acc[n, y, x, o] >= theta[o, t]}          (0 .. levels)
    Y[n, y, x, o]   = mult * count + offset, then max(Y, 0) when relu

Every code must fit int8, no rounding anywhere: while ``acc`` fits int32 the result equals
``threshold_act(int_conv(x, W, ...), theta, 1, mult, offset)`` of :mod:`.ops` bit for bit.
Groups are 1 (dense) or ``in_c == out_c`` (depthwise, ``W`` is ``(out_c, kh, kw, 1)``).

Input types (``input_dtype`` of :class:`PackedConvCount`, the C field ``input_type``):

- int8 (``np.int8``, the default): ``acc`` is exact for every input because a layer is
  refused here unless ``max_o sum |W_o| * 128 <= 2**31 - 1`` (``|x| <= 128``).
- int32 (``np.int32``; a network's first layer, whose input is an integer image of ~20 bits):
  the kernel cannot know the input's range, so **the caller guarantees** that every
  accumulator fits int32, e.g. ``max_o sum |W_o| * max |x| <= 2**31 - 1``. Outside it the C
  kernel's sum wraps modulo ``2**32`` (defined behaviour, no crash) and the codes are those of
  the wrapped value. No weight-sum bound is checked. One portable C loop, vectorised by the
  compiler, serves every ISA (:func:`isa` still picks its AVX-512 / AVX2 / baseline build).

The C library (``kernels/csrc/climbq_conv_count.h``) is built by the package install as the
optional extension ``climbq_deploy.kernels._climbq_native`` and loaded here with ctypes. It
picks its SIMD path at run time (AVX-512 VNNI, AVX2, NEON dot product, NEON, scalar); the
environment variable ``CLIMBQ_NATIVE_ISA`` forces a path the CPU supports, read when a layer
is packed.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
from pathlib import Path

import numpy as np

from climbq_deploy.errors import KernelError

ABI_VERSION = 2  # 2: the int32-input mode (PARAM_FIELDS gained input_type)
INT32_MAX = 2**31 - 1
ISA_NAMES = ("avx512vnni", "avx2", "neon-dot", "neon", "scalar")

PARAM_FIELDS: tuple[str, ...] = (  # climbq_cc_params, in header order
    "in_h",
    "in_w",
    "in_c",
    "out_h",
    "out_w",
    "out_c",
    "kernel_h",
    "kernel_w",
    "stride",
    "pad",
    "groups",
    "levels",
    "mult",
    "offset",
    "relu",
    "input_type",  # INPUT_TYPES: 0 int8, 1 int32 (the element type of x)
)
INPUT_TYPES: dict[np.dtype, int] = {np.dtype(np.int8): 0, np.dtype(np.int32): 1}


class _Params(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in PARAM_FIELDS]


_library: ctypes.CDLL | None = None
_load_error: str | None = None
_loaded = False


def library_path() -> Path | None:
    """The built extension ``kernels/_climbq_native*.so`` next to this module, or None."""
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = here / f"_climbq_native{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _load() -> ctypes.CDLL | None:
    """Load the library once; on failure remember why (see :func:`available`)."""
    global _library, _load_error, _loaded
    if _loaded:
        return _library
    _loaded = True
    path = library_path()
    if path is None:
        _load_error = (
            f"the native kernel is not built (no _climbq_native extension in "
            f"{Path(__file__).resolve().parent}; reinstall the package with a C compiler: "
            f"pip install -e .)"
        )
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        _load_error = f"cannot load the native kernel {path}: {exc}"
        return None
    lib.climbq_cc_abi_version.restype = ctypes.c_int
    lib.climbq_cc_abi_version.argtypes = []
    version = lib.climbq_cc_abi_version()
    if version != ABI_VERSION:
        _load_error = f"native kernel {path} has ABI version {version}, expected {ABI_VERSION}"
        return None
    lib.climbq_cc_isa.restype = ctypes.c_char_p
    lib.climbq_cc_isa.argtypes = []
    lib.climbq_cc_pack.restype = ctypes.c_int
    lib.climbq_cc_pack.argtypes = [
        ctypes.POINTER(_Params),
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_char_p,
    ]
    lib.climbq_cc_run.restype = ctypes.c_int
    lib.climbq_cc_run.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p]
    lib.climbq_cc_free.restype = None
    lib.climbq_cc_free.argtypes = [ctypes.c_void_p]
    _library = lib
    return lib


def available() -> str | None:
    """None when the native kernel is loaded, else the reason it is not (one sentence)."""
    _load()
    return _load_error


def _require() -> ctypes.CDLL:
    lib = _load()
    if lib is None:
        raise KernelError(f"native conv_count: {_load_error}")
    return lib


def isa() -> str:
    """The SIMD path a layer packed now would use (``CLIMBQ_NATIVE_ISA`` honoured)."""
    return _require().climbq_cc_isa().decode()


def _integer(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise KernelError(f"native conv_count: {name} must be an integer, got {value!r}")
    if not lo <= int(value) <= hi:
        raise KernelError(f"native conv_count: {name} = {value} outside {lo}..{hi}")
    return int(value)


def _input_dtype(value: object) -> np.dtype:
    """``np.int8`` or ``np.int32`` as a NumPy dtype (KernelError for anything else)."""
    try:
        dtype = np.dtype(value)  # type: ignore[call-overload]
    except TypeError:
        dtype = None
    if dtype not in INPUT_TYPES:
        raise KernelError(f"native conv_count: input_dtype must be int8 or int32, got {value!r}")
    return dtype


def _validated_params(
    input_hw: tuple[int, int],
    weight: np.ndarray,
    thresholds: np.ndarray,
    stride: int,
    padding: int,
    groups: int,
    mult: int,
    offset: int,
    relu: bool,
    input_dtype: np.dtype,
) -> tuple[_Params, np.ndarray, np.ndarray]:
    """Check every field against the C contract; the ctypes params and contiguous arrays."""
    if not isinstance(weight, np.ndarray) or weight.dtype != np.int8 or weight.ndim != 4:
        raise KernelError(
            f"native conv_count: weight must be an int8 OHWI array, got "
            f"{getattr(weight, 'dtype', type(weight).__name__)} shape "
            f"{getattr(weight, 'shape', None)}"
        )
    if (
        not isinstance(thresholds, np.ndarray)
        or thresholds.dtype.kind not in "iu"
        or thresholds.ndim != 2
    ):
        raise KernelError(
            f"native conv_count: thresholds must be an integer (out_c, levels) array, got "
            f"{getattr(thresholds, 'dtype', type(thresholds).__name__)} shape "
            f"{getattr(thresholds, 'shape', None)}"
        )
    out_c, kh, kw, cin_g = (int(d) for d in weight.shape)
    if min(out_c, kh, kw, cin_g) < 1:
        raise KernelError(f"native conv_count: weight shape {weight.shape} has an empty axis")
    if thresholds.shape[0] != out_c:
        raise KernelError(
            f"native conv_count: thresholds shape {thresholds.shape} does not match "
            f"out_c {out_c} of weight shape {weight.shape}"
        )
    levels = int(thresholds.shape[1])
    if not 1 <= levels <= 255:
        raise KernelError(
            f"native conv_count: levels = {levels} (thresholds shape "
            f"{thresholds.shape}) outside 1..255"
        )
    if thresholds.size:
        t_lo, t_hi = int(thresholds.min()), int(thresholds.max())
        if t_lo < -(2**31) or t_hi > INT32_MAX:
            raise KernelError(f"native conv_count: thresholds in [{t_lo}, {t_hi}] leave int32")
    theta = np.ascontiguousarray(thresholds, dtype=np.int32)
    steps = np.diff(theta.astype(np.int64), axis=1)
    if steps.size and steps.min() < 0:
        channel = int(np.argwhere(steps < 0)[0][0])
        raise KernelError(
            f"native conv_count: thresholds of channel {channel} decrease "
            f"({theta[channel].tolist()}); they must be non-decreasing"
        )
    stride = _integer("stride", stride, 1, 65535)
    padding = _integer("padding", padding, 0, 65535)
    groups = _integer("groups", groups, 1, INT32_MAX)
    mult = _integer("mult", mult, -(2**31), INT32_MAX)
    offset = _integer("offset", offset, -(2**31), INT32_MAX)
    if not isinstance(relu, bool | np.bool_):
        raise KernelError(f"native conv_count: relu must be a bool, got {relu!r}")
    in_h = _integer("input height", input_hw[0], 1, INT32_MAX)
    in_w = _integer("input width", input_hw[1], 1, INT32_MAX)
    in_c = cin_g * groups
    if groups != 1 and not (cin_g == 1 and out_c == groups):
        raise KernelError(
            f"native conv_count: groups = {groups} with weight shape {weight.shape}: only "
            f"groups 1 (dense) or depthwise (out_c == groups, weight (out_c, kh, kw, 1))"
        )
    out_h = (in_h + 2 * padding - kh) // stride + 1
    out_w = (in_w + 2 * padding - kw) // stride + 1
    if in_h + 2 * padding < kh or in_w + 2 * padding < kw:
        raise KernelError(
            f"native conv_count: kernel {kh}x{kw} larger than the padded input "
            f"{in_h + 2 * padding}x{in_w + 2 * padding} (input {in_h}x{in_w}, padding {padding})"
        )
    codes = (offset, mult * levels + offset)
    if min(codes) < -128 or max(codes) > 127:
        raise KernelError(
            f"native conv_count: codes mult * count + offset reach {min(codes)}..{max(codes)} "
            f"(mult {mult}, offset {offset}, levels {levels}), beyond int8"
        )
    weight_sum = int(np.abs(weight.astype(np.int64)).reshape(out_c, -1).sum(1).max())
    # int8 input: |acc| <= max_o sum |W_o| * 128 must fit int32. int32 input: the caller's
    # guarantee (module docstring); the kernel cannot know the input's range.
    if input_dtype == np.int8 and weight_sum * 128 > INT32_MAX:
        raise KernelError(
            f"native conv_count: weight sum |W| {weight_sum} (weight shape {weight.shape}) "
            f"gives accumulators up to {weight_sum * 128}, beyond int32"
        )
    params = _Params(
        in_h, in_w, in_c, out_h, out_w, out_c, kh, kw, stride, padding, groups, levels,
        mult, offset, int(bool(relu)), INPUT_TYPES[input_dtype],
    )  # fmt: skip
    return params, np.ascontiguousarray(weight), theta


class PackedConvCount:
    """One layer packed once for the SIMD path of this CPU; :meth:`run` per batch.

    ``PackedConvCount(weight, thresholds, input_hw=(H, W), stride=, padding=, groups=,
    mult=, offset=, relu=, input_dtype=np.int8)`` validates every field (:class:`KernelError`
    naming it) and packs the weights; ``run(x)`` takes ``(N, H, W, in_c)`` of ``input_dtype``
    (int8, or int32 with the caller's accumulator guarantee of the module docstring) and
    returns int8 ``(N, out_h, out_w, out_c)`` (the formula in the module docstring). The packed
    layer is freed by :meth:`close`, on ``with`` exit, or when the object is collected.
    """

    def __init__(
        self,
        weight: np.ndarray,
        thresholds: np.ndarray,
        *,
        input_hw: tuple[int, int],
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        mult: int = 1,
        offset: int = 0,
        relu: bool = False,
        input_dtype: type[np.integer] | np.dtype = np.int8,
    ) -> None:
        self._handle: int | None = None
        lib = _require()
        self.input_dtype = _input_dtype(input_dtype)
        params, weight, theta = _validated_params(
            input_hw, weight, thresholds, stride, padding, groups, mult, offset, relu,
            self.input_dtype,
        )  # fmt: skip
        handle = ctypes.c_void_p()
        err = ctypes.create_string_buffer(256)
        code = lib.climbq_cc_pack(
            ctypes.byref(params), weight.ctypes.data, theta.ctypes.data, ctypes.byref(handle), err
        )
        if code != 0:
            raise KernelError(f"native conv_count: {err.value.decode(errors='replace')}")
        self._lib = lib
        self._handle = handle.value
        self.params = {name: int(getattr(params, name)) for name in PARAM_FIELDS}
        self.isa = lib.climbq_cc_isa().decode()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(H, W, in_c)`` of one image."""
        p = self.params
        return p["in_h"], p["in_w"], p["in_c"]

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """``(out_h, out_w, out_c)`` of one image."""
        p = self.params
        return p["out_h"], p["out_w"], p["out_c"]

    def run(self, x: np.ndarray) -> np.ndarray:
        """int8 codes ``(N, out_h, out_w, out_c)`` for ``x`` ``(N, H, W, in_c)`` of the packed
        ``input_dtype`` (int8 or int32)."""
        if self._handle is None:
            raise KernelError("native conv_count: run on a closed layer")
        if not isinstance(x, np.ndarray) or x.dtype != self.input_dtype or x.ndim != 4:
            raise KernelError(
                f"native conv_count: x must be an {self.input_dtype} NHWC array, got "
                f"{getattr(x, 'dtype', type(x).__name__)} shape {getattr(x, 'shape', None)} "
                f"(the layer was packed with input_dtype {self.input_dtype})"
            )
        if tuple(x.shape[1:]) != self.input_shape:
            raise KernelError(
                f"native conv_count: x shape {x.shape} does not match the packed input "
                f"(N, {', '.join(map(str, self.input_shape))})"
            )
        if x.shape[0] > INT32_MAX:
            raise KernelError(f"native conv_count: batch {x.shape[0]} beyond int32")
        x = np.ascontiguousarray(x)
        y = np.empty((x.shape[0], *self.output_shape), np.int8)
        code = self._lib.climbq_cc_run(self._handle, x.shape[0], x.ctypes.data, y.ctypes.data)
        if code != 0:
            raise KernelError(f"native conv_count: climbq_cc_run failed with code {code}")
        return y

    def close(self) -> None:
        """Free the packed layer (idempotent)."""
        if self._handle is not None:
            self._lib.climbq_cc_free(self._handle)
            self._handle = None

    def __enter__(self) -> PackedConvCount:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def conv_count(
    x: np.ndarray,
    weight: np.ndarray,
    thresholds: np.ndarray,
    *,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    mult: int = 1,
    offset: int = 0,
    relu: bool = False,
) -> np.ndarray:
    """One-shot fused layer: pack ``weight``/``thresholds`` for ``x``'s size, run, free.

    int8 or int32 ``x`` ``(N, H, W, in_c)`` -> int8 ``(N, out_h, out_w, out_c)``, the formula
    of the module docstring; ``x``'s dtype is the packed ``input_dtype`` (int32: the caller
    guarantees the accumulators fit int32). See :class:`PackedConvCount` to pack once and run
    many batches.
    """
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise KernelError(
            f"native conv_count: x must be an int8 NHWC array or an int32 one, got "
            f"{getattr(x, 'dtype', type(x).__name__)} shape {getattr(x, 'shape', None)}"
        )
    with PackedConvCount(
        weight,
        thresholds,
        input_hw=(int(x.shape[1]), int(x.shape[2])),
        stride=stride,
        padding=padding,
        groups=groups,
        mult=mult,
        offset=offset,
        relu=relu,
        input_dtype=x.dtype,
    ) as layer:
        return layer.run(x)
