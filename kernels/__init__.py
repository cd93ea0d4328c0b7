"""NumPy integer kernels (one per IR op) and the reference runner: the oracle of every target."""

from climbq_deploy.kernels.reference import ReferenceModel

__all__ = ["ReferenceModel"]
