"""Small hand-built integer programs with dilated and grouped convs (shared by the IR, kernel
and target tests), built like :mod:`tests.pool_concat_programs`: weights on the 4-bit odd grid
(``2 code - 15``), some channels counting downwards (direction -1), thresholds at quantiles of
each layer's actual accumulators on calibration images, so the codes spread over their levels.

- ``dilated``: a 3x3 stem, a 3x3 conv with dilation 2 and padding 2 (the dilated kernel is
  5x5, "SAME" at stride 1), a 3x3 conv with dilation 3, padding 1 and stride 2 (explicit
  padding, a dilated window the padding does not center), 2-bit codes after it.
- ``depthwise``: a stem, a 1x1 expansion, a depthwise 3x3 with dilation 2 (padding 2), a
  depthwise 3x3 with dilation 2, padding 1 and stride 2, then a depthwise conv with channel
  multiplier 2 (groups = C, 2 C outputs).
- ``grouped``: a stem, a 3x3 conv with 2 groups (not depthwise), a 3x3 stride-2 conv with
  4 groups (8 -> 12 channels, 2-bit codes), a 1x1 conv with 4 groups and dilation 2 (dilation
  means nothing for a 1x1 kernel), and a 3x3 conv with 2 groups and dilation 2.
- ``dilated-stem``: the stem itself dilated (3x3, d = 2, p = 2) on a 19-bit input
  (``|I| <= 2**18``: its partial sums pass 2**24, so every target splits it into digits),
  then a grouped dilated conv.
- ``grouped-stem``: the same wide input read by a stem of 3 groups, one image channel each,
  with channel multiplier 2 and dilation 2, then a 1x1 conv.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from climbq_deploy.ir.graph import Graph, IntConv, ThresholdAct
from climbq_deploy.kernels import ops
from tests.pool_concat_programs import STEP, _Builder, _weights, images

__all__ = [
    "CASES",
    "DILATED_LAYERS",
    "GROUPED_LAYERS",
    "conv_program",
    "images",
    "many_groups_program",
]

GRID = {"weight_bits": 4, "weight_grid": (2, -15)}
INT32_MAX = 2**31 - 1


class _ConvBuilder(_Builder):
    def __init__(self, size: int, seed: int, step: float = STEP) -> None:
        """``step``: the input unit (``I`` in ``[-1 / step, 1 / step]``); finer than the
        default makes the stem's partial sums pass 2**24 (the targets' digit splits)."""
        super().__init__(size, seed)
        if step != STEP:
            quant = replace(self.nodes[0], step=step)
            self.nodes[0] = quant
            self.tensors["x"] = replace(self.tensors["x"], scale=step)
            calibration = images(size, 16, seed + 100)
            self.values["x"] = ops.input_quant(calibration, quant.mean, quant.std, step)

    def conv(
        self,
        name: str,
        x: str,
        out_c: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
        bits: int = 4,
        groups: int = 1,
        dilation: int = 1,
    ) -> str:
        """conv (4-bit odd-grid weights, ``groups``, ``dilation``) -> ``bits``-bit ClimbQ codes
        ``2 j - n``."""
        c_in = self.tensors[x].shape[-1]
        weight = _weights(self.rng, (out_c, kernel, kernel, c_in // groups))
        acc = ops.int_conv(self.values[x], weight, stride, padding, groups, INT32_MAX, dilation)
        self.add(
            IntConv(
                f"{name}_conv",
                (x,),
                f"{name}_acc",
                f"{name}.conv",
                weight=weight,
                stride=stride,
                padding=padding,
                groups=groups,
                dilation=dilation,
                **GRID,
            ),
            acc,
            None,
        )
        levels = 2**bits - 1
        direction = np.where(np.arange(out_c) % 3 == 1, -1, 1).astype(np.int8)
        signed = acc.reshape(-1, out_c).astype(np.float64) * direction
        quantiles = np.quantile(signed, np.linspace(0.02, 0.98, levels), axis=0).T
        theta = np.floor(quantiles).astype(np.int64)
        codes = ops.threshold_act(acc, theta, direction, 2, -levels)
        return self.add(
            ThresholdAct(
                f"{name}_act",
                (f"{name}_acc",),
                f"{name}_q",
                f"{name}.act",
                thresholds=theta,
                direction=direction,
                mult=2,
                offset=-levels,
                bits=bits,
            ),
            codes,
        )


def _dilated(b: _ConvBuilder) -> str:
    x = b.conv("stem", "x", 6, 3, padding=1)
    x = b.conv("dil2", x, 8, 3, padding=2, dilation=2)
    return b.conv("dil3_s2", x, 6, 3, stride=2, padding=1, dilation=3, bits=2)


def _depthwise(b: _ConvBuilder) -> str:
    x = b.conv("stem", "x", 4, 3, padding=1)
    x = b.conv("expand", x, 8, 1)
    x = b.conv("dw_dil2", x, 8, 3, padding=2, groups=8, dilation=2)
    x = b.conv("dw_dil2_s2", x, 8, 3, stride=2, padding=1, groups=8, dilation=2, bits=2)
    return b.conv("dw_mult2", x, 16, 3, padding=1, groups=8)


def _grouped(b: _ConvBuilder) -> str:
    x = b.conv("stem", "x", 8, 3, padding=1)
    x = b.conv("g2", x, 8, 3, padding=1, groups=2)
    x = b.conv("g4_s2", x, 12, 3, stride=2, padding=1, groups=4, bits=2)
    x = b.conv("g4_1x1", x, 8, 1, groups=4, dilation=2)
    return b.conv("g2_dil2", x, 6, 3, padding=2, groups=2, dilation=2)


def _dilated_stem(b: _ConvBuilder) -> str:
    x = b.conv("stem", "x", 6, 3, padding=2, dilation=2)
    return b.conv("g3_dil2", x, 6, 3, padding=1, groups=3, dilation=2, bits=2)


def _grouped_stem(b: _ConvBuilder) -> str:
    x = b.conv("stem", "x", 6, 3, padding=2, groups=3, dilation=2)
    return b.conv("mix", x, 6, 1, bits=2)


PROGRAMS = {
    "dilated": (_dilated, 12, STEP),
    "depthwise": (_depthwise, 10, STEP),
    "grouped": (_grouped, 10, STEP),
    "dilated-stem": (_dilated_stem, 9, 2.0**-18),
    "grouped-stem": (_grouped_stem, 9, 2.0**-18),
}
CASES = tuple(PROGRAMS)
DILATED_LAYERS = {
    "dilated": ("dil2", "dil3_s2"),
    "depthwise": ("dw_dil2", "dw_dil2_s2"),
    "grouped": ("g2_dil2",),
    "dilated-stem": ("stem", "g3_dil2"),
    "grouped-stem": ("stem",),
}
"""The layers of each case with ``dilation > 1`` and a kernel larger than 1x1."""
GROUPED_LAYERS = {
    "dilated": (),
    "depthwise": ("dw_dil2", "dw_dil2_s2", "dw_mult2"),
    "grouped": ("g2", "g4_s2", "g4_1x1", "g2_dil2"),
    "dilated-stem": ("g3_dil2",),
    "grouped-stem": ("stem",),
}
"""The layers of each case with ``groups > 1``."""


def many_groups_program(groups: int = 20, seed: int = 0) -> Graph:
    """image 8x8 -> 3x3 stem (``groups`` channels) -> depthwise 3x3 with channel multiplier 2
    and dilation 2 (``groups`` groups, ``2 groups`` outputs, 2-bit codes) -> pool -> head."""
    b = _ConvBuilder(8, seed)
    x = b.conv("stem", "x", groups, 3, padding=1)
    return b.finish(b.conv("many", x, 2 * groups, 3, padding=2, groups=groups, dilation=2, bits=2))


def conv_program(case: str, seed: int = 0) -> Graph:
    """The bounded program of one of :data:`CASES` (image ``S x S x 3``, sum pool, head)."""
    build, size, step = PROGRAMS[case]
    b = _ConvBuilder(size, seed, step)
    return b.finish(build(b))
