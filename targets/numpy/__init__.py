"""The NumPy target: the reference integer program itself (``model.climbq``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from climbq_deploy.ir.graph import Graph, ThresholdAct
from climbq_deploy.ir.serialize import save_program
from climbq_deploy.kernels.reference import ReferenceModel
from climbq_deploy.targets.base import RunOutput


class NumpyRunner:
    def __init__(self, model: ReferenceModel) -> None:
        self.model = model
        self.graph = model.graph
        self._codes = {n.output: n.source for n in model.graph.nodes if isinstance(n, ThresholdAct)}

    def run(self, images: np.ndarray, with_codes: bool = False) -> RunOutput:
        keep = set(self._codes) if with_codes else set()
        values = self.model.run(images, keep=keep)
        codes = {self._codes[name]: values[name] for name in keep}
        return RunOutput(values[self.model.graph.output], codes)


class NumpyTarget:
    name = "numpy"
    suffix = ".climbq"
    input_bits = 32

    def unavailable(self) -> str | None:
        return None

    def export(self, graph: Graph, out: Path) -> Path:
        return save_program(graph, out)

    def load(self, path: Path) -> NumpyRunner:
        return NumpyRunner(ReferenceModel.load(path))
