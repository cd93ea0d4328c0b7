"""The ``climbq`` command line: a thin layer over the library functions, one module per
command group (:mod:`.data`, :mod:`.train`, :mod:`.deploy`, :mod:`.report`).

Every user error surfaces as one ``climbq: error: ...`` line on stderr and a non-zero exit
(2 for bad input, a file that cannot be written or read included; 3 for what cannot run here:
a target's runtime, or an extra of the package that is not installed, named with its ``pip
install`` line; 1 for an unexpected internal error, 130 on Ctrl-C); ``--debug`` shows the
traceback instead. A reader that closes stdout early (``climbq data show D --json | head -1``)
ends the command quietly with 141, as a shell tool killed by SIGPIPE would.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from climbq_deploy import __version__
from climbq_deploy.cli import data, deploy, report, train, verify
from climbq_deploy.cli._args import HelpFormatter
from climbq_deploy.errors import ClimbQError, TargetUnavailableError
from climbq_deploy.extras import missing_extra

GROUPS = (data, train, deploy, verify, report)  # each adds its commands, in this order
SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader went away


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


def _flush_stdout() -> bool:
    """Flush stdout (a closed pipe shows here, not at interpreter exit); False when the
    reader is gone, after pointing stdout at /dev/null so nothing more is said about it."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return False
    return True


def _os_error_text(exc: OSError) -> str:
    """``PATH: reason`` (``PATH -> OTHER: reason`` for a rename), else the error itself."""
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return reason
    other = f" -> {exc.filename2}" if exc.filename2 is not None else ""
    return f"{exc.filename}{other}: {reason}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:  # --help or a usage error: its text may meet a closed pipe too
        _flush_stdout()
        raise
    warnings.showwarning = _show_warning
    try:
        args.handler(args)
        if not _flush_stdout():
            return SIGPIPE_EXIT
    except BrokenPipeError:
        _flush_stdout()
        return SIGPIPE_EXIT
    except ClimbQError as exc:
        if args.debug:
            raise
        print(f"climbq: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the file system refused: a folder that cannot be made, a full disk
        if args.debug:
            raise
        print(f"climbq: error: {_os_error_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("climbq: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: say so briefly, the traceback is one flag away
        if args.debug:
            raise
        missing = missing_extra(exc)
        if missing is not None:  # a device install ran a command of the training stack
            print(f"climbq: error: {missing.message(f'climbq {args.command}')}", file=sys.stderr)
            return TargetUnavailableError.exit_code
        print(
            f"climbq: internal error: {type(exc).__name__}: {exc} "
            "(re-run with --debug for the traceback and please report it)",
            file=sys.stderr,
        )
        return 1
    return 0


__all__ = ["build_parser", "main"]
