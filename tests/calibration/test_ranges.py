"""Activation range observation (min-max, nearest-rank percentile) and residual tying."""

import numpy as np
import pytest
import torch
from torch import nn

from climbq_deploy.calibration.ranges import (
    RangeRule,
    nearest_rank,
    observe_ranges,
    residual_groups,
    tie_ranges,
)
from climbq_deploy.errors import ConfigError, DataError
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.models.mobilenetv2 import CifarMobileNetV2
from climbq_deploy.models.resnet import CifarResNet
from climbq_deploy.quant.layers import ActQuant, QuantContext


class Toy(nn.Module):
    """Two quantizer slots: ``a`` sees ``2x``, ``b`` sees ``x - 1``."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = ActQuant(None, QuantContext()), ActQuant(None, QuantContext())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(2 * x) + self.b(x - 1)


def toy_data() -> torch.Tensor:
    """10000 values ``+-1..10000`` in random order and signs, 100 images of 1x10x10."""
    rng = np.random.default_rng(0)
    values = rng.permutation(np.arange(1, 10001)) * rng.choice([-1, 1], 10000)
    return torch.from_numpy(values.astype(np.float32)).view(100, 1, 10, 10)


def batches(x: torch.Tensor, sizes: list[int]):
    start = 0
    for size in sizes:
        yield x[start : start + size]
        start += size


def test_nearest_rank_is_exact() -> None:
    assert nearest_rank(99.99, 10000) == 9999  # 0.9999 * 10000 is 9999.000000000002 in float
    assert nearest_rank(100, 12345) == 12345
    assert nearest_rank(50, 10) == 5 and nearest_rank(50, 11) == 6
    assert nearest_rank(1e-9, 10) == 1


def test_minmax_range_is_the_largest_magnitude() -> None:
    x = toy_data()
    ranges = observe_ranges(Toy(), batches(x, [30, 30, 40]), 100, RangeRule("minmax"))
    assert ranges["a"] == 20000.0  # 2 * max|x|
    assert ranges["b"] == float((x - 1).abs().max())  # -10000 - 1 if -10000 is there
    assert ranges["b"] == max(-float((x - 1).min()), float((x - 1).max()))


@pytest.mark.parametrize("p", [99.99, 99.0, 50.0, 100.0])
def test_percentile_range_is_the_nearest_rank_value(p: float) -> None:
    x = toy_data()
    ranges = observe_ranges(Toy(), batches(x, [7, 50, 43]), 100, RangeRule("percentile", p))
    for name, seen in (("a", 2 * x), ("b", x - 1)):
        ordered = sorted(seen.abs().flatten().tolist())  # golden: a plain sort
        rank = -(-round(p * 100) * len(ordered) // 10000)  # ceil(p/100 M), p has 2 decimals
        assert ranges[name] == ordered[rank - 1], name
    assert ranges["a"] == 2.0 * nearest_rank(p, 10000)  # |2x| takes the values 2, 4, ..., 20000


def test_observing_the_wrong_number_of_images_is_refused() -> None:
    with pytest.raises(DataError, match="expected 101"):
        observe_ranges(Toy(), batches(toy_data(), [100]), 101, RangeRule("minmax"))


def test_rule_validation() -> None:
    with pytest.raises(ConfigError, match="range rule"):
        RangeRule("mse")
    with pytest.raises(ConfigError, match="percentile"):
        RangeRule("percentile", 0.0)


def test_resnet20_residual_groups() -> None:
    groups = residual_groups(CifarResNet(20, 10, QuantSpec()))
    assert groups == [
        ["act1", "layers.0.act2", "layers.1.act2", "layers.2.act2"],
        ["layers.3.act2", "layers.3.shortcut.2", "layers.4.act2", "layers.5.act2"],
        ["layers.6.act2", "layers.6.shortcut.2", "layers.7.act2", "layers.8.act2"],
    ]


def test_mobilenetv2_residual_groups_are_its_shortcut_blocks() -> None:
    model = CifarMobileNetV2(10, QuantSpec())
    shortcut = [i for i, b in enumerate(model.blocks) if b.shortcut is not None]
    assert len(shortcut) == 14
    assert residual_groups(model) == [
        [f"blocks.{i}.project.2", f"blocks.{i}.shortcut.2"] for i in shortcut
    ]


def test_a_user_cnns_residual_add_and_concat_are_grouped() -> None:
    """The user CNN of tests/models: the stem's quantizer meets the block's in the residual
    add, the two branches' quantizers meet in the concat; the strided conv after them is
    alone."""
    from climbq_deploy.quant.convert import quantize
    from tests.quant.test_convert import U

    model = quantize(U.small_cnn(5), "fp32", 32, 32)
    assert residual_groups(model) == [
        ["net.stem_bn.act", "net.block.4.act"],
        ["net.branches.left.act", "net.branches.right_bn.act"],
    ]


def test_tie_ranges_takes_each_groups_largest() -> None:
    ranges = {"a": 1.0, "b": 3.0, "c": 2.0, "d": 5.0}
    assert tie_ranges(ranges, [["a", "b"], ["c"]]) == {"a": 3.0, "b": 3.0, "c": 2.0, "d": 5.0}
    with pytest.raises(ConfigError, match="no observed range"):
        tie_ranges(ranges, [["a", "z"]])
