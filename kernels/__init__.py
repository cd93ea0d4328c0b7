"""NumPy integer kernels (one per IR op) and the reference runner: the oracle of every target."""

from climbq_deploy.kernels.reference import REFERENCE_KERNELS, ReferenceModel

__all__ = ["REFERENCE_KERNELS", "ReferenceModel"]
