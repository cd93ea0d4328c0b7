"""Post-training quantization from a calibration set: PTQ baselines and ClimbQ-PTQ.

``calibrate(CalibrateConfig(fp_run, recipe, calib, ...), out)`` turns a full-precision run into
an ordinary quantized run folder (see :mod:`.calibrate`); :mod:`.ranges` observes and ties
activation ranges, :mod:`.batchnorm` re-estimates BatchNorm statistics.
"""

from climbq_deploy.ptq.batchnorm import reestimate_batchnorm
from climbq_deploy.ptq.calibrate import PRESETS, CalibrateConfig, calibrate
from climbq_deploy.ptq.ranges import (
    RANGE_RULES,
    RangeRule,
    observe_ranges,
    residual_groups,
    tie_ranges,
)

__all__ = [
    "PRESETS",
    "RANGE_RULES",
    "CalibrateConfig",
    "RangeRule",
    "calibrate",
    "observe_ranges",
    "reestimate_batchnorm",
    "residual_groups",
    "tie_ranges",
]
