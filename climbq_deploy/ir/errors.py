"""The lowering's own error: a model that cannot become a (safe) integer program."""

from __future__ import annotations

from climbq_deploy.errors import ClimbQError


class LoweringError(ClimbQError):
    """A layer cannot be lowered exactly (names the layer, the value and why)."""
