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
