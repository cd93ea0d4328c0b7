"""quantize(): a user's float CNN made quantization-aware, names kept, quantizers where the
paper puts them, refusals that name the module."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from climbq_deploy.distributed import use_global_batchnorm
from climbq_deploy.errors import ConfigError
from climbq_deploy.models.quantized import QuantizedModel
from climbq_deploy.quant.convert import quantize
from climbq_deploy.quant.functional import climbq_activation, climbq_weight_unit
from climbq_deploy.quant.layers import (
    ActQuant,
    BatchNormActQuant,
    GlobalBatchNormActQuant,
    QConv2d,
    QConv2dAct,
)

USER_CNN = Path(__file__).resolve().parents[1] / "models" / "user_cnn.py"


def _user_cnn():
    spec = importlib.util.spec_from_file_location("user_cnn_for_convert_tests", USER_CNN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


U = _user_cnn()

SWAPPED = {
    "stem": QConv2d,
    "stem_bn": BatchNormActQuant,
    "block.0": QConv2d,
    "block.1": BatchNormActQuant,
    "block.3": QConv2d,
    "block.4": BatchNormActQuant,
    "branches.left": QConv2dAct,  # no BatchNorm after it: the quantizer is the conv's own
    "branches.right": QConv2d,
    "branches.right_bn": BatchNormActQuant,
    "down": QConv2dAct,
}
UNTOUCHED = {
    "pool": nn.MaxPool2d,
    "block.2": nn.ReLU,
    "gap": nn.AdaptiveAvgPool2d,
    "flatten": nn.Flatten,
    "classifier": nn.Linear,
}


def test_names_are_kept_and_the_modules_swapped_by_rule() -> None:
    torch.manual_seed(0)
    model = U.small_cnn(5)
    rng = torch.random.get_rng_state()
    q = quantize(model, "climbq+", 4, 4)
    assert torch.equal(rng, torch.random.get_rng_state())  # quantize draws no random numbers
    assert isinstance(q, QuantizedModel) and q.num_classes == 5 and q.head_name == "classifier"
    assert q.fc is q.net.classifier
    modules = dict(q.net.named_modules())
    for name, cls in {**SWAPPED, **UNTOUCHED}.items():
        assert type(modules[name]) is cls, name
    inserted = {n for n in modules if n.endswith((".act", ".quantizer", ".weight_quantizer"))}
    assert set(modules) - inserted == set(dict(model.named_modules()))
    assert {n for n in modules if n.endswith(".act")} == {
        f"{n}.act" for n, c in SWAPPED.items() if c is not QConv2d
    }
    assert modules["stem"].weight_quantizer.bits == 4
    # same hyper-parameters, same tensors, under net.<user name>
    assert modules["down"].stride == (2, 2) and modules["down"].padding == (1, 1)
    theirs, ours = model.state_dict(), q.state_dict()
    assert set(ours) == {f"net.{k}" for k in theirs}  # ClimbQ's quantizers have no state
    for key, value in theirs.items():
        assert torch.equal(ours[f"net.{key}"], value), key
    assert type(model.stem) is nn.Conv2d and type(model.stem_bn) is nn.BatchNorm2d  # a copy


def test_full_precision_slots_compute_the_users_function() -> None:
    torch.manual_seed(1)
    model = U.small_cnn(3)
    q = quantize(model, "fp32", 32, 32)
    x = torch.randn(4, 3, 12, 20)  # any H x W
    for mode in (True, False):
        model.train(mode)
        q.train(mode)
        assert torch.allclose(q(x), model(x), atol=1e-6, rtol=0)


def test_quantizers_sit_after_the_batchnorm_or_on_the_conv_output() -> None:
    """The quantized forward against the same network written out by hand (eval mode)."""

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(4)
            self.b = nn.Conv2d(4, 4, 1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.bn(self.a(x)))
            return self.fc(torch.relu(self.b(h)).mean((2, 3)))

    torch.manual_seed(2)
    model = Tiny().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    q = quantize(model, "climbq", 3, 2).eval()
    x = torch.randn(2, 3, 8, 8)
    bn = model.bn
    h = F.conv2d(x, climbq_weight_unit(model.a.weight, 3), padding=1)
    h = F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)
    h = torch.relu(climbq_activation(h, 2, 2.0, 2.0))
    h = F.conv2d(h, climbq_weight_unit(model.b.weight, 3), model.b.bias)
    h = torch.relu(climbq_activation(h, 2, 2.0, 2.0))
    expected = model.fc(h.mean((2, 3)))
    with torch.no_grad():
        assert torch.allclose(q(x), expected, atol=1e-6, rtol=0)


def test_forward_backward_and_features_in_training() -> None:
    torch.manual_seed(3)
    q = quantize(U.small_cnn(5)).train()
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 1, 2])
    logits, feats = q(x, y, return_features=True)
    assert logits.shape == (4, 5) and feats.shape == (4, 16)
    assert torch.equal(q.fc(feats), logits)  # the features are the head's input
    torch.nn.functional.cross_entropy(logits, y).backward()
    for name, p in q.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert not q.fc._forward_pre_hooks  # the features hook lives for one call


def test_class_scaling_reaches_every_inserted_quantizer() -> None:
    torch.manual_seed(4)
    q = quantize(U.small_cnn(5)).train()
    acts = [(n, m) for n, m in q.named_modules() if isinstance(m, ActQuant)]
    assert len(acts) == 6 and all(m.context is q.context for _, m in acts)
    seen: dict[str, object] = {}
    for name, act in acts:
        act.register_forward_hook(
            lambda m, _i, _o, name=name: seen.__setitem__(name, m.context.sigma)
        )
    labels = torch.tensor([0, 0, 0, 1])
    q(torch.randn(4, 3, 16, 16), labels)
    # counts (3, 1): p_i = count(y_i) / (3^2 + 1^2), sigma_i = 2 - p_i
    expected = torch.tensor([1.7, 1.7, 1.7, 1.9]).view(4, 1, 1, 1)
    assert set(seen) == {n for n, _ in acts}
    for name, sigma in seen.items():
        assert torch.allclose(sigma, expected), name
    assert q.context.sigma == 2.0  # back to inference sigma after the forward
    q.eval()
    q(torch.randn(4, 3, 16, 16), labels)
    assert all(sigma == 2.0 for sigma in seen.values())
    off = quantize(U.small_cnn(5), act_scaling="off").train()
    off.net.stem_bn.act.register_forward_hook(
        lambda m, _i, _o: seen.__setitem__("off", m.context.sigma)
    )
    off(torch.randn(4, 3, 16, 16), labels)
    assert seen["off"] == 2.0


def test_first_layer_float_keeps_the_first_conv_weights_only() -> None:
    q = quantize(U.small_cnn(5), first_layer="float")
    assert q.net.stem.weight_quantizer is None
    assert q.net.block[0].weight_quantizer is not None
    assert isinstance(q.net.stem_bn, BatchNormActQuant)  # its output is still quantized


def test_lsq_state_round_trips_through_a_fresh_quantize() -> None:
    torch.manual_seed(5)
    q = quantize(U.small_cnn(5), "lsq", 4, 4).train()
    q(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))  # LSQ initialises its steps
    keys = q.state_dict()
    assert "net.stem.weight_quantizer.step" in keys and "net.stem_bn.act.quantizer.step" in keys
    again = quantize(U.small_cnn(5), "lsq", 4, 4)
    again.load_state_dict(keys)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(again.eval()(x), q.eval()(x))


def test_data_parallel_batchnorm_keeps_the_quantizer() -> None:
    torch.manual_seed(6)
    q = quantize(U.small_cnn(5)).eval()
    x = torch.randn(2, 3, 16, 16)
    before, keys = q(x), list(q.state_dict())
    use_global_batchnorm(q)
    assert type(q.net.stem_bn) is GlobalBatchNormActQuant
    assert type(q.net.block[1]) is GlobalBatchNormActQuant
    assert list(q.state_dict()) == keys and torch.equal(q(x), before)


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        (U.Volumetric, {}, r"features\.0 \(torch\.nn\.Conv3d\): only nn\.Conv2d"),
        (U.Upsampler, {}, r"up \(torch\.nn\.ConvTranspose2d\)"),
        (U.NoHead, {}, r"the model \(NoHead\) has no nn\.Linear"),
        (U.LinearOnly, {}, r"the model \(LinearOnly\) has no nn\.Conv2d"),
        (U.Softmaxed, {}, r"must return the output of its final nn\.Linear \(fc\)"),
        (U.Shared, {}, r"conv \(torch\.nn\.Conv2d\) is called 2 times"),
        (U.Functional, {}, r"the model's forward calls conv2d directly"),
        (U.Gated, {}, r"cannot trace Gated in gate \(Gate\) at .*user_cnn\.py:\d+: TraceError"),
        (U.small_cnn, {"head": "quantize"}, r"head='quantize' is not supported yet"),
        (U.small_cnn, {"first_layer": "int8"}, r"first_layer must be one of"),
        (U.small_cnn, {"method": "nope"}, r"unknown method 'nope'"),
    ],
)
def test_refusals_name_the_module(model, options, message) -> None:
    with pytest.raises(ConfigError, match=message):
        quantize(model(), **options)


def test_refuses_value_control_flow_saying_what_fx_and_export_found() -> None:
    with pytest.raises(ConfigError, match=r"give quantize an example_input"):
        quantize(U.Gated())
    with pytest.raises(
        ConfigError,
        match=r"TraceError: .*; torch\.export on a \(1, 3, 8, 8\) input failed too: .*data-dep",
    ):
        quantize(U.Gated(), example_input=torch.zeros(1, 3, 8, 8))


def test_refuses_an_already_quantized_model_and_a_non_module() -> None:
    with pytest.raises(ConfigError, match=r"net\.stem \(QConv2d\) is already quantized"):
        quantize(quantize(U.small_cnn(5)))
    with pytest.raises(ConfigError, match=r"needs a torch\.nn\.Module, got dict"):
        quantize({"a": 1})
