import os
import pickle
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from climbq_deploy.data.imagefolder import build_image_dataset
from climbq_deploy.errors import ConfigError, DataError
from tests.conftest import SHARED, decoded, make_tree_files

SPEC = {"train": {"a": 8, "b": 6, "c": 5}, "test": {"a": 2, "b": 2, "c": 2}}


def build(source, **kwargs):
    kwargs.setdefault("progress", False)
    return build_image_dataset(source, **kwargs)


def test_folder_and_zip_give_identical_datasets_with_exact_pixels(make_folder, make_zip) -> None:
    folder = build(make_folder(SPEC), gamma=2.0, seed=4)
    archive = build(make_zip(SPEC, prefix="top/"), gamma=2.0, seed=4)
    for key, value in folder.arrays().items():
        np.testing.assert_array_equal(archive.arrays()[key], value)
    assert folder.class_names == ("a", "b", "c")
    assert folder.counts("train") == [8, 5, 3]  # floor(8 / sqrt 2) = 5, floor(5 / sqrt 2) = 3
    files = make_tree_files(SPEC)
    # test images are all of test/, sorted by class then file name, pixels exact (PNG)
    expected = [decoded(files[f"test/{c}/{i:04d}.png"]) for c in "abc" for i in range(2)]
    np.testing.assert_array_equal(folder.test_images, np.stack(expected))
    np.testing.assert_array_equal(folder.test_labels, [0, 0, 1, 1, 2, 2])


def test_selected_train_images_are_real_members_of_their_class(make_folder) -> None:
    ds = build(make_folder(SPEC), gamma=2.0, seed=9)
    files = make_tree_files(SPEC)
    by_class = {
        k: {decoded(files[f"train/{c}/{i:04d}.png"]).tobytes() for i in range(SPEC["train"][c])}
        for k, c in enumerate("abc")
    }
    for image, label in zip(ds.train_images, ds.train_labels, strict=True):
        assert image.tobytes() in by_class[int(label)]
    assert len({im.tobytes() for im in ds.train_images}) == len(ds.train_images)


def test_seed_changes_the_subset_not_the_counts(make_folder) -> None:
    root = make_folder(SPEC)
    a, b = build(root, gamma=2.0, seed=0), build(root, gamma=2.0, seed=1)
    assert a.counts("train") == b.counts("train")
    assert a.train_images.tobytes() != b.train_images.tobytes()


def test_split_csv_keeps_its_ids_for_train_and_test(make_folder, tmp_path) -> None:
    root = make_folder(SPEC)
    csv = tmp_path / "split.csv"
    csv.write_text(
        "image,label\ntrain/c/0001.png,0\ntrain/a/0003.png,1\ntrain/a/0000.png,1\n"
        "train/b/0004.png,2\n"
    )
    ds = build(root, split_csv=csv)
    assert ds.class_names == ("c", "a", "b")
    np.testing.assert_array_equal(ds.train_labels, [0, 1, 1, 2])
    files = make_tree_files(SPEC)
    np.testing.assert_array_equal(ds.train_images[1], decoded(files["train/a/0003.png"]))
    # test images get the list's ids by class folder name: a=1, b=2, c=0
    np.testing.assert_array_equal(ds.test_labels, [1, 1, 2, 2, 0, 0])
    np.testing.assert_array_equal(ds.test_images[4], decoded(files["test/c/0000.png"]))


def test_test_class_missing_from_the_split_csv_is_an_error(make_folder, tmp_path) -> None:
    csv = tmp_path / "split.csv"
    csv.write_text("image,label\ntrain/c/0001.png,0\ntrain/a/0003.png,1\n")
    with pytest.raises(DataError, match=r"test class folder\(s\) b do not appear"):
        build(make_folder(SPEC), split_csv=csv)


def test_resize_to_the_requested_size(make_folder) -> None:
    root = make_folder({"train": {"a": 2}, "test": {"a": 1}}, size=40)
    ds = build(root, gamma=1.0, size=32)
    assert ds.train_images.shape == (2, 32, 32, 3)


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("train/a/9999.png,0", "is not in"),
        ("test/a/0000.png,0", "not a train/<class>/<file> path"),
        ("train/a/0000.png,x", "is not an integer"),
        ("train/a/0000.png,-1", "negative label"),
    ],
)
def test_bad_split_csv_rows(make_folder, tmp_path, row: str, match: str) -> None:
    csv = tmp_path / "s.csv"
    csv.write_text(f"image,label\ntrain/b/0000.png,0\n{row}\n")
    with pytest.raises(DataError, match=match):
        build(make_folder(SPEC), split_csv=csv)


def test_split_csv_inconsistent_or_gapped_ids(make_folder, tmp_path) -> None:
    root = make_folder(SPEC)
    csv = tmp_path / "s.csv"
    csv.write_text("image,label\ntrain/a/0000.png,0\ntrain/a/0001.png,1\n")
    with pytest.raises(DataError, match="has label 1 here, 0 before"):
        build(root, split_csv=csv)
    csv.write_text("image,label\ntrain/a/0000.png,0\ntrain/b/0001.png,2\n")
    with pytest.raises(DataError, match=r"labels must be 0..K-1"):
        build(root, split_csv=csv)
    csv.write_text("path,y\nx,0\n")
    with pytest.raises(DataError, match="header"):
        build(root, split_csv=csv)
    with pytest.raises(DataError, match="does not exist"):
        build(root, split_csv=tmp_path / "missing.csv")


def test_missing_paths_and_wrong_kinds(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        build(tmp_path / "nowhere", gamma=2.0)
    (tmp_path / "file.txt").write_text("hello")
    with pytest.raises(DataError, match="neither a folder nor a zip"):
        build(tmp_path / "file.txt", gamma=2.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no train/ folder"):
        build(tmp_path / "empty", gamma=2.0)


def test_empty_class_and_missing_test(make_folder) -> None:
    with pytest.raises(DataError, match=r"class folder\(s\) b hold no images"):
        build(make_folder({"train": {"a": 2, "b": 0}, "test": {"a": 1}}, "t1"), gamma=1.0)
    with pytest.raises(DataError, match="test/ is missing or holds no images"):
        build(make_folder({"train": {"a": 2}}, "t2"), gamma=1.0)


def test_unknown_test_class(make_folder) -> None:
    root = make_folder({"train": {"a": 2, "b": 2}, "test": {"a": 1, "zebra": 1}})
    with pytest.raises(DataError, match=r"test class folder.*zebra"):
        build(root, gamma=1.0)


def test_corrupt_image_names_the_file_or_is_skipped_and_counted(make_folder) -> None:
    root = make_folder(SPEC)
    (root / "train/b/0002.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(DataError, match=r"train/b/0002.png.*--skip-bad"):
        build(root, gamma=1.0, n_max=5)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        ds = build(root, gamma=1.0, n_max=5, skip_bad=True)
    assert ds.info["skipped"] == {"count": 1, "files": ["train/b/0002.png"]}
    assert ds.counts("train") == [5, 4, 5]


def test_corrupt_zip_member_names_archive_and_member(tmp_path) -> None:
    path = tmp_path / "c.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for rel, data in make_tree_files({"train": {"a": 2}, "test": {"a": 1}}).items():
            archive.writestr(rel, data[:30] if rel.endswith("0001.png") else data)
    with pytest.raises(DataError, match=r"c.zip:train/a/0001.png"):
        build(path, gamma=1.0)


def test_counts_above_available_error_or_cap(make_folder) -> None:
    root = make_folder(SPEC)
    with pytest.raises(DataError, match="not enough images"):
        build(root, gamma=1.0, n_max=8)
    with pytest.warns(UserWarning, match="capped"):
        ds = build(root, gamma=1.0, n_max=8, cap=True)
    assert ds.counts("train") == [8, 6, 5]


def test_gamma_below_one_and_no_selection_rule(make_folder) -> None:
    root = make_folder(SPEC)
    with pytest.raises(ConfigError, match="gamma"):
        build(root, gamma=0.5)
    with pytest.raises(ConfigError, match=r"--gamma .* or --split-csv"):
        build(root)


def _zip_with(tmp_path: Path, name: str, info: zipfile.ZipInfo) -> Path:
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for rel, data in make_tree_files({"train": {"a": 1}, "test": {"a": 1}}).items():
            archive.writestr(rel, data)
        archive.writestr(info, b"x")
    return path


@pytest.mark.parametrize(
    ("member", "reason"),
    [("/etc/passwd", "absolute path"), ("train/a/../../x.png", "'..'"), ("C:/x.png", "absolute")],
)
def test_unsafe_zip_members_are_refused(tmp_path, member: str, reason: str) -> None:
    path = _zip_with(tmp_path, member, zipfile.ZipInfo(member))
    with pytest.raises(DataError, match=f"refusing zip member.*{reason}"):
        build(path, gamma=1.0)


def test_zip_symlink_member_is_refused(tmp_path) -> None:
    info = zipfile.ZipInfo("train/a/link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(DataError, match="symbolic link"):
        build(_zip_with(tmp_path, "link", info), gamma=1.0)


def test_not_a_zip_is_clear(tmp_path) -> None:
    path = tmp_path / "broken.zip"
    path.write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(DataError):
        build(path, gamma=1.0)


def _write_cifar_batches(folder: Path, per_batch: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """A miniature CIFAR-10 python-batches folder: 5 train batches, a test batch, the meta."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = ["cat", "dog", "eel"]
    images, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        lab = [int(x) for x in rng.integers(0, 3, per_batch)]
        with (folder / name).open("wb") as handle:
            pickle.dump({b"data": data, b"labels": lab, b"batch_label": name.encode()}, handle, 2)
        images.append(data)
        labels.append(lab)
    with (folder / "batches.meta").open("wb") as handle:
        pickle.dump({b"label_names": [n.encode() for n in names]}, handle, 2)
    return np.concatenate(images), np.concatenate(labels)


def test_cifar_python_batches_folder(tmp_path) -> None:
    data, labels = _write_cifar_batches(tmp_path / "cifar-10-batches-py")
    ds = build(tmp_path / "cifar-10-batches-py", gamma=1.0, n_max=5)
    assert ds.class_names == ("cat", "dog", "eel") and ds.counts("train") == [5, 5, 5]
    test_data, test_labels = data[100:], labels[100:]
    order = np.argsort(test_labels, kind="stable")  # test images grouped by class, file order kept
    expected = test_data[order].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(ds.test_images, expected)
    np.testing.assert_array_equal(ds.test_labels, test_labels[order])


def test_cifar_batches_refuse_code_in_the_pickle(tmp_path) -> None:
    _write_cifar_batches(tmp_path / "b")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with (tmp_path / "b/test_batch").open("wb") as handle:
        pickle.dump({b"data": Evil(), b"labels": []}, handle)
    with pytest.raises(DataError, match="not allowed"):
        build(tmp_path / "b", gamma=1.0, n_max=5)
    assert not marker.exists()


def test_cifar_batches_with_split_csv_is_refused(tmp_path) -> None:
    _write_cifar_batches(tmp_path / "b")
    (tmp_path / "s.csv").write_text("image,label\ntrain/cat/0.jpg,0\n")
    with pytest.raises(ConfigError, match="no file names"):
        build(tmp_path / "b", split_csv=tmp_path / "s.csv")


CIFAR_ZIP = SHARED / "data/cifar10-jpg.zip"


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_ZIP.is_file(), reason="../shared/data/cifar10-jpg.zip not present")
def test_cifar10_lt_gamma50_from_the_authors_list() -> None:
    ds = build(CIFAR_ZIP, split_csv=SHARED / "data/climbq-splits/cifar10_train50.csv")
    assert len(ds.train_labels) == 13_988
    assert ds.counts("train") == [5000, 3237, 2095, 1356, 877, 567, 367, 237, 153, 99]
    assert ds.counts("test") == [1000] * 10 and len(ds.test_labels) == 10_000
    assert ds.class_names[0] == "cat" and ds.class_names[9] == "bird"
    # the authors' test list agrees with the folder-name mapping for every test image
    rows = (SHARED / "data/climbq-splits/cifar10_test.csv").read_text().split()[1:]
    authors = {r.split(",")[0]: int(r.split(",")[1]) for r in rows}
    names = {n: k for k, n in enumerate(ds.class_names)}
    assert all(names[p.split("/")[1]] == lab for p, lab in authors.items())
