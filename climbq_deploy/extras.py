"""Which optional extra of the package brings each third-party module it imports.

The base install (``pip install climbq-deploy``) is NumPy only: the reference
(:class:`climbq_deploy.ReferenceModel`) and ``climbq bench`` on a ``.climbq`` program. Each
runtime and the training stack is an extra (``pyproject.toml``), and every module of the
package imports them where it needs them, never at import time, so that a device install runs
``climbq bench`` with no torch. When a command reaches a module that is not installed, the CLI
names the extra to install (:func:`missing_extra`) instead of a traceback, and exits with 3,
as for a runtime missing on this machine.
"""

from __future__ import annotations

from dataclasses import dataclass

# top-level module name -> the extra that installs it
EXTRA_OF_MODULE: dict[str, str] = {
    "torch": "train",
    "scipy": "train",
    "sklearn": "train",
    "matplotlib": "train",
    "PIL": "train",
    "tqdm": "train",
    "torchvision": "vision",
    "ai_edge_litert": "tflite",
    "flatbuffers": "tflite",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "tensorrt": "tensorrt",
    "cuda": "tensorrt",
    "polygraphy": "tensorrt",
}


@dataclass(frozen=True)
class MissingModule:
    """A third-party module that is not installed, and the extra that brings it."""

    module: str
    extra: str

    def message(self, command: str) -> str:
        """``climbq train needs the [train] extra: pip install 'climbq-deploy[train]' (...)``"""
        return (
            f"{command} needs the [{self.extra}] extra: pip install 'climbq-deploy[{self.extra}]' "
            f"({self.module} is not installed)"
        )


def missing_extra(error: BaseException) -> MissingModule | None:
    """The missing module behind ``error`` (a :class:`ModuleNotFoundError` for one of
    :data:`EXTRA_OF_MODULE`'s modules, or an ImportError raised from one), else None: a
    module of this package that cannot be found is a bug, not a missing extra."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ModuleNotFoundError) and current.name:
            top = current.name.partition(".")[0]
            if top in EXTRA_OF_MODULE:
                return MissingModule(top, EXTRA_OF_MODULE[top])
            return None
        if not isinstance(current, ImportError):
            return None
        current = current.__cause__ or current.__context__
    return None


__all__ = ["EXTRA_OF_MODULE", "MissingModule", "missing_extra"]
