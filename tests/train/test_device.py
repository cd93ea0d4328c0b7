"""Device support that can be checked without a GPU: the bulk (device-side) batch path draws
exactly the CPU path's random choices, device selection fails clearly, and checkpoints resume
whatever device name the run asks for."""

import json

import numpy as np
import pytest
import torch

from climbq_deploy.cli import main
from climbq_deploy.data.dataset import save_dataset
from climbq_deploy.data.pipeline import Augment, BatchLoader, ShuffleSampler
from climbq_deploy.errors import ConfigError
from climbq_deploy.train.checkpoint import load_checkpoint, save_checkpoint
from climbq_deploy.train.config import TrainConfig
from climbq_deploy.train.loop import resolve_device, to_cpu, train

NO_CUDA = not torch.cuda.is_available()


@pytest.mark.parametrize("augment", ["crop_flip", "none"])
def test_bulk_random_batches_equal_per_batch_batches(augment: str) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (37, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, 37)

    def batches(bulk: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = BatchLoader(
            images,
            labels,
            16,
            augment=Augment.from_name(augment),
            sampler=ShuffleSampler(37, seed=5),
            seed=2,
            bulk_random=bulk,
        )
        return list(loader.epoch(3))

    per_batch, bulk = batches(False), batches(True)
    assert [len(y) for _, y in bulk] == [16, 16, 5]
    for (x0, y0), (x1, y1) in zip(per_batch, bulk, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
        assert x1.shape[1:] == (3, 8, 8) and x1.is_contiguous(memory_format=torch.channels_last)
    # a different epoch draws different crops (the bulk path does not reuse draws)
    other = list(
        BatchLoader(
            images,
            labels,
            16,
            augment=Augment.from_name("crop_flip"),
            sampler=ShuffleSampler(37, seed=5),
            seed=2,
            bulk_random=True,
        ).epoch(4)
    )
    if augment == "crop_flip":
        assert not torch.equal(other[0][0], bulk[0][0])


def test_bulk_random_crops_are_windows_with_half_flipped() -> None:
    """Independent check of the bulk path: every output is one of the 9 x 9 zero-padded
    windows of its source image, flipped or not, and both offsets and flips vary."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 6, 6, 3), dtype=np.uint8)
    loader = BatchLoader(
        images,
        np.zeros(64, np.int64),
        64,
        mean=(0, 0, 0),
        std=(1, 1, 1),
        augment=Augment(crop_pad=4, hflip=True),
        bulk_random=True,
    )
    x, _ = next(loader.epoch(0))
    padded = np.pad(images.transpose(0, 3, 1, 2), ((0, 0), (0, 0), (4, 4), (4, 4)))
    chosen = []  # per image: the first (dy, dx, flipped) window it equals
    for i, out in enumerate(np.rint(x.numpy() * 255).astype(np.int64)):
        windows = [
            (dy, dx, f)
            for dy in range(9)
            for dx in range(9)
            for f in (0, 1)
            if np.array_equal(out, padded[i, :, dy : dy + 6, dx : dx + 6][..., :: 1 - 2 * f])
        ]
        assert windows, f"output {i} is no window of its image"
        chosen.append(windows[0])
    assert 10 < sum(f for *_, f in chosen) < 54  # flips at p = 1/2
    assert len({(dy, dx) for dy, dx, _ in chosen}) > 20  # offsets spread over the 81


@pytest.mark.skipif(not NO_CUDA, reason="checks the error raised without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(capsys) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="sees no CUDA device"):
        resolve_device("cuda")
    code = main(["train", "--data", "nowhere", "--device", "cuda", "--out", "/nonexistent/x"])
    assert code != 0 and "sees no CUDA device" in capsys.readouterr().err


def test_bad_device_name() -> None:
    with pytest.raises(ConfigError, match="device must be one of"):
        TrainConfig("d", device="tpu")
    with pytest.raises(ConfigError, match="device must be"):
        resolve_device("tpu")


def test_to_cpu_keeps_structure() -> None:
    state = {"a": torch.ones(2), "b": [torch.zeros(1), (3, "x")], "c": {"d": 1.5}}
    moved = to_cpu(state)
    assert moved["b"][1] == (3, "x") and moved["c"] == {"d": 1.5}
    assert all(t.device.type == "cpu" for t in (moved["a"], moved["b"][0]))


def test_resume_ignores_device_eval_batch_and_fields_an_old_checkpoint_lacks(
    small_syndigits, tmp_path
):
    data = str(save_dataset(small_syndigits, tmp_path / "syn"))
    config = TrainConfig(data, epochs=1, batch_size=64, device="cpu")
    train(config, tmp_path / "run", progress=False)
    path = tmp_path / "run" / "checkpoint.pt"
    state = load_checkpoint(path)
    del state["config"]["device"]  # as written before the device field existed
    save_checkpoint(path, {k: v for k, v in state.items() if k != "checkpoint_version"})
    # eval batch size: evaluation runs in eval mode, so it changes no result
    resumed = TrainConfig(
        **{**config.as_dict(), "epochs": 2, "device": "auto", "eval_batch_size": 37}
    )
    metrics = train(resumed, tmp_path / "run", resume=True, progress=False)
    assert metrics["epochs"] == 2
    state = load_checkpoint(path)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert all(t.device.type == "cpu" for t in state["model"].values())
    with pytest.raises(ConfigError, match="another configuration"):
        train(
            TrainConfig(**{**resumed.as_dict(), "seed": 1}),
            tmp_path / "run",
            resume=True,
            progress=False,
        )


def test_eval_every_skips_test_passes_but_not_a_single_trained_bit(small_syndigits, tmp_path):
    data = str(save_dataset(small_syndigits, tmp_path / "syn"))
    every = TrainConfig(data, epochs=3, batch_size=64, method="climbq+", wbits=4, abits=4)
    sparse = TrainConfig(**{**every.as_dict(), "eval_every": 2})
    a = train(every, tmp_path / "a", progress=False)
    b = train(sparse, tmp_path / "b", progress=False)
    history = [json.loads(line) for line in (tmp_path / "b" / "history.jsonl").open()]
    assert [r["test_top1"] is None for r in history] == [True, False, False]  # 2 and the last
    assert a["top1"] == b["top1"] and a["per_class"] == b["per_class"]
    wa = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    wb = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ConfigError, match="eval_every must be >= 1"):
        TrainConfig(data, eval_every=0)
