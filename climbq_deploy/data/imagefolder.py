"""Long-tailed datasets from a user's images: CIFAR-10-LT and any ImageFolder-style set.

Sources: a folder or ``.zip`` in ``train/<class>/*``, ``test/<class>/*`` layout, or the standard
CIFAR-10 python batches folder. The training subset is either

- the rows of a split CSV (``image,label``; paths relative to the source root, e.g. the authors'
  ``cifar10_train50.csv``), whose class ids are kept and applied to test images by class folder
  name; or
- the §6 long-tail formula with a seed: class ids in sorted folder-name order (class 0 = head),
  ``n_max`` = all images of class 0 unless given, each class's images drawn without replacement.

Images are decoded once (Pillow), converted to RGB, resized to ``size x size`` when they differ,
and stored as uint8 arrays. An unreadable image is an error naming the file, or is skipped and
counted with ``skip_bad``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from climbq_deploy.data.cifar_pickle import is_cifar_pickle_folder, read_cifar_pickle_folder
from climbq_deploy.data.dataset import ImageDataset
from climbq_deploy.data.longtail import longtail_counts
from climbq_deploy.data.sources import ImageSource, open_source
from climbq_deploy.errors import ConfigError, DataError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class _Pool:
    """Candidate images of one split: keys per class name, and how to get a key's pixels."""

    keys: dict[str, list[str]]
    fetch: Callable[[str], np.ndarray]
    location: str


# Pillow modes whose channels are 8-bit: converting them to RGB keeps every value. 16-bit
# ("I;16"), 32-bit ("I") and float ("F") images would be clipped to 0..255 by that conversion
# (65535 and NaN both become a plain colour), so they are refused rather than silently ruined.
EIGHT_BIT_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
)


def _decoder(source: ImageSource, size: int) -> Callable[[str], np.ndarray]:
    def fetch(relpath: str) -> np.ndarray:
        data = source.read(relpath)
        zipped = source.location.endswith(".zip")
        where = f"{source.location}:{relpath}" if zipped else str(Path(source.location) / relpath)
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.mode not in EIGHT_BIT_MODES:
                    raise DataError(
                        f"cannot use image {where}: pixel mode {image.mode!r} is not 8 bits per "
                        "channel (converting it would clip values to 0..255); save it as 8-bit"
                    )
                image = image.convert("RGB")
                if image.size != (size, size):
                    image = image.resize((size, size), Image.BILINEAR)
                return np.asarray(image, dtype=np.uint8)
        except UnidentifiedImageError:  # its message shows a BytesIO address, not the file
            raise DataError(
                f"cannot decode image {where}: not an image format Pillow reads"
            ) from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot decode image {where}: {exc}") from None

    return fetch


def _pickle_pools(folder: Path, size: int) -> tuple[_Pool, _Pool]:
    names, train, test = read_cifar_pickle_folder(folder)
    if size != 32:
        raise ConfigError("CIFAR-10 python batches are 32x32; use --size 32")
    pools = []
    for split, (images, labels) in (("train", train), ("test", test)):
        keys: dict[str, list[str]] = {}
        index: dict[str, int] = {}
        for k, name in enumerate(names):
            members = np.flatnonzero(labels == k)
            keys[name] = [f"{split}/{name}/{j:05d}" for j in range(len(members))]
            index.update({key: int(i) for key, i in zip(keys[name], members, strict=True)})
        pools.append(
            _Pool(keys, lambda key, im=images, ix=index: im[ix[key]], f"{folder} ({split})")
        )
    return pools[0], pools[1]


def _read_split_csv(path: Path) -> list[tuple[str, int]]:
    if not path.is_file():
        raise DataError(f"split list {path} does not exist")
    rows: list[tuple[str, int]] = []
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"image", "label"} <= set(reader.fieldnames):
                raise DataError(f"{path}: expected a header with columns 'image' and 'label'")
            for line, row in enumerate(reader, start=2):
                try:
                    label = int(row["label"])
                except (TypeError, ValueError):
                    raise DataError(
                        f"{path}:{line}: label {row['label']!r} is not an integer"
                    ) from None
                if label < 0:
                    raise DataError(f"{path}:{line}: negative label {label}")
                rows.append((str(row["image"]).strip(), label))
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a text CSV file") from None
    if not rows:
        raise DataError(f"split list {path} has no rows")
    return rows


def _csv_selection(
    rows: list[tuple[str, int]], pool: _Pool, csv_path: Path, split: str
) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """Check each CSV row against the pool; return keys, labels and the name -> id map."""
    available = {key for keys in pool.keys.values() for key in keys}
    name_to_id: dict[str, int] = {}
    for line, (key, label) in enumerate(rows, start=2):
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != split:
            raise DataError(f"{csv_path}:{line}: {key!r} is not a {split}/<class>/<file> path")
        if key not in available:
            raise DataError(f"{csv_path}:{line}: {key!r} is not in {pool.location}")
        previous = name_to_id.setdefault(parts[1], label)
        if previous != label:
            raise DataError(
                f"{csv_path}:{line}: class {parts[1]!r} has label {label} here, {previous} before"
            )
    ids = sorted(set(name_to_id.values()))
    if ids != list(range(len(ids))) or len(ids) != len(name_to_id):
        raise DataError(f"{csv_path}: labels must be 0..K-1, one per class folder; got {ids}")
    return [k for k, _ in rows], np.array([lab for _, lab in rows], dtype=np.int64), name_to_id


def _formula_selection(
    pool: _Pool, class_names: list[str], gamma: float, n_max: int | None, seed: int, cap: bool
) -> tuple[list[str], np.ndarray, list[int]]:
    available = [len(pool.keys[name]) for name in class_names]
    counts = longtail_counts(n_max or available[0], gamma, len(class_names), available, cap=cap)
    rng = np.random.default_rng(seed)
    keys: list[str] = []
    for name, count in zip(class_names, counts, strict=True):
        chosen = np.sort(rng.choice(len(pool.keys[name]), size=count, replace=False))
        keys.extend(pool.keys[name][i] for i in chosen)
    labels = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    return keys, labels, counts


def _decode_all(
    keys: list[str],
    labels: np.ndarray,
    pool: _Pool,
    size: int,
    skip_bad: bool,
    desc: str,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    images = np.empty((len(keys), size, size, 3), dtype=np.uint8)
    keep = np.ones(len(keys), dtype=bool)
    bad: list[str] = []
    for i, key in enumerate(tqdm(keys, desc=desc, unit="img", disable=not progress or None)):
        try:
            pixels = pool.fetch(key)
        except DataError as exc:
            if not skip_bad:
                raise DataError(f"{exc} (pass --skip-bad to skip unreadable images)") from None
            keep[i] = False
            bad.append(key)
            continue
        if pixels.shape != (size, size, 3):
            raise DataError(f"{key}: decoded shape {pixels.shape}, expected {(size, size, 3)}")
        images[i] = pixels
    return images[keep], labels[keep], bad


def build_image_dataset(
    source: str | Path,
    gamma: float | None = None,
    *,
    split_csv: str | Path | None = None,
    test_csv: str | Path | None = None,
    seed: int = 0,
    n_max: int | None = None,
    size: int = 32,
    skip_bad: bool = False,
    cap: bool = False,
    name: str = "cifar10-lt",
    augment: str = "crop_flip",
    progress: bool = True,
) -> ImageDataset:
    """Build a long-tailed dataset from a folder, zip or CIFAR-10 batches folder (see module)."""
    if split_csv is None and gamma is None:
        raise ConfigError("give --gamma (long-tail formula) or --split-csv (an exact image list)")
    if gamma is not None and not gamma >= 1:
        raise ConfigError(f"gamma must be >= 1, got {gamma}")
    if not 8 <= size <= 512:
        raise ConfigError(f"--size must be in 8..512, got {size}")
    if augment not in ("crop_flip", "none"):
        raise ConfigError(f"augment must be 'crop_flip' or 'none', got {augment!r}")
    path = Path(source)
    opened: ImageSource | None = None
    if is_cifar_pickle_folder(path):
        if split_csv is not None or test_csv is not None:
            raise ConfigError(
                f"{path} holds CIFAR-10 python batches, whose images have no file names to match "
                "a split CSV; use the JPEG/PNG tree (folder or zip) with --split-csv"
            )
        train_pool, test_pool = _pickle_pools(path, size)
        kind = "cifar10-python-batches"
    else:
        opened = open_source(path)
        fetch = _decoder(opened, size)
        train_pool = _Pool(opened.files["train"], fetch, f"{path} (train)")
        test_pool = _Pool(opened.files.get("test", {}), fetch, f"{path} (test)")
        kind = "zip" if path.is_file() else "folder"
    try:
        empty = [n for n, keys in train_pool.keys.items() if not keys]
        if not train_pool.keys:
            raise DataError(f"{path}: train/ has no class folders")
        if empty:
            raise DataError(f"{path}: train class folder(s) {', '.join(empty)} hold no images")
        if not any(test_pool.keys.values()):
            raise DataError(f"{path}: test/ is missing or holds no images")

        info: dict[str, object] = {"source": str(source), "source_kind": kind, "size": size}
        if split_csv is not None:
            csv_path = Path(split_csv)
            keys, labels, name_to_id = _csv_selection(
                _read_split_csv(csv_path), train_pool, csv_path, "train"
            )
            class_names = sorted(name_to_id, key=name_to_id.__getitem__)
            info.update(split_csv=str(csv_path), split_csv_sha256=_file_sha256(csv_path))
        else:
            class_names = sorted(train_pool.keys)
            keys, labels, _ = _formula_selection(train_pool, class_names, gamma, n_max, seed, cap)
            name_to_id = {n: k for k, n in enumerate(class_names)}
            info.update(seed=seed, n_max=n_max)
        info["gamma"] = gamma

        unknown = sorted(set(test_pool.keys) - set(name_to_id))
        if unknown:
            raise DataError(
                f"{path}: test class folder(s) {', '.join(unknown)} do not appear in the "
                "training classes"
            )
        if test_csv is not None:
            test_keys, test_labels, test_map = _csv_selection(
                _read_split_csv(Path(test_csv)), test_pool, Path(test_csv), "test"
            )
            clash = {
                n: (i, name_to_id.get(n)) for n, i in test_map.items() if name_to_id.get(n) != i
            }
            if clash:
                raise DataError(f"{test_csv}: class ids differ from the training list: {clash}")
            info["test_csv"] = str(test_csv)
        else:
            test_keys = [k for _, k in _iter_pool(test_pool)]
            test_labels = np.array(
                [name_to_id[n] for n, _ in _iter_pool(test_pool)], dtype=np.int64
            )

        train_x, train_y, bad_train = _decode_all(
            keys, labels, train_pool, size, skip_bad, "decode train", progress
        )
        test_x, test_y, bad_test = _decode_all(
            test_keys, test_labels, test_pool, size, skip_bad, "decode test", progress
        )
    finally:
        if opened is not None:
            opened.close()
    bad = bad_train + bad_test
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s), e.g. {bad[0]}", stacklevel=2)
    info["skipped"] = {"count": len(bad), "files": bad[:100]}
    if name.startswith("cifar10"):
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    else:
        pixels = train_x.reshape(-1, 3).astype(np.float64) / 255.0
        mean, std = tuple(pixels.mean(0).round(4)), tuple(pixels.std(0).round(4))
    info["normalization"] = {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}
    info["augment"] = augment
    return ImageDataset(name, tuple(class_names), train_x, train_y, test_x, test_y, info)


def _iter_pool(pool: _Pool) -> list[tuple[str, str]]:
    return [(name, key) for name in sorted(pool.keys) for key in pool.keys[name]]


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "build_image_dataset"]
