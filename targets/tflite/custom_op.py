"""The fused ClimbQ layer as one LiteRT custom op, ``CLIMBQ_CONV_COUNT``, and where it can run.

**On-file form** (what :mod:`~climbq_deploy.targets.tflite.export` writes, what
:func:`~climbq_deploy.targets.tflite.reader.check_model` accepts):

- operator code: builtin ``CUSTOM`` (32), ``custom_code = "CLIMBQ_CONV_COUNT"``, version 1;
- inputs, in order: ``x`` int8 NHWC ``(N, H, W, C)`` (the codes; scale 1, zero point 0 when
  quantized), or int32 NHWC when the options' ``input_type`` is 1 (a network's first layer,
  whose input is a ~20-bit integer image; the exporter then guarantees that every accumulator
  fits int32, see ``kernels/csrc/climbq_conv_count.h``), ``weight`` int8 OHWI
  ``(O, kh, kw, C / groups)`` constant with the direction
  ``d_o`` folded in (``W = d_o W_int``), ``thresholds`` int32 ``(O, levels)`` constant,
  non-decreasing along levels; one output: int8 NHWC ``(N, out_h, out_w, O)``;
- ``custom_options`` (72 bytes, little-endian): ``b"CQCC"``, int32 ABI version
  (:data:`ABI_VERSION` = 2, = ``CLIMBQ_CC_ABI_VERSION`` of ``kernels/csrc/climbq_conv_count.h``),
  then the 16 int32 fields of ``climbq_cc_params`` in header order (:data:`PARAM_FIELDS`, the
  last ``input_type``: 0 int8 ``x``, 1 int32 ``x``). Version 1 (68 bytes, no ``input_type``)
  is refused by name.

Semantics (the header's): ``acc = sum W x`` exact in int32 with zero padding,
``count = #{t : acc >= theta[o, t]}``, ``y = mult * count + offset``, then ``max(y, 0)`` when
``relu``; equal to ``kernels.ops.int_conv`` then ``threshold_act`` (then ``relu``).

**Where it runs**: :func:`support` is None when the fused op can run in this process (LiteRT's
C API route of :mod:`~climbq_deploy.targets.tflite.fused_runner`), else the one-line reason;
``climbq export --ops climbq`` writes the op (:mod:`.forms`), and a target with that option
reports the reason as unavailable; a model holding the op opened with a plain LiteRT
``Interpreter`` fails with :func:`missing_op_message`.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from climbq_deploy.errors import ArtifactError, ConfigError, TargetUnavailableError
from climbq_deploy.kernels.native import ABI_VERSION, PARAM_FIELDS

__all__ = [
    "ABI_VERSION",
    "CUSTOM_CODE",
    "DEFAULT_INPUT_TYPE",
    "OPTIONS_SIZE",
    "PARAM_FIELDS",
    "conv_count_options",
    "interpreter",
    "missing_op_message",
    "parse_conv_count_options",
    "support",
]

CUSTOM_CODE = "CLIMBQ_CONV_COUNT"
CUSTOM_VERSION = 1  # the operator code's version
MAGIC = b"CQCC"
OPTIONS_SIZE = len(MAGIC) + 4 * (1 + len(PARAM_FIELDS))  # 72: magic, version, 16 fields
DEFAULT_INPUT_TYPE = 0  # int8 x: conv_count_options' value for params without input_type


def _check_params(values: Mapping[str, int], where: str) -> None:
    """Refuse parameters the kernel contract does not cover (raises ConfigError)."""
    v = values
    for name in ("in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "kernel_h", "kernel_w"):
        if v[name] < 1:
            raise ConfigError(f"{where}: {name} = {v[name]} must be >= 1")
    if v["stride"] < 1 or v["pad"] < 0:
        raise ConfigError(f"{where}: stride {v['stride']} must be >= 1 and pad {v['pad']} >= 0")
    for axis, size, k in (("h", v["in_h"], v["kernel_h"]), ("w", v["in_w"], v["kernel_w"])):
        expected = (size + 2 * v["pad"] - k) // v["stride"] + 1
        if v[f"out_{axis}"] != expected:
            raise ConfigError(
                f"{where}: out_{axis} = {v[f'out_{axis}']}, but in_{axis} {size}, kernel {k}, "
                f"pad {v['pad']}, stride {v['stride']} give {expected}"
            )
    depthwise = v["groups"] == v["in_c"] == v["out_c"]
    if v["groups"] != 1 and not depthwise:
        raise ConfigError(
            f"{where}: groups {v['groups']} must be 1 or in_c == out_c == groups (depthwise); "
            f"in_c {v['in_c']}, out_c {v['out_c']}"
        )
    if not 1 <= v["levels"] <= 255:
        raise ConfigError(f"{where}: levels {v['levels']} must lie in 1..255")
    if v["relu"] not in (0, 1):
        raise ConfigError(f"{where}: relu must be 0 or 1; got {v['relu']}")
    if v["input_type"] not in (0, 1):
        raise ConfigError(
            f"{where}: input_type must be 0 (int8) or 1 (int32); got {v['input_type']}"
        )
    codes = [v["mult"] * j + v["offset"] for j in (0, v["levels"])]
    if v["relu"]:
        codes = [max(c, 0) for c in codes]
    if min(codes) < -128 or max(codes) > 127:
        raise ConfigError(
            f"{where}: codes mult * count + offset span [{min(codes)}, {max(codes)}] "
            f"(mult {v['mult']}, offset {v['offset']}, levels {v['levels']}), beyond int8"
        )


def conv_count_options(params: Mapping[str, Any] | Any) -> bytes:
    """The 72 ``custom_options`` bytes of one ``CLIMBQ_CONV_COUNT`` node (see module doc).

    ``params``: a mapping or a dataclass with (at least) the :data:`PARAM_FIELDS`, integers;
    ``input_type`` alone may be left out and then means 0 (int8 ``x``, the form every layer
    but an int32-input stem has: :data:`DEFAULT_INPUT_TYPE`). Raises ConfigError naming the
    field when one is missing, not an integer, or outside the kernel's contract (shapes
    inconsistent, groups neither 1 nor depthwise, levels outside 1..255, codes beyond int8,
    input_type neither 0 nor 1).
    """
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{CUSTOM_CODE} params must be a mapping or a dataclass")
    values: dict[str, int] = {}
    if "input_type" not in params:
        params = {**params, "input_type": DEFAULT_INPUT_TYPE}
    for name in PARAM_FIELDS:
        if name not in params:
            raise ConfigError(f"{CUSTOM_CODE} params lack {name!r}")
        value = params[name]
        if isinstance(value, bool):
            value = int(value)
        if not hasattr(value, "__index__") or not -(2**31) <= int(value) < 2**31:
            raise ConfigError(f"{CUSTOM_CODE} param {name!r} must be an int32; got {value!r}")
        values[name] = int(value)
    _check_params(values, CUSTOM_CODE)
    return MAGIC + struct.pack(
        f"<{1 + len(PARAM_FIELDS)}i", ABI_VERSION, *(values[n] for n in PARAM_FIELDS)
    )


def parse_conv_count_options(data: bytes, where: str = CUSTOM_CODE) -> dict[str, int]:
    """The parameters in ``custom_options`` (the inverse of :func:`conv_count_options`).

    Raises ArtifactError naming ``where`` when the bytes are not :data:`OPTIONS_SIZE` long,
    lack the ``CQCC`` magic, carry another ABI version, or hold parameters outside the kernel's
    contract.
    """
    data = bytes(data)
    # the version first: an older file (version 1: 68 bytes, no input_type) is named as such
    if len(data) >= 8 and data[:4] == MAGIC:
        (version,) = struct.unpack_from("<i", data, 4)
        if version != ABI_VERSION:
            raise ArtifactError(
                f"{where}: {CUSTOM_CODE} ABI version {version}; this climbq_deploy reads "
                f"{ABI_VERSION} (re-export the model)"
            )
    if len(data) != OPTIONS_SIZE or data[:4] != MAGIC:
        raise ArtifactError(
            f"{where}: {CUSTOM_CODE} custom_options are {len(data)} bytes starting "
            f"{data[:4]!r}; expected {OPTIONS_SIZE} bytes starting {MAGIC!r}"
        )
    _, *fields = struct.unpack_from(f"<{1 + len(PARAM_FIELDS)}i", data, 4)
    values = dict(zip(PARAM_FIELDS, fields, strict=True))
    try:
        _check_params(values, f"{where}: {CUSTOM_CODE}")
    except ConfigError as error:
        raise ArtifactError(str(error)) from None
    return values


_SUPPORT: dict[str, str | None] = {}


def support() -> str | None:
    """None when ``CLIMBQ_CONV_COUNT`` can run in this process, else the one-line reason.

    Checked once per process: the LiteRT C API and the fused kernel library load with every
    symbol, the installed ai-edge-litert is a release this route was tested with, and a
    one-layer self-test model run through the registered op equals a plain-loop result.
    """
    if "reason" not in _SUPPORT:
        from climbq_deploy.targets.tflite import fused_runner

        _SUPPORT["reason"] = fused_runner.probe()
    return _SUPPORT["reason"]


def missing_op_message(path: object) -> str:
    """The error for a model with the custom op opened where the op is not registered."""
    return (
        f"{path} uses the custom op {CUSTOM_CODE} (climbq_deploy's fused conv-and-count "
        "kernel), which a plain LiteRT interpreter does not have; run it with `climbq "
        "check/bench`, which registers it, or export it with --ops builtin"
    )


def uses_custom_op(content: bytes) -> bool:
    """Whether a (checked) ``.tflite`` has an operator code named :data:`CUSTOM_CODE`."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i).CustomCode()
        if code is not None and code.decode("ascii", "replace") == CUSTOM_CODE:
            return True
    return False


def interpreter(content: bytes, path: object = "model", **kwargs: Any) -> Any:
    """A plain ``ai_edge_litert`` Interpreter of ``content`` (tensors allocated); a model that
    uses :data:`CUSTOM_CODE` raises TargetUnavailableError with :func:`missing_op_message`
    instead of LiteRT's "unresolved custom op" (which names neither the kernel nor the fix)."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        it = Interpreter(model_content=content, **kwargs)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        if uses_custom_op(content):
            raise TargetUnavailableError(missing_op_message(path)) from error
        raise ArtifactError(f"{path}: LiteRT refuses the model: {error}") from None
    return it


def runner_source() -> Path:
    """The C source of the LiteRT runner shim (``native/climbq_litert_runner.c``)."""
    return Path(__file__).with_name("native") / "climbq_litert_runner.c"
