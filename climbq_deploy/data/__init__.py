"""Datasets: builders (SynDigits-LT, image folders and zips, CIFAR python batches, digits),
long-tail counts, the saved ``data.npz`` + ``meta.json`` form, and the in-memory batch pipeline.
"""

from climbq_deploy.data.dataset import ImageDataset, load_dataset, save_dataset
from climbq_deploy.data.longtail import longtail_counts

__all__ = ["ImageDataset", "load_dataset", "longtail_counts", "save_dataset"]
