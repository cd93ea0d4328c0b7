"""``climbq bench A B C``: several models, each timed in its own process, as one table.

Each model runs in a fresh Python process (``python -m climbq_deploy.bench_table`` with its
arguments as JSON on stdin), so its peak resident memory is its own and one model that fails
(a missing runtime, a corrupt file) leaves a row with the error instead of stopping the rest.
The table is Markdown, CSV or JSON (the records themselves).
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

FORMATS = ("text", "md", "csv", "json")

COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("model", lambda r: Path(r["model"]).name),
    ("runtime", lambda r: r.get("kernels") or r.get("runtime")),
    ("ours", lambda r: None if "foreign" not in r else not r["foreign"]),
    ("batch", lambda r: r.get("batch")),
    ("threads", lambda r: r.get("threads")),
    ("size_mb", lambda r: _scaled(r.get("file_bytes"), 2**20, 3)),
    ("load_ms", lambda r: _rounded(r.get("load_ms"), 1)),
    ("first_ms", lambda r: _rounded(r.get("first_invoke_ms"), 2)),
    ("p50_ms", lambda r: _rounded(r.get("latency_ms", {}).get("p50"), 3)),
    ("p90_ms", lambda r: _rounded(r.get("latency_ms", {}).get("p90"), 3)),
    ("p99_ms", lambda r: _rounded(r.get("latency_ms", {}).get("p99"), 3)),
    ("img_per_s", lambda r: _rounded(r.get("images_per_second"), 1)),
    ("peak_rss_mb", lambda r: _rounded(r.get("peak_rss_mb"), 1)),
    ("top1", lambda r: _rounded(r.get("top1"), 2)),
    ("agreement", lambda r: _rounded(r.get("reference_agreement"), 4)),
    ("error", lambda r: r.get("error")),
)
"""The table's columns: name and how a bench record gives the cell (None: empty)."""


def _rounded(value: Any, digits: int) -> Any:
    return None if value is None else round(float(value), digits)


def _scaled(value: Any, unit: float, digits: int) -> Any:
    return None if value is None else round(float(value) / unit, digits)


def bench_in_subprocess(model: Path, options: dict[str, Any]) -> dict[str, Any]:
    """The bench record of ``model`` measured in a fresh Python process (``options``:
    :func:`climbq_deploy.api.bench`'s keyword arguments); on failure a record with the model
    and ``error``, the process's last line of stderr."""
    request = json.dumps({"model": str(model), "options": options})
    done = subprocess.run(
        [sys.executable, "-m", "climbq_deploy.bench_table"],
        input=request,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 0:
        return json.loads(done.stdout.strip().splitlines()[-1])
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return {"model": str(model), "error": lines[-1] if lines else f"exit {done.returncode}"}


def render(records: Sequence[dict[str, Any]], fmt: str) -> str:
    """``records`` as a Markdown table (``md``), CSV or JSON (a list of the records)."""
    if fmt == "json":
        return json.dumps(list(records), indent=2)
    rows = [[cell(r) for _, cell in COLUMNS] for r in records]
    names = [name for name, _ in COLUMNS]
    if not any(r.get("error") for r in records):  # no error column when nothing failed
        names, rows = names[:-1], [row[:-1] for row in rows]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
        return out.getvalue().rstrip("\n")
    if fmt in ("md", "text"):
        lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
        lines += [
            "| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows
        ]
        return "\n".join(lines)
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


def _worker() -> int:
    """``python -m climbq_deploy.bench_table``: one bench record as JSON on stdout."""
    from climbq_deploy.api import bench
    from climbq_deploy.errors import ClimbQError

    request = json.loads(sys.stdin.read())
    try:
        record = bench(request["model"], **request["options"])
    except ClimbQError as exc:
        print(f"{request['model']}: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
