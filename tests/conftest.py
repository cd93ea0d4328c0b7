"""Shared fixtures: small image trees made on the fly, a small rendered SynDigits set."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
    from climbq_deploy.calibration.syndigits import build_syndigits

    return build_syndigits(10, seed=3, head_count=40, test_per_class=10, progress=False)


@pytest.fixture(scope="session")
def trained_syndigits(tmp_path_factory):
    """The default SynDigits-LT gamma 50 with a short paper-recipe training: fp32 pretraining
    (4 epochs) and 4-bit ClimbQ+ QAT from it (2 epochs). Trained once per session (~40 s);
    returns ``(data_dir, fp_run, q4_run, q4_metrics)``."""
    from climbq_deploy.calibration.dataset import save_dataset
    from climbq_deploy.calibration.syndigits import build_syndigits
    from climbq_deploy.train.config import TrainConfig
    from climbq_deploy.train.loop import train

    root = tmp_path_factory.mktemp("trained")
    data = str(save_dataset(build_syndigits(50, seed=0, progress=False), root / "syn"))
    fp = TrainConfig(data, epochs=4, batch_size=32, lr=0.05, schedule="cosine", loss="la")
    train(fp, root / "fp", progress=False)
    qat = TrainConfig(data, method="climbq+", wbits=4, abits=4, epochs=2, batch_size=32,
                      lr=0.01, init=str(root / "fp"))  # fmt: skip
    metrics = train(qat, root / "q4", progress=False)
    return data, root / "fp", root / "q4", metrics
