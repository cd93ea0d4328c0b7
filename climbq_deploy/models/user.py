"""A user's own model for training: ``path/to/file.py:factory`` or ``package.module:factory``.

The factory returns a float ``nn.Module``; :func:`build_user_model` calls it (with
``num_classes=`` when it takes that keyword) and quantizes the result with
:func:`climbq_deploy.quantize`. A run records the spec with the file's absolute path and the
file's sha256 (:class:`~climbq_deploy.train.config.TrainConfig` ``model``, ``model_sha256``), so
that ``load_run`` rebuilds the same module and can tell when the file has changed since.

A file is imported as a fresh module each time (its folder on ``sys.path`` while it runs, so
it can import its neighbours); a dotted module is imported the ordinary way.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from climbq_deploy.errors import ConfigError
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.quantized import QuantizedModel

USER_ARCH = "custom"  # the ``arch`` a run of a user's model records


@dataclass(frozen=True)
class ModelSource:
    """Where a user's model comes from: ``location`` (an absolute ``.py`` path, or a dotted
    module name) and ``factory`` (a name in it, dotted for an attribute of an attribute)."""

    location: str
    factory: str
    is_file: bool

    @classmethod
    def parse(cls, text: str) -> ModelSource:
        """``FILE.py:FACTORY`` (a relative path is made absolute against the working folder)
        or ``package.module:FACTORY``."""
        location, sep, factory = str(text).rpartition(":")
        if not sep or not location or not all(p.isidentifier() for p in factory.split(".")):
            raise ConfigError(
                f"a model is given as FILE.py:FACTORY or package.module:FACTORY, got {text!r}"
            )
        is_file = location.endswith(".py") or "/" in location or "\\" in location
        if is_file:
            location = str(Path(location).expanduser().resolve())
        elif not all(p.isidentifier() for p in location.split(".")):
            raise ConfigError(f"{location!r} is neither a .py file nor a dotted module name")
        return cls(location, factory, is_file)

    def __str__(self) -> str:
        return f"{self.location}:{self.factory}"

    def file(self) -> Path | None:
        """The source file: the given ``.py``, or the module's file (None for a module that
        has none, or that cannot be found)."""
        if self.is_file:
            return Path(self.location)
        try:
            spec = importlib.util.find_spec(self.location)
        except (ImportError, ValueError):
            return None
        origin = spec.origin if spec is not None else None
        return Path(origin) if origin and Path(origin).is_file() else None

    def sha256(self) -> str | None:
        """sha256 of the source file's bytes (None where there is no file to read)."""
        path = self.file()
        if path is None or not path.is_file():
            return None
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def load_factory(self) -> Callable[..., Any]:
        """The factory object. ConfigError naming the file and the name when the file is
        missing, fails to import, or has no such name."""
        module = self._import()
        found: Any = module
        for part in self.factory.split("."):
            if not hasattr(found, part):
                names = sorted(
                    n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                )
                raise ConfigError(
                    f"{self.location} has no {self.factory!r} (callables there: "
                    f"{', '.join(names) or 'none'})"
                )
            found = getattr(found, part)
        if not callable(found):
            raise ConfigError(f"{self}: {type(found).__name__} is not callable")
        return found

    def _import(self) -> Any:
        if not self.is_file:
            try:
                return importlib.import_module(self.location)
            except Exception as exc:  # the user's import: any error is theirs
                raise ConfigError(
                    f"cannot import model module {self.location}: {type(exc).__name__}: {exc}"
                ) from exc
        path = Path(self.location)
        if not path.is_file():
            raise ConfigError(f"model file {path} does not exist")
        name = "_climbq_user_model_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"model file {path} cannot be imported (is it a .py file?)")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's code: any error is theirs
            sys.modules.pop(name, None)
            raise ConfigError(
                f"importing model file {path} failed: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            sys.path.remove(str(path.parent))
        return module

    def build_float(self, num_classes: int) -> nn.Module:
        """The factory's float model: called as ``factory(num_classes=num_classes)`` when it
        takes that keyword (or ``**kwargs``), else ``factory()``."""
        factory = self.load_factory()
        call = f"{self}(num_classes={num_classes})" if _takes_num_classes(factory) else f"{self}()"
        try:
            model = factory(num_classes=num_classes) if _takes_num_classes(factory) else factory()
        except Exception as exc:  # the user's code: any error is theirs
            raise ConfigError(f"{call} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(model, nn.Module):
            raise ConfigError(f"{call} returned {type(model).__name__}, not a torch.nn.Module")
        return model


def _takes_num_classes(factory: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): call it bare
        return False
    return any(
        p.kind is p.VAR_KEYWORD
        or (p.name == "num_classes" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        for p in params
    )


def source_changed(model: str, recorded: str | None) -> str | None:
    """A sentence saying that ``model``'s source file no longer has the sha256 ``recorded``
    when its run began; None when it has, or when nothing was recorded."""
    if recorded is None:
        return None
    source = ModelSource.parse(model)
    now = source.sha256()
    if now == recorded:
        return None
    state = "is gone" if now is None else f"changed (sha256 {recorded[:12]}... -> {now[:12]}...)"
    return f"the model file {source.file() or source.location} {state} since the run was trained"


def build_user_model(
    source: str | ModelSource,
    num_classes: int,
    spec: QuantSpec,
    image_shape: tuple[int, int, int] | None = None,
) -> QuantizedModel:
    """The user's model of ``source`` built for ``num_classes`` and quantized as ``spec`` says
    (every conv, the first included; the head float). ``image_shape`` (H, W, C) of the data:
    where torch.fx cannot trace the model, torch.export traces it on an input of that shape.
    ConfigError when the model's head has another number of outputs than ``num_classes``."""
    import torch

    from climbq_deploy.quant.convert import quantize

    example = None
    if image_shape is not None:
        h, w, c = image_shape
        example = torch.zeros(1, c, h, w)

    source = source if isinstance(source, ModelSource) else ModelSource.parse(source)
    model = quantize(
        source.build_float(num_classes),
        spec.method,
        spec.wbits,
        spec.abits,
        act_scaling=spec.act_scaling,
        example_input=example,
    )
    if model.num_classes != num_classes:
        raise ConfigError(
            f"{source}: the model's head {model.head_name!r} has {model.num_classes} outputs, "
            f"but the dataset has {num_classes} classes"
        )
    return model


__all__ = ["USER_ARCH", "ModelSource", "build_user_model", "source_changed"]
