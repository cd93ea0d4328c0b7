"""A user's model given as FILE.py:FACTORY or package.module:FACTORY: parsing, building,
the errors that name the file and the name, and how a training config records it."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
from torch import nn

from climbq_deploy.errors import ConfigError
from climbq_deploy.models import QuantSpec, build_model
from climbq_deploy.models.quantized import QuantizedModel
from climbq_deploy.models.user import ModelSource, build_user_model, source_changed
from climbq_deploy.train.config import TrainConfig

USER_CNN = Path(__file__).resolve().parent / "user_cnn.py"
Q4 = QuantSpec("climbq+", 4, 4)


def test_a_file_spec_is_made_absolute_and_a_module_spec_kept(monkeypatch) -> None:
    monkeypatch.chdir(USER_CNN.parent)
    source = ModelSource.parse("user_cnn.py:small_cnn")
    assert source.is_file and source.location == str(USER_CNN) and source.factory == "small_cnn"
    assert str(source) == f"{USER_CNN}:small_cnn"
    assert source.sha256() == hashlib.sha256(USER_CNN.read_bytes()).hexdigest()
    module = ModelSource.parse("my_pkg.nets:Factory.build")
    assert not module.is_file and module.location == "my_pkg.nets"
    assert module.factory == "Factory.build"


@pytest.mark.parametrize("text", ["user_cnn.py", "user_cnn.py:", ":small", "a b:c", "x.py:1st"])
def test_a_malformed_spec_is_refused(text) -> None:
    with pytest.raises(ConfigError, match=r"FILE\.py:FACTORY|neither a \.py file"):
        ModelSource.parse(text)


def test_the_factory_gets_num_classes_when_it_takes_it() -> None:
    model = build_user_model(f"{USER_CNN}:small_cnn", 7, Q4)
    assert isinstance(model, QuantizedModel) and model.num_classes == 7
    fixed = build_user_model(f"{USER_CNN}:two_class_cnn", 2, Q4)  # called with no arguments
    assert fixed.num_classes == 2
    with pytest.raises(ConfigError, match=r"two_class_cnn: the model's head 'classifier' has 2"):
        build_user_model(f"{USER_CNN}:two_class_cnn", 10, Q4)


def test_a_module_spec_is_imported(tmp_path, monkeypatch) -> None:
    package = tmp_path / "their_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        "from torch import nn\n"
        "def make(**kwargs):\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(4, kwargs['num_classes']))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_user_model("their_pkg.nets:make", 3, Q4)
    assert (
        type(model.net[1]).__name__ == "BatchNormActQuant" and "net.1.weight" in model.state_dict()
    )
    assert model.head_name == "5" and model.num_classes == 3
    source = ModelSource.parse("their_pkg.nets:make")
    assert source.sha256() == hashlib.sha256((package / "nets.py").read_bytes()).hexdigest()
    sys.modules.pop("their_pkg.nets", None)
    sys.modules.pop("their_pkg", None)


def test_a_file_can_import_its_neighbours(tmp_path) -> None:
    (tmp_path / "blocks.py").write_text(
        "from torch import nn\nWIDTH = 6\ndef stem():\n    return nn.Conv2d(3, WIDTH, 3)\n"
    )
    (tmp_path / "net.py").write_text(
        "from torch import nn\nimport blocks\n"
        "def make(num_classes):\n"
        "    return nn.Sequential(blocks.stem(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(blocks.WIDTH, num_classes))\n"
    )
    assert build_user_model(f"{tmp_path / 'net.py'}:make", 4, Q4).num_classes == 4
    assert str(tmp_path) not in sys.path
    sys.modules.pop("blocks", None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.py:make", r"model file .*missing\.py does not exist"),
        ("user_cnn.py:nope", r"user_cnn\.py has no 'nope' \(callables there: .*small_cnn"),
        ("user_cnn.py:broken_factory", r"broken_factory\(num_classes=3\) raised ValueError: "),
        ("user_cnn.py:not_a_module", r"not_a_module\(num_classes=3\) returned dict, not a torch"),
        ("user_cnn.py:SmallCNN.nothing", r"has no 'SmallCNN\.nothing'"),
        ("no_such_pkg_xyz.nets:make", r"cannot import model module no_such_pkg_xyz\.nets"),
    ],
)
def test_factory_errors_name_the_file_and_the_name(spec, message, monkeypatch) -> None:
    monkeypatch.chdir(USER_CNN.parent)
    with pytest.raises(ConfigError, match=message):
        build_user_model(spec, 3, Q4)


def test_a_file_that_fails_to_import_is_named(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(ConfigError, match=r"importing model file .*bad\.py failed: RuntimeError"):
        build_user_model(f"{bad}:make", 3, Q4)


def test_source_changed_says_how(tmp_path) -> None:
    path = tmp_path / "net.py"
    path.write_text("x = 1\n")
    spec = f"{path}:make"
    recorded = hashlib.sha256(b"x = 1\n").hexdigest()
    assert source_changed(spec, recorded) is None and source_changed(spec, None) is None
    path.write_text("x = 2\n")
    assert "changed (sha256" in source_changed(spec, recorded)
    path.unlink()
    assert source_changed(spec, recorded).endswith("is gone since the run was trained")


def test_train_config_records_arch_or_model(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(USER_CNN.parent)
    assert TrainConfig("d").arch == "resnet20" and TrainConfig("d").model is None
    config = TrainConfig("d", model="user_cnn.py:small_cnn")
    assert config.arch == "custom" and config.model == f"{USER_CNN}:small_cnn"
    assert TrainConfig(**config.as_dict()) == config  # a checkpoint's config reads back
    pinned = config.pinned()
    assert pinned.model_sha256 == hashlib.sha256(USER_CNN.read_bytes()).hexdigest()
    assert pinned.pinned() == pinned
    with pytest.raises(ConfigError, match="not both"):
        TrainConfig("d", arch="resnet20", model="user_cnn.py:small_cnn")
    with pytest.raises(ConfigError, match="arch 'custom' is a user model"):
        TrainConfig("d", arch="custom")
    with pytest.raises(ConfigError, match="mobilenetv2 only"):
        TrainConfig("d", model="user_cnn.py:small_cnn", faithful_mbv2=True)
    with pytest.raises(ConfigError, match=r"changed since its run began"):
        TrainConfig("d", model="user_cnn.py:small_cnn", model_sha256="0" * 64).pinned()


def test_build_model_dispatches_on_arch_custom() -> None:
    model = build_model("custom", 4, Q4, model=f"{USER_CNN}:small_cnn")
    assert isinstance(model, QuantizedModel) and isinstance(model.net.stem, nn.Conv2d)
    with pytest.raises(ConfigError, match="go together"):
        build_model("custom", 4, Q4)
