"""Training losses: HomoVar (ClimbQ+, method card §5) and the long-tail baselines it is ablated
against. Every loss is called as ``loss(logits, labels, features=None)``; build one by name with
:func:`make_loss`."""

from climbq_deploy.losses.distill import distillation_loss
from climbq_deploy.losses.homovar import (
    HomoVarLoss,
    HomoVarStatistics,
    homovar_bounds,
    homovar_class_weights,
    weighted_loss,
)
from climbq_deploy.losses.longtail import (
    LOSS_NAMES,
    ClassBalancedLoss,
    CrossEntropyLoss,
    LogitAdjustedLoss,
    class_balanced_weights,
    make_loss,
)

__all__ = [
    "LOSS_NAMES",
    "ClassBalancedLoss",
    "CrossEntropyLoss",
    "HomoVarLoss",
    "HomoVarStatistics",
    "LogitAdjustedLoss",
    "class_balanced_weights",
    "distillation_loss",
    "homovar_bounds",
    "homovar_class_weights",
    "make_loss",
    "weighted_loss",
]
