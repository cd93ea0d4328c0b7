"""The Raspberry Pi image: the device install only. Its RUN step, run here in a fresh Python 3.11
virtualenv (the image's Python), installs the package with LiteRT and ONNX Runtime and no
training stack, and leaves a ``climbq bench`` that runs both runtimes' files; the wheels it
needs exist for the Pi (CPython 3.11, aarch64, bookworm's glibc 2.36)."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from climbq_deploy.targets import TARGETS
from tests.conftest import REPO
from tests.images import (
    extra_requirements,
    manylinux_platforms,
    resolve_for,
    run_dockerfile_install_step,
)
from tests.pool_concat_programs import pool_program

DOCKERFILE = REPO / "targets" / "rpi" / "Dockerfile"
RUN = (
    'python -m venv /opt/venv && /opt/venv/bin/pip install "./[tflite,onnx]" '
    "&& /opt/venv/bin/climbq bench --help > /dev/null "
    '&& ! /opt/venv/bin/python -c "import torch" 2> /dev/null'
)
TRAINING_STACK = ("torch", "scipy", "scikit-learn", "matplotlib", "pillow")


def test_dockerfile_is_the_device_install_in_two_stages() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r'^ENTRYPOINT \["climbq", "bench"\]$', text, re.MULTILINE)
    bases = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    # the full image builds the native kernel; the slim image of the same release runs it
    assert bases == ["python:3.11.14-bookworm", "python:3.11.14-slim-bookworm"]
    assert "COPY --from=build /opt/venv /opt/venv" in text


@pytest.mark.slow
def test_install_step_works_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    env = run_dockerfile_install_step(
        DOCKERFILE,
        RUN,
        tmp_path,
        ["ai_edge_litert.interpreter", "onnxruntime", "climbq_deploy.bench"],
    )
    installed = json.loads(
        subprocess.run(
            [str(env / "bin" / "pip"), "list", "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    names = {package["name"].lower() for package in installed}
    assert {"numpy", "ai-edge-litert", "onnxruntime", "climbq-deploy"} <= names
    assert not names & set(TRAINING_STACK)
    # both runtimes' files, exported by this session's toolkit, run in the image's install
    for suffix, target in ((".tflite", "tflite"), (".onnx", "tensorrt")):
        model = TARGETS[target]().export(pool_program(8, 3, 2, 1), tmp_path / f"m{suffix}")
        bench = subprocess.run(
            [str(env / "bin" / "climbq"), "bench", str(model), "--repeats", "3"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert bench.returncode == 0, bench.stderr
        assert bench.stdout.startswith(f"{model}: p50 ")


@pytest.mark.slow
def test_the_wheels_exist_for_the_pi(tmp_path: Path) -> None:
    """pip's resolution of the image's install for CPython 3.11 on aarch64 with bookworm's
    glibc 2.36, binary wheels only: nothing to compile but the package itself."""
    chosen = resolve_for(
        extra_requirements("tflite", "onnx"), "3.11", manylinux_platforms(36, "aarch64"), tmp_path
    )
    for name in ("ai-edge-litert", "onnxruntime", "numpy"):
        assert name in chosen and "aarch64" in chosen[name][1], (name, chosen.get(name))
    assert not set(chosen) & set(TRAINING_STACK)
