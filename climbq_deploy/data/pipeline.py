"""The training data pipeline: batches cut from in-memory uint8 tensors, augmented in bulk.

No PIL, no per-sample Python work per epoch: the whole split lives in one uint8 tensor
(N x 3 x H x W, zero-padded once by ``crop_pad`` pixels on each side when cropping is on). A batch
is one gather of ``B`` random ``H x W`` windows (random crop), one masked flip (horizontal flip),
and one fused normalisation to float32 ``(x / 255 - mean) / std`` in channels_last layout.

On an accelerator (``device="cuda"``) the uint8 tensor lives on the device and the crop, flip and
normalisation run there; the random draws (crop offsets, flips) still come from the same CPU
generator in the same order, are drawn for the whole epoch up front and cross to the device in
one transfer, so a device batch holds the same pixels as the CPU batch of the same epoch.

Which images form an epoch is a sampler's job (:class:`ShuffleSampler`, the class-aware
:class:`ClassBalancedSampler`, :class:`SequentialSampler`, or any object with
``epoch_indices(epoch) -> int64 array``). All randomness of epoch ``e`` comes from generators
seeded by ``(seed, e)``, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from climbq_deploy.distributed import shard_bounds
from climbq_deploy.errors import ConfigError, DataError


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    state = np.random.SeedSequence(seed, spawn_key=(epoch, stream)).generate_state(1, np.uint64)
    return int(state[0] & np.uint64(0x7FFF_FFFF_FFFF_FFFF))


@dataclass(frozen=True)
class Augment:
    """Training augmentation: random crop after zero padding, and horizontal flip.

    ``crop_pad = 4`` with ``hflip`` is the CIFAR recipe (pad 4, crop 32, flip p = 1/2); digits use
    none (a flipped digit is another symbol).
    """

    crop_pad: int = 0
    hflip: bool = False

    @classmethod
    def from_name(cls, name: str) -> Augment:
        if name == "crop_flip":
            return cls(crop_pad=4, hflip=True)
        if name == "none":
            return cls()
        raise ConfigError(f"unknown augmentation {name!r}; expected 'crop_flip' or 'none'")


class Sampler(Protocol):
    def epoch_indices(self, epoch: int) -> np.ndarray: ...


class SequentialSampler:
    """Every image once, in stored order (evaluation)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def epoch_indices(self, epoch: int) -> np.ndarray:
        return np.arange(self.size, dtype=np.int64)


class ShuffleSampler:
    """Every image once per epoch, in a random order seeded by ``(seed, epoch)``."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seed = size, seed

    def epoch_indices(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng(_epoch_seed(self.seed, epoch, 0))
        return rng.permutation(self.size).astype(np.int64)


class ClassBalancedSampler:
    """Class-aware sampling (Shen et al. 2016): pick a class uniformly, then an image of it.

    An epoch has as many draws as the training set (``epoch_size`` to change that); draws are
    with replacement, so tail images repeat. Classes without images are never picked.
    """

    def __init__(self, labels: np.ndarray, seed: int = 0, epoch_size: int | None = None) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        self.members = [np.flatnonzero(labels == k) for k in range(int(labels.max()) + 1)]
        self.present = np.array([k for k, m in enumerate(self.members) if len(m)], dtype=np.int64)
        self.seed, self.epoch_size = seed, epoch_size or len(labels)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng(_epoch_seed(self.seed, epoch, 1))
        classes = self.present[rng.integers(len(self.present), size=self.epoch_size)]
        out = np.empty(self.epoch_size, dtype=np.int64)
        for k in self.present:
            slots = np.flatnonzero(classes == k)
            out[slots] = self.members[k][rng.integers(len(self.members[k]), size=len(slots))]
        return out


class BatchLoader:
    """Float32 NCHW (channels_last) batches with int64 labels from uint8 NHWC images.

    Args:
        images: uint8 array N x H x W x 3.
        labels: int64 array N.
        batch_size: images per batch; the last batch may be smaller unless ``drop_last``.
        mean, std: per-channel normalisation in [0, 1] pixel units.
        augment: crop/flip settings (none for evaluation).
        sampler: which indices form epoch ``e``; default :class:`SequentialSampler`.
        seed: seeds the crop offsets and flips of each epoch.
        device: where the images live and batches are made (``cpu`` or ``cuda[:i]``).
        bulk_random: draw a whole epoch's offsets and flips before its first batch and move
            them in one transfer (default: on for non-CPU devices); the draws are identical.
        shard: ``(rank, world)``: yield only process ``rank``'s slice of every batch
            (:func:`climbq_deploy.distributed.shard_bounds`), for data-parallel training. The
            random draws are made for the whole batch as one process would make them, so the
            slices of all processes put together are exactly the single-process batch.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        *,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        augment: Augment | None = None,
        sampler: Sampler | None = None,
        seed: int = 0,
        drop_last: bool = False,
        channels_last: bool = True,
        device: str | torch.device = "cpu",
        bulk_random: bool | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise DataError(
                f"images must be uint8 N x H x W x 3, got {images.dtype} {images.shape}"
            )
        if len(labels) != len(images):
            raise DataError(f"{len(labels)} labels for {len(images)} images")
        if len(images) == 0:
            raise DataError("cannot make batches from an empty image set")
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        if not 0 <= shard[0] < shard[1]:
            raise ConfigError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(f"mean/std must have 3 entries with std > 0, got {mean}, {std}")
        self.augment = augment or Augment()
        self.device = torch.device(device)
        self.bulk_random = self.device.type != "cpu" if bulk_random is None else bulk_random
        pad = self.augment.crop_pad
        chw = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        self.height, self.width = int(images.shape[1]), int(images.shape[2])
        padded = torch.nn.functional.pad(chw, (pad, pad, pad, pad)) if pad else chw
        self.images = padded.to(self.device)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(self.device)
        self.batch_size, self.drop_last, self.seed = batch_size, drop_last, seed
        self.sampler = sampler or SequentialSampler(len(images))
        self.channels_last = channels_last
        self.shard = shard
        # (x / 255 - mean) / std  ==  x * scale + shift
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.scale = (1.0 / (255.0 * std_t)).to(self.device)
        self.shift = (-torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) / std_t).to(
            self.device
        )

    def batches_per_epoch(self, epoch: int = 0) -> int:
        n = len(self.sampler.epoch_indices(epoch))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch(0)

    def epoch(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the batches of epoch ``epoch`` (deterministic given seed and epoch)."""
        order = torch.from_numpy(self.sampler.epoch_indices(epoch))
        gen = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch, 2))
        stop = len(order) - (len(order) % self.batch_size if self.drop_last else 0)
        starts = range(0, stop, self.batch_size)
        if not self.bulk_random:
            for start in starts:
                index = order[start : start + self.batch_size]
                draws = self._draw(len(index), gen)
                a, b = shard_bounds(len(index), *self.shard)
                index, draws = index[a:b].to(self.device), draws[a:b]
                yield self._make_batch(index, draws.to(self.device)), self.labels[index]
            return
        # Same draws in the same order as above, made up front: one transfer per epoch.
        sizes = [len(order[start : start + self.batch_size]) for start in starts]
        draws_all = torch.cat([self._draw(n, gen) for n in sizes]) if sizes else None
        order = order.to(self.device, non_blocking=True)
        if draws_all is not None:
            draws_all = draws_all.to(self.device, non_blocking=True)
        for start, n in zip(starts, sizes, strict=True):
            a, b = shard_bounds(n, *self.shard)
            index = order[start + a : start + b]
            yield self._make_batch(index, draws_all[start + a : start + b]), self.labels[index]

    def _draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """The random choices of one batch of ``n`` images, int64 ``n x 3``: crop offsets
        ``dy, dx`` in ``0..2 pad`` and flip (0/1, probability 1/2); zeros where unused.

        Drawn in the order dy, dx, flip, each only when its augmentation is on."""
        draws = torch.zeros(n, 3, dtype=torch.int64)
        pad = self.augment.crop_pad
        if pad:
            draws[:, 0:1] = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
            draws[:, 1:2] = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
        if self.augment.hflip:
            draws[:, 2] = (torch.rand(n, generator=gen) < 0.5).to(torch.int64)
        return draws

    def _make_batch(self, index: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """Crop, flip and normalise images ``index`` with ``draws`` (see :meth:`_draw`); runs
        on the loader's device as a few whole-batch tensor ops."""
        pad, h, w, dev = self.augment.crop_pad, self.height, self.width, self.device
        if pad:
            n = len(index)
            rows = (draws[:, 0:1] + torch.arange(h, device=dev)).view(n, 1, h, 1)
            cols = (draws[:, 1:2] + torch.arange(w, device=dev)).view(n, 1, 1, w)
            batch = self.images[
                index.view(n, 1, 1, 1), torch.arange(3, device=dev).view(1, 3, 1, 1), rows, cols
            ]
        else:
            batch = self.images[index]
        if self.augment.hflip:
            flip = draws[:, 2].bool()
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(3), batch)
        out = torch.addcmul(self.shift, batch.float(), self.scale)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out
