"""Knowledge distillation from the full-precision model a QAT run starts from.

Hinton et al. (2015): with temperature ``T``, teacher logits ``t`` and student logits ``s``
(``B x K``), the distillation term is

    L_kd = T**2 * (1/B) sum_i KL( softmax(t_i / T) || softmax(s_i / T) )

(``T**2`` keeps its gradient on the scale of a ``T = 1`` loss). A QAT run with ``distill = w``
minimises ``(1 - w) L_task + w L_kd``, ``L_task`` the run's own loss (HomoVar for ClimbQ+).
The teacher is the ``--init`` run's model, frozen, in eval mode; when it was trained with the
logit-adjusted loss its raw logits are already balanced-prior predictions, so the student is
pulled toward the teacher's balanced decision, tail classes included.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional

from climbq_deploy.errors import ConfigError


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """``T**2 * KL(softmax(teacher / T) || softmax(student / T))``, mean over the batch."""
    if student.shape != teacher.shape or student.dim() != 2:
        raise ConfigError(
            f"distillation needs two B x K logit tensors, got {tuple(student.shape)}"
            f" and {tuple(teacher.shape)}"
        )
    if not temperature > 0:
        raise ConfigError(f"distillation temperature must be > 0, got {temperature}")
    log_student = functional.log_softmax(student / temperature, dim=1)
    log_teacher = functional.log_softmax(teacher / temperature, dim=1)
    kl = functional.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return temperature * temperature * kl
