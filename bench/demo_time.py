"""Wall time of the main job (`climbq demo`, full or --quick) on this machine, per stage.

Runs ``climbq demo --out OUT [--quick]`` in a subprocess (fresh output folder, so nothing is
reused) and records the wall time with the stage times from its ``summary.json``; with
``--collect OUT`` it only reads a finished demo's summary (its own total is then the demo's
``total_seconds``).

Usage::

    .venv/bin/python -m bench.demo_time --out runs/demo_full [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench._common import (
    DEFAULT_OUT,
    markdown_table,
    provenance_markdown,
    run_header,
    warn_if_busy,
    write_results,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the demo's output folder")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--collect", action="store_true", help="read a finished demo only")
    parser.add_argument("--results", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--wall", type=float, default=None, help="with --collect: wall seconds measured outside"
    )
    args = parser.parse_args()
    load = warn_if_busy()
    wall = args.wall
    if not args.collect:
        shutil.rmtree(args.out, ignore_errors=True)
        command = [sys.executable, "-m", "climbq_deploy", "demo", "--out", str(args.out)]
        began = time.perf_counter()
        subprocess.run(command + (["--quick"] if args.quick else []), check=True)
        wall = time.perf_counter() - began
    summary = json.loads((args.out / "summary.json").read_text())
    name = "demo_quick" if summary["quick"] else "demo"
    stages = summary["stage_seconds"]
    rows = [(stage, f"{seconds:.1f}") for stage, seconds in stages.items()]
    rows.append(("total (summary.json)", f"{summary['total_seconds']:.1f}"))
    if wall is not None:
        rows.append(("wall, process start to exit", f"{wall:.1f}"))

    def fmt(value: object) -> object:
        return f"{value:.2f}" if isinstance(value, float) else value

    targets = [
        (
            t["label"],
            t["status"],
            t.get("n_images"),
            t.get("exact_match"),
            fmt(t.get("top1_agreement")),
            fmt((t.get("latency_ms") or {}).get("p50")),
        )
        for t in summary["targets"]
    ]
    models = [
        tuple(fmt(m[k]) for k in ("name", "top1", "many", "medium", "few", "epochs"))
        for m in summary["models"]
    ]
    header = run_header(load)
    markdown = (
        f"# `climbq demo{' --quick' if summary['quick'] else ''}`: wall time per stage\n\n"
        f"Plan: {summary['plan']}.\n\n"
        + markdown_table(("stage", "seconds"), rows)
        + "\n\n"
        + markdown_table(("model", "top-1 %", "many", "medium", "few", "epochs"), models)
        + "\n\n"
        + markdown_table(
            ("target", "status", "images", "exact_match", "top-1 agreement", "p50 ms"), targets
        )
        + "\n\n"
        + provenance_markdown(header)
    )
    payload = {**header, "summary": summary, "wall_seconds": wall}
    write_results(args.results, name, payload, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
