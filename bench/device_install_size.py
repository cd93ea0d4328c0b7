"""The device install's footprint: a fresh virtualenv per runtime extra (``pip install
'.[tflite]'``, ``'.[onnx]'``, and ``'.[tflite,onnx]'`` as the Raspberry Pi image installs),
from the committed tree (``git archive HEAD``), against the full development install
(``.[dev,train,tflite,onnx,vision]`` and torch, what ``make install`` builds).

Per install: the virtualenv's size on disk (``du``, bytes of its files), the packages pip
lists (name, version), whether ``import torch`` fails there (it must, for the device extras),
and the wall time of the ``pip install`` (this machine, the local wheel cache warm: machine
dependent, the sizes are not).

Usage::

    .venv/bin/python -m bench.device_install_size [--dev]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    DEFAULT_OUT,
    REPO_ROOT,
    markdown_table,
    provenance_markdown,
    run_header,
    write_results,
)

NAME = "device_install_size"
INSTALLS = {"tflite": ".[tflite]", "onnx": ".[onnx]", "tflite,onnx": ".[tflite,onnx]"}
DEV = (".[dev,train,tflite,onnx,vision]", "torch==2.13.0")
BIG = 5_000_000  # packages listed by size when at least this many bytes


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def package_bytes(env: Path) -> dict[str, int]:
    """Bytes per top-level folder of site-packages (at least :data:`BIG`)."""
    site = next(env.glob("lib/python3*/site-packages"))
    sizes = {p.name: tree_bytes(p) for p in site.iterdir() if p.is_dir()}
    return {k: v for k, v in sorted(sizes.items(), key=lambda kv: -kv[1]) if v >= BIG}


def install(requirements: tuple[str, ...], work: Path, sources: Path) -> dict[str, Any]:
    env = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    began = time.monotonic()
    done = subprocess.run(
        [str(env / "bin" / "pip"), "install", "--quiet", *requirements],
        cwd=sources,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"pip install {' '.join(requirements)} failed:\n{done.stderr[-3000:]}")
    listed = subprocess.run(
        [str(env / "bin" / "pip"), "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    torch = subprocess.run(
        [str(env / "bin" / "python"), "-c", "import torch"], capture_output=True, cwd=work
    )
    return {
        "requirements": list(requirements),
        "bytes": tree_bytes(env),
        "install_seconds": round(seconds, 1),
        "torch_importable": torch.returncode == 0,
        "packages": {p["name"]: p["version"] for p in json.loads(listed)},
        "largest": package_bytes(env),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", action="store_true", help="also the full development install")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = root / "sources"
        sources.mkdir()
        archive = subprocess.run(
            ["git", "archive", "HEAD"], cwd=REPO_ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(sources)], input=archive.stdout, check=True)
        plan = {name: (spec,) for name, spec in INSTALLS.items()}
        if args.dev:
            plan["dev (make install)"] = DEV
        for name, requirements in plan.items():
            work = root / name.replace(",", "-").replace(" ", "_")
            work.mkdir()
            record = {"install": name, **install(requirements, work, sources)}
            records.append(record)
            print(_row(record), flush=True)
    header = run_header(None)
    markdown = render(records, header)
    write_results(args.out, NAME, {**header, "records": records}, markdown)
    print(markdown)


def _row(record: dict[str, Any]) -> tuple:
    largest = ", ".join(f"{k} {v / 1e6:.0f}" for k, v in list(record["largest"].items())[:6])
    return (
        f"`pip install {' '.join(record['requirements'])}`",
        f"{record['bytes'] / 1e6:.0f}",
        len(record["packages"]),
        "yes" if record["torch_importable"] else "no",
        record["install_seconds"],
        largest,
    )


def render(records: list[dict[str, Any]], header: dict[str, Any]) -> str:
    return (
        "# The device install's footprint\n\n"
        "A fresh virtualenv (`python -m venv`, pip, setuptools) per install, from `git archive "
        "HEAD`. MB: bytes of the virtualenv's files / 1e6; `torch`: whether `import torch` "
        "works there; seconds: the `pip install` wall time on this machine (wheel cache "
        "warm); largest: site-packages folders of 5 MB or more, MB each.\n\n"
        + markdown_table(
            ("install", "MB", "packages", "torch", "install s", "largest (MB)"),
            [_row(r) for r in records],
        )
        + "\n\n"
        + provenance_markdown(header)
    )


if __name__ == "__main__":
    main()
