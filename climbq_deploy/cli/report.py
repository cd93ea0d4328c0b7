"""``climbq report`` and ``demo``: reports from run folders, and the whole job end to end."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from climbq_deploy.cli._args import add_command, output_folder


def add_commands(commands: Any) -> None:
    rp = add_command(commands, "report", "report.md/.html with plots from training runs")
    rp.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="RUN folders (climbq train)")
    rp.add_argument(
        "--out",
        type=Path,
        default=Path("report"),
        help="output folder (report.md, report.html, report.json, plots)",
    )
    rp.add_argument("--data", type=Path, default=None, help="dataset folder (default: the runs')")
    rp.set_defaults(handler=_cmd_report)

    dm = add_command(commands, "demo", "the main job: data, train, export, check, bench, report")
    dm.add_argument(
        "--out",
        type=Path,
        default=Path("runs/demo"),
        help="output folder (dataset, runs, artifacts, report)",
    )
    dm.add_argument(
        "--quick", action="store_true", help="every stage, fewer epochs, 200-image checks"
    )
    dm.set_defaults(handler=_cmd_demo)


def _cmd_report(args: argparse.Namespace) -> None:
    from climbq_deploy.report import make_report

    output_folder(args.out)
    files = make_report(args.runs, args.out, data=args.data, progress=True)
    print(f"wrote {files.markdown}, {files.html}, {files.json} and {len(files.plots)} plots")


def _cmd_demo(args: argparse.Namespace) -> None:
    from climbq_deploy.demo import run_demo

    output_folder(args.out)
    run_demo(args.out, quick=args.quick)
