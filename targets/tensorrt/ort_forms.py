"""Exact ONNX forms of a ClimbQ layer that run fast under ONNX Runtime (CPU).

The TensorRT file (``form="qdq"``, :mod:`.export`) counts with ``GreaterOrEqual -> Cast ->
ReduceSum`` and keeps Q/DQ pairs ONNX Runtime cannot fuse (a DQ'd conv with a float output):
under ONNX Runtime it runs its convs in float32 and dequantizes every weight on every run. The
forms here compute the same integers with fewer, faster kernels; every one is exact, and the
codes are compared exactly with the NumPy reference (``climbq check``).

**Sign-sum** (``form="sign_sum"``). For integer ``acc`` and integer threshold ``t``,

    ``s(acc, t) = clip(2 (acc - t) + 1, -1, 1) = +1 if acc >= t else -1``

(``2 (acc - t) + 1`` is odd, so never 0). Summed over the ``n`` thresholds of a channel,
``sum_t s = 2 count - n``, hence ``X = mult * count + offset = (mult / 2) sum_t s +
(offset + mult n / 2)``; for ClimbQ (``mult = 2``, ``offset = -n``) ``X`` *is* the sum. In
ONNX: a float32 ``Conv`` with weights ``2 d_c W`` writes ``2 d_c acc``; ``Unsqueeze`` to
``(N, C, 1, H, W)``; ``Add`` the ``(C, n, 1, 1)`` constant ``1 - 2 t``; ``Clip(-1, 1)``;
``ReduceSum`` over the level axis; ``Mul``/``Add`` only where mult/offset are not ClimbQ's.
Exact in float32: the thresholds are first clamped to ``[-(B + 1), B + 1]`` with ``B`` the
conv's :func:`~climbq_deploy.ir.integer_forms.partial_sum_bound` (``|acc| <= B``, so no count
changes), and the export checks ``2 (B + 1) + 1 < 2**24``, so every partial sum of the conv,
``1 - 2 t`` and their sum are integers float32 holds exactly; the sum of ``n`` signs is a small
integer. The digit-split stem keeps :mod:`.export`'s int32 form.

**int8 duplicate-channel** (``form="int8_dup"``), ONNX Runtime's int8 kernels (``QLinearConv``,
MLAS u8s8 GEMM, VNNI where the CPU has it). The input codes ``x`` (integers in [-128, 127])
are ``QuantizeLinear(x, 1, 128)`` to uint8 (exact). A ``QLinearConv`` with every output
channel repeated ``n`` times (weights ``d_c W`` int8, scale 1; int32 bias ``-t``), output
scale ``1/256`` and zero point 255 writes

    ``u = sat_u8(256 (acc - t) + 255) = 255 [acc >= t]``

(``acc - t >= 0`` gives at least 255, ``acc - t <= -1`` at most -1: saturation makes the
compare, exactly). A second ``QLinearConv`` 1x1 with block-diagonal weights ``mult`` (int8),
input zero point 0, bias ``255 offset`` and output scale 255, zero point 128 writes
``round((255 mult count + 255 offset) / 255) + 128 = X + 128`` (uint8; the division is by the
float ``1/255``, within ``2**-24`` relative of the integer, so the rounding is exact for
``|X| < 2**22``); ``DequantizeLinear(., 1, 128)`` gives ``X``. It costs ``n`` times the conv's
MACs, so it pays for small ``n`` (2-bit codes, ``n = 3``). A layer it does not fit (the stem,
an input outside [-128, 127], weights outside int8, codes outside [-128, 127]) is written as
sign-sum.

**Measured rule** (``form="ort"``, ``bench/onnx_latency.py``): int8 duplicate-channel for
layers with ``n <= ORT_DUP_MAX_LEVELS`` thresholds, sign-sum otherwise.

In every form here the residual ``Add``, ``Relu``, ``MaxPool`` and ``Concat`` are float32 on
integers (exact below 2**24): no Q/DQ pairs, which ONNX Runtime would only dequantize again.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.graph import Add, IntConv, MaxPool, ThresholdAct
from climbq_deploy.ir.integer_forms import (
    FLOAT32_EXACT,
    partial_sum_bound,
    signed_weight,
)
from climbq_deploy.ir.layers import ConvLayer

ORT_FORMS = ("sign_sum", "int8_dup", "ort")
ORT_DUP_MAX_LEVELS = 3  # measured: 2-bit (n = 3) int8_dup beats sign_sum, 4-bit (n = 15) not
UINT8_ZERO = 128  # uint8 codes: q = X + 128


def clamped_thresholds(
    conv: IntConv, act: ThresholdAct, lo: int, hi: int
) -> tuple[np.ndarray, int]:
    """``(theta, B)``: the thresholds (int64 ``(C, n)``) clamped to ``[-(B + 1), B + 1]`` with
    ``B`` the conv's partial-sum bound on inputs in ``[lo, hi]``. ``|acc| <= B``, so
    ``acc >= theta`` is unchanged for every reachable ``acc``."""
    bound = partial_sum_bound(conv.weight, lo, hi)
    theta = np.clip(act.thresholds.astype(np.int64), -(bound + 1), bound + 1)
    return theta, bound


def _conv_attrs(conv: IntConv, weight: np.ndarray) -> dict[str, object]:
    """:func:`~.export.conv_attributes` (dilation and groups are ONNX's own; the duplicated
    channels of ``int8_dup`` stay in their group: output ``o n + j`` is in ``o``'s block)."""
    from climbq_deploy.targets.tensorrt.export import conv_attributes

    return conv_attributes(conv)


def _prepared(e, layer: ConvLayer) -> tuple[np.ndarray, np.ndarray, int]:
    """``(d_c W`` as OIHW int64, clamped thresholds, partial-sum bound``)``."""
    from climbq_deploy.targets.tensorrt.export import _refuse_shift

    conv, act = layer.conv, layer.act
    _refuse_shift(act)
    lo, hi = e.graph.tensors[conv.inputs[0]].bounds or (-(2**31), 2**31)
    theta, bound = clamped_thresholds(conv, act, lo, hi)
    weight = np.transpose(signed_weight(conv.weight, act.direction, np.int64), (0, 3, 1, 2))
    return weight, theta, bound


def _affine(b, act: ThresholdAct, signs: str, levels: int) -> None:
    """``X = (mult / 2) s + (offset + mult n / 2)`` (exact: halves of small integers)."""
    name = act.output
    half, shift = act.mult / 2, act.offset + act.mult * levels / 2
    if half != 1:
        signs = b.op("Mul", [signs, b.const(f"{name}/half_mult", np.float32(half))], f"{name}/ks")
    if shift != 0:
        signs = b.op("Add", [signs, b.const(f"{name}/shift", np.float32(shift))], f"{name}/ks_c")
    b.op("Identity", [signs], name)


def sign_sum_layer(e, layer: ConvLayer) -> None:
    """A conv layer in sign-sum form (module docstring); the stem as :mod:`.export` writes it."""
    from climbq_deploy.targets.tensorrt.export import _conv_layer

    if layer.stem:
        _conv_layer(e, layer)
        return
    b, conv, act = e.b, layer.conv, layer.act
    weight, theta, bound = _prepared(e, layer)
    if 2 * (bound + 1) + 1 >= FLOAT32_EXACT:
        raise LoweringError(
            f"conv {conv.source!r}: 2 * partial sums up to {2 * bound} reach 2**24 "
            "(sign-sum form beyond float32's exact integers)"
        )
    c, levels = theta.shape
    name = act.output
    w2 = b.const(f"{conv.output}/weight_x2", (2 * weight).astype(np.float32))
    acc2 = b.op("Conv", [conv.inputs[0], w2], f"{conv.output}/acc_x2", **_conv_attrs(conv, weight))
    axis = b.const(f"{name}/level_axis", np.array([2], np.int64))
    wide = b.op("Unsqueeze", [acc2, axis], f"{name}/wide")
    bias = b.const(
        f"{name}/one_minus_2t", (1 - 2 * theta).astype(np.float32).reshape(c, levels, 1, 1)
    )
    odd = b.op("Add", [wide, bias], f"{name}/odd")
    lo = b.const(f"{name}/minus_one", np.float32(-1))
    hi = b.const(f"{name}/plus_one", np.float32(1))
    signs = b.op("Clip", [odd, lo, hi], f"{name}/signs")
    total = b.op("ReduceSum", [signs, axis], f"{name}/sign_sum", keepdims=0)
    _affine(b, act, total, levels)


def dup_fits(e, layer: ConvLayer) -> bool:
    """Whether the int8 duplicate-channel form holds ``layer`` exactly: not the stem, inputs in
    [-128, 127], ``d_c W`` and ``mult`` in int8, every code ``mult k + offset`` (``k`` in
    0..n) in [-128, 127]."""
    if layer.stem:
        return False
    conv, act = layer.conv, layer.act
    lo, hi = e.graph.tensors[conv.inputs[0]].bounds or (-(2**31), 2**31)
    n = act.thresholds.shape[1]
    codes = (int(act.offset), int(act.mult) * n + int(act.offset))
    return (
        lo >= -128
        and hi <= 127
        and int(np.abs(conv.weight).max(initial=0)) <= 127
        and abs(int(act.mult)) <= 127
        and min(codes) >= -128
        and max(codes) <= 127
    )


def int8_dup_layer(e, layer: ConvLayer) -> None:
    """A conv layer in int8 duplicate-channel form (module docstring), or sign-sum where it
    does not fit (:func:`dup_fits`)."""
    if not dup_fits(e, layer):
        sign_sum_layer(e, layer)
        return
    b, conv, act = e.b, layer.conv, layer.act
    weight, theta, _ = _prepared(e, layer)
    c, levels = theta.shape
    name = act.output
    one = b.const(f"{name}/unit", np.float32(1))
    zero_u8 = b.const(f"{name}/code_zero", np.uint8(UINT8_ZERO))
    x = b.op("QuantizeLinear", [conv.inputs[0], one, zero_u8], f"{name}/input_u8")
    dup = b.const(f"{name}/weight_dup", np.repeat(weight, levels, axis=0).astype(np.int8))
    dup_scale = b.const(f"{name}/weight_dup_scale", np.ones(c * levels, np.float32))
    dup_zero = b.const(f"{name}/weight_dup_zero", np.zeros(c * levels, np.int8))
    step = b.const(f"{name}/compare_scale", np.float32(1 / 256))
    top = b.const(f"{name}/compare_zero", np.uint8(255))
    minus_t = b.const(f"{name}/minus_t", (-theta).reshape(-1).astype(np.int32))
    passed = b.op(
        "QLinearConv",
        [x, one, zero_u8, dup, dup_scale, dup_zero, step, top, minus_t],
        f"{name}/passed_255",
        **_conv_attrs(conv, weight),
    )
    block = np.zeros((c, c * levels, 1, 1), np.int8)
    for channel in range(c):
        block[channel, channel * levels : (channel + 1) * levels] = int(act.mult)
    zero0 = b.const(f"{name}/passed_zero", np.uint8(0))
    code = b.op(
        "QLinearConv",
        [
            passed,
            one,
            zero0,
            b.const(f"{name}/weight_sum", block),
            b.const(f"{name}/weight_sum_scale", np.ones(c, np.float32)),
            b.const(f"{name}/weight_sum_zero", np.zeros(c, np.int8)),
            b.const(f"{name}/sum_scale", np.float32(255)),
            zero_u8,
            b.const(f"{name}/offset_255", np.full(c, 255 * int(act.offset), np.int32)),
        ],
        f"{name}/code_u8",
        kernel_shape=[1, 1],
    )
    b.op("DequantizeLinear", [code, one, zero_u8], name)


def ort_layer(e, layer: ConvLayer) -> None:
    """The measured rule: int8 duplicate-channel for ``n <= ORT_DUP_MAX_LEVELS``, else
    sign-sum."""
    if layer.act.thresholds.shape[1] <= ORT_DUP_MAX_LEVELS:
        int8_dup_layer(e, layer)
    else:
        sign_sum_layer(e, layer)


def _float_add(e, node: Add) -> None:
    e.b.op("Add", list(node.inputs), node.output)


def _float_max_pool(e, node: MaxPool) -> None:
    from climbq_deploy.targets.tensorrt.export import max_pool_op

    max_pool_op(e, node, node.inputs[0])


def form_emitters(form: str, base: dict[type, Callable]) -> dict[type, Callable]:
    """:data:`~.export.ONNX_EMITTERS` with the conv layers, adds and max pools of ``form``."""
    layer = {"sign_sum": sign_sum_layer, "int8_dup": int8_dup_layer, "ort": ort_layer}[form]
    return {**base, ConvLayer: layer, Add: _float_add, MaxPool: _float_max_pool}


__all__ = ["ORT_DUP_MAX_LEVELS", "ORT_FORMS", "clamped_thresholds", "form_emitters"]
