"""The images' build steps run here, without Docker (shared by the Dockerfile and device-install
tests).

- :func:`docker_context`: the files ``docker build`` sends under the ``.dockerignore``;
- :func:`package_sources`: a copy of this working tree's build context (what ``COPY . ./``
  puts in an image: the package sources, nothing built);
- :func:`run_dockerfile_install_step`: a Dockerfile's RUN line in a fresh virtualenv, in such
  a copy;
- :func:`pip_failed_offline`: whether a failed pip install failed for want of the package
  index (the tests then skip, saying so);
- :func:`extra_requirements`: the requirements of the package with some of its extras, from
  ``pyproject.toml``;
- :func:`resolve_for`: pip's choice of wheels for another Python and machine (a dry run).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the Python this test session runs on, outside its virtualenv (python3.11 here)
BASE_PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
# what pip says when it cannot reach the package index
OFFLINE = re.compile(
    r"Failed to establish a new connection|Temporary failure in name resolution|"
    r"Network is unreachable|Could not fetch URL|connection broken by|Max retries exceeded"
)


def docker_context(root: Path, files: Iterable[str] | None = None) -> set[str]:
    """The files `docker build` sends from ``root`` under its ``.dockerignore`` (Docker's rules
    for this file's patterns: each line a glob on the path from the root, ``!`` re-includes,
    the last matching line wins, a pattern matching a folder matches everything below it).
    ``files``: the candidates (paths relative to ``root``; default every file below it)."""
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

    if files is None:
        files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    sent = set()
    for rel in files:
        excluded = False
        for rule in rules:
            negate = rule.startswith("!")
            if matches(rule.lstrip("!"), rel):
                excluded = not negate
        if not excluded:
            sent.add(rel)
    return sent


def package_sources(dest: Path) -> Path:
    """Copy this working tree's build context into ``dest`` (git's tracked and untracked,
    not ignored files, filtered by the ``.dockerignore``): what an image's ``COPY . ./``
    gets, uncommitted changes included, and nothing built in place."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for rel in docker_context(REPO, [rel for rel in listed if rel and (REPO / rel).is_file()]):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, dest / rel)
    return dest


def dockerfile_runs(dockerfile: Path) -> list[str]:
    """The Dockerfile's RUN commands, continuation lines joined with single spaces."""
    joined = re.sub(r"\s*\\\n\s*", " ", dockerfile.read_text())
    return [line[4:].strip() for line in joined.splitlines() if line.startswith("RUN ")]


def pip_failed_offline(output: str) -> bool:
    """Whether pip's ``output`` says it could not reach the package index."""
    return bool(OFFLINE.search(output))


def extra_requirements(*extras: str) -> list[str]:
    """The base requirements of the package plus those of ``extras``, as ``pyproject.toml``
    declares them."""
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]
    return [*project["dependencies"], *(req for name in extras for req in extra[name])]


def resolve_for(
    requirements: list[str], python: str, platforms: list[str], tmp_path: Path
) -> dict[str, tuple[str, str]]:
    """What ``pip install requirements`` installs on CPython ``python`` (``"3.10"``) on a
    machine whose wheel platforms are ``platforms``, binary wheels only: ``{name: (version,
    wheel file)}``. pip resolves without installing (``--dry-run --report``); skips the test
    when the package index is not reachable."""
    import json

    import pytest

    report = tmp_path / f"resolved-{python}.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        + ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
        + [arg for platform in platforms for arg in ("--platform", platform)]
        + ["--target", str(tmp_path / "unused"), "--report", str(report), *requirements],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0 and pip_failed_offline(result.stdout + result.stderr):
        pytest.skip(f"the package index is not reachable: {result.stderr.strip()[-500:]}")
    assert result.returncode == 0, result.stderr[-2000:]
    return {
        item["metadata"]["name"].lower().replace("_", "-"): (
            item["metadata"]["version"],
            item["download_info"]["url"].rsplit("/", 1)[-1],
        )
        for item in json.loads(report.read_text())["install"]
    }


def manylinux_platforms(glibc_minor: int, arch: str) -> list[str]:
    """The wheel platforms pip accepts on a ``arch`` Linux with glibc 2.``glibc_minor``."""
    return [
        *(f"manylinux_2_{minor}_{arch}" for minor in range(glibc_minor, 16, -1)),
        f"manylinux2014_{arch}",
        f"linux_{arch}",
    ]


def run_dockerfile_install_step(
    dockerfile: Path,
    expected_run: str,
    tmp_path: Path,
    modules: list[str],
    *,
    replace: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Run a Dockerfile's install step, its RUN command ``expected_run`` (the others may only
    be apt-get steps), here in a fresh virtualenv, from a copy of the build context
    (:func:`package_sources`), and import ``modules`` with it from outside that copy; returns
    the virtualenv.

    The command runs in ``sh`` as in the image, with the virtualenv's ``bin`` first on PATH
    (its ``pip``, ``python`` and ``climbq``) and this session's Python as ``python`` and
    ``python3`` behind it: a command that makes ``/opt/venv`` makes the virtualenv (its path
    replaced), one that installs into the image's Python gets a virtualenv made first.
    ``replace``: parts of the command that cannot run here (each must occur), e.g. a check of
    the image's own TensorRT; ``env``: more environment (``PIP_CONSTRAINT``)."""
    runs = dockerfile_runs(dockerfile)
    assert expected_run in runs, runs
    # the image's other steps install system packages (apt), which have no stand-in here
    assert all(run.startswith("apt-get ") for run in runs if run != expected_run), runs
    command = expected_run
    for old, new in (replace or {}).items():
        assert old in command, old
        command = command.replace(old, new)
    env_dir = tmp_path / "venv"
    if "/opt/venv" in command:
        command = command.replace("/opt/venv", str(env_dir))
    else:
        venv.EnvBuilder(with_pip=True).create(env_dir)
    image_python = tmp_path / "image-python"
    image_python.mkdir()
    for name in ("python", "python3"):
        (image_python / name).symlink_to(BASE_PYTHON)
    path = os.pathsep.join([str(env_dir / "bin"), str(image_python), os.environ["PATH"]])
    context = package_sources(tmp_path / "context")
    result = subprocess.run(
        ["/bin/sh", "-c", command],
        cwd=context,
        env={**os.environ, "PATH": path, **(env or {})},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0 and pip_failed_offline(result.stdout + result.stderr):
        import pytest

        pytest.skip(f"the package index is not reachable: {result.stderr.strip()[-500:]}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    check = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import " + ", ".join(modules)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr
    return env_dir
