"""Datasets, long-tail splits, the in-memory batch pipeline and calibration sets.

Installed as ``climbq_deploy.calibration`` (the folder sits at the top of the repository, as the
design card lays out, but is never a top-level package of its own).
"""

from climbq_deploy.calibration.dataset import ImageDataset, load_dataset, save_dataset
from climbq_deploy.calibration.longtail import longtail_counts

__all__ = ["ImageDataset", "load_dataset", "longtail_counts", "save_dataset"]
