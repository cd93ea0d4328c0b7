"""Argument types and the help formatter shared by every ``climbq`` command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from climbq_deploy.errors import ConfigError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: ...)`` to an option's help unless it has no default worth showing
    (None, a flag's False, an empty list) or the help already says what the default is; a
    description or epilog keeps its line breaks (each line is wrapped on its own)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        fill = super()._fill_text
        lines = text.splitlines()
        lead = [len(line) - len(line.lstrip(" ")) for line in lines]
        return "\n".join(
            fill(line, width, indent + " " * spaces)
            for line, spaces in zip(lines, lead, strict=True)
        )

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if default is None or default is False or default == [] or "default" in text:
            return text
        return super()._get_help_string(action)


def add_command(group: Any, name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A sub-command of ``group`` (``add_subparsers``'s result) with :class:`HelpFormatter`."""
    return group.add_parser(
        name, help=help, description=help, formatter_class=HelpFormatter, **kwargs
    )


def _parsed(kind: type, text: str, what: str) -> Any:
    """``kind(text)``; argparse's error ``{what}, got 'text'`` when it does not parse."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None


def gamma(text: str) -> float:
    value = _parsed(float, text, "gamma must be a number")
    if not value >= 1 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"gamma must be a finite number >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _parsed(int, text, "expected an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _parsed(float, text, "expected a number")
    if not 0 < value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def key_value(text: str) -> tuple[str, float | str]:
    """``KEY=VALUE`` with VALUE a number when it parses as one."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, float(value)
    except ValueError:
        return key, value


def output_folder(path: Path, option: str = "--out") -> Path:
    """``path`` as a folder to write into: refused when it exists as anything else."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} exists and is not a folder")
    return path


def add_json_flag(parser: argparse.ArgumentParser, help: str = "one JSON object on stdout") -> None:
    parser.add_argument("--json", action="store_true", help=help)


def printed_as_json(args: argparse.Namespace, record: Any) -> bool:
    """With ``--json``: print ``record`` as one indented JSON object and return True (the
    command prints nothing else); else False."""
    if args.json:
        print(json.dumps(record, indent=2))
    return bool(args.json)


def add_run_output(parser: argparse.ArgumentParser, help: str = "output RUN folder") -> None:
    """``--out RUN`` (required) and ``--overwrite``: the commands that make a run folder."""
    parser.add_argument("--out", required=True, type=Path, help=help)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run that OUT holds (refused otherwise)",
    )


def picked(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """``{name: args.name}`` for ``names``: the options passed on unchanged, by name."""
    return {name: getattr(args, name) for name in names}


def groups_text(metrics: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    """``many 97.10, medium 95.00, few 96.00`` of a run's metrics (groups that exist);
    with ``before``: ``many 90.00 -> 97.10, ...`` (groups both have)."""
    parts = []
    for group in ("many", "medium", "few"):
        now = metrics.get(group)
        if now is None:
            continue
        if before is None:
            parts.append(f"{group} {now:.2f}")
        elif before.get(group) is not None:
            parts.append(f"{group} {before[group]:.2f} -> {now:.2f}")
    return ", ".join(parts)
