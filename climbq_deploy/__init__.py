"""climbq_deploy: class-imbalance-robust low-bit CNNs (ClimbQ / ClimbQ+), lowered to integers
and deployed to NumPy, LiteRT and TensorRT targets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("climbq-deploy")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
