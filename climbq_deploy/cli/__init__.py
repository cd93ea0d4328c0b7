"""The ``climbq`` command line: a thin layer over the library functions, one module per
command group (:mod:`.data`, :mod:`.train`, :mod:`.deploy`, :mod:`.report`).

Every user error surfaces as one ``climbq: error: ...`` line on stderr and a non-zero exit
(2 for bad input, 1 for an unexpected internal error, 130 on Ctrl-C); ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from climbq_deploy import __version__
from climbq_deploy.cli import data, deploy, report, train
from climbq_deploy.cli._args import HelpFormatter
from climbq_deploy.errors import ClimbQError

GROUPS = (data, train, deploy, report)  # each adds its commands, in this order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="climbq",
        description="ClimbQ deployment toolkit: long-tailed data, low-bit models, integer targets.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"climbq_deploy {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(commands)
    return parser


def _show_warning(message: Any, category: Any, filename: str, lineno: int, *_: Any) -> None:
    print(f"climbq: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        args.handler(args)
    except ClimbQError as exc:
        if args.debug:
            raise
        print(f"climbq: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("climbq: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: say so briefly, the traceback is one flag away
        if args.debug:
            raise
        print(
            f"climbq: internal error: {type(exc).__name__}: {exc} "
            "(re-run with --debug for the traceback and please report it)",
            file=sys.stderr,
        )
        return 1
    return 0


__all__ = ["build_parser", "main"]
