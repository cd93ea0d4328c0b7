"""Helpers shared by the benchmark scripts: machine description, timing summaries, result files.

Every benchmark writes ``<out>/<name>.json`` (everything measured, raw timings included) and
``<out>/<name>.md`` (a short human-readable summary), both atomically through
:mod:`climbq_deploy.fileio`.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch

from climbq_deploy.fileio import atomic_write, write_json

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "bench" / "results"


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else :func:`platform.processor`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the repository (read-only), or None outside a work tree."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def git_modified() -> list[str] | None:
    """Tracked files that differ from HEAD (``git status --porcelain``), None if unknown."""
    try:
        result = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return [line[3:] for line in result.stdout.splitlines() if line.strip()]


def command_line() -> str:
    """The exact command that started this process (interpreter, flags, script, arguments)."""
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return shlex.join(argv)


def utc_timestamp() -> str:
    """Now, in UTC, ISO 8601 with seconds."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def machine_info() -> dict[str, Any]:
    """CPU, core count, torch threads, OS and library versions of this run."""
    return {
        "cpu_model": cpu_model(),
        "platform_processor": platform.processor(),
        "machine": platform.machine(),
        "os_cpu_count": os.cpu_count(),
        "sched_affinity_cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "torch_num_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def warn_if_busy(threshold: float = 0.5) -> list[float] | None:
    """Return the load average, printing a warning when the 1-minute figure is high."""
    load = load_average()
    if load is not None and load[0] > threshold:
        print(
            f"warning: load average {load[0]:.2f} before timing; other processes may skew "
            "the figures",
            file=sys.stderr,
        )
    return load


def run_header(load_before: list[float] | None = None) -> dict[str, Any]:
    """Provenance common to every result file: machine, commit, command line, timestamp.

    ``load_before`` is the load average measured before the timings; the one after is added.
    """
    return {
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "machine": machine_info(),
        "git_commit": git_commit(),
        "git_modified_tracked_files": git_modified(),
        "command": command_line(),
        "cwd": os.getcwd(),
        "timestamp_utc": utc_timestamp(),
    }


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """Median, min, max and count of a list of measurements."""
    if not values:
        raise ValueError("no measurements to summarize")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table (cells converted with ``str``)."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(" --- " for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def provenance_markdown(header: dict[str, Any]) -> str:
    """The machine / commit / command section of a result's markdown file."""
    m = header["machine"]
    commit = header["git_commit"] or "unknown"
    modified = header.get("git_modified_tracked_files")
    if modified:
        commit += f" (uncommitted changes to {', '.join(modified)})"
    rows = [
        ("CPU", f"{m['cpu_model']} ({m['machine']})"),
        ("os.cpu_count()", m["os_cpu_count"]),
        ("usable CPUs (affinity)", m["sched_affinity_cpus"]),
        ("torch.get_num_threads()", m["torch_num_threads"]),
        ("platform", m["platform"]),
        (
            "python / torch / numpy / pillow",
            f"{m['python']} / {m['torch']} / {m['numpy']} / {m['pillow']}",
        ),
        ("git commit", f"`{commit}`"),
        ("timestamp (UTC)", header["timestamp_utc"]),
        (
            "load average 1/5/15 min, before → after",
            f"{header.get('load_average_before')} → {header.get('load_average_after')}",
        ),
    ]
    return (
        "## Machine\n\n"
        + markdown_table(("", ""), rows)
        + "\n\n## Command\n\n```\n"
        + f"cd {header['cwd']}\n{header['command']}\n"
        + "```\n"
    )


def write_results(out_dir: str | Path, name: str, payload: dict[str, Any], markdown: str) -> None:
    """Write ``<out_dir>/<name>.json`` and ``<out_dir>/<name>.md`` atomically."""
    out = Path(out_dir)
    write_json(out / f"{name}.json", payload)
    with atomic_write(out / f"{name}.md", "w") as handle:
        handle.write(markdown if markdown.endswith("\n") else markdown + "\n")
    print(f"wrote {out / f'{name}.json'} and {out / f'{name}.md'}")


def fmt(value: float, digits: int = 0) -> str:
    """A number with thousands separators and ``digits`` decimals."""
    return f"{value:,.{digits}f}"
