"""Deployment targets, one folder each, all behind the :class:`~.base.Target` interface."""

from __future__ import annotations

from climbq_deploy.errors import ConfigError
from climbq_deploy.targets.base import Runner, RunOutput, Target

TARGET_NAMES = ("numpy",)


def get_target(name: str) -> Target:
    """The target called ``name``; ConfigError listing the known ones otherwise."""
    if name == "numpy":
        from climbq_deploy.targets.numpy import NumpyTarget

        return NumpyTarget()
    raise ConfigError(f"unknown target {name!r}; expected one of {', '.join(TARGET_NAMES)}")


__all__ = ["TARGET_NAMES", "RunOutput", "Runner", "Target", "get_target"]
