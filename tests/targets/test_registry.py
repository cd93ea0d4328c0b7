"""The target registry: the built-in targets satisfy the protocol, and a target defined here,
registered with ``register_target``, works through ``climbq export``, ``check`` and ``bench``
(its flags and help included) with no edit anywhere else."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from climbq_deploy.cli import main
from climbq_deploy.data.dataset import ImageDataset, load_dataset, save_dataset
from climbq_deploy.errors import ConfigError, LoweringError
from climbq_deploy.ir.graph import Graph
from climbq_deploy.ir.serialize import load_program_bytes, program_bytes
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.models import build_model
from climbq_deploy.targets import (
    TARGETS,
    Target,
    TargetBase,
    TargetOptions,
    get_target,
    option,
    register_target,
    target_for_path,
    unregister_target,
)
from climbq_deploy.targets.numpy import NumpyRunner
from climbq_deploy.train.checkpoint import save_checkpoint
from climbq_deploy.train.config import TrainConfig

BUILT_IN = ["numpy", "tflite", "tensorrt"]
METHODS = ("unavailable", "export", "load", "bench")
ATTRIBUTES = ("name", "summary", "suffixes", "Options", "input_bits", "exact", "reference")
BENCH_KEYS = {
    "model",
    "target",
    "kernels",
    "threads",
    "batch",
    "warmup",
    "repeats",
    "latency_ms",
    "images_per_second",
    "runtime",
    "cpu",
    "machine",
    "cores",
    "top1",
    "reference_agreement",
}


# --- the built-in targets -------------------------------------------------------------------


def test_registry_lists_the_built_in_targets_in_order() -> None:
    assert list(TARGETS)[:3] == BUILT_IN
    assert all(TARGETS[name].name == name for name in TARGETS)


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_target_satisfies_the_protocol(name: str) -> None:
    cls = TARGETS[name]
    for attribute in ATTRIBUTES:
        assert hasattr(cls, attribute), attribute
    for method in METHODS:
        assert callable(getattr(cls, method)), method
    assert cls.suffixes and all(s.startswith(".") for s in cls.suffixes)
    options = cls.Options
    assert dataclasses.is_dataclass(options) and issubclass(options, TargetOptions)
    target = cls()
    assert isinstance(target, Target)
    assert target.options == options()
    assert any(target.suffix.endswith(s) for s in cls.suffixes)
    assert target_for_path(Path("x") / f"model{target.suffix}") is cls
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.options.__setattr__(dataclasses.fields(options)[0].name, None)
    for spec in dataclasses.fields(options):
        assert spec.metadata["help"] and spec.metadata["stage"] in ("export", "run")
        bad = 7 if isinstance(spec.default, str) else "seven"
        with pytest.raises(ConfigError, match=spec.name):
            options(**{spec.name: bad})
        for value in spec.metadata["choices"] or ():
            assert getattr(options(**{spec.name: value}), spec.name) == value


def test_built_in_options_are_the_documented_ones() -> None:
    fields = {n: [f.name for f in dataclasses.fields(TARGETS[n].Options)] for n in BUILT_IN}
    assert fields == {
        "numpy": ["pack"],
        "tflite": ["kernels", "weights", "ops", "input"],
        "tensorrt": ["runtime", "weights", "form", "input"],
    }
    assert get_target("tensorrt", weights="int4").suffix == ".int4.onnx"
    assert get_target("tflite", "ref").engine == "ref"  # positional: the fields in order
    assert get_target("tensorrt", "tensorrt").engine == "tensorrt"
    assert get_target("numpy").engine == "numpy" and get_target("numpy").reference
    # the demo's call shape: (name, kernels or runtime, weights), None for "the default"
    assert get_target("numpy", None, None).options == TARGETS["numpy"].Options()
    assert get_target("tflite", "xnnpack", "int4").options.weights == "int4"
    with pytest.raises(ConfigError, match="takes 1 option"):
        get_target("numpy", None, "int4")


def test_weight_choices_match_the_exporters() -> None:
    from climbq_deploy.targets.tflite.export import WEIGHT_FORMS

    pytest.importorskip("onnx")
    from climbq_deploy.targets.contract import INPUT_FORMS
    from climbq_deploy.targets.tensorrt.export import WEIGHTS

    tflite = dataclasses.fields(TARGETS["tflite"].Options)
    tensorrt = dataclasses.fields(TARGETS["tensorrt"].Options)
    assert next(f for f in tflite if f.name == "weights").metadata["choices"] == WEIGHT_FORMS
    assert next(f for f in tensorrt if f.name == "weights").metadata["choices"] == WEIGHTS
    for fields in (tflite, tensorrt):  # --input: uint8 images by default, int32 kept
        spec = next(f for f in fields if f.name == "input")
        assert spec.metadata["choices"] == INPUT_FORMS == ("uint8", "int32")
        assert spec.default == "uint8" and spec.metadata["stage"] == "export"


def test_looking_into_the_registry_imports_no_runtime() -> None:
    code = (
        "import sys; from climbq_deploy.targets import TARGETS; names = list(TARGETS);"
        "print(names, [m for m in ('torch', 'onnx', 'onnxruntime', 'ai_edge_litert',"
        " 'tensorrt') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("[]"), result.stdout


def test_register_target_refuses_a_class_that_is_not_a_target() -> None:
    class Half:
        name = "half"
        suffixes = (".half",)

    with pytest.raises(ConfigError, match=r"lacks .*export"):
        register_target(Half)

    class Mutable(ToyTarget):
        name = "mutable"

        @dataclass
        class Options:
            speed: int = option(1, help="speed")

    with pytest.raises(ConfigError, match="frozen dataclass"):
        register_target(Mutable)

    class Impostor(ToyTarget):
        name = "numpy"

    with pytest.raises(ConfigError, match="already registered"):
        register_target(Impostor)
    assert "half" not in TARGETS and "mutable" not in TARGETS and TARGETS["numpy"] is not Impostor


# --- a toy target, defined and registered here ------------------------------------------------


@dataclass(frozen=True)
class ToyOptions(TargetOptions):
    wrap: str = option(
        "none", choices=("none", "gzip"), help="gzip: compress the program", stage="export"
    )
    tempo: int = option(1, help="a run-stage number the toy reports as its engine")


class ToyTarget(TargetBase):
    """The ``.climbq`` program bytes (optionally gzipped) in a ``.toy`` file, run by the NumPy
    reference."""

    name = "toy"
    summary = "a toy target of the registry test, model.toy"
    suffixes = (".toy",)
    Options = ToyOptions
    input_bits = 32
    exact = True  # check compares it with the NumPy reference and requires equality
    options: ToyOptions

    @property
    def engine(self) -> str:
        return f"toy-x{self.options.tempo}"

    def unavailable(self) -> str | None:
        return None

    def export(self, graph: Graph, out: Path) -> Path:
        data = program_bytes(graph)
        Path(out).write_bytes(gzip.compress(data, mtime=0) if self.options.wrap == "gzip" else data)
        return Path(out)

    def load(self, path: Path, *, threads: int | None = None) -> NumpyRunner:
        data = Path(path).read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        return NumpyRunner(ReferenceModel(*load_program_bytes(data, str(path))))

    def bench(
        self, path: Path, *, batch: int, threads: int, warmup: int, repeats: int
    ) -> dict[str, Any]:
        from climbq_deploy.bench import bench_runner

        record = bench_runner(
            self, path, batch=batch, warmup=warmup, repeats=repeats, runtime="toy"
        )
        return {**record, "threads": threads}


@pytest.fixture
def toy():
    register_target(ToyTarget)
    try:
        yield ToyTarget
    finally:
        unregister_target("toy")


@dataclass(frozen=True)
class World:
    data: Path
    run: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A 2-class 16x16 dataset and a 4-bit ClimbQ ResNet-20 run of random weights (an
    ordinary run folder to export, check and bench; no training needed)."""
    root = tmp_path_factory.mktemp("registry")
    rng = np.random.default_rng(0)
    dataset = ImageDataset(
        name="tiny",
        class_names=("a", "b"),
        train_images=rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8),
        train_labels=np.array([0, 0, 0, 0, 0, 1, 1, 1], dtype=np.int64),
        test_images=rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8),
        test_labels=np.array([0, 0, 0, 1, 1, 1], dtype=np.int64),
        info={"normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
    )
    data = save_dataset(dataset, root / "data")
    config = TrainConfig(str(data), method="climbq", wbits=4, abits=4, epochs=1)
    torch.manual_seed(0)
    model = build_model(config.arch, 2, config.quant_spec).eval()
    run = root / "run"
    run.mkdir()
    save_checkpoint(
        run / "checkpoint.pt", {"config": config.as_dict(), "model": model.state_dict()}
    )
    (run / "metrics.json").write_text(json.dumps({"top1": 50.0}))
    return World(data, run)


def _run(argv: list[Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: --help, or a bad option value
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_toy_target_through_export_check_and_bench(toy, world, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint.pt", "metrics.json"):
        (run / name).write_bytes((world.run / name).read_bytes())
    # export: RUN/model.toy holds exactly the program the numpy target writes
    code, out, err = _run(["export", run, "--target", "toy", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["target"] == "toy" and summary["artifact"] == str(run / "model.toy")
    assert _run(["export", run, "--out", tmp_path / "m.climbq"], capsys)[0] == 0
    assert (run / "model.toy").read_bytes() == (tmp_path / "m.climbq").read_bytes()
    # an export-stage option of the toy: a gzipped file with the same program
    gz = tmp_path / "m.gz.toy"
    assert _run(["export", run, "--target", "toy", "--wrap", "gzip", "--out", gz], capsys)[0] == 0
    assert gzip.decompress(gz.read_bytes()) == (run / "model.toy").read_bytes()
    # check: exact against the NumPy reference, the run-stage option recorded as its engine
    argv = ["check", run, "--target", "toy", "--tempo", "3", "--artifact", gz, "--json"]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    record = json.loads(out)
    assert record["target"] == "toy" and record["kernels"] == "toy-x3"
    assert record["exact_match"] is True and record["n_images"] == 6
    assert record["reference_max_abs_logit_diff"] == 0.0 and record["artifact"] == str(gz)
    # bench: picked by the .toy suffix; top-1 and agreement with the reference
    argv = ["bench", gz, "--warmup", "0", "--repeats", "2", "--batch", "3", "--threads", "2"]
    code, out, err = _run([*argv, "--data", world.data, "--json"], capsys)
    assert code == 0, err
    record = json.loads(out)
    assert set(record) >= BENCH_KEYS
    assert record["target"] == "toy" and record["kernels"] == "toy-x1" and record["batch"] == 3
    assert record["threads"] == 2 and record["reference_agreement"] == 1.0
    assert 0 < record["latency_ms"]["p50"] <= record["latency_ms"]["p99"]
    graph, _ = load_program_bytes((run / "model.toy").read_bytes())
    dataset = load_dataset(world.data)
    expected = ReferenceModel(graph).predict(dataset.test_images).argmax(1)
    assert record["n_images"] == 6
    assert record["top1"] == pytest.approx(100 * np.mean(expected == dataset.test_labels))


def test_help_lists_every_registered_target_and_option(toy, capsys) -> None:
    code, out, _ = _run(["export", "--help"], capsys)
    assert code == 0
    for name in [*BUILT_IN, "toy"]:
        assert f"{name}: " in out and name in out.split("--target")[1].split("]")[0]
    assert "--wrap {none,gzip}" in out and "--weights {int8,int4}" in out and "--no-pack" in out
    assert "--tempo" not in out  # run-stage: check and bench only
    code, out, _ = _run(["check", "--help"], capsys)
    assert code == 0 and "--tempo" in out and "--kernels" in out and "--runtime" in out
    code, out, _ = _run(["bench", "--help"], capsys)
    assert code == 0 and "--tempo" in out and "--wrap" not in out


def test_options_of_another_target_are_refused_by_name(toy, world, capsys) -> None:
    run = world.run
    cases = {
        "--kernels applies to --target tflite, not 'toy'": [
            "check",
            run,
            "--target",
            "toy",
            "--kernels",
            "ref",
        ],
        "--tempo applies to --target toy, not 'numpy'": ["check", run, "--tempo", "2"],
        "--wrap applies to --target toy, not 'tflite'": [
            "check",
            run,
            "--target",
            "tflite",
            "--wrap",
            "gzip",
        ],
        "--runtime applies to .onnx models, not model.toy": [
            "bench",
            run / "model.toy",
            "--runtime",
            "tensorrt",
        ],
        "--tempo applies to .toy models, not m.climbq": ["bench", run / "m.climbq", "--tempo", "2"],
        "wrap='gzip' applies to toy, not 'tflite'": [
            "export",
            run,
            "--target",
            "tflite",
            "--wrap",
            "gzip",
        ],
        "weights='int4' applies to tflite and tensorrt, not 'numpy'": [
            "export",
            run,
            "--weights",
            "int4",
        ],
    }
    for message, argv in cases.items():
        code, _, err = _run(argv, capsys)
        assert code == 2 and f"climbq: error: {message}" in err, (argv, err)
    code, _, err = _run(["export", world.run, "--target", "toy", "--wrap", "zip"], capsys)
    assert code == 2 and "invalid choice: 'zip'" in err


def test_an_unregistered_target_is_gone(capsys) -> None:
    register_target(ToyTarget)
    unregister_target("toy")
    assert "toy" not in TARGETS and list(TARGETS)[:3] == BUILT_IN
    code, _, err = _run(["export", "run", "--target", "toy"], capsys)
    assert code == 2 and "unknown target 'toy'; expected one of numpy, tflite, tensorrt" in err
    with pytest.raises(ConfigError, match="no target 'toy'"):
        unregister_target("toy")


# --- what each target lowers exactly (issue 44) ----------------------------------------------


def _config(method: str, bits: tuple[int, int]) -> TrainConfig:
    return TrainConfig("unused", method=method, wbits=bits[0], abits=bits[1])


def test_declared_lowerings_refuse_by_method_bits_and_head() -> None:
    from climbq_deploy.targets import refuse_unlowerable

    tflite, tensorrt, numpy_target = (TARGETS[n] for n in ("tflite", "tensorrt", "numpy"))
    for cls, method, bits, head in [
        (tflite, "climbq+", (6, 8), "float"),
        (tflite, "uniform", (7, 8), "float"),
        (tflite, "ptq", (8, 8), "float"),
        (tensorrt, "climbq", (7, 7), "int4"),
        (tensorrt, "climbq", (6, 8), "int8"),
        (numpy_target, "climbq", (8, 8), "int8"),  # the reference lowers every quantized run
        (tflite, "fp32", (32, 32), "int8"),  # full precision: the lowering's own message
    ]:
        refuse_unlowerable(cls, _config(method, bits), head)
    for cls, method, bits, head, names in [
        (tflite, "climbq", (4, 4), "int8", "climbq w4a4 run with the int8 head"),
        (tflite, "climbq", (7, 4), "float", "climbq w7a4 run"),
        (tflite, "uniform", (8, 8), "float", "uniform w8a8 run"),
        (tflite, "ptq", (4, 8), "int4", "ptq w4a8 run with the int4 head"),
        (tensorrt, "climbq+", (7, 8), "float", "climbq+ w7a8 run"),
        (tensorrt, "uniform", (8, 8), "float", "uniform w8a8 run"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(names)) as refused:
            refuse_unlowerable(cls, _config(method, bits), head)
        assert str(refused.value).startswith(f"target '{cls.name}' has no exact form for a ")
    assert str(tensorrt.lowers[0]) == "climbq/climbq+ w2-7 a2-8 not w7a8"
    assert str(tflite.lowers[0]) == "climbq/climbq+ w2-6 a2-8 (head float only)"


def _random_graph(method: str, bits: tuple[int, int], head: str, seed: int) -> Graph:
    """A ResNet-20 with random weights and trained-looking BatchNorm, lowered for a 20-bit
    input target (one cell of bench/target_lowering.py's table)."""
    from climbq_deploy.ir.capture import capture
    from climbq_deploy.ir.passes import lower
    from climbq_deploy.models.common import QuantSpec
    from tests.conftest import MEAN, STD, randomize_batchnorm

    torch.manual_seed(seed)
    model = build_model("resnet20", 10, QuantSpec(method, *bits))
    randomize_batchnorm(model, seed)
    return lower(capture(model, MEAN, STD, (16, 16, 3), {}, 20), head=head)


# the cells on both sides of each declared boundary: (target, method, (w, a), head)
BOUNDARY = [
    ("tflite", "climbq", (6, 8), "float"),
    ("tflite", "climbq", (7, 2), "float"),
    ("tflite", "uniform", (7, 8), "float"),
    ("tflite", "uniform", (8, 2), "float"),
    ("tflite", "climbq", (4, 4), "int8"),
    ("tensorrt", "climbq", (7, 7), "int4"),
    ("tensorrt", "climbq", (7, 8), "float"),
    ("tensorrt", "climbq", (6, 8), "float"),
    ("tensorrt", "uniform", (7, 8), "float"),
    ("tensorrt", "uniform", (8, 8), "float"),
]


@pytest.mark.parametrize(("name", "method", "bits", "head"), BOUNDARY)
def test_declared_lowerings_match_the_exporters(name, method, bits, head, tmp_path) -> None:
    """A declared cell exports for every seed tried; an undeclared one fails for at least one
    (the emitters' own refusal): the table in ``climbq export --help`` is what the exporters
    do, and a change to an exporter that lowers more shows up here."""
    cls = TARGETS[name]
    declared = any(row.covers(method, *bits, head) for row in cls.lowers)
    # TFLite declares what every --ops form lowers: the int16 form's limits (the builtin
    # forms fall back to it per layer, and lower more: e.g. ClimbQ w7, not declared)
    target = cls(ops="int16") if name == "tflite" else cls()
    exported = []
    for seed in range(3):
        try:
            target.export(_random_graph(method, bits, head, seed), tmp_path / f"m{cls.suffixes[0]}")
            exported.append(True)
        except LoweringError:
            exported.append(False)
    assert all(exported) if declared else not all(exported), (declared, exported)


def test_export_refuses_before_lowering(world, tmp_path, monkeypatch, capsys) -> None:
    """``climbq export --target tflite --head int8`` is refused from the run's config alone:
    the lowering is never called."""
    import climbq_deploy.export as export_module

    def never(*_: Any, **__: Any) -> None:
        raise AssertionError("lower_run was called")

    monkeypatch.setattr(export_module, "lower_run", never)
    out = tmp_path / "m.tflite"
    argv = ["export", str(world.run), "--target", "tflite", "--head", "int8", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "has no exact form for a climbq w4a4 run with the int8 head" in err
    assert "climbq/climbq+ w2-6 a2-8 (head float only)" in err and not out.exists()
