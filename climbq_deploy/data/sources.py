"""Where images come from: a folder or a zip in ``train/<class>/*``, ``test/<class>/*`` layout.

A source lists image files per split and class and returns their raw bytes. Zip archives are read
in place (never extracted); members with absolute paths, ``..`` components or symlink bits are
refused before anything is read, so a crafted archive cannot point outside itself, and an image
member declaring more than :data:`MAX_IMAGE_BYTES` uncompressed is refused (a zip bomb would
otherwise be inflated into memory).
"""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from climbq_deploy.errors import DataError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}
)
SPLITS = ("train", "test")
MAX_IMAGE_BYTES = 64 * 2**20  # one image file; zipfile never inflates past the declared size


class ImageSource:
    """Image files of a ``train/<class>/file`` tree, by split and class."""

    def __init__(self, location: str, files: dict[str, dict[str, list[str]]]) -> None:
        self.location = location
        self.files = files  # split -> class name -> sorted relative paths ("train/cat/0001.jpg")

    def classes(self, split: str) -> list[str]:
        return sorted(self.files.get(split, {}))

    def read(self, relpath: str) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        """Release open handles (zip)."""


class FolderSource(ImageSource):
    def __init__(self, root: Path) -> None:
        self.root = root
        files: dict[str, dict[str, list[str]]] = {}
        for split in SPLITS:
            split_dir = root / split
            if not split_dir.is_dir():
                continue
            files[split] = {}
            for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                names = sorted(
                    f"{split}/{class_dir.name}/{f.name}"
                    for f in class_dir.iterdir()
                    if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                )
                files[split][class_dir.name] = names
        super().__init__(str(root), files)

    def read(self, relpath: str) -> bytes:
        path = self.root / relpath
        try:
            return path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from None


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in parts:
        return "'..' path component"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    return None


class ZipSource(ImageSource):
    """A zip archive whose root (or single top-level folder) holds ``train/`` and ``test/``."""

    def __init__(self, path: Path) -> None:
        try:
            self.archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"{path} is not a readable zip archive: {exc}") from None
        infos = self.archive.infolist()
        for info in infos:
            reason = _unsafe_reason(info)
            if reason:
                self.archive.close()
                raise DataError(f"{path}: refusing zip member {info.filename!r} ({reason})")
        prefix = self._find_prefix([i.filename for i in infos])
        files: dict[str, dict[str, list[str]]] = {}
        self._member: dict[str, str] = {}
        for info in infos:
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            rel = info.filename[len(prefix) :]
            parts = rel.split("/")
            if len(parts) != 3 or parts[0] not in SPLITS:
                continue
            if PurePosixPath(parts[2]).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if info.file_size > MAX_IMAGE_BYTES:
                self.archive.close()
                raise DataError(
                    f"{path}: refusing zip member {info.filename!r} (declares {info.file_size} "
                    f"bytes uncompressed, more than {MAX_IMAGE_BYTES} for one image)"
                )
            files.setdefault(parts[0], {}).setdefault(parts[1], []).append(rel)
            self._member[rel] = info.filename
        for split in files.values():
            for names in split.values():
                names.sort()
        super().__init__(str(path), files)

    @staticmethod
    def _find_prefix(names: list[str]) -> str:
        if any(n.startswith(("train/", "test/")) for n in names):
            return ""
        tops = {n.split("/", 1)[0] for n in names if "/" in n}
        if len(tops) == 1:
            top = tops.pop()
            if any(n.startswith((f"{top}/train/", f"{top}/test/")) for n in names):
                return f"{top}/"
        return ""

    def read(self, relpath: str) -> bytes:
        try:
            return self.archive.read(self._member[relpath])
        except KeyError:
            raise DataError(f"{self.location}: no member {relpath!r}") from None
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DataError(f"{self.location}: cannot read member {relpath!r}: {exc}") from None

    def close(self) -> None:
        self.archive.close()


def open_source(path: str | Path) -> ImageSource:
    """Open a folder or ``.zip`` image tree; refuse anything else with a clear message."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"source {path} does not exist")
    if path.is_dir():
        source: ImageSource = FolderSource(path)
    elif zipfile.is_zipfile(path):
        source = ZipSource(path)
    elif path.suffix.lower() == ".zip":
        raise DataError(
            f"source {path} is neither a folder nor a readable zip (truncated or corrupt?)"
        )
    else:
        raise DataError(
            f"source {path} is neither a folder nor a zip archive "
            "(expected train/<class>/*, test/<class>/*, or CIFAR-10 python batches)"
        )
    if "train" not in source.files:
        source.close()
        raise DataError(f"source {path} has no train/ folder of class folders")
    return source


def iter_files(source: ImageSource, split: str) -> Iterator[tuple[str, str]]:
    """``(class name, relative path)`` for every image of a split, classes sorted."""
    for name in source.classes(split):
        for rel in source.files[split][name]:
            yield name, rel
