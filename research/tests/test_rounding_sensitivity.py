"""research/studies/rounding_sensitivity.py: quantizer groups by position, and the unrounded
swap."""

from __future__ import annotations

import torch

from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.mobilenetv2 import CONFIG, CifarMobileNetV2
from research.studies import rounding_sensitivity as probe


def test_group_drops_block_and_sequential_indices() -> None:
    assert probe.group_of("blocks.3.shortcut.2") == "blocks.shortcut"
    assert probe.group_of("blocks.12.out_act") == "blocks.out_act"
    assert probe.group_of("stem.2") == "stem"
    assert probe.group_of("") == "model"


def test_groups_hold_the_shortcut_and_output_quantizers_of_every_stride_1_block() -> None:
    stride_1 = sum(count - (stride != 1) for _, _, count, stride in CONFIG)
    model = CifarMobileNetV2(10, QuantSpec("climbq", 2, 2))
    sizes = {k: len(v) for k, v in probe.quantizer_groups(model).items()}
    assert sizes["act:blocks.shortcut"] == sizes["act:blocks.out_act"] == stride_1 == 14
    assert sizes["weight:blocks.shortcut"] == stride_1
    assert sizes["act:blocks.expand"] == sizes["act:blocks.depthwise"] == 17
    faithful = CifarMobileNetV2(10, QuantSpec("climbq", 2, 2), faithful=True)
    groups = probe.quantizer_groups(faithful)
    assert "act:blocks.shortcut" not in groups and "act:blocks.out_act" not in groups
    assert probe.quantizer_groups(CifarMobileNetV2(10, QuantSpec("lsq", 2, 2))) == {}


def test_unrounded_swaps_a_group_and_puts_the_trained_quantizers_back() -> None:
    torch.manual_seed(0)
    model = CifarMobileNetV2(10, QuantSpec("climbq", 2, 2)).eval()
    (name, stem_act), *_ = probe.quantizer_groups(model)["act:stem"]
    original = stem_act.quantizer
    x = torch.randn(2, 3, 32, 32)
    seen: list[torch.Tensor] = []
    stem_act.register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.no_grad():
        before = model(x)
        with probe.unrounded(probe.quantizer_groups(model)["act:stem"]):
            model(x)
        after = model(x)
    assert name == "stem.2" and stem_act.quantizer is original
    assert torch.equal(before, after)
    rounded, soft = seen[0], seen[1]
    assert torch.unique(rounded).numel() <= 4  # the 2-bit grid: (2j - 3) * 2/3
    assert torch.unique(soft).numel() > 100  # unrounded: R (2 Phi(x / 2) - 1)
    codes = torch.round(3 * (soft / 2.0 + 1.0) / 2.0)  # the same codes once rounded
    assert torch.allclose((2 * codes - 3) * (2.0 / 3), rounded, atol=1e-6)
