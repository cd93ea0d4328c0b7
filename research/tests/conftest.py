"""Fixtures of the research tests: the accuracy grid's modules with their folders in tmp."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest


def _forget_accuracy() -> None:
    """Drop ``research.accuracy`` and its modules from ``sys.modules``: they read their folders
    from the environment at import time, and ``from research.accuracy import grid`` would
    otherwise find the package's attribute from an earlier import."""
    for name in [n for n in sys.modules if n.split(".")[:2] == ["research", "accuracy"]]:
        del sys.modules[name]


@pytest.fixture
def accuracy(tmp_path, monkeypatch) -> Iterator[Callable[[str], ModuleType]]:
    """``accuracy("grid")`` etc.: ``research.accuracy.<name>`` imported anew with its runs in
    ``tmp_path/runs`` and its kept starts in ``tmp_path/starts`` (never this checkout's)."""
    monkeypatch.setenv("CLIMBQ_ACC_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("CLIMBQ_ACC_STARTS", str(tmp_path / "starts"))
    _forget_accuracy()
    yield lambda name: importlib.import_module(f"research.accuracy.{name}")
    _forget_accuracy()
