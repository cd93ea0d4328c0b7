"""Crash-safe checkpoints that load without unpickling code.

A checkpoint is written with :func:`torch.save` into a temporary file that replaces the old one
atomically (:func:`climbq_deploy.fileio.atomic_write`), and read back with
``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from climbq_deploy.errors import ArtifactError
from climbq_deploy.fileio import atomic_write

CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically write ``state`` (tensors, numbers, strings, lists, dicts) with a version tag."""
    with atomic_write(path, "wb") as handle:
        torch.save({"checkpoint_version": CHECKPOINT_VERSION, **state}, handle)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as exc:
        raise ArtifactError(f"checkpoint {path} cannot be read: {exc}") from None
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
    ) as exc:
        # a file torn mid-write may also fail inside torch's reader as OSError (EINVAL)
        # torch's message starts with advice to retry with weights_only=False: never show it
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        boiler = ("Weights only load failed", "Please file an issue", "Check the documentation")
        first = ([x for x in lines if not x.startswith(boiler)] or lines or [type(exc).__name__])[0]
        raise ArtifactError(f"checkpoint {path} is corrupt, truncated or unsafe: {first}") from None
    if not isinstance(state, dict) or "checkpoint_version" not in state:
        raise ArtifactError(f"{path} is not a climbq checkpoint")
    version = state["checkpoint_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArtifactError(f"{path} has checkpoint_version {version!r}, not an integer")
    if version > CHECKPOINT_VERSION:
        raise ArtifactError(
            f"{path} has checkpoint_version {state['checkpoint_version']}; this climbq reads up to "
            f"{CHECKPOINT_VERSION}"
        )
    return state
