"""Deployment targets, one folder each, all behind the :class:`~.base.Target` interface."""

from __future__ import annotations

from climbq_deploy.errors import ConfigError
from climbq_deploy.targets.base import Runner, RunOutput, Target

TARGET_NAMES = ("numpy", "tflite", "tensorrt")


def get_target(name: str, kernels: str | None = None, weights: str | None = None) -> Target:
    """The target called ``name`` (``kernels``: the runtime's kernel choice where it has one,
    for tensorrt the runtime; ``weights``: int8/int4 weight storage for tflite and tensorrt);
    ConfigError listing the known ones otherwise."""
    if weights is not None and name not in ("tflite", "tensorrt"):
        raise ConfigError(f"weights={weights!r} applies to tflite and tensorrt, not {name!r}")
    if name == "numpy":
        from climbq_deploy.targets.numpy import NumpyTarget

        return NumpyTarget()
    if name == "tflite":
        from climbq_deploy.targets.tflite import TfliteTarget

        return TfliteTarget(kernels or "xnnpack", weights or "int8")
    if name == "tensorrt":
        from climbq_deploy.targets.tensorrt import TensorrtTarget

        return TensorrtTarget(kernels or "onnxruntime", weights or "int8")
    raise ConfigError(f"unknown target {name!r}; expected one of {', '.join(TARGET_NAMES)}")


__all__ = ["TARGET_NAMES", "RunOutput", "Runner", "Target", "get_target"]
