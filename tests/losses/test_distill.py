"""Knowledge distillation: the loss against its closed form and gradient, the config rules, and
a QAT run that learns from its ``--init`` model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from climbq_deploy.data.dataset import save_dataset
from climbq_deploy.errors import ConfigError
from climbq_deploy.losses import distillation_loss
from climbq_deploy.train.checkpoint import load_checkpoint
from climbq_deploy.train.config import TrainConfig
from climbq_deploy.train.loop import _teacher, train


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def _softmax(x: list[float]) -> list[float]:
    e = [math.exp(v) for v in x]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_loss_equals_t_squared_kl_of_softened_distributions(temperature: float) -> None:
    student = [[0.0, 0.0, 1.0], [2.0, -1.0, 0.5]]
    teacher = [[math.log(3.0), 0.0, 0.0], [0.0, 1.0, 3.0]]
    expected = (
        temperature**2
        * sum(
            _kl(_softmax([v / temperature for v in t]), _softmax([v / temperature for v in s]))
            for s, t in zip(student, teacher, strict=True)
        )
        / len(student)
    )
    got = distillation_loss(
        torch.tensor(student, dtype=torch.float64),
        torch.tensor(teacher, dtype=torch.float64),
        temperature,
    )
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_gradient_is_t_times_probability_gap_over_batch() -> None:
    temperature = 3.0
    student = torch.tensor(
        [[0.3, -1.2, 2.0], [1.0, 0.0, -0.5]], dtype=torch.float64, requires_grad=True
    )
    teacher = torch.tensor([[1.0, 0.5, 0.0], [-2.0, 0.0, 2.0]], dtype=torch.float64)
    distillation_loss(student, teacher, temperature).backward()
    gap = torch.softmax(student.detach() / temperature, 1) - torch.softmax(teacher / temperature, 1)
    assert torch.allclose(student.grad, temperature * gap / 2, rtol=0, atol=1e-14)
    assert distillation_loss(teacher, teacher, temperature).item() == pytest.approx(0, abs=1e-15)


def test_bad_inputs_and_config() -> None:
    with pytest.raises(ConfigError, match="B x K"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 4), 4.0)
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)
    with pytest.raises(ConfigError, match="give --teacher or --init"):
        TrainConfig("d", method="climbq+", wbits=4, abits=4, distill=0.5)
    with pytest.raises(ConfigError, match="give --distill W > 0"):
        TrainConfig("d", init="r", teacher="t")
    assert TrainConfig("d", teacher="t", distill=0.5).init is None  # a teacher needs no init
    with pytest.raises(ConfigError, match=r"distill must be in \[0, 1\]"):
        TrainConfig("d", init="r", distill=1.5)
    with pytest.raises(ConfigError, match="distill_temperature"):
        TrainConfig("d", init="r", distill=0.5, distill_temperature=0)


def test_qat_run_learns_from_its_init_model(small_syndigits, tmp_path) -> None:
    data = str(save_dataset(small_syndigits, tmp_path / "syn"))
    train(TrainConfig(data, epochs=1, batch_size=64, lr=0.05), tmp_path / "fp", progress=False)
    qat = dict(
        data=data,
        method="climbq+",
        wbits=4,
        abits=4,
        epochs=2,
        batch_size=64,
        lr=0.01,
        init=str(tmp_path / "fp"),
    )
    plain = train(TrainConfig(**qat), tmp_path / "plain", progress=False)
    taught = train(TrainConfig(**qat, distill=0.5), tmp_path / "kd", progress=False)
    assert taught["config"]["distill"] == 0.5 and plain["config"]["distill"] == 0.0
    losses = [json.loads(line)["train_loss"] for line in (tmp_path / "kd" / "history.jsonl").open()]
    plain_losses = [
        json.loads(line)["train_loss"] for line in (tmp_path / "plain" / "history.jsonl").open()
    ]
    assert all(math.isfinite(v) for v in losses) and losses != plain_losses
    # resuming a finished distilled run rebuilds the teacher and trains nothing
    again = train(TrainConfig(**qat, distill=0.5), tmp_path / "kd", resume=True, progress=False)
    assert again["top1"] == taught["top1"]


def test_an_init_model_of_another_class_count_is_refused(small_syndigits, tmp_path) -> None:
    data = str(save_dataset(small_syndigits, tmp_path / "syn"))
    train(TrainConfig(data, epochs=1, batch_size=64), tmp_path / "fp", progress=False)
    state = torch.load(tmp_path / "fp" / "checkpoint.pt", weights_only=True)
    state["model"] = {k: (v[:5] if k.startswith("fc.") else v) for k, v in state["model"].items()}
    torch.save(state, tmp_path / "fp" / "checkpoint.pt")
    config = TrainConfig(
        data,
        method="climbq+",
        wbits=4,
        abits=4,
        epochs=1,
        batch_size=64,
        init=str(tmp_path / "fp"),
        distill=0.5,
    )
    with pytest.raises(ConfigError, match=r"does not fit this model: size mismatch for fc\.weight"):
        train(config, tmp_path / "kd", progress=False)


def test_teacher_is_its_own_run_not_the_init_run(small_syndigits, tmp_path) -> None:
    """Progressive QAT: a 2-bit run starts from a 4-bit run (--init) and learns from the fp32
    run (--teacher); the teacher is that run's model under its own configuration."""
    data = str(save_dataset(small_syndigits, tmp_path / "syn"))
    train(TrainConfig(data, epochs=1, batch_size=64, lr=0.05), tmp_path / "fp", progress=False)
    q4 = dict(data=data, method="climbq+", wbits=4, abits=4, epochs=1, batch_size=64, lr=0.01)
    train(TrainConfig(**q4, init=str(tmp_path / "fp")), tmp_path / "q4", progress=False)
    q2 = {**q4, "wbits": 2, "abits": 2, "init": str(tmp_path / "q4"), "distill": 0.5}
    images = torch.from_numpy(small_syndigits.test_images[:16]).permute(0, 3, 1, 2).float()
    logits = {}
    for name in ("fp", "q4"):
        config = TrainConfig(**{**q2, "teacher": str(tmp_path / name)})
        model = _teacher(config, small_syndigits.num_classes, torch.device("cpu"))
        assert not any(p.requires_grad for p in model.parameters()) and not model.training
        with torch.no_grad():
            logits[name] = model(images / 255)
    fp_state = load_checkpoint(tmp_path / "fp" / "checkpoint.pt")["model"]
    assert torch.equal(
        _teacher(
            TrainConfig(**{**q2, "init": str(tmp_path / "fp")}), 10, torch.device("cpu")
        ).state_dict()["fc.weight"],
        fp_state["fc.weight"],
    )  # no --teacher: the --init run teaches
    assert not torch.allclose(logits["fp"], logits["q4"])  # the 4-bit teacher quantizes
    run = train(
        TrainConfig(**{**q2, "teacher": str(tmp_path / "fp")}), tmp_path / "q2", progress=False
    )
    assert run["config"]["teacher"] == str(tmp_path / "fp")
    assert run["config"]["init"] == str(tmp_path / "q4")
