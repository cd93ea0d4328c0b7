"""The Raspberry Pi image's install step, run here: its RUN line in a fresh virtualenv must
install the package with the LiteRT extra and leave a working ``climbq bench``."""

import re
from pathlib import Path

import pytest

from tests.conftest import REPO, run_dockerfile_install_step

DOCKERFILE = REPO / "targets" / "rpi" / "Dockerfile"


def test_dockerfile_runs_climbq_bench() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r'^ENTRYPOINT \["climbq", "bench"\]$', text, re.MULTILINE)
    assert "python:3.11" in text and 'pip install ".[tflite]"' in text


@pytest.mark.slow
def test_install_step_works_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    run_dockerfile_install_step(
        DOCKERFILE,
        'pip install ".[tflite]" && climbq bench --help > /dev/null',
        tmp_path,
        ["ai_edge_litert.interpreter", "climbq_deploy.bench"],
    )
