"""The ClimbQ paper's reproduction (the accuracy grid) and studies of the method, apart from
the product: nothing in ``climbq_deploy`` imports this package and the wheel does not hold it.

It uses the product only through the package ``climbq_deploy`` (plus the result-file helpers of
``bench._common``, so research and benchmark results share one format). Run its scripts as
modules from the repository root, e.g. ``python -m research.accuracy.runner list``.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "research" / "results"  # committed results of the grid and the studies
