"""A user's own CNN after :func:`climbq_deploy.quantize`, shaped like the built-in models.

:class:`QuantizedModel` wraps the user's (swapped) module as its child ``net``, so every name
the user gave is kept under one prefix: the state-dict key ``conv1.weight`` of the user's model
is ``net.conv1.weight`` here, the inserted quantizers are ``net.<bn or conv name>.act``. Being a
:class:`~climbq_deploy.models.common.QuantModel`, it plugs into the training loop unchanged:
``forward(x, labels=None, return_features=False)``, ``spec``, ``context`` (shared by every
inserted quantizer, so ClimbQ's class scaling reaches them all), ``num_classes`` and ``fc`` (the
final ``nn.Linear``, the float head).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from climbq_deploy.errors import ConfigError
from climbq_deploy.models.common import QuantModel, QuantSpec
from climbq_deploy.quant.layers import QuantContext


class QuantizedModel(QuantModel):
    """``net``: the user's model with its convs and BatchNorms swapped for quantized ones;
    ``head_name``: the qualified name, inside ``net``, of the final ``nn.Linear`` whose output
    is the model's output (the logits).

    ``forward(x, labels, return_features=True)`` returns ``(logits, features)`` with the
    features the head's input, taken by a forward pre-hook on the head that lives for that one
    call (a plain forward registers nothing, so tracing it with ``torch.fx`` sees only ``net``).
    """

    def __init__(
        self,
        net: nn.Module,
        spec: QuantSpec,
        head_name: str,
        num_classes: int,
        context: QuantContext,
    ) -> None:
        super().__init__(spec, num_classes)
        self.context = context  # the one every inserted ActQuant already holds
        self.net = net
        self.head_name = head_name

    @property
    def fc(self) -> nn.Linear:
        """The final ``nn.Linear`` of ``net`` (the head; float)."""
        return self.net.get_submodule(self.head_name)

    def features(self, x: Tensor) -> Tensor:
        """The head's input for ``x`` (``B x F``)."""
        return self(x, return_features=True)[1]

    def forward(
        self, x: Tensor, labels: Tensor | None = None, return_features: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        with self.class_scaling(x, labels):
            if not return_features:
                return self.net(x)
            seen: list[Tensor] = []

            def keep_input(_: nn.Module, args: tuple[Any, ...]) -> None:
                seen.append(args[0])

            handle = self.fc.register_forward_pre_hook(keep_input)
            try:
                logits = self.net(x)
            finally:
                handle.remove()
        feats = seen[-1]
        if feats.dim() != 2:
            raise ConfigError(
                f"the head {self.head_name!r} reads a {feats.dim()}-d tensor "
                f"{tuple(feats.shape)}; the features of a classifier must be B x F (flatten "
                "before the final nn.Linear)"
            )
        return logits, feats


__all__ = ["QuantizedModel"]
