"""Deployment targets: a registry (:data:`TARGETS`, name -> class) of classes implementing
the :class:`~.base.Target` protocol, one folder each.

A target registers itself without an edit anywhere else:

- a built-in target is a subpackage of ``climbq_deploy.targets`` whose ``__init__`` defines a
  module-level ``TARGET = TheTargetClass``; every subpackage is imported (cheaply: runtimes
  such as onnx or LiteRT are imported inside the methods that need them) on the first look
  into the registry;
- a plug-in names its class in the ``climbq_deploy.targets`` entry-point group
  (``[project.entry-points."climbq_deploy.targets"] mytarget = "pkg.module:MyTarget"``);
- anything else (a test, a notebook) calls :func:`register_target` (also a decorator).

The CLI takes ``--target``'s choices and one flag per ``Options`` field from here, and
``bench`` picks a target by the artifact's suffix (:func:`target_for_path`).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import warnings
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from climbq_deploy.errors import ConfigError
from climbq_deploy.targets.base import (
    HEADS,
    Lowering,
    Runner,
    RunOutput,
    Target,
    TargetBase,
    TargetOptions,
    option,
)

ENTRY_POINT_GROUP = "climbq_deploy.targets"
DEFAULT_TARGET = "numpy"  # the reference: what export and check use without --target
_ATTRIBUTES = ("name", "summary", "suffixes", "Options", "input_bits", "exact", "reference", "rank")
_METHODS = ("unavailable", "export", "load", "bench")


class _Registry(Mapping[str, type]):
    """Target classes by name, in ``(rank, registration)`` order; built-in and plug-in targets
    are discovered on first use."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}
        self._discovered = False

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for module in pkgutil.iter_modules(__path__):
            if not module.ispkg:
                continue
            found = getattr(importlib.import_module(f"{__name__}.{module.name}"), "TARGET", None)
            if found is not None:
                self.add(found)
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                self.add(point.load())
            except Exception as exc:  # a broken plug-in must not take the CLI down with it
                warnings.warn(
                    f"target plug-in {point.name!r} ({point.value}) is not loaded: {exc}",
                    stacklevel=2,
                )

    def add(self, cls: type) -> type:
        _check_protocol(cls)
        current = self._classes.get(cls.name)
        if current is not None and current is not cls:
            raise ConfigError(
                f"a target named {cls.name!r} is already registered "
                f"({current.__module__}.{current.__qualname__})"
            )
        self._classes[cls.name] = cls
        return cls

    def remove(self, name: str) -> None:
        self._discover()
        if self._classes.pop(name, None) is None:
            raise ConfigError(f"no target {name!r} is registered")

    def _ordered(self) -> list[str]:
        self._discover()
        order = {name: i for i, name in enumerate(self._classes)}
        return sorted(self._classes, key=lambda n: (self._classes[n].rank, order[n]))

    def __getitem__(self, name: str) -> type:
        self._discover()
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ordered())

    def __len__(self) -> int:
        self._discover()
        return len(self._classes)

    def __repr__(self) -> str:
        return f"TARGETS({', '.join(self)})"


TARGETS = _Registry()


def _check_protocol(cls: Any) -> None:
    """ConfigError unless ``cls`` has every attribute and method of the protocol, with a
    frozen ``Options`` dataclass."""
    label = getattr(cls, "__qualname__", repr(cls))
    missing = [a for a in (*_ATTRIBUTES, *_METHODS) if not hasattr(cls, a)]
    missing += [m for m in _METHODS if m not in missing and not callable(getattr(cls, m))]
    if missing:
        raise ConfigError(f"target class {label} lacks {', '.join(missing)} of the Target protocol")
    options = cls.Options
    if not (dataclasses.is_dataclass(options) and options.__dataclass_params__.frozen):
        raise ConfigError(f"target class {label}: Options must be a frozen dataclass")
    if not isinstance(cls.suffixes, tuple) or not all(
        isinstance(s, str) and s.startswith(".") for s in cls.suffixes
    ):
        raise ConfigError(f"target class {label}: suffixes must be a tuple like ('.onnx',)")


def register_target(cls: type) -> type:
    """Add ``cls`` to :data:`TARGETS` under ``cls.name`` (usable as a class decorator)."""
    TARGETS._discover()
    return TARGETS.add(cls)


def unregister_target(name: str) -> None:
    """Remove the target called ``name`` from :data:`TARGETS`."""
    TARGETS.remove(name)


def join_names(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def target_class(name: str) -> type:
    """The class registered as ``name``; ConfigError listing the known ones otherwise."""
    if name not in TARGETS:
        raise ConfigError(f"unknown target {name!r}; expected one of {', '.join(TARGETS)}")
    return TARGETS[name]


def option_fields(cls: type) -> dict[str, dataclasses.Field]:
    """The ``Options`` fields of target class ``cls`` by name."""
    return {f.name: f for f in dataclasses.fields(cls.Options)}


def option_owners(name: str) -> list[type]:
    """The registered target classes that have an option called ``name``."""
    return [cls for cls in TARGETS.values() if name in option_fields(cls)]


def get_target(name: str, /, *values: Any, **options: Any) -> Target:
    """The target called ``name`` with its options: positional ``values`` fill the fields of
    its ``Options`` in order (``get_target("tflite", "ref")``), keywords by name; None means
    the default (also past the last field: ``get_target("numpy", None, None)``). ConfigError
    for an unknown target or an option it does not have."""
    cls = target_class(name)
    fields = list(option_fields(cls))
    extra = [value for value in values[len(fields) :] if value is not None]
    if extra:
        raise ConfigError(
            f"target {name!r} takes {len(fields)} option(s) ({', '.join(fields)}), got {extra!r} "
            "beyond them"
        )
    given = {**dict(zip(fields, values, strict=False)), **options}
    given = {key: value for key, value in given.items() if value is not None}
    for key, value in given.items():
        if key not in fields:
            owners = [c.name for c in option_owners(key)]
            where = join_names(owners) if owners else "no registered target"
            raise ConfigError(f"{key}={value!r} applies to {where}, not {name!r}")
    return cls(**given)


def refuse_unlowerable(target: Any, config: Any, head: str = "float") -> None:
    """ConfigError, before any lowering, when ``target`` (a target or its class) declares
    what it lowers (``lowers``) and no row covers the run of ``config`` (its ``method``,
    ``wbits``, ``abits``) with ``head``. Full-precision runs are left to the lowering, which
    refuses them with its own message."""
    rows = getattr(target, "lowers", None)
    if rows is None or config.method == "fp32" or 32 in (config.wbits, config.abits):
        return
    run = f"{config.method} w{config.wbits}a{config.abits}"
    if any(row.covers(config.method, config.wbits, config.abits, head) for row in rows):
        return
    raise ConfigError(
        f"target {target.name!r} has no exact form for a {run} run with the {head} head; it "
        f"lowers {'; '.join(map(str, rows))} (the numpy target lowers every quantized run)"
    )


def lowering_table() -> list[str]:
    """One line per registered target: what it lowers exactly (``climbq export --help``)."""
    lines = []
    for name, cls in TARGETS.items():
        rows = getattr(cls, "lowers", None)
        what = "; ".join(map(str, rows)) if rows else "every quantized run the IR lowers"
        lines.append(f"{name}: {what}")
    return lines


def target_for_path(path: str | Path) -> type | None:
    """The target class whose suffix ends the file name of ``path`` (the longest match;
    between equal suffixes the first in :data:`TARGETS`), else None."""
    file_name = Path(path).name
    best: tuple[int, type] | None = None
    for cls in TARGETS.values():
        for suffix in cls.suffixes:
            if file_name.endswith(suffix) and (best is None or len(suffix) > best[0]):
                best = (len(suffix), cls)
    return best[1] if best else None


def known_suffixes() -> list[str]:
    """Every artifact suffix of a registered target, sorted."""
    return sorted({s for cls in TARGETS.values() for s in cls.suffixes})


def __getattr__(name: str) -> Any:
    if name == "TARGET_NAMES":  # the registered names, as a tuple (older callers)
        return tuple(TARGETS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_TARGET",
    "HEADS",
    "TARGETS",
    "Lowering",
    "RunOutput",
    "Runner",
    "Target",
    "TargetBase",
    "TargetOptions",
    "get_target",
    "join_names",
    "lowering_table",
    "option",
    "option_fields",
    "option_owners",
    "refuse_unlowerable",
    "register_target",
    "target_class",
    "target_for_path",
    "unregister_target",
]
