"""climbq_deploy: class-imbalance-robust low-bit CNNs (ClimbQ / ClimbQ+), lowered to integers
and deployed to NumPy, LiteRT and TensorRT targets.

The Python API (:mod:`climbq_deploy.api`), each name loaded on first use so that
``import climbq_deploy`` imports no torch (a device's torch-free install runs ``bench`` and
``ReferenceModel``):

- ``quantize(model, method="climbq+", wbits=4, abits=4, ...)``: a user's float CNN made
  quantization-aware (:mod:`climbq_deploy.quant.convert`);
- ``train(data, out, **options)``: a training run, as ``climbq train`` (returns ``out``);
- ``export(run_or_model, target="numpy", out=None, **options)``: the target's integer artifact;
- ``check(run, target="numpy", ...)``: the artifact against the torch model, as a record;
- ``bench(artifact, ...)``: latency and accuracy of an artifact;
- ``verify(model, golden=None, ...)``: a model on this device against the golden file that
  ``export`` wrote beside it (torch-free; :mod:`climbq_deploy.verify`);
- ``load_run(folder)``: a run's torch model, config and metrics;
- ``ReferenceModel``: the NumPy oracle that runs an integer program.

``train``, ``export``, ``check``, ``bench`` and ``verify`` are also modules of this package
(the training loop, the exporter, the checker, the benchmark, the device check):
``climbq_deploy.export`` *is* the module
:mod:`climbq_deploy.export`, made callable (:class:`_CallableModule`), so that
``climbq_deploy.export(run)`` calls :func:`climbq_deploy.api.export` while
``from climbq_deploy.export import load_run`` keeps working.
"""

from __future__ import annotations

import importlib
import sys
import types
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("climbq-deploy")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

# public functions that share their name with a module of the package (see the docstring)
_CALLABLE_MODULES = ("train", "export", "check", "bench", "verify")
# the other public names and the module each comes from
_API = {
    "quantize": "climbq_deploy.quant.convert",
    "load_run": "climbq_deploy.export",
    "ReferenceModel": "climbq_deploy.kernels",
}


class _CallableModule(types.ModuleType):
    """A module of this package that is also the API function of its name: calling
    ``climbq_deploy.<name>(...)`` calls :mod:`climbq_deploy.api`'s ``<name>``."""

    def _api_function(self) -> Any:
        api = importlib.import_module("climbq_deploy.api")
        return getattr(api, self.__name__.rpartition(".")[2])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._api_function()(*args, **kwargs)

    @property
    def __signature__(self) -> Any:  # inspect.signature(climbq_deploy.export): the function's
        import inspect

        return inspect.signature(self._api_function())


def _make_callable(name: str) -> None:
    """Make the loaded module ``name`` (``climbq_deploy.export``, ...) callable as its API
    function; each of those modules calls this as it loads."""
    sys.modules[name].__class__ = _CallableModule


def __getattr__(name: str) -> Any:
    if name in _CALLABLE_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_CALLABLE_MODULES, *_API})


__all__ = [
    "ReferenceModel",
    "__version__",
    "bench",
    "check",
    "export",
    "load_run",
    "quantize",
    "train",
    "verify",
]
