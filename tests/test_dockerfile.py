"""The top-level x86 CPU image: its install step, run here in a fresh virtualenv, must leave a
``climbq`` that runs the demo and every CPU target's runtime."""

import re
from pathlib import Path

import pytest

from tests.conftest import REPO, run_dockerfile_install_step

DOCKERFILE = REPO / "Dockerfile"


def test_dockerfile_runs_the_demo_by_default() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r'^ENTRYPOINT \["climbq"\]$', text, re.MULTILINE)
    assert re.search(r'^CMD \["demo", "--out", "/work/demo"\]$', text, re.MULTILINE)
    assert "python:3.11" in text


@pytest.mark.slow
def test_install_step_works_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    modules = [
        "ai_edge_litert.interpreter",
        "onnxruntime",
        "onnx",
        "torch",
        "climbq_deploy.demo",
        "climbq_deploy.report",
        "climbq_deploy.targets.tensorrt",
    ]
    run_dockerfile_install_step(
        DOCKERFILE,
        'pip install ".[tflite,onnx]" && climbq demo --help > /dev/null',
        tmp_path,
        modules,
    )


def docker_context(root: Path) -> set[str]:
    """The files `docker build` sends from ``root`` under its ``.dockerignore`` (Docker's rules
    for this file's patterns: each line a glob on the path from the root, ``!`` re-includes,
    the last matching line wins, a pattern matching a folder matches everything below it)."""
    import fnmatch

    rules = [
        line.strip()
        for line in (root / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def matches(pattern: str, rel: str) -> bool:
        pattern = pattern.rstrip("/")
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            return any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        return any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes)

    sent = set()
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        excluded = False
        for rule in rules:
            negate = rule.startswith("!")
            if matches(rule.lstrip("!"), rel):
                excluded = not negate
        if not excluded:
            sent.add(rel)
    return sent


def test_the_build_context_is_the_package_sources_and_nothing_else(tmp_path: Path) -> None:
    import shutil
    import subprocess

    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    root = tmp_path / "checkout"
    extra = [".dockerignore", ".venv/bin/python", "runs/demo/model.tflite", "data/syn/data.npz"]
    for rel in [*tracked, *extra]:
        if (REPO / rel).is_file() or rel.startswith((".venv", "runs", "data/")):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            if (REPO / rel).is_file():
                shutil.copyfile(REPO / rel, root / rel)
            else:
                (root / rel).write_bytes(b"x")
    (root / "climbq_deploy/__pycache__").mkdir(exist_ok=True)
    (root / "climbq_deploy/__pycache__/cli.cpython-311.pyc").write_bytes(b"x")
    sent = docker_context(root)
    package = {"climbq_deploy", "calibration", "kernels", "targets"}
    expected = {
        rel
        for rel in tracked
        if rel.split("/")[0] in package or rel in ("pyproject.toml", "setup.py", "README.md")
    }
    assert sent == expected
    for dockerfile in [DOCKERFILE, *sorted((REPO / "targets").rglob("Dockerfile"))]:
        copies = [line for line in dockerfile.read_text().splitlines() if line.startswith("COPY")]
        assert copies == ["COPY . ./"], dockerfile
