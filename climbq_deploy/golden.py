"""Golden files: what the NumPy reference computes on a few hundred test images, written
beside an exported model so the device can check itself with neither torch nor the dataset.

``climbq export`` writes ``<model file>.golden.npz`` (e.g. ``model.tflite.golden.npz``), a
NumPy archive (deflated, no pickles) of:

- ``images``: uint8 ``(N, H, W, C)``, the test images (evenly spaced over the test split,
  which is stored class by class) and ``labels`` int64 ``(N,)``;
- ``logits``: float64 ``(N, classes)``, the reference's output of the model's own program;
- ``code_hashes``: uint64 ``(L, N)``: per quantized layer (in program order) and image, the
  first 8 bytes (little-endian) of ``blake2b`` over the layer's codes of that image as int16
  HWC bytes; ``rectified_hashes`` the same of ``max(code, 0)`` (what a target that fuses the
  ReLU after a layer reports for it, :class:`~climbq_deploy.targets.base.RunOutput`). Hashes
  keep the file small (a ResNet-20's codes are ~190 kB per image) while still telling, per
  layer and image, whether every code is equal;
- ``meta``: UTF-8 bytes (uint8) of a JSON object: ``format`` (:data:`FORMAT`), ``version``,
  ``layers`` (the layers' training-side names, in the order of the hash rows),
  ``model_file`` and ``model_sha256`` (the exported file), ``input_shape``, ``indices`` (of
  the images in the test split) and ``dataset``.

Only numpy is needed to write or read one (the reference kernels are NumPy).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.errors import ArtifactError

FORMAT = "climbq-golden"
VERSION = 1
SUFFIX = ".golden.npz"
DEFAULT_IMAGES = 256
_MEMBERS = ("images", "labels", "logits", "code_hashes", "rectified_hashes", "meta")


def golden_path(model: str | Path) -> Path:
    """``model.tflite`` -> ``model.tflite.golden.npz`` (beside it)."""
    model = Path(model)
    return model.with_name(model.name + SUFFIX)


def code_hashes(codes: np.ndarray) -> np.ndarray:
    """uint64 ``(N,)``: per image of ``codes`` (N, ...), the first 8 bytes (little-endian) of
    blake2b over its codes as C-order int16 bytes."""
    wide = np.ascontiguousarray(codes, dtype=np.int16)
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(wide[i].tobytes(), digest_size=8).digest(), "little")
            for i in range(len(wide))
        ],
        dtype=np.uint64,
    )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evenly_spaced(total: int, count: int) -> np.ndarray:
    """``count`` distinct indices spread over ``range(total)``: ``round(linspace(0, total -
    1, count))``, deduplicated (all of them when ``count >= total``)."""
    if count >= total:
        return np.arange(total)
    return np.unique(np.round(np.linspace(0, total - 1, count)).astype(np.int64))


@dataclass(frozen=True)
class Golden:
    """A golden file read back (see the module doc for the fields)."""

    images: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    code_hashes: np.ndarray
    rectified_hashes: np.ndarray
    meta: dict[str, Any]

    @property
    def layers(self) -> list[str]:
        return list(self.meta["layers"])


def reference_golden(
    graph: Any, images: np.ndarray, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The reference's logits, code hashes and rectified code hashes of ``graph`` (a lowered
    program) on ``images``, and the layers' names."""
    from climbq_deploy.ir.graph import ThresholdAct
    from climbq_deploy.kernels import ReferenceModel

    acts = [n for n in graph.nodes if isinstance(n, ThresholdAct)]
    reference = ReferenceModel(graph)
    logits, raw, rectified = [], [[] for _ in acts], [[] for _ in acts]
    for i in range(0, len(images), batch_size):
        values = reference.run(images[i : i + batch_size], keep={n.output for n in acts})
        logits.append(np.asarray(values[graph.output], np.float64))
        for row, node in enumerate(acts):
            raw[row].append(code_hashes(values[node.output]))
            rectified[row].append(code_hashes(np.maximum(values[node.output], 0)))
    stack = [
        np.stack([np.concatenate(r) for r in rows]) if acts else np.zeros((0, len(images)))
        for rows in (raw, rectified)
    ]
    return (
        np.concatenate(logits),
        stack[0].astype(np.uint64),
        stack[1].astype(np.uint64),
        [n.source for n in acts],
    )


def write_golden(
    graph: Any,
    model: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    dataset: str = "",
) -> Path:
    """Write ``<model>.golden.npz`` for the exported ``model`` file of program ``graph`` on
    ``images`` (uint8 NHWC) with ``labels``, atomically; returns its path."""
    from climbq_deploy.fileio import write_npz

    model = Path(model)
    logits, hashes, rectified, layers = reference_golden(graph, images)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "layers": layers,
        "model_file": model.name,
        "model_sha256": file_sha256(model),
        "input_shape": list(images.shape[1:]),
        "indices": [int(i) for i in indices],
        "dataset": dataset,
    }
    out = golden_path(model)
    write_npz(
        out,
        {
            "images": np.ascontiguousarray(images, np.uint8),
            "labels": np.asarray(labels, np.int64),
            "logits": logits,
            "code_hashes": hashes,
            "rectified_hashes": rectified,
            "meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8),
        },
        compress=True,
    )
    return out


def read_golden(path: str | Path) -> Golden:
    """A golden file, checked: ArtifactError naming the file and what is wrong (not a golden
    file, a missing member, shapes that disagree, a newer version)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"no golden file at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [m for m in _MEMBERS if m not in archive.files]
            if missing:
                raise ArtifactError(f"{path}: not a golden file (no {', '.join(missing)})")
            arrays = {m: archive[m] for m in _MEMBERS}
    except ArtifactError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError ...
        raise ArtifactError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    try:
        meta = json.loads(np.asarray(arrays["meta"], np.uint8).tobytes().decode())
    except (ValueError, TypeError):
        raise ArtifactError(f"{path}: meta is not JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{path}: meta format is not {FORMAT!r}")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise ArtifactError(
            f"{path}: golden version {meta.get('version')!r}; this toolkit reads up to {VERSION}"
        )
    images, labels, logits = arrays["images"], arrays["labels"], arrays["logits"]
    n = len(images)
    layers = meta.get("layers")
    shapes_ok = (
        images.dtype == np.uint8
        and images.ndim == 4
        and labels.shape == (n,)
        and logits.ndim == 2
        and len(logits) == n
        and isinstance(layers, list)
        and arrays["code_hashes"].shape == (len(layers), n)
        and arrays["rectified_hashes"].shape == (len(layers), n)
    )
    if not shapes_ok:
        raise ArtifactError(
            f"{path}: inconsistent golden file (images {images.shape} {images.dtype}, labels "
            f"{labels.shape}, logits {logits.shape}, code hashes {arrays['code_hashes'].shape} "
            f"for {len(layers) if isinstance(layers, list) else '?'} layers)"
        )
    return Golden(
        images,
        labels,
        logits,
        arrays["code_hashes"].astype(np.uint64),
        arrays["rectified_hashes"].astype(np.uint64),
        meta,
    )


__all__ = [
    "DEFAULT_IMAGES",
    "FORMAT",
    "SUFFIX",
    "Golden",
    "code_hashes",
    "evenly_spaced",
    "golden_path",
    "read_golden",
    "reference_golden",
    "write_golden",
]
