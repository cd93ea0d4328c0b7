"""The program as LiteRT's int16 form computes it (the "tflite flavour" of the reference).

The TFLite export reads every conv accumulator back as an int16 conv output, requantized per
output channel with the multiplier ``2**-s_c`` (per-channel weight scale ``2**-s_c``; round
half up, saturating). With ``s_c = 0`` that is the accumulator itself wherever a count can
change, so the count is exact. A channel whose thresholds leave ``[-32767, 32767]`` is counted
on ``v' = (v + 2**(s_c-1)) >> s_c`` with the smallest ``s_c`` that brings *its own* thresholds
in, and thresholds ``theta' = floor(theta / 2**s_c) + 1``: level t is then passed iff
``v >= theta' 2**s_c - 2**(s_c-1)``, a boundary within ``2**(s_c-1)`` of ``theta``. Only values
in that band count differently from the pure program; ``climbq check`` measures how many. The
other channels of the layer keep ``s_c = 0`` and count exactly.

LiteRT's rounding, measured (ai-edge-litert 2.3.0, 16x8 ``CONV_2D`` and
``DEPTHWISE_CONV_2D`` with an int64 bias, BUILTIN_REF, optimized builtin and the XNNPACK
resolver, which leaves 16x8 convs to the builtin kernels): every int16 output equals
``clamp((v + 2**(s-1)) >> s, -32768, 32767)`` for ``s`` in 0..31, for positive and negative
``v`` including every exact tie (the int64-accumulator ``MultiplyByQuantizedMultiplier``:
multiplier ``2**30 * 2**(1-s-31)``, reduced to ``2**14``, one rounding shift by ``14 + s``).
With an int32 bias the 16x8 conv takes another path that is wrong from ``s = 16`` on; the
export always writes int64 biases.

The stem is exempt: the export computes its accumulator exactly in int32 from three 6-bit
digits of the input (see :mod:`.export`), so it keeps the pure program's thresholds.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.graph import Graph, InputQuant, IntConv, ThresholdAct
from climbq_deploy.ir.integer_forms import partial_sum_bound
from climbq_deploy.ir.layers import ConvLayer, iter_layers

INT16_LIMIT = 32767
MAX_SHIFT = 31


def input_width(graph: Graph) -> int:
    """``B``: the program input's integers lie in ``[-2**(B-1), 2**(B-1))`` (its bounds)."""
    quant = next(n for n in graph.nodes if isinstance(n, InputQuant))
    lo, hi = graph.tensors[quant.output].bounds or (-(2**31), 2**31 - 1)
    return next(b for b in range(2, 33) if -(2 ** (b - 1)) <= lo and hi < 2 ** (b - 1))


def input_type(graph: Graph) -> str:
    """The model input's TFLite type: ``int16`` when the program's input fits it, else
    ``int32`` (the target lowers with a 20-bit input: see ``TfliteTarget.input_bits``)."""
    return "int16" if input_width(graph) <= 16 else "int32"


def requantize_shift(
    thresholds: np.ndarray, direction: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(shift, thresholds')`` of one layer, per output channel: ``shift`` int8 ``(C,)``, the
    smallest ``s_c`` with every ``floor(theta_c / 2**s_c) + 1`` (``theta_c`` itself for
    ``s_c = 0``) in ``[-32767, 32767]``; ``thresholds'`` int64 ``(C, n)`` snapped with each
    channel's own shift. Constant channels (direction 0) keep ``s_c = 0`` and their 0/1
    thresholds."""
    theta = thresholds.astype(np.int64)
    channels = theta.shape[0]
    shift = np.zeros(channels, np.int64)
    if theta.size == 0:
        return shift.astype(np.int8), theta
    lo, hi = theta.min(axis=1), theta.max(axis=1)
    pending = (direction != 0) & ((lo < -INT16_LIMIT) | (hi > INT16_LIMIT))
    for s in range(1, MAX_SHIFT + 1):
        fits = pending & ((lo >> s) + 1 >= -INT16_LIMIT) & ((hi >> s) + 1 <= INT16_LIMIT)
        shift[fits] = s
        pending &= ~fits
    if pending.any():  # pragma: no cover - thresholds are int32 (validated), s <= 17 suffices
        channels = np.flatnonzero(pending)[:8].tolist()
        raise LoweringError(
            f"thresholds of channels {channels} cannot be brought into int16 "
            f"by a shift of at most {MAX_SHIFT}"
        )
    return shift.astype(np.int8), snap_thresholds_to_shift(theta, shift)


def snap_thresholds_to_shift(thresholds: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Thresholds ``(C, n)`` for counting on ``v' = (v + 2**(s_c-1)) >> s_c``: channel c's
    ``floor(theta / 2**s_c) + 1`` where ``s_c > 0``, ``theta`` itself where ``s_c = 0``
    (int64). Level t is then passed iff ``v >= theta' 2**s_c - 2**(s_c-1)``."""
    theta = thresholds.astype(np.int64)
    s = np.asarray(shift).astype(np.int64)[:, None]
    return np.where(s > 0, (theta >> s) + 1, theta)


FLOAT32_EXACT = 2**24  # float32 holds every integer of smaller magnitude exactly


def thresholds_fit_int16(act: ThresholdAct) -> bool:
    """Whether a layer's thresholds all lie in ``[-32767, 32767]`` (its int16 conv is exact)."""
    theta = act.thresholds
    return theta.size == 0 or (int(theta.min()) >= -INT16_LIMIT and int(theta.max()) <= INT16_LIMIT)


def float_conv_is_exact(graph: Graph, conv: IntConv) -> bool:
    """Whether ``conv`` computed as a float32 ``CONV_2D`` on its integer input is exact: every
    partial sum of any accumulation order (``sum |W| max|x|``) stays below 2**24, so float32
    holds each one exactly and the rounded result is the integer accumulator."""
    lo, hi = graph.tensors[conv.inputs[0]].bounds or (-(2**31), 2**31 - 1)
    return partial_sum_bound(conv.weight, lo, hi) < FLOAT32_EXACT


def int16_flavour(graph: Graph) -> Graph:
    """Set ``shift`` and thresholds of every conv-fed ThresholdAct for the int16 TFLite form
    (``shift`` stays None in a layer where every channel's thresholds fit int16, and in a layer
    the export computes with an exact float32 conv instead: :func:`float_conv_is_exact`)."""
    flavoured: dict[int, ThresholdAct] = {}  # id of an activation -> its int16 form
    for layer in iter_layers(graph):
        if (
            isinstance(layer, ConvLayer)
            and not layer.stem  # the stem is computed exactly (digit split)
            # layers beyond int16 with an exact float32 conv keep the pure program
            and (thresholds_fit_int16(layer.act) or not float_conv_is_exact(graph, layer.conv))
        ):
            act = layer.act
            shift, theta = requantize_shift(act.thresholds, act.direction)
            flavoured[id(act)] = replace(
                act, shift=shift if shift.any() else None, thresholds=theta.astype(np.int16)
            )
    return graph.replace_nodes([flavoured.get(id(n), n) for n in graph.nodes])
