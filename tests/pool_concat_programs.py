"""Small hand-built integer programs with ``MaxPool`` and ``Concat`` (shared by the IR, kernel
and target tests).

- :func:`pool_program`: torchvision ResNet-18's stem in miniature, image -> 7x7 stride-2 pad-3
  conv -> 4-bit codes -> (ReLU) -> ``MaxPool(k, s, p)`` -> 3x3 conv -> 2-bit codes -> sum pool
  -> float head. Without the ReLU the pooled codes are negative too (odd values in
  [-15, 15]), so a padded position would win a window if a target padded with zeros.
- :func:`concat_program`: a stem, two branches (a 1x1 conv, and a 3x3 conv whose codes go
  through a ReLU) joined with the stem's codes by ``Concat``, then a 3x3 conv reading all
  twelve channels.

Weights are on the 4-bit odd grid (``2 code - 15``); some channels count downwards (direction
-1); thresholds are quantiles of each layer's actual accumulators on :data:`CALIBRATION`
images, so the codes spread over their levels.
"""

from __future__ import annotations

import numpy as np

from climbq_deploy.ir.graph import (
    Concat,
    GlobalSumPool,
    Graph,
    InputQuant,
    IntConv,
    Linear,
    MaxPool,
    Node,
    Relu,
    TensorSpec,
    ThresholdAct,
)
from climbq_deploy.ir.passes.bound_tensors import bound_tensors
from climbq_deploy.kernels import ops

MEAN, STD, STEP = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1.0 / 256  # I in [-256, 256]
CODE_SCALE = 0.25  # every code tensor's scale (equal: Concat needs it)
GRID = {"weight_bits": 4, "weight_grid": (2, -15)}
INT32_MAX = 2**31 - 1


def images(size: int, n: int = 4, seed: int = 0) -> np.ndarray:
    """Random uint8 NHWC RGB images."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _weights(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (2 * rng.integers(0, 16, shape) - 15).astype(np.int8)


class _Builder:
    """Nodes and tensor specs of one program, with each layer's values on the calibration
    images (to place thresholds where the accumulators are)."""

    def __init__(self, size: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Node] = []
        self.tensors: dict[str, TensorSpec] = {
            "image": TensorSpec("image", "uint8", (size, size, 3), 2)
        }
        self.values: dict[str, np.ndarray] = {}
        calibration = images(size, 16, seed + 100)
        self.add(
            InputQuant("in", ("image",), "x", "input", mean=MEAN, std=STD, step=STEP),
            ops.input_quant(calibration, MEAN, STD, STEP),
            STEP,
        )

    def add(self, node: Node, value: np.ndarray, scale: float | None = CODE_SCALE) -> str:
        shape = value.shape[1:]
        self.tensors[node.output] = TensorSpec(node.output, "int32", shape, len(shape) - 1, scale)
        self.nodes.append(node)
        self.values[node.output] = value
        return node.output

    def layer(
        self, name: str, x: str, out_c: int, kernel: int, stride: int, padding: int, bits: int
    ) -> str:
        """conv (weights on the 4-bit grid) -> ``bits``-bit ClimbQ codes ``2 j - n``."""
        c_in = self.tensors[x].shape[-1]
        weight = _weights(self.rng, (out_c, kernel, kernel, c_in))
        acc = ops.int_conv(self.values[x], weight, stride, padding, 1, INT32_MAX)
        self.add(
            IntConv(
                f"{name}_conv",
                (x,),
                f"{name}_acc",
                f"{name}.conv",
                weight=weight,
                stride=stride,
                padding=padding,
                **GRID,
            ),
            acc,
            None,
        )
        levels = 2**bits - 1
        direction = np.where(np.arange(out_c) % 3 == 1, -1, 1).astype(np.int8)
        signed = acc.reshape(-1, out_c).astype(np.float64) * direction
        quantiles = np.quantile(signed, np.linspace(0.02, 0.98, levels), axis=0).T
        theta = np.floor(quantiles).astype(np.int64)
        codes = ops.threshold_act(acc, theta, direction, 2, -levels)
        return self.add(
            ThresholdAct(
                f"{name}_act",
                (f"{name}_acc",),
                f"{name}_q",
                f"{name}.act",
                thresholds=theta,
                direction=direction,
                mult=2,
                offset=-levels,
                bits=bits,
            ),
            codes,
        )

    def relu(self, name: str, x: str) -> str:
        return self.add(Relu(name, (x,), name, f"{name}.relu"), ops.relu(self.values[x]))

    def finish(self, x: str, classes: int = 5) -> Graph:
        """sum pool -> float head; the bounds pass."""
        h, w, c = self.tensors[x].shape
        pooled = ops.global_sum_pool(self.values[x])
        self.add(GlobalSumPool("pool", (x,), "pool", "pool"), pooled, CODE_SCALE / (h * w))
        head = Linear(
            "fc",
            ("pool",),
            "logits",
            "fc",
            weight=self.rng.normal(size=(classes, c)),
            bias=self.rng.normal(size=classes),
        )
        self.nodes.append(head)
        self.tensors["logits"] = TensorSpec("logits", "float64", (classes,), 0)
        return bound_tensors(Graph(tuple(self.nodes), self.tensors, "image", "logits"))


def pool_program(
    pool_size: int, kernel: int, stride: int, padding: int, relu: bool = True, seed: int = 0
) -> Graph:
    """image ``(2 S, 2 S, 3)`` -> 7x7 s2 p3 stem (4 channels, 4-bit codes) -> ReLU (``relu``)
    -> ``MaxPool(kernel, stride, padding)`` on the ``S x S`` codes -> 3x3 p1 conv (6
    channels, 2-bit codes) -> sum pool -> head."""
    b = _Builder(2 * pool_size, seed)
    x = b.layer("stem", "x", 4, 7, 2, 3, 4)
    assert b.tensors[x].shape[:2] == (pool_size, pool_size)
    if relu:
        x = b.relu("stem_relu", x)
    pooled = ops.max_pool(b.values[x], kernel, stride, padding)
    x = b.add(MaxPool("maxpool", (x,), "maxpool", "maxpool", kernel, stride, padding), pooled)
    x = b.layer("layer1", x, 6, 3, 1, 1, 2)
    return b.finish(x)


def concat_program(size: int = 6, seed: int = 1) -> Graph:
    """image -> 3x3 p1 stem (4 channels, 4-bit codes ``q``) -> branch a: 1x1 conv (3, 4-bit);
    branch b: 3x3 p1 conv (5, 2-bit) -> ReLU; ``Concat(a, relu(b), q)`` (12 channels) ->
    3x3 p1 conv (6, 4-bit) -> sum pool -> head."""
    b = _Builder(size, seed)
    stem = b.layer("stem", "x", 4, 3, 1, 1, 4)
    branch_a = b.layer("branch_a", stem, 3, 1, 1, 0, 4)
    branch_b = b.relu("branch_b_relu", b.layer("branch_b", stem, 5, 3, 1, 1, 2))
    parts = (branch_a, branch_b, stem)
    joined = ops.concat([b.values[p] for p in parts])
    x = b.add(Concat("concat", parts, "concat", "concat"), joined)
    x = b.layer("head_conv", x, 6, 3, 1, 1, 4)
    return b.finish(x)


POOL_CASES = {
    "k3s2p1-even": (8, 3, 2, 1, True),
    "k3s2p1-odd": (7, 3, 2, 1, True),
    "k2s2p0": (8, 2, 2, 0, True),
    "k3s2p1-even-signed": (8, 3, 2, 1, False),
    "k3s2p1-odd-signed": (7, 3, 2, 1, False),
    "k5s1p2-signed": (3, 5, 1, 2, False),
    "k5s1p2-single-pixel-signed": (1, 5, 1, 2, False),
}
"""Name -> :func:`pool_program` arguments: ResNet-18's pool on an even and an odd input, a
2x2 pool without padding, the padded pools on signed codes (no ReLU before them), and a 5x5
pool whose padding (2) is as wide as the input or wider."""


def program(case: str) -> Graph:
    """The program of a :data:`POOL_CASES` name, or ``"concat"``."""
    return concat_program() if case == "concat" else pool_program(*POOL_CASES[case])


CASES = (*POOL_CASES, "concat")
