"""What every target provides: export a lowered program, load it, run it on images.

``check``, ``bench`` and the CLI talk to targets only through :class:`Target` and
:class:`Runner`, so each backend folder stays thin and alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from climbq_deploy.ir.graph import Graph


@dataclass
class RunOutput:
    """``logits`` (N, classes) float64 and, when asked, the integer activation outputs
    ``X_int`` (NHWC) of every quantized layer by its training-side module name."""

    logits: np.ndarray
    codes: dict[str, np.ndarray] = field(default_factory=dict)


class Runner(Protocol):
    graph: Graph  # the integer program this runner computes (the oracle runs the same)

    def run(self, images: np.ndarray, with_codes: bool = False) -> RunOutput: ...


class Target(Protocol):
    name: str
    suffix: str
    input_bits: int  # width of the program's integer input this target reads

    def unavailable(self) -> str | None:
        """None when this machine can run the target, else the reason (one line)."""
        ...

    def export(self, graph: Graph, out: Path) -> Path: ...

    def load(self, path: Path) -> Runner: ...
