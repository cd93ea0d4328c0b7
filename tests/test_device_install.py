"""The device install, for real: a fresh virtualenv (this Python's ``venv``, no system site
packages) with only ``pip install '.[tflite]'`` from the package sources, and another with only
``'.[onnx]'``. There, ``import torch`` fails and none of the training stack is installed, while
``climbq bench`` and ``climbq verify`` run the models (and golden files) this session's toolkit
exports, the targets' runners and the NumPy reference (:class:`climbq_deploy.ReferenceModel`)
agree exactly on them, and a training command names the extra it needs.

The install is what a user runs (``pip install '.[tflite]'`` with pip's build isolation, which
brings setuptools>=77 for the build: a fresh virtualenv's own setuptools is older, so
``--no-build-isolation`` would fail there). It needs the package index (LiteRT comes from
PyPI); the tests skip, saying so, where it cannot be reached. Each virtualenv is built once per
session, the two side by side.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from climbq_deploy.data.dataset import load_dataset, save_dataset
from tests.conftest import make_random_run, tiny_dataset
from tests.images import BASE_PYTHON, package_sources, pip_failed_offline

pytestmark = pytest.mark.slow

TRAINING_STACK = ("torch", "scipy", "scikit-learn", "matplotlib", "pillow")
TRAINING_MODULES = ("torch", "scipy", "sklearn", "matplotlib", "PIL")
# each runtime's extra and the exports (``climbq export`` arguments) its install runs
EXTRAS = {
    "tflite": {
        "model.tflite": ["--target", "tflite"],
        "fused.tflite": ["--target", "tflite", "--ops", "climbq"],  # the native kernel's op
        "model.climbq": ["--target", "numpy"],
    },
    "onnx": {
        "model.onnx": ["--target", "tensorrt"],
        "model.climbq": ["--target", "numpy"],
    },
}

# run in the device install: the target's runner on the test images against the NumPy
# reference of the program the file carries (every code and the top-1), and what was imported
ON_THE_DEVICE = """
import json, sys
from pathlib import Path
import numpy as np
import climbq_deploy
from climbq_deploy.ir.graph import ThresholdAct
from climbq_deploy.targets import target_for_path
model, images = Path(sys.argv[1]), np.load(sys.argv[2])
runner = target_for_path(model)().load(model)
graph = runner.graph
out = runner.run(images, with_codes=True)
acts = {n.output: n.source for n in graph.nodes if isinstance(n, ThresholdAct)}
reference = climbq_deploy.ReferenceModel(graph).run(images, keep=set(acts))
print(json.dumps({
    "layers": len(acts),
    "codes_equal": all(
        np.array_equal(out.expected(source, reference[tensor]), out.codes[source])
        for tensor, source in acts.items()
    ),
    "top1_equal": bool(np.array_equal(reference[graph.output].argmax(1), out.logits.argmax(1))),
    "max_abs_logit_diff": float(np.abs(reference[graph.output] - out.logits).max()),
    "imported": sorted({m.partition(".")[0] for m in sys.modules} & set(sys.argv[3:])),
}))
"""


def _run(*argv: object, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=600, **kwargs
    )


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset, a run with random weights, and ``climbq export`` of it to every form
    the device installs run, each with its golden file (by this session's toolkit, torch and
    all)."""
    from climbq_deploy.cli import main

    root = tmp_path_factory.mktemp("exported")
    data = save_dataset(tiny_dataset(size=16), root / "data")
    run = make_random_run(root / "run", data, "climbq+", 4)
    for name, args in {**EXTRAS["tflite"], **EXTRAS["onnx"]}.items():
        assert main(["export", str(run), *args, "--out", str(root / name)]) == 0, name
    np.save(root / "images.npy", load_dataset(data).test_images)
    return root


@pytest.fixture(scope="session")
def device_installs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{extra: virtualenv}``: a fresh virtualenv per runtime extra, with only
    ``pip install '.[extra]'`` run in a copy of the package sources (the images' build
    context); the two installs run side by side."""
    root = tmp_path_factory.mktemp("device")
    started, installs = time.monotonic(), {}
    for extra in EXTRAS:
        env, sources = root / f"venv-{extra}", package_sources(root / f"sources-{extra}")
        command = f"{BASE_PYTHON} -m venv {env} && {env}/bin/pip install '.[{extra}]'"
        installs[extra] = (
            env,
            subprocess.Popen(
                ["/bin/sh", "-c", command],
                cwd=sources,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
    envs = {}
    for extra, (env, process) in installs.items():
        output, _ = process.communicate(timeout=1800)
        if process.returncode != 0 and pip_failed_offline(output):
            pytest.skip(f"the package index is not reachable: {output.strip()[-500:]}")
        assert process.returncode == 0, output[-3000:]
        envs[extra] = env
    print(f"device installs {sorted(envs)}: {time.monotonic() - started:.1f} s")
    return envs


@pytest.mark.parametrize("extra", EXTRAS)
def test_the_device_install_has_no_training_stack(extra, device_installs) -> None:
    env = device_installs[extra]
    listed = _run(env / "bin" / "pip", "list", "--format", "json")
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    runtime = {"tflite": "ai-edge-litert", "onnx": "onnxruntime"}[extra]
    assert {"climbq-deploy", "numpy", runtime} <= names
    assert not names & set(TRAINING_STACK), names
    torch = _run(env / "bin" / "python", "-c", "import torch", cwd=env)
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr


@pytest.mark.parametrize("extra", EXTRAS)
def test_bench_runs_in_the_device_install(extra, device_installs, exported) -> None:
    """``climbq bench`` on each file, with top-1 on the test images and the share of them on
    which the file's top-1 equals the NumPy reference of its program."""
    climbq = device_installs[extra] / "bin" / "climbq"
    for name in EXTRAS[extra]:
        result = _run(
            climbq,
            "bench",
            exported / name,
            "--data",
            exported / "data",
            "--repeats",
            "5",
            "--json",
        )
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout)
        assert record["n_images"] == 4 and record["top1"] is not None
        if not name.endswith(".climbq"):  # the reference itself has no agreement to report
            assert record["reference_agreement"] == 1.0, (name, record)


@pytest.mark.parametrize("extra", EXTRAS)
def test_the_device_install_is_exact_against_its_reference(
    extra, device_installs, exported
) -> None:
    python = device_installs[extra] / "bin" / "python"
    for name in EXTRAS[extra]:
        if name.endswith(".climbq"):
            continue
        result = _run(
            python,
            "-c",
            ON_THE_DEVICE,
            exported / name,
            exported / "images.npy",
            *TRAINING_MODULES,
            cwd=exported,
        )
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout)
        assert record["layers"] > 0 and record["codes_equal"] and record["top1_equal"], record
        assert record["imported"] == [], record


def test_a_training_command_names_the_train_extra(device_installs, tmp_path) -> None:
    climbq = device_installs["tflite"] / "bin" / "climbq"
    listed = _run(climbq, "--help")
    assert listed.returncode == 0
    for command in ("train", "export", "check", "bench", "report", "demo"):
        assert f"    {command} " in listed.stdout or f"    {command}\n" in listed.stdout
    result = _run(climbq, "train", "--data", tmp_path, "--out", tmp_path / "run")
    assert result.returncode == 3
    assert result.stderr == (
        "climbq: error: climbq train needs the [train] extra: "
        "pip install 'climbq-deploy[train]' (torch is not installed)\n"
    )


@pytest.mark.parametrize("extra", EXTRAS)
def test_verify_runs_in_the_device_install(extra, device_installs, exported) -> None:
    """``climbq verify MODEL GOLDEN`` on every file, with the golden file ``climbq export``
    wrote beside it: exact, exit 0."""
    climbq = device_installs[extra] / "bin" / "climbq"
    for name in EXTRAS[extra]:
        golden = exported / f"{name}.golden.npz"
        assert golden.is_file(), f"climbq export wrote no {golden.name}"
        result = _run(climbq, "verify", exported / name, golden)
        assert result.returncode == 0, (name, result.stdout + result.stderr)
