"""Local average pooling: captured as window sums, folded by the lowering into the conv that
reads it (:mod:`climbq_deploy.ir.passes.absorb_average_pools`), exact against torch code for
code; the composite conv against pool-then-conv on random integers for every geometry the
pass accepts; and every form without an exact composite refused naming the node."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from climbq_deploy.errors import LoweringError
from climbq_deploy.ir.capture import CaptureError, capture
from climbq_deploy.ir.graph import AvgPool, Conv
from climbq_deploy.ir.passes import absorb_average_pools, lower
from climbq_deploy.ir.passes.absorb_average_pools import composite_conv
from climbq_deploy.kernels import ReferenceModel, ops
from climbq_deploy.quant import QuantContext
from tests.conftest import MEAN, STD, codes_and_logits, randomize_batchnorm
from tests.ir.test_capture import unit

INT32_MAX = 2**31 - 1


class PooledNet(nn.Module):
    """Every way a local average pool reaches a conv: ``AvgPool2d(2)`` before a 3x3 padded
    conv (torchvision VGG/ResNet-D style downsampling), Inception's ``avg_pool2d(x, 3, 1, 1)``
    before a 1x1 conv joined with another branch, ``AdaptiveAvgPool2d(2)`` before a 1x1 conv,
    a divisor_override, then the global pool and the head."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        ctx = QuantContext()
        self.stem = unit(ctx, 3, 6)
        self.down = nn.AvgPool2d(2)
        self.body = unit(ctx, 6, 8)
        self.branch_pool = unit(ctx, 8, 4, 1)
        self.branch_conv = unit(ctx, 8, 4, 3)
        self.shrink = nn.AdaptiveAvgPool2d(2)
        self.tail = unit(ctx, 8, 8, 1)
        self.extra = unit(ctx, 8, 8, 1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.down(torch.relu(self.stem(x))))
        pooled = F.avg_pool2d(h, 3, 1, 1)
        h = torch.cat([self.branch_pool(pooled).relu(), self.branch_conv(h).relu()], dim=1)
        small = self.shrink(h)
        other = self.extra(F.avg_pool2d(h, 2, 2, divisor_override=3))
        return self.fc(torch.cat([self.tail(small), other], 1).mean((2, 3)))


def pooled_net(seed: int) -> PooledNet:
    torch.manual_seed(seed)
    model = PooledNet().eval()
    randomize_batchnorm(model, seed)
    return model


def test_captured_pools_fold_into_their_convs() -> None:
    graph = capture(pooled_net(0), MEAN, STD, (8, 8, 3), input_bits=20)
    pools = [n for n in graph.nodes if isinstance(n, AvgPool)]
    assert [(p.source, p.kernel, p.stride, p.padding, p.divisor) for p in pools] == [
        ("down", 2, 2, 0, 4),
        ("avgpool", 3, 1, 1, 9),
        ("shrink", 2, 2, 0, 4),
        ("avgpool", 2, 2, 0, 3),
    ]
    assert graph.tensors[pools[0].output].scale == graph.tensors[pools[0].inputs[0]].scale / 4
    folded = absorb_average_pools(graph)
    assert not any(isinstance(n, AvgPool) for n in folded.nodes)
    convs = {n.source: n for n in folded.nodes if isinstance(n, Conv)}
    body = convs["body.0"]  # 2x2/2 pool, then 3x3 stride 1 padding 1: 6x6, stride 2, padding 2
    assert (body.weight.shape[1:3], body.stride, body.padding) == ((6, 6), 2, 2)
    assert body.weight_grid == (2, -15) and body.weight_bits == 4  # each entry is one weight
    branch = convs["branch_pool.0"]  # 3x3/1 pad 1, then 1x1: a 3x3 conv with padding 1
    assert (branch.weight.shape[1:3], branch.stride, branch.padding) == ((3, 3), 1, 1)
    assert convs["extra.0"].weight_scale == pytest.approx(
        next(n for n in graph.nodes if n.source == "extra.0").weight_scale / 3
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_average_pools_lower_exactly_code_for_code(seed: int) -> None:
    model = pooled_net(seed)
    program = lower(capture(model, MEAN, STD, (8, 8, 3), input_bits=20))
    images = np.random.default_rng(seed).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    values = ReferenceModel(program).run(images, keep=True)
    codes, logits = codes_and_logits(model, program, images)
    acts = [n for n in program.nodes if n.op == "threshold_act"]
    assert {n.source for n in acts} == set(codes) and len(acts) == 6
    for node in acts:
        np.testing.assert_array_equal(values[node.output], codes[node.source], err_msg=node.source)
        assert len(np.unique(values[node.output])) > 2, node.source
    np.testing.assert_allclose(values[program.output], logits, rtol=1e-9, atol=1e-9)


def _pool_then_conv(
    x: np.ndarray, kp: int, sp: int, pp: int, w: np.ndarray, s: int, p: int, d: int
) -> np.ndarray:
    """The window sums of ``x`` (zero padding counted), then the integer conv."""
    padded = np.pad(x, ((0, 0), (pp, pp), (pp, pp), (0, 0)))
    n, hp, wp = x.shape[0], (padded.shape[1] - kp) // sp + 1, (padded.shape[2] - kp) // sp + 1
    sums = np.zeros((n, hp, wp, x.shape[3]), np.int64)
    for a, b in itertools.product(range(kp), repeat=2):
        sums += padded[:, a : a + sp * (hp - 1) + 1 : sp, b : b + sp * (wp - 1) + 1 : sp]
    return ops.int_conv(sums, w, s, p, 1, INT32_MAX, dilation=d)


GEOMETRIES = [
    (h, kp, sp, pp, k, s, p, d)
    for h in (5, 6, 7, 8)
    for kp, sp, pp in ((2, 2, 0), (3, 1, 1), (3, 2, 1), (2, 1, 0), (3, 3, 0), (3, 2, 0))
    for k, s, p, d in (
        (1, 1, 0, 1),
        (3, 1, 1, 1),
        (3, 2, 1, 1),
        (3, 1, 0, 1),
        (2, 2, 0, 1),
        (3, 1, 2, 2),
    )
    if d * (k - 1) + 1 <= (h + 2 * pp - kp) // sp + 1 + 2 * p
]


@pytest.mark.parametrize(("h", "kp", "sp", "pp", "k", "s", "p", "d"), GEOMETRIES)
def test_the_composite_conv_is_pool_then_conv(
    h: int, kp: int, sp: int, pp: int, k: int, s: int, p: int, d: int
) -> None:
    """Accepted geometries give the same integers on a grid of at most 8 bits; a refused one,
    taken anyway, gives other integers or another output size (so no exact case is
    refused), unless its padding breaks the program's rule (padding below the kernel)."""
    rng = np.random.default_rng(h * 1000 + kp * 100 + k * 10 + p)
    x = rng.integers(-7, 8, (2, h, h, 3))
    w = 2 * rng.integers(0, 16, (4, k, k, 3)) - 15
    pool = AvgPool("pool", ("x",), "pooled", "pool", kernel=kp, stride=sp, padding=pp, divisor=1)
    expected = _pool_then_conv(x, kp, sp, pp, w, s, p, d)
    try:
        merged = composite_conv(pool, w, 4, (2, -15), s, p, d, (h, h), "here")
    except LoweringError as exc:
        assert "here: average pool" in str(exc)
        wide, stride, padding = _spread(w, kp, sp * d), sp * s, sp * p + pp
        big = wide.shape[1]
        if padding < big and (h + 2 * padding - big) // stride + 1 == expected.shape[1]:
            taken = ops.int_conv(x, wide, stride, padding, 1, INT32_MAX)
            assert not np.array_equal(taken, expected)
        return
    got = ops.int_conv(x, merged.weight, merged.stride, merged.padding, 1, INT32_MAX)
    np.testing.assert_array_equal(got, expected)
    mult, offset = merged.weight_grid
    codes = (merged.weight - offset) / mult
    assert np.all(codes == np.rint(codes)) and codes.min() >= 0
    assert codes.max() <= 2**merged.weight_bits - 1 and merged.weight_bits <= 8


def _spread(w: np.ndarray, kp: int, step: int) -> np.ndarray:
    """The composite's weights by the formula (as the pass builds them)."""
    k = w.shape[1]
    big = step * (k - 1) + kp
    wide = np.zeros((w.shape[0], big, big, w.shape[3]), np.int64)
    for i, j, a, b in itertools.product(range(k), range(k), range(kp), range(kp)):
        wide[:, step * i + a, step * j + b] += w[:, i, j]
    return wide


def test_the_common_geometries_are_accepted() -> None:
    for case in [
        (8, 2, 2, 0, 3, 1, 1, 1),  # VGG-style 2x2 pool then a padded 3x3 conv, even map
        (7, 2, 2, 0, 1, 1, 0, 1),  # ResNet-D shortcut, odd map, 1x1 conv: no padding read
        (5, 3, 1, 1, 1, 1, 0, 1),  # Inception's pool branch
        (8, 3, 2, 1, 3, 1, 0, 1),  # overlapping windows: off the grid, on a wider one
    ]:
        assert _accepts(*case), case
    assert not _accepts(7, 2, 2, 0, 3, 1, 1, 1)  # the dropped row would be read


def _accepts(*geometry: int) -> bool:
    h, kp, sp, pp, k, s, p, d = geometry
    pool = AvgPool("pool", ("x",), "pooled", "pool", kernel=kp, stride=sp, padding=pp, divisor=1)
    try:
        composite_conv(pool, np.ones((1, k, k, 1), np.int64), 4, (2, -15), s, p, d, (h, h), "")
    except LoweringError:
        return False
    return True


# -- refusals --------------------------------------------------------------------------------


class Net(nn.Module):
    """A stem and a head around ``middle(h)``, with ``middle`` varied per case."""

    def __init__(self, size: int = 8, then_conv: bool = True) -> None:
        super().__init__()
        ctx = QuantContext()
        self.stem = unit(ctx, 3, 4)
        self.conv = unit(ctx, 4, 4, 3)
        self.fc = nn.Linear(4, 2)

    def middle(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv(F.avg_pool2d(h, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.middle(torch.relu(self.stem(x))).mean((2, 3)))


class IntoAdd(Net):
    def middle(self, h: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(h, 3, 1, 1) + h


class IntoHead(Net):
    def middle(self, h: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(h, 2).relu()


class OfTheImage(Net):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.stem(F.avg_pool2d(x, 2))).mean((2, 3)))


class NoPadCount(Net):
    def middle(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv(F.avg_pool2d(h, 3, 1, 1, count_include_pad=False))


class Ceil(Net):
    def middle(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv(F.avg_pool2d(h, 2, ceil_mode=True))


class Oblong(Net):
    def middle(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.avg_pool2d(h, (2, 1)))


class Adaptive3(Net):
    def middle(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv(F.adaptive_avg_pool2d(h, 3))


REFUSALS = {
    "into an add": (IntoAdd(), 8, r"node 'add' .*reads the local average pool 'avgpool'"),
    "into a relu": (IntoHead(), 8, r"node 'relu_1' .*lowers only into the conv that reads it"),
    "of the image": (OfTheImage(), 8, r"node 'avg_pool2d' .*of the input image"),
    "count_include_pad": (NoPadCount(), 8, r"count_include_pad=False"),
    "ceil mode, partial window": (Ceil(), 7, r"ceil_mode on a 7x7 map"),
    "oblong kernel": (Oblong(), 8, r"average pool kernel \(2, 1\) \(square only\)"),
    "adaptive to 3 on 8": (Adaptive3(), 8, r"adaptive average pool to 3 on \(8, 8, 4\)"),
    "odd map, padded conv": (
        Net(),
        7,
        r"node 'conv_0' .*average pool 2x2 stride 2 padding 0 then a 3x3 conv .* 7x7 map: the "
        r"conv's zero padding reads pooled position 3 \(outside 0..2\), whose window covers "
        r"pixels 6..6",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_average_pools_without_an_exact_form_are_refused(case: str) -> None:
    model, size, pattern = REFUSALS[case]
    with pytest.raises(CaptureError, match=pattern):
        capture(model.eval(), MEAN, STD, (size, size, 3))


def test_ceil_mode_without_a_partial_window_is_the_plain_pool() -> None:
    model = Ceil().eval()
    randomize_batchnorm(model, 0)
    program = lower(capture(model, MEAN, STD, (8, 8, 3), input_bits=20))
    images = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    values = ReferenceModel(program).run(images, keep=True)
    codes, _ = codes_and_logits(model, program, images)
    for node in (n for n in program.nodes if n.op == "threshold_act"):
        np.testing.assert_array_equal(values[node.output], codes[node.source])


class ShapeBranching(Net):
    """Pools only maps wider than 4: torch.fx cannot trace the branch, torch.export can
    (``aten.adaptive_avg_pool2d`` and ``aten.avg_pool2d`` map back to the rules). Its
    activation quantizers are modules written in by hand (not ``quantize``'s)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2 = unit(self.stem[2].context, 4, 4, 1)

    def middle(self, h: torch.Tensor) -> torch.Tensor:
        if h.shape[-1] > 4:
            h = torch.relu(self.conv(F.adaptive_avg_pool2d(h, 4)))
        return self.conv2(F.avg_pool2d(h, 3, 1, 1))


def test_pools_traced_by_torch_export_lower_exactly() -> None:
    torch.manual_seed(5)
    model = ShapeBranching().eval()
    randomize_batchnorm(model, 5)
    graph = capture(model, MEAN, STD, (8, 8, 3), input_bits=20)
    pools = [(n.kernel, n.stride, n.padding) for n in graph.nodes if isinstance(n, AvgPool)]
    assert pools == [(2, 2, 0), (3, 1, 1)]
    program = lower(graph)
    images = np.random.default_rng(5).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    values = ReferenceModel(program).run(images, keep=True)
    codes, logits = codes_and_logits(model, program, images)
    for node in (n for n in program.nodes if n.op == "threshold_act"):
        np.testing.assert_array_equal(values[node.output], codes[node.source], err_msg=node.source)
    np.testing.assert_allclose(values[program.output], logits, rtol=1e-9, atol=1e-9)


def test_the_pass_refuses_a_pool_read_by_anything_but_a_conv() -> None:
    graph = capture(pooled_net(0), MEAN, STD, (8, 8, 3), input_bits=20)
    pool = next(n for n in graph.nodes if isinstance(n, AvgPool))
    relu = next(n for n in graph.nodes if n.op == "relu")
    rewired = [
        n if n is not relu else type(n)(n.name, (pool.output,), n.output, n.source)
        for n in graph.nodes
    ]
    with pytest.raises(LoweringError, match=r"average pool 'down' is read by relu"):
        absorb_average_pools(graph.replace_nodes(rewired))
