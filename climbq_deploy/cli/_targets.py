"""``--target`` and the target option flags, made from the registry.

Each field of a registered target's ``Options`` becomes one flag (``kernels`` ->
``--kernels``; a bool that defaults to True, ``pack`` -> ``--no-pack``) on the commands of its
stage: ``export`` takes the export-stage options, ``bench`` the run-stage ones, ``check`` (which
exports afresh and runs) both. Targets that share a field share its flag. The flag's value is
None unless given, so a target's own default applies, and an option given for a target that
does not have it can be refused by name.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from climbq_deploy.errors import ConfigError
from climbq_deploy.targets import (
    DEFAULT_TARGET,
    TARGETS,
    join_names,
    option_fields,
    option_owners,
)

DEST = "target_option_"  # namespace prefix of the option flags' values


@dataclass(frozen=True)
class OptionFlag:
    """The flag of one target option name (shared by every target that has the field)."""

    name: str
    flag: str
    default: Any
    stages: frozenset[str]


def _flag_of(spec: dataclasses.Field) -> str:
    base = spec.name.replace("_", "-")
    if isinstance(spec.default, bool):
        return f"--no-{base}" if spec.default else f"--{base}"
    return f"--{base}"


def option_flags(stages: set[str]) -> list[OptionFlag]:
    """One flag per option name of the registered targets, in registry order, for options of
    the given ``stages``; ConfigError where two targets' fields of one name clash."""
    flags: dict[str, OptionFlag] = {}
    for cls in TARGETS.values():
        for spec in option_fields(cls).values():
            flag = OptionFlag(spec.name, _flag_of(spec), spec.default, frozenset())
            known = flags.get(spec.name, flag)
            if known.flag != flag.flag:
                raise ConfigError(
                    f"target {cls.name!r}: option {spec.name!r} would be {flag.flag} but "
                    f"another target's is {known.flag}"
                )
            flags[spec.name] = dataclasses.replace(
                known, stages=known.stages | {spec.metadata.get("stage", "run")}
            )
    return [flag for flag in flags.values() if flag.stages & stages]


def _help(name: str) -> str:
    parts = []
    for cls in option_owners(name):
        spec = option_fields(cls)[name]
        text = f"{cls.name}: {spec.metadata.get('help', name)}"
        if not isinstance(spec.default, bool):
            text += f" (default: {spec.default})"
        parts.append(text)
    return "; ".join(parts)


def _choices(name: str) -> list[Any] | None:
    values: list[Any] = []
    for cls in option_owners(name):
        choices = option_fields(cls)[name].metadata.get("choices")
        if choices is None:
            return None
        values += [value for value in choices if value not in values]
    return values


def add_target_option_flags(parser: argparse.ArgumentParser, stages: set[str]) -> None:
    """The option flags of ``stages`` on ``parser``; ``args.target_options`` lists them."""
    flags = option_flags(stages)
    for flag in flags:
        dest, help_text = DEST + flag.name, _help(flag.name)
        try:
            if isinstance(flag.default, bool):
                parser.add_argument(
                    flag.flag,
                    dest=dest,
                    action="store_const",
                    const=not flag.default,
                    default=None,
                    help=help_text,
                )
            else:
                parser.add_argument(
                    flag.flag,
                    dest=dest,
                    type=type(flag.default),
                    choices=_choices(flag.name),
                    default=None,
                    help=help_text,
                )
        except argparse.ArgumentError as exc:
            raise ConfigError(f"target option {flag.name!r} clashes with a flag: {exc}") from None
    parser.set_defaults(target_options=tuple(flag.name for flag in flags))


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The target options given on the command line (value not None), by field name."""
    values = {name: getattr(args, DEST + name) for name in args.target_options}
    return {name: value for name, value in values.items() if value is not None}


def refuse_foreign(
    given: dict[str, Any], cls: type | None, owners_text: Callable[[list[type]], str], what: str
) -> None:
    """ConfigError naming the first option in ``given`` that target class ``cls`` (None: no
    target) lacks: ``--kernels applies to <owners_text(owners)>, not <what>``."""
    for name in given:
        if cls is None or name not in option_fields(cls):
            flag = next(f.flag for f in option_flags({"export", "run"}) if f.name == name)
            raise ConfigError(f"{flag} applies to {owners_text(option_owners(name))}, not {what}")


def target_name(text: str) -> str:
    """``--target``'s type: a registered target's name."""
    if text not in TARGETS:
        raise argparse.ArgumentTypeError(
            f"unknown target {text!r}; expected one of {', '.join(TARGETS)}"
        )
    return text


def add_target_argument(parser: argparse.ArgumentParser, stages: set[str]) -> None:
    """``--target`` (choices and help from the registry) and the option flags of ``stages``."""
    listing = "; ".join(f"{name}: {cls.summary}" for name, cls in TARGETS.items())
    parser.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        type=target_name,
        metavar="{" + ",".join(TARGETS) + "}",
        help=f"the target ({listing})",
    )
    add_target_option_flags(parser, stages)


def owner_targets(owners: list[type]) -> str:
    """``--target tflite`` / ``--target tflite and tensorrt``."""
    return "--target " + join_names([cls.name for cls in owners])


def owner_suffixes(owners: list[type]) -> str:
    """``.tflite models`` / ``.tflite, .onnx models``."""
    return ", ".join(suffix for cls in owners for suffix in cls.suffixes) + " models"
