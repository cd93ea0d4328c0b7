"""Import torchvision beside a CPU build of torch (torchvision's own models as users' CNNs).

PyPI's torchvision 0.28.0 wheel is a CUDA build: its compiled ops (``torchvision._C``) need
torch's CUDA libraries and fail to load beside the CPU torch, which torchvision tolerates
(``extension._has_ops()`` is then False) except in ``_meta_registrations.py``, whose
``register_fake("torchvision::nms")`` and ``("torchvision::qnms")`` then raise
``operator torchvision::nms does not exist``. Declaring those two operator schemas first lets
the pure-Python parts (``torchvision.models``) import; only ``torchvision.ops`` kernels (nms,
roi_align) stay unavailable, and nothing here uses them. Where ``_C`` loads, the plain import
succeeds and nothing is declared.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch

_SCHEMAS: torch.library.Library | None = None  # kept alive: the declarations live with it


def import_torchvision() -> ModuleType:
    """``torchvision``, imported (see the module docstring); ImportError when not installed."""
    global _SCHEMAS
    try:
        import torchvision

        return torchvision
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    _SCHEMAS = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        _SCHEMAS.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision

    return torchvision
