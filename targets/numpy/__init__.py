"""The NumPy target: the reference integer program itself (``model.climbq``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.ir.graph import Graph, ThresholdAct
from climbq_deploy.ir.serialize import save_program
from climbq_deploy.kernels.reference import ReferenceModel
from climbq_deploy.targets.base import RunOutput, TargetBase, TargetOptions, option


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


@dataclass(frozen=True)
class NumpyOptions(TargetOptions):
    pack: bool = option(
        True,
        help="weights packed at their bit width (--no-pack: int8, not packed)",
        stage="export",
    )


class NumpyTarget(TargetBase):
    """The oracle: ``check`` compares it with torch only; ``bench`` times the NumPy kernels
    (BLAS uses its own thread pool: ``threads`` is recorded as None)."""

    name = "numpy"
    summary = "the NumPy integer reference, model.climbq"
    suffixes = (".climbq",)
    Options = NumpyOptions
    input_bits = 32
    reference = True
    rank = 0
    options: NumpyOptions

    def unavailable(self) -> str | None:
        return None

    def export(self, graph: Graph, out: Path) -> Path:
        return save_program(graph, out, pack=self.options.pack)

    def load(self, path: Path, *, threads: int | None = None) -> NumpyRunner:
        return NumpyRunner(ReferenceModel.load(path))

    def bench(
        self, path: Path, *, batch: int, threads: int, warmup: int, repeats: int
    ) -> dict[str, Any]:
        from climbq_deploy.bench import bench_runner

        runtime = f"numpy {np.__version__}"
        record = bench_runner(
            self, path, batch=batch, warmup=warmup, repeats=repeats, runtime=runtime
        )
        record["threads"] = None  # NumPy's BLAS uses its own thread pool
        return record


TARGET = NumpyTarget
