"""Reader for the standard CIFAR-10 "python version" batches folder, without unpickling code.

The batches (``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``) are pickles of
dicts holding a uint8 ndarray and lists. They are read with an unpickler that only resolves the
few globals a numpy array needs; anything else in the file (e.g. a crafted ``os.system`` call) is
refused with a :class:`DataError`.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.errors import DataError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        import importlib

        return getattr(importlib.import_module(target[0]), target[1])


def _load(path: Path) -> dict[bytes, Any]:
    try:
        with path.open("rb") as handle:
            obj = _ArrayOnlyUnpickler(io.BufferedReader(handle), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path} is not a CIFAR-10 python batch: {exc}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR-10 python batch (holds {type(obj).__name__})")
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def is_cifar_pickle_folder(path: Path) -> bool:
    return path.is_dir() and (path / TRAIN_BATCHES[0]).is_file()


def _batch_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _load(path)
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: 'data' must be a uint8 N x 3072 array")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' rows have {data.shape[1]} values, expected 3072")
    labels_arr = np.asarray(labels, dtype=np.int64)
    if labels_arr.shape != (data.shape[0],):
        raise DataError(f"{path}: {labels_arr.size} labels for {data.shape[0]} images")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels_arr


def read_cifar_pickle_folder(
    folder: Path,
) -> tuple[list[str], tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``(class names, (train images, labels), (test images, labels))`` in CIFAR's own id order."""
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH, META) if not (folder / n).is_file()]
    if missing:
        raise DataError(f"CIFAR-10 batches folder {folder} lacks {', '.join(missing)}")
    meta = _load(folder / META)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(b"label_names", [])]
    if not names:
        raise DataError(f"{folder / META} has no label_names")
    parts = [_batch_arrays(folder / n) for n in TRAIN_BATCHES]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = _batch_arrays(folder / TEST_BATCH)
    for which, (_, labels) in (("train", train), ("test", test)):
        if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
            raise DataError(f"{folder}: {which} labels outside 0..{len(names) - 1}")
    return names, train, test
