"""The device side without the training stack, in this virtualenv: a subprocess whose imports of
torch, scipy, scikit-learn and matplotlib fail as they do where they are not installed still
lists every command, benches each target's file, and answers a training command with the extra
to install. (tests/test_device_install.py does the same in a real device install.)"""

import subprocess
import sys
from pathlib import Path

import pytest

from climbq_deploy.extras import EXTRA_OF_MODULE, missing_extra
from tests.pool_concat_programs import pool_program

TRAINING_STACK = ("torch", "scipy", "sklearn", "matplotlib")

# runs `climbq ARGV` with the training stack's imports failing like missing packages
WITHOUT_TRAINING_STACK = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Missing())
from climbq_deploy.cli import main
try:
    code = main(sys.argv[1:])
finally:  # also after --help's SystemExit
    print("loaded:", sorted({{m.partition(".")[0] for m in sys.modules}} & {heavy!r}))
sys.exit(code)
"""

HEAVY = {*TRAINING_STACK, "PIL", "tqdm", "torchvision"}


def climbq_without_training_stack(*argv: object) -> subprocess.CompletedProcess[str]:
    code = WITHOUT_TRAINING_STACK.format(blocked=set(TRAINING_STACK), heavy=HEAVY)
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_missing_extra_names_the_extra_of_a_third_party_module() -> None:
    assert missing_extra(ModuleNotFoundError("x", name="torch")).extra == "train"
    assert missing_extra(ModuleNotFoundError("x", name="torch.nn.functional")).module == "torch"
    assert missing_extra(ModuleNotFoundError("x", name="onnxruntime")).extra == "onnx"
    try:  # an ImportError re-raised from the missing module (targets/tflite/builder.py does)
        try:
            raise ModuleNotFoundError("x", name="ai_edge_litert")
        except ModuleNotFoundError as cause:
            raise ImportError("the builder needs the TFLite schema") from cause
    except ImportError as error:
        assert missing_extra(error).extra == "tflite"
    # a module of this package that cannot be found is a bug, not a missing extra
    assert missing_extra(ModuleNotFoundError("x", name="climbq_deploy.nothing")) is None
    assert missing_extra(ValueError("torch")) is None
    assert set(EXTRA_OF_MODULE.values()) <= {"train", "vision", "tflite", "onnx", "tensorrt"}


def test_extras_named_for_modules_are_the_packages_extras() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    project = pyproject["project"]
    assert project["dependencies"] == ["numpy>=1.26"]
    assert set(EXTRA_OF_MODULE.values()) <= set(project["optional-dependencies"])
    train = project["optional-dependencies"]["train"]
    assert not [dep for dep in train if dep.startswith("torch==")]  # a range; the Makefile pins


def test_the_cli_lists_every_command_without_the_training_stack() -> None:
    result = climbq_without_training_stack("--help")
    assert result.returncode == 0, result.stderr
    for command in ("data", "train", "calibrate", "export", "check", "bench", "report", "demo"):
        assert f"    {command} " in result.stdout or f"    {command}\n" in result.stdout, command
    # building the parser (every command's options and help) imported none of them
    assert result.stdout.rstrip().endswith("loaded: []"), result.stdout[-300:]


@pytest.mark.parametrize(
    ("argv", "command", "module"),
    [
        (["train", "--data", "nowhere", "--out", "run"], "train", "torch"),
        (["export", "nowhere"], "export", "torch"),
        (["demo", "--out", "demo"], "demo", "torch"),
    ],
)
def test_a_training_command_names_the_train_extra(argv, command, module, tmp_path) -> None:
    result = climbq_without_training_stack(*argv)
    assert result.returncode == 3
    assert result.stderr == (
        f"climbq: error: climbq {command} needs the [train] extra: "
        f"pip install 'climbq-deploy[train]' ({module} is not installed)\n"
    )


@pytest.mark.parametrize("suffix", [".climbq", ".tflite", ".onnx"])
def test_bench_runs_each_targets_file_without_the_training_stack(suffix, tmp_path) -> None:
    from climbq_deploy.targets import target_for_path

    if suffix == ".tflite":
        pytest.importorskip("ai_edge_litert")
    if suffix == ".onnx":
        pytest.importorskip("onnxruntime")
    path = tmp_path / f"model{suffix}"
    target_for_path(path)().export(pool_program(8, 3, 2, 1), path)
    result = climbq_without_training_stack("bench", path, "--warmup", "1", "--repeats", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: p50 ")
    assert result.stdout.rstrip().endswith("loaded: []"), result.stdout
