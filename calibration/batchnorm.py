"""Re-estimate BatchNorm running statistics on calibration images (ClimbQ-PTQ).

Putting ClimbQ quantizers on a full-precision model changes every conv's output: the weights
become ``W_hat = 2j/n - 1`` in ``[-1, 1]`` (scale set by the grid, not by the trained weights)
and the activations are codes of ``Phi(x / 2)``. The trained running statistics describe the
old outputs, so they are re-estimated with the quantizers in place, as in AdaBN (Li et al.
2016) or ``torch.optim.swa_utils.update_bn``:

- every BatchNorm's statistics are reset (mean 0, var 1, ``num_batches_tracked`` 0) and its
  momentum set to ``None`` (cumulative average);
- the model runs the calibration batches in train mode with no gradient (no labels, so
  ClimbQ's sigma is 2, the inference value): after ``B`` batches each BatchNorm holds
  ``running_mean = (1/B) sum_b mean_b`` and ``running_var = (1/B) sum_b var_b`` with
  ``var_b`` the unbiased variance of batch ``b`` per channel (over N, H, W). With one batch
  these are that batch's mean and unbiased variance exactly; with equal batches the mean is
  the set's mean (the variance then omits the spread of the batch means);
- momenta and the train/eval mode are restored.

Each layer normalises with its batch statistics during the pass (train mode), so later layers
see the distribution the re-estimated earlier layers will give them. The affine parameters
``gamma``, ``beta`` and every weight stay as trained.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from climbq_deploy.errors import ConfigError


def reestimate_batchnorm(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Replace every BatchNorm's running statistics by those of ``batches``; return how many
    batches ran. ``model`` is left in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ConfigError(f"{type(model).__name__} has no BatchNorm to re-estimate")
    momenta = [m.momentum for m in norms]
    for m in norms:
        if not m.track_running_stats:
            raise ConfigError("a BatchNorm without running statistics cannot be re-estimated")
        m.reset_running_stats()
        m.momentum = None
    count = 0
    model.train()
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
                count += 1
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.eval()
    if count == 0:
        raise ConfigError("no calibration batches to re-estimate BatchNorm statistics on")
    return count
