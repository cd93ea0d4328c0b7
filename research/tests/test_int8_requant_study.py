"""``research/studies/tflite_int8_requant.py``: the per-channel shifts of its int8 emulation."""

from __future__ import annotations

import numpy as np

from research.studies import tflite_int8_requant as study


def test_span_shifts_are_the_smallest_that_fit() -> None:
    thresholds = np.array(
        [
            [-100, 0, 149],  # width 249: fits 250 unshifted
            [-1000, 0, 1000],  # width 2000: 2000 >> 3 = 250, + 1 > 250; s = 4
            [0, 0, 1],  # a constant channel keeps 0
            [5, 300, 505],  # width 500: 500 >> 1 = 250, + 1 > 250; s = 2
        ]
    )
    direction = np.array([1, -1, 0, 1], np.int8)
    assert study.span_shifts(thresholds, direction, 250).tolist() == [0, 4, 0, 2]
    assert study.span_shifts(thresholds, direction, 2**31 - 1).tolist() == [0, 0, 0, 0]
    assert study.span_shifts(thresholds, direction, 1).tolist() == [8, 11, 0, 9]
