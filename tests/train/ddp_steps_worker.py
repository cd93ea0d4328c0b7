"""Worker for tests/train/test_distributed.py, started by ``torchrun --nproc_per_node N``.

Ten SGD steps (momentum, weight decay) of a ResNet-20 in float64 on a fixed stream of random
global batches of 13 images (uneven slices with 2 processes: 7 + 6), exactly as the training
loop does them: each process feeds its :func:`shard_bounds` slice through
DistributedDataParallel with :class:`GlobalBatchNorm2d`, gathers logits, features and labels,
and evaluates the loss of the global batch. Process 0 saves the losses and final parameters.

Usage: ``torchrun --standalone --nproc_per_node N ddp_steps_worker.py METHOD OUT``; METHOD
``climbq+/user``: a user's CNN (``tests/models/user_cnn.py``) quantized by ``quantize`` instead,
whose BatchNorms carry the activation quantizers (``BatchNormActQuant``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from climbq_deploy.distributed import (
    finish_distributed,
    gather_batch,
    init_distributed,
    shard_bounds,
    use_global_batchnorm,
)
from climbq_deploy.losses import make_loss
from climbq_deploy.models import build_model
from climbq_deploy.models.common import QuantSpec

BATCH, STEPS, CLASSES = 13, 10, 5
USER_CNN = Path(__file__).resolve().parents[1] / "models" / "user_cnn.py"
LOSSES = {"fp32": "ce", "climbq+": "homovar", "lsq": "ce", "climbq": "la"}


def main(method: str, out: str) -> None:
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    torch.manual_seed(0)
    method, _, which = method.partition("/")
    bits = 32 if method == "fp32" else 4
    arch, user = ("custom", f"{USER_CNN}:small_cnn") if which == "user" else ("resnet20", None)
    model = build_model(arch, CLASSES, QuantSpec(method, bits, bits), model=user)
    model = model.double().train()
    criterion = make_loss(LOSSES[method], [40, 20, 10, 5, 3])
    forward: torch.nn.Module = model
    if info.enabled:
        use_global_batchnorm(model)
        forward = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(STEPS):
        x = torch.randn(BATCH, 3, 16, 16, generator=gen, dtype=torch.float64)
        y = torch.randint(0, CLASSES, (BATCH,), generator=gen)
        a, b = shard_bounds(BATCH, info.rank, info.world_size)
        logits, feats = forward(x[a:b], y[a:b], return_features=True)
        labels = y[a:b]
        if info.enabled:
            logits, feats, labels = (gather_batch(t, BATCH) for t in (logits, feats, labels))
        loss = criterion(logits, labels, feats)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    if info.is_main:
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        torch.save({"losses": losses, "state": state, "world": info.world_size}, out)
    finish_distributed(info)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
