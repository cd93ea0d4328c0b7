"""The on-disk dataset form every builder writes and the trainer reads.

A dataset folder holds two files:

- ``data.npz`` — ``train_images`` / ``test_images`` (uint8, N x H x W x 3, RGB),
  ``train_labels`` / ``test_labels`` (int64, class ids 0..K-1, class 0 = head), plus optional
  builder-specific arrays (e.g. the SynDigits render keys). Written with fixed zip timestamps, so
  equal arrays give a byte-identical file; loaded with ``allow_pickle=False``.
- ``meta.json`` — format version, class names, per-class counts, the builder's provenance
  (source, gamma, seed, generator version, library versions) and the sha256 of every array,
  verified on load before any array is used.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.errors import ArtifactError, DataError
from climbq_deploy.fileio import array_sha256, write_json, write_npz

FORMAT = "climbq-dataset"
FORMAT_VERSION = 1
DATA_FILE = "data.npz"
META_FILE = "meta.json"
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class ImageDataset:
    """A labelled train/test image set held in memory as uint8 arrays.

    Attributes:
        name: short dataset name (``syndigits-lt``, ``cifar10-lt``, ``digits-lt``, ...).
        class_names: name of each class id, head (0) to tail.
        train_images, test_images: uint8 arrays, N x H x W x 3.
        train_labels, test_labels: int64 arrays of class ids.
        info: provenance (source, gamma, seed, normalisation, augmentation, ...), JSON-able.
        extras: further arrays saved beside the images (builder specific).
    """

    name: str
    class_names: tuple[str, ...]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.class_names)
        if k < 1:
            raise DataError(f"dataset {self.name!r} has no classes")
        for split in _SPLITS:
            images, labels = self.split(split)
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise DataError(
                    f"{split} images must be uint8 N x H x W x 3, "
                    f"got {images.dtype} {tuple(images.shape)}"
                )
            if labels.dtype != np.int64 or labels.shape != (images.shape[0],):
                raise DataError(
                    f"{split} labels must be int64 of shape ({images.shape[0]},), "
                    f"got {labels.dtype} {tuple(labels.shape)}"
                )
            if labels.size and (labels.min() < 0 or labels.max() >= k):
                raise DataError(
                    f"{split} labels must lie in 0..{k - 1}, "
                    f"got {int(labels.min())}..{int(labels.max())}"
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DataError(
                f"train images are {self.train_images.shape[1:]} but test images are "
                f"{self.test_images.shape[1:]}"
            )
        for split in _SPLITS:  # every consumer divides by these counts
            if not len(self.split(split)[1]):
                raise DataError(f"dataset {self.name!r}: the {split} split holds no images")
        empty = np.flatnonzero(np.bincount(self.train_labels, minlength=k) == 0)
        if empty.size:  # a long-tail loss needs n_c >= 1 for every class
            c = int(empty[0])
            raise DataError(
                f"dataset {self.name!r}: class {self.class_names[c]!r} (id {c}) has no training "
                f"images ({empty.size} of {k} classes have none)"
            )

    def split(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """``(images, labels)`` of ``"train"`` or ``"test"``."""
        if which == "train":
            return self.train_images, self.train_labels
        if which == "test":
            return self.test_images, self.test_labels
        raise DataError(f"unknown split {which!r}; expected 'train' or 'test'")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w, c = self.train_images.shape[1:]
        return int(h), int(w), int(c)

    def counts(self, which: str) -> list[int]:
        """Images per class id in a split."""
        labels = self.split(which)[1]
        return np.bincount(labels, minlength=self.num_classes).astype(int).tolist()

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array that goes into ``data.npz``, by member name."""
        out = {
            "train_images": self.train_images,
            "train_labels": self.train_labels,
            "test_images": self.test_images,
            "test_labels": self.test_labels,
        }
        for key, value in self.extras.items():
            if key in out:
                raise DataError(f"extra array name {key!r} clashes with a standard array")
            out[key] = value
        return out

    def summary(self) -> str:
        """A short human-readable table: counts per class, head to tail."""
        train, test = self.counts("train"), self.counts("test")
        width = max(len(n) for n in self.class_names)
        h, w, c = self.image_shape
        lines = [
            f"{self.name}: {len(self.train_labels)} train / {len(self.test_labels)} test images, "
            f"{self.num_classes} classes, {h}x{w}x{c} uint8",
        ]
        gamma = self.info.get("gamma")
        ratio = max(train) / max(min(train), 1)
        lines[0] += f", gamma {gamma if gamma is not None else 'from list'}"
        lines[0] += f" (measured max/min {ratio:.1f})"
        lines.append(f"  {'id':>2}  {'class':<{width}}  {'train':>6}  {'test':>5}")
        for k, name in enumerate(self.class_names):
            lines.append(f"  {k:>2}  {name:<{width}}  {train[k]:>6}  {test[k]:>5}")
        return "\n".join(lines)


def save_dataset(dataset: ImageDataset, out_dir: str | Path) -> Path:
    """Write ``data.npz`` then ``meta.json`` into ``out_dir`` (both atomically); return the dir."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"output path {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    arrays = dataset.arrays()
    write_npz(out / DATA_FILE, arrays)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": dataset.name,
        "class_names": list(dataset.class_names),
        "num_classes": dataset.num_classes,
        "image_shape": list(dataset.image_shape),
        "counts": {split: dataset.counts(split) for split in _SPLITS},
        "sizes": {split: len(dataset.split(split)[1]) for split in _SPLITS},
        "info": dataset.info,
        "arrays": {
            key: {
                "dtype": value.dtype.str,
                "shape": list(value.shape),
                "sha256": array_sha256(value),
            }
            for key, value in arrays.items()
        },
    }
    write_json(out / META_FILE, meta)
    return out


def read_meta(folder: str | Path) -> dict[str, Any]:
    """Read and check ``meta.json`` of a dataset folder (format and version)."""
    path = Path(folder) / META_FILE
    if not Path(folder).is_dir():
        raise DataError(f"dataset folder {folder} does not exist or is not a folder")
    if not path.is_file():
        raise DataError(f"{path} is missing: not a dataset folder (make one with `climbq data`)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a climbq dataset description (format != {FORMAT!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has format_version {version!r}; this climbq reads up to {FORMAT_VERSION} "
            "(upgrade climbq_deploy)"
        )
    return meta


def load_dataset(folder: str | Path) -> ImageDataset:
    """Load a dataset folder, verifying every array's dtype, shape and sha256 against meta.json."""
    folder = Path(folder)
    meta = read_meta(folder)
    data_path = folder / DATA_FILE
    if not data_path.is_file():
        raise DataError(f"{data_path} is missing")
    expected: dict[str, dict[str, Any]] = meta.get("arrays", {})
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(data_path, allow_pickle=False) as npz:
            names = set(npz.files)
            if names != set(expected):
                raise ArtifactError(
                    f"{data_path} holds arrays {sorted(names)} but {META_FILE} lists "
                    f"{sorted(expected)}"
                )
            for key, spec in expected.items():
                array = npz[key]
                if array.dtype.str != spec.get("dtype") or list(array.shape) != spec.get("shape"):
                    raise ArtifactError(
                        f"{data_path}: array {key} is {array.dtype.str} {list(array.shape)}, "
                        f"{META_FILE} says {spec.get('dtype')} {spec.get('shape')}"
                    )
                if array_sha256(array) != spec.get("sha256"):
                    raise ArtifactError(f"{data_path}: array {key} fails its sha256 check")
                arrays[key] = array
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ArtifactError(f"{data_path} is corrupt or truncated: {exc}") from None
    extras = {k: v for k, v in arrays.items() if not k.startswith(("train_", "test_"))}
    missing = [
        k for k in ("train_images", "train_labels", "test_images", "test_labels") if k not in arrays
    ]
    if missing or not isinstance(meta.get("class_names"), list):
        raise ArtifactError(f"{folder}: {META_FILE} lacks class_names or the arrays {missing}")
    try:
        dataset = ImageDataset(
            name=str(meta.get("name", folder.name)),
            class_names=tuple(str(n) for n in meta["class_names"]),
            train_images=arrays["train_images"],
            train_labels=arrays["train_labels"],
            test_images=arrays["test_images"],
            test_labels=arrays["test_labels"],
            info=dict(meta.get("info", {})),
            extras=extras,
        )
    except DataError as exc:  # name the folder the bad arrays came from
        raise DataError(f"{folder}: {exc}") from None
    _check_summary(meta, dataset, folder / META_FILE)
    return dataset


def _check_summary(meta: dict[str, Any], dataset: ImageDataset, path: Path) -> None:
    """meta.json's summary fields (``image_shape``, ``counts``, ``sizes``, where present) must
    describe the arrays: export and training read them, and a hand-edited or stale meta.json
    would otherwise give a program for the wrong image size or wrong long-tail groups."""
    actual = {
        "image_shape": list(dataset.image_shape),
        "counts": {split: dataset.counts(split) for split in _SPLITS},
        "sizes": {split: len(dataset.split(split)[1]) for split in _SPLITS},
    }
    for key, value in actual.items():
        if key in meta and meta[key] != value:
            raise ArtifactError(f"{path}: {key} is {meta[key]!r} but the arrays give {value!r}")
