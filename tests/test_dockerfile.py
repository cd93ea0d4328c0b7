"""The images: the top-level x86 CPU image's install step, run here in a fresh virtualenv, must
leave a ``climbq`` that runs the demo and every CPU target's runtime; every image is built from
the package sources alone (the ``.dockerignore``), pins its base image and pins torch where it
has torch, as the Makefile does."""

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.images import docker_context, dockerfile_runs, run_dockerfile_install_step

DOCKERFILE = REPO / "Dockerfile"
DOCKERFILES = [DOCKERFILE, *sorted((REPO / "targets").rglob("Dockerfile"))]
TOP_LEVEL_RUN = (
    'pip install "./[train,tflite,onnx]" "torch==2.13.0" && climbq demo --help > /dev/null'
)


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
    env = run_dockerfile_install_step(DOCKERFILE, TOP_LEVEL_RUN, tmp_path, modules)
    version = subprocess.run(
        [str(env / "bin" / "python"), "-c", "import torch; print(torch.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.startswith("2.13.0")


def test_torch_is_pinned_alike_in_the_makefile_and_the_image() -> None:
    """pyproject.toml's [train] extra gives torch as a range; the Makefile and the x86 image
    pin the same release inside it (the one the results were made with)."""
    makefile = re.search(r"^TORCH := (torch==[\d.]+)$", (REPO / "Makefile").read_text(), re.M)
    assert makefile is not None
    assert f'"{makefile.group(1)}"' in dockerfile_runs(DOCKERFILE)[0]
    pyproject = (REPO / "pyproject.toml").read_text()
    low, high = re.search(r'"torch>=([\d.]+),<([\d.]+)"', pyproject).groups()
    pinned = tuple(int(v) for v in makefile.group(1).removeprefix("torch==").split("."))
    assert tuple(map(int, low.split("."))) <= pinned < tuple(map(int, high.split(".")))
    for dockerfile in DOCKERFILES[1:]:  # the device and GPU images have no torch
        assert "torch" not in " ".join(dockerfile_runs(dockerfile)).replace("import torch", "")


def test_every_image_pins_its_base_release() -> None:
    """Each FROM names an exact release (Python's patch version, NVIDIA's container release),
    never a moving tag such as python:3.11 or latest."""
    pinned = re.compile(
        r"^FROM (python:3\.\d+\.\d+-(slim-)?bookworm|nvcr\.io/nvidia/\S+:r?\d+\.\d+(\.\d+)?"
        r"(-py3)?)( AS \w+)?$"
    )
    for dockerfile in DOCKERFILES:
        bases = [line for line in dockerfile.read_text().splitlines() if line.startswith("FROM")]
        assert bases, dockerfile
        for line in bases:
            assert pinned.match(line), f"{dockerfile}: {line}"


def test_the_build_context_is_the_package_sources_and_nothing_else(tmp_path: Path) -> None:
    import shutil

    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    root = tmp_path / "checkout"
    # what a working checkout holds beside its sources: the virtualenv, runs, datasets, build
    # outputs (the in-place native kernel too), caches, git
    made = [
        ".venv/bin/python",
        "runs/demo/model.tflite",
        "data/syn/data.npz",
        "build/lib.linux-x86_64-cpython-311/climbq_deploy/api.py",
        "climbq_deploy.egg-info/PKG-INFO",
        "kernels/_climbq_native.cpython-311-x86_64-linux-gnu.so",
        ".git/HEAD",
        ".pytest_cache/README.md",
        ".ruff_cache/CACHEDIR.TAG",
        ".hypothesis/examples/x",
    ]
    for rel in [*tracked, ".dockerignore"]:
        if (REPO / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / rel, root / rel)
    for rel in made:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
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
    for dockerfile in DOCKERFILES:  # the context once, else only what an earlier stage built
        copies = [line for line in dockerfile.read_text().splitlines() if line.startswith("COPY")]
        assert copies[0] == "COPY . ./", dockerfile
        stages = re.findall(r"^FROM \S+ AS (\w+)$", dockerfile.read_text(), re.MULTILINE)
        for line in copies[1:]:
            assert re.fullmatch(rf"COPY --from=({'|'.join(stages)}) (\S+) \2", line), line
