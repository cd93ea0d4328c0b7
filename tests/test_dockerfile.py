"""The top-level x86 CPU image: its install step, run here in a fresh virtualenv, must leave a
``climbq`` that runs the demo and every CPU target's runtime."""

import re
import subprocess
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"


def test_dockerfile_runs_the_demo_by_default() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r'^ENTRYPOINT \["climbq"\]$', text, re.MULTILINE)
    assert re.search(r'^CMD \["demo", "--out", "/work/demo"\]$', text, re.MULTILINE)
    assert "python:3.11" in text


@pytest.mark.slow
def test_install_step_works_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    run_lines = [line[4:] for line in DOCKERFILE.read_text().splitlines()
                 if line.startswith("RUN ")]  # fmt: skip
    assert run_lines == ['pip install ".[tflite,onnx]" && climbq demo --help > /dev/null']
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    command = (
        run_lines[0]
        .replace("pip ", f"{bin_dir / 'pip'} ", 1)
        .replace("climbq ", f"{bin_dir / 'climbq'} ", 1)
    )
    result = subprocess.run(command, shell=True, cwd=REPO, capture_output=True, text=True,
                            timeout=1800)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    modules = ["ai_edge_litert.interpreter", "onnxruntime", "onnx", "torch", "climbq_deploy.demo",
               "climbq_deploy.report", "climbq_deploy.targets.tensorrt"]  # fmt: skip
    imports = "import " + ", ".join(modules)
    # outside the checkout, so the installed package is imported, not the source folder
    check = subprocess.run([str(bin_dir / "python"), "-c", imports], capture_output=True,
                           text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    assert check.returncode == 0, check.stderr
