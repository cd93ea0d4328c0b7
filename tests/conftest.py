"""Shared fixtures: small image trees made on the fly, a small rendered SynDigits set."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from climbq_deploy.ir.graph import InputQuant
from climbq_deploy.quant.layers import ActQuant

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def png_bytes(seed: int, size: int = 32) -> bytes:
    """A random RGB PNG (lossless, so decoded pixels are known exactly)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


TreeSpec = dict[str, dict[str, int]]  # split -> class -> number of images


def make_tree_files(spec: TreeSpec, size: int = 32) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    seed = 0
    for split, classes in spec.items():
        for name, count in classes.items():
            for i in range(count):
                files[f"{split}/{name}/{i:04d}.png"] = png_bytes(seed, size)
                seed += 1
    return files


@pytest.fixture
def make_folder(tmp_path: Path) -> Callable[..., Path]:
    """Write an image tree under tmp_path/name and return its root."""

    def make(spec: TreeSpec, name: str = "tree", size: int = 32) -> Path:
        root = tmp_path / name
        for rel, data in make_tree_files(spec, size).items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for split, classes in spec.items():
            for cls in classes:
                (root / split / cls).mkdir(parents=True, exist_ok=True)
        return root

    return make


@pytest.fixture
def make_zip(tmp_path: Path) -> Callable[..., Path]:
    """Write an image tree into tmp_path/name.zip (optionally under a top folder)."""

    def make(spec: TreeSpec, name: str = "tree", prefix: str = "") -> Path:
        path = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for rel, data in make_tree_files(spec).items():
                archive.writestr(prefix + rel, data)
        return path

    return make


@pytest.fixture(scope="session")
def small_syndigits():
    """A small SynDigits-LT set (head 40, 10 test per class), rendered once per session."""
    from climbq_deploy.data.syndigits import build_syndigits

    return build_syndigits(10, seed=3, head_count=40, test_per_class=10, progress=False)


@pytest.fixture(scope="session")
def trained_syndigits(tmp_path_factory):
    """The default SynDigits-LT gamma 50 with a short paper-recipe training: fp32 pretraining
    (4 epochs) and 4-bit ClimbQ+ QAT from it (2 epochs). Trained once per session (~40 s);
    returns ``(data_dir, fp_run, q4_run, q4_metrics)``."""
    from climbq_deploy.data.dataset import save_dataset
    from climbq_deploy.data.syndigits import build_syndigits
    from climbq_deploy.train.config import SHORT_FP32_PRETRAINING, SHORT_QAT, TrainConfig
    from climbq_deploy.train.loop import train

    root = tmp_path_factory.mktemp("trained")
    data = str(save_dataset(build_syndigits(50, seed=0, progress=False), root / "syn"))
    fp = TrainConfig(data, **SHORT_FP32_PRETRAINING)
    train(fp, root / "fp", progress=False)
    qat = TrainConfig(data, method="climbq+", wbits=4, abits=4, init=str(root / "fp"), **SHORT_QAT)
    metrics = train(qat, root / "q4", progress=False)
    return data, root / "fp", root / "q4", metrics


def tiny_dataset(seed: int = 0, size: int = 16):
    """A 2-class dataset of random ``size`` x ``size`` images (8 train, 4 test)."""
    from climbq_deploy.data.dataset import ImageDataset

    rng = np.random.default_rng(seed)
    return ImageDataset(
        name="tiny",
        class_names=("a", "b"),
        train_images=rng.integers(0, 256, (8, size, size, 3), dtype=np.uint8),
        train_labels=np.array([0, 0, 0, 0, 0, 1, 1, 1], dtype=np.int64),
        test_images=rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8),
        test_labels=np.array([0, 0, 1, 1], dtype=np.int64),
        info={"normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
    )


def make_random_run(folder: Path, data: Path, method: str, bits: int) -> Path:
    """A run folder with random weights (no training): checkpoint.pt (config + state) and
    metrics.json; an ordinary run to ``export``, ``check``, ``bench`` and ``calibrate``."""
    import json

    from climbq_deploy.models import build_model
    from climbq_deploy.train.checkpoint import save_checkpoint
    from climbq_deploy.train.config import TrainConfig

    config = TrainConfig(str(data), method=method, wbits=bits, abits=bits, epochs=1)
    torch.manual_seed(0)
    model = build_model(config.arch, 2, config.quant_spec).eval()
    folder.mkdir(parents=True)
    save_checkpoint(
        folder / "checkpoint.pt", {"config": config.as_dict(), "model": model.state_dict()}
    )
    (folder / "metrics.json").write_text(json.dumps({"top1": 50.0}))
    return folder


# Helpers for lowering tests: a model with trained-looking BatchNorm, and the torch model's own
# codes computed independently of climbq_deploy.check (the golden side of exactness tests).
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def randomize_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Trained-looking BN statistics, with some extreme channels (negative, zero, huge gamma;
    tiny variance)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 2)
            m.running_var.copy_(torch.rand(c, generator=g) * 20 + 0.5)
            m.weight.data.copy_(torch.randn(c, generator=g))
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.5)
            m.weight.data[0] = 0.0
            if c > 2:
                m.running_var[1] = 1e-12
                m.weight.data[2] = -50.0
    model.eval()


def codes_and_logits(model, graph, images):
    """Torch float64 on the program's own input: X_int per quantizer and logits."""
    step = next(n for n in graph.nodes if isinstance(n, InputQuant))
    x = (images.astype(np.float64) / 255 - np.array(step.mean)) / np.array(step.std)
    x = np.rint(x / step.step) * step.step
    exact = model.double()
    codes = {}
    hooks = [
        m.register_forward_hook(
            lambda mod, _, out, name=name: codes.__setitem__(
                name, torch.round(out / mod.quantizer.grid().step).permute(0, 2, 3, 1).numpy()
            )
        )
        for name, m in exact.named_modules()
        if isinstance(m, ActQuant)
    ]
    with torch.no_grad():
        logits = exact(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    for h in hooks:
        h.remove()
    return codes, logits


def resnet8_onnx(path: Path) -> Path:
    """A random-weight 4-bit ClimbQ+ ResNet-8 on 8 x 8 images (16-bit input), exported to
    ``path`` as the tensorrt target's ONNX (the TensorRT engine and runner tests' model)."""
    from climbq_deploy.ir.capture import capture
    from climbq_deploy.ir.passes import lower
    from climbq_deploy.models.common import QuantSpec
    from climbq_deploy.models.resnet import CifarResNet
    from climbq_deploy.targets.tensorrt import TensorrtTarget

    torch.manual_seed(0)
    model = CifarResNet(8, 10, QuantSpec("climbq+", 4, 4))
    graph = lower(capture(model, MEAN, STD, (8, 8, 3), input_bits=16))
    return TensorrtTarget().export(graph, path)
