"""The Raspberry Pi image's install step, run here: its RUN line in a fresh virtualenv must
install the package with the LiteRT extra and leave a working ``climbq bench``."""

import re
import subprocess
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCKERFILE = REPO / "targets" / "rpi" / "Dockerfile"


def test_dockerfile_runs_climbq_bench() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r'^ENTRYPOINT \["climbq", "bench"\]$', text, re.MULTILINE)
    assert "python:3.11" in text and 'pip install ".[tflite]"' in text


@pytest.mark.slow
def test_install_step_works_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    run_lines = [line[4:] for line in DOCKERFILE.read_text().splitlines()
                 if line.startswith("RUN ")]  # fmt: skip
    assert run_lines == ['pip install ".[tflite]" && climbq bench --help > /dev/null']
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
    check = subprocess.run(
        [str(bin_dir / "python"), "-c", "import ai_edge_litert.interpreter, climbq_deploy.bench"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
