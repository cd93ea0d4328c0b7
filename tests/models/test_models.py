import pytest
import torch

from climbq_deploy.errors import ConfigError
from climbq_deploy.models import build_model
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.quant import ActQuant, QConv2d, quantized_convs


@pytest.mark.parametrize(("arch", "convs"), [("resnet20", 21), ("resnet32", 33), ("resnet56", 57)])
def test_resnet_structure_every_conv_quantized(arch: str, convs: int) -> None:
    model = build_model(arch, 10, QuantSpec("climbq", 4, 4))
    found = quantized_convs(model)
    assert len(found) == convs  # depth - 1 convs + 2 downsampling shortcuts
    assert all(conv.weight_quantizer is not None for _, conv in found)
    acts = [m for m in model.modules() if isinstance(m, ActQuant)]
    assert len(acts) == convs and all(a.quantizer is not None for a in acts)
    assert isinstance(model.fc, torch.nn.Linear)


def test_resnet20_parameter_count_matches_the_cifar_resnet() -> None:
    # He et al.'s CIFAR ResNet-20 with 1x1-conv shortcuts: 0.27M parameters
    model = build_model("resnet20", 10)
    assert 270_000 < sum(p.numel() for p in model.parameters()) < 275_000


def test_fp32_has_no_quantizers() -> None:
    model = build_model("resnet20", 10, QuantSpec("fp32"))
    assert all(conv.weight_quantizer is None for _, conv in quantized_convs(model))


class SigmaSpy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list = []

    def forward(self, x, sigma=2.0):
        self.seen.append(sigma)
        return x


def _spy_first_act(model) -> SigmaSpy:
    act = next(m for m in model.modules() if isinstance(m, ActQuant))
    act.quantizer = SigmaSpy()
    return act.quantizer


def test_class_scaling_in_training_only() -> None:
    model = build_model("resnet20", 3, QuantSpec("climbq", 4, 4))
    spy = _spy_first_act(model)
    labels = torch.tensor([0, 0, 1, 2])  # counts 2, 1, 1: sum of squares 6
    model.train()(torch.randn(4, 3, 32, 32), labels)
    torch.testing.assert_close(spy.seen[-1].flatten(), 2 - torch.tensor([2, 2, 1, 1]) / 6)
    model.eval()(torch.randn(4, 3, 32, 32), labels)
    assert spy.seen[-1] == 2.0
    model.train()(torch.randn(4, 3, 32, 32))  # no labels: no scaling
    assert spy.seen[-1] == 2.0


def test_act_scaling_off_keeps_sigma_two() -> None:
    model = build_model("resnet20", 3, QuantSpec("climbq", 4, 4, act_scaling="off"))
    spy = _spy_first_act(model)
    model.train()(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert spy.seen[-1] == 2.0


def test_mobilenetv2_integer_fix_quantizes_shortcut_and_output() -> None:
    fixed = build_model("mobilenetv2", 10, QuantSpec("climbq", 4, 4))
    faithful = build_model("mobilenetv2", 10, QuantSpec("climbq", 4, 4), faithful_mbv2=True)
    count = lambda m: sum(isinstance(x, ActQuant) for x in m.modules())  # noqa: E731
    stride1 = sum(1 for b in fixed.blocks if b.stride == 1)
    assert stride1 == 14  # 1 + 2 + 2 + 3 + 3 + 2 + 1 from the CIFAR config
    assert count(fixed) - count(faithful) == 2 * stride1
    assert len(quantized_convs(fixed)) == len(quantized_convs(faithful)) == 2 + 17 * 3 + stride1
    logits, feats = fixed(torch.randn(2, 3, 32, 32), return_features=True)
    assert logits.shape == (2, 10) and feats.shape == (2, 1280)
    assert all(isinstance(c, QConv2d) for _, c in quantized_convs(fixed))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("resnet18", 10), "unknown arch"),
        (("resnet20", 1), "at least 2 classes"),
        (("resnet20", 10, QuantSpec("climbq", 4, 4), True), "mobilenetv2 only"),
    ],
)
def test_bad_model_options(args, match) -> None:
    with pytest.raises(ConfigError, match=match):
        build_model(*args)


def test_bad_spec() -> None:
    with pytest.raises(ConfigError, match="act_scaling"):
        QuantSpec("climbq", 4, 4, act_scaling="per-class")
    with pytest.raises(ConfigError, match="bits"):
        QuantSpec("lsq", 1, 4)
