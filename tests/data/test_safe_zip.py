"""User zips of images are read in place and never trusted: members that point outside the
archive (absolute paths, ``..`` parts, symlink entries) and members declaring a bomb-sized
image are refused by name before any member is read, and nothing is written to disk."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from climbq_deploy.data import sources
from climbq_deploy.data.imagefolder import build_image_dataset
from climbq_deploy.data.sources import open_source
from climbq_deploy.errors import DataError
from tests.conftest import make_tree_files

SPEC = {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}}


def _zip(path: Path, extra: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> Path:
    """The SPEC image tree plus ``extra`` members; ``symlinks`` are stored as symlink entries
    (Unix mode S_IFLNK in external_attr, the target path as the member's data)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in {**make_tree_files(SPEC), **extra}.items():
            info = zipfile.ZipInfo(name)
            if name in symlinks:
                info.create_system = 3
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, data)
    return path


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("/etc/cron.d/evil.png", "absolute path"),
        ("/train/a/evil.png", "absolute path"),
        ("\\windows\\evil.png", "absolute path"),
        ("C:/evil.png", "absolute path"),
        ("../evil.png", "'..' path component"),
        ("train/a/../../../../tmp/evil.png", "'..' path component"),
        ("train\\a\\..\\..\\evil.png", "'..' path component"),
    ],
)
def test_members_pointing_outside_are_refused_by_name(
    tmp_path: Path, member: str, reason: str
) -> None:
    path = _zip(tmp_path / "src.zip", {member: b"x"})
    before = _files(tmp_path)
    with pytest.raises(DataError) as info:
        open_source(path)
    assert f"refusing zip member {member!r} ({reason})" in str(info.value)
    with pytest.raises(DataError, match="refusing zip member"):
        build_image_dataset(path, 1.0, progress=False)
    assert _files(tmp_path) == before  # nothing extracted anywhere under tmp_path


def test_symlink_entries_are_refused_even_with_a_harmless_name(tmp_path: Path) -> None:
    path = _zip(
        tmp_path / "src.zip", {"train/a/link.png": b"/etc/passwd"}, symlinks=("train/a/link.png",)
    )
    with pytest.raises(DataError, match=r"'train/a/link\.png' \(symbolic link\)"):
        open_source(path)
    # a link to a folder, outside the image tree, is refused as well
    path = _zip(tmp_path / "dir.zip", {"data": b"/"}, symlinks=("data",))
    with pytest.raises(DataError, match=r"'data' \(symbolic link\)"):
        open_source(path)


def test_dotted_file_names_are_not_mistaken_for_parent_parts(tmp_path: Path) -> None:
    extra = {"train/a/..hidden.png": make_tree_files(SPEC)["train/a/0000.png"]}
    source = open_source(_zip(tmp_path / "src.zip", extra))
    try:
        assert "train/a/..hidden.png" in source.files["train"]["a"]
        assert source.read("train/a/..hidden.png") == extra["train/a/..hidden.png"]
    finally:
        source.close()


def test_an_image_member_declaring_a_bomb_size_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "MAX_IMAGE_BYTES", 4096)
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in make_tree_files(SPEC, size=8).items():
            archive.writestr(name, data)
        archive.writestr("train/a/bomb.png", b"\0" * 5000)  # deflates to a few bytes
    assert path.stat().st_size < 5000
    with pytest.raises(DataError, match=r"'train/a/bomb\.png' \(declares 5000 bytes"):
        open_source(path)


def test_the_size_limit_is_sane() -> None:
    assert 16 * 2**20 <= sources.MAX_IMAGE_BYTES <= 256 * 2**20
