"""What calibrates: calibration sets, range observers, BatchNorm re-estimation and the
post-training quantization built on them (PTQ baselines and ClimbQ-PTQ).

Installed as ``climbq_deploy.calibration`` (the folder sits at the top of the repository, as
the design card lays out, but is never a top-level package of its own).

``calibrate(CalibrateConfig(fp_run, recipe, calib, ...), out)`` turns a full-precision run into
an ordinary quantized run folder (see :mod:`.calibrate`); :mod:`.ranges` observes and ties
activation ranges, :mod:`.batchnorm` re-estimates BatchNorm statistics, :mod:`.calibset`
draws the calibration set.
"""

from climbq_deploy.calibration.batchnorm import reestimate_batchnorm
from climbq_deploy.calibration.calibrate import PRESETS, CalibrateConfig, calibrate
from climbq_deploy.calibration.ranges import (
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
