"""Data-parallel training on an existing engine: ``torch.distributed`` started by ``torchrun``.

``torchrun --nproc_per_node N -m climbq_deploy.train --data DATA --out RUN ...`` starts N
processes; each holds the whole model and a slice of every global batch
(:func:`shard_bounds`), and :class:`~torch.nn.parallel.DistributedDataParallel` averages the
gradients. Everything that ClimbQ computes *from the batch* is computed over the **global** batch,
so N processes train the same model as one process with the same global batch:

- BatchNorm statistics (:class:`GlobalBatchNorm2d`: mean and variance from all-reduced sums;
  ``SyncBatchNorm`` would do the same on GPUs but refuses CPU tensors);
- the class counts behind ClimbQ's class scaling ``sigma_i = 2 - p_i`` (:func:`global_bincount`);
- the loss, HomoVar's Levene statistics and class weights included: logits, features and labels
  are gathered (:func:`gather_batch`, differentiable) and every process evaluates the loss of the
  global batch. The gradient is still right: the gather's backward sums every process's gradient
  of its (identical) loss ``L`` into the owner of each sample, giving ``N dL/dtheta`` summed over
  the processes' paths, and DDP's average divides the ``N`` back out;
- LSQ's data-driven step initialisation (:func:`global_mean`) and its gradient scale
  ``1 / sqrt(numel * Q_P)`` for activations (:func:`global_numel`).

Backends: ``gloo`` on CPUs, ``nccl`` on GPUs (one GPU per process, ``cuda:LOCAL_RANK``). With a
single process every function here is the identity or the local computation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from climbq_deploy.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes; ``local_rank`` on its
    machine (the GPU index under nccl). ``started`` tells whether we initialised the process
    group (and so must tear it down)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    started: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name}={text!r} is not an integer") from None


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); a plain single process when
    ``WORLD_SIZE`` is unset or 1. Backend ``nccl`` for ``device_type == "cuda"``, else ``gloo``.

    Raises:
        ConfigError: inconsistent environment, or nccl asked for with fewer GPUs than local
            processes.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} "
                "CUDA device(s): start at most one process per GPU (--nproc_per_node)"
            )
        torch.cuda.set_device(local_rank)
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, backend, False)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, backend, True)


def finish_distributed(info: DistInfo) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if info.started and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def world_size() -> int:
    """Processes in the default group (1 when torch.distributed is not in use)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def shard_bounds(batch: int, rank: int, world: int) -> tuple[int, int]:
    """``[start, stop)`` of process ``rank``'s slice of a global batch of ``batch`` samples:
    consecutive slices whose sizes differ by at most one (the first ``batch % world`` slices
    one longer), in rank order, so that concatenating them gives the global batch."""
    base, extra = divmod(batch, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class _AllReduceSum(torch.autograd.Function):
    """``sum_r x_r`` on every process; the backward is the same sum of the gradients (each
    process's loss depends on every process's ``x`` through the sum)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


def all_reduce_sum(x: Tensor) -> Tensor:
    """Differentiable sum of ``x`` over all processes (``x`` itself with one process)."""
    return _AllReduceSum.apply(x) if world_size() > 1 else x


class _GatherBatch(torch.autograd.Function):
    """Concatenate every process's ``x`` (dim 0, sizes ``sizes``) in rank order.

    Forward: pad to the largest slice, ``all_gather``, trim. Backward: all-reduce the gradient
    of the whole gathered tensor (every process's loss depends on every sample) and keep this
    process's rows — a reduce-scatter written with all_reduce, which gloo also has."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: tuple[int, ...], rank: int) -> Tensor:  # type: ignore[override]
        ctx.sizes, ctx.rank = sizes, rank
        longest = max(sizes)
        padded = x.new_zeros((longest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        pieces = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(pieces, padded.contiguous())
        return torch.cat([p[:n] for p, n in zip(pieces, sizes, strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        start = sum(ctx.sizes[: ctx.rank])
        return total[start : start + ctx.sizes[ctx.rank]], None, None


def gather_batch(x: Tensor, global_batch: int) -> Tensor:
    """The global batch's ``x`` (rows of every process in rank order), differentiable.

    ``global_batch`` is the global batch size; each process's slice follows
    :func:`shard_bounds`, so no sizes need to be exchanged."""
    world = world_size()
    if world == 1:
        return x
    rank = dist.get_rank()
    sizes = tuple(b - a for a, b in (shard_bounds(global_batch, r, world) for r in range(world)))
    if x.shape[0] != sizes[rank]:
        raise ValueError(f"rank {rank} holds {x.shape[0]} rows, expected {sizes[rank]}")
    return _GatherBatch.apply(x, sizes, rank)


def global_bincount(labels: Tensor, num_classes: int) -> Tensor:
    """Samples per class in the global batch (int64, ``num_classes``)."""
    counts = torch.bincount(labels, minlength=num_classes)
    if world_size() > 1:
        dist.all_reduce(counts)
    return counts


def global_mean(values: Tensor) -> Tensor:
    """Mean of ``values`` over the elements of every process (not differentiable)."""
    if world_size() == 1:
        return values.mean()
    stats = torch.stack([values.sum(), torch.tensor(values.numel(), dtype=values.dtype)])
    dist.all_reduce(stats)
    return stats[0] / stats[1]


def global_numel(values: Tensor) -> int:
    """Elements of ``values`` summed over every process (its batch dimension is sharded)."""
    if world_size() == 1:
        return values.numel()
    count = torch.tensor(values.numel(), dtype=torch.int64, device=values.device)
    dist.all_reduce(count)
    return int(count)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of process ``src`` on every process (pickled over the process group: only for
    the toolkit's own plain data, never user files)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch.

    Per channel ``c`` over all processes' ``N_r x H x W`` values (``M`` of them in all):
    ``mu_c = (sum x) / M``, ``var_c = (sum (x - mu_c)^2) / M`` (two all-reduced passes, so no
    ``E[x^2] - mu^2`` cancellation), ``y = (x - mu_c) / sqrt(var_c + eps) * gamma_c + beta_c``;
    running statistics are updated with ``var_c * M / (M - 1)`` like
    :class:`torch.nn.BatchNorm2d`. In eval mode, or with one process, it *is* BatchNorm2d (same
    parameters, buffers and state-dict keys), so checkpoints and lowering see no difference.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        if x.dtype in (torch.float16, torch.bfloat16):  # statistics in float32 (autocast)
            x = x.float()
        dims = (0, 2, 3)
        local = torch.tensor(float(x.shape[0] * x.shape[2] * x.shape[3]), device=x.device)
        sums = all_reduce_sum(torch.cat([x.sum(dims), local.view(1)]))
        count = sums[-1].detach()
        mean = sums[:-1] / count
        centred = x - mean.view(1, -1, 1, 1)
        var = all_reduce_sum(centred.square().sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * (count / (count - 1).clamp_min(1))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out


def use_global_batchnorm(model: nn.Module) -> nn.Module:
    """Turn every ``nn.BatchNorm2d`` of ``model`` into :class:`GlobalBatchNorm2d` in place
    (a class swap: parameters, buffers and state-dict keys stay as they are). A BatchNorm
    subclass that names its global form in a class attribute ``global_batchnorm`` (the
    BatchNorm-and-quantizer of :func:`climbq_deploy.quantize`) is swapped for that form."""
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = GlobalBatchNorm2d
        elif isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
            global_form = getattr(type(module), "global_batchnorm", None)
            if global_form is not None:
                module.__class__ = global_form
    return model
