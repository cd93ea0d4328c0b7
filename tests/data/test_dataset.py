import hashlib
import json
import zipfile

import numpy as np
import pytest

from climbq_deploy.data.dataset import ImageDataset, load_dataset, save_dataset
from climbq_deploy.errors import ArtifactError, DataError


def tiny(seed: int = 0) -> ImageDataset:
    rng = np.random.default_rng(seed)
    return ImageDataset(
        name="tiny",
        class_names=("a", "b"),
        train_images=rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8),
        train_labels=np.array([0, 0, 0, 1, 1], dtype=np.int64),
        test_images=rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8),
        test_labels=np.array([0, 0, 1, 1], dtype=np.int64),
        info={"gamma": 1.5},
        extras={"note_ids": np.arange(5, dtype=np.int16)},
    )


def test_round_trip_keeps_every_array_and_the_meta(tmp_path) -> None:
    ds = tiny()
    save_dataset(ds, tmp_path / "d")
    back = load_dataset(tmp_path / "d")
    for key, value in ds.arrays().items():
        np.testing.assert_array_equal(back.arrays()[key], value)
        assert back.arrays()[key].dtype == value.dtype
    assert back.class_names == ("a", "b") and back.info == {"gamma": 1.5}
    meta = json.loads((tmp_path / "d/meta.json").read_text())
    assert meta["counts"] == {"train": [3, 2], "test": [2, 2]}
    expected = hashlib.sha256(b"|u1|(5, 8, 8, 3)|" + ds.train_images.tobytes()).hexdigest()
    assert meta["arrays"]["train_images"]["sha256"] == expected


def test_npz_is_byte_identical_for_equal_arrays(tmp_path) -> None:
    save_dataset(tiny(), tmp_path / "a")
    save_dataset(tiny(), tmp_path / "b")
    assert (tmp_path / "a/data.npz").read_bytes() == (tmp_path / "b/data.npz").read_bytes()
    assert (tmp_path / "a/meta.json").read_bytes() == (tmp_path / "b/meta.json").read_bytes()


def test_tampered_array_fails_its_hash(tmp_path) -> None:
    save_dataset(tiny(), tmp_path / "d")
    meta = (tmp_path / "d/meta.json").read_text()
    save_dataset(tiny(seed=1), tmp_path / "d")  # new arrays ...
    (tmp_path / "d/meta.json").write_text(meta)  # ... old hashes
    with pytest.raises(ArtifactError, match=r"array (train|test)_images fails its sha256"):
        load_dataset(tmp_path / "d")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("image_shape", [16, 16, 3]),
        ("counts", {"train": [4, 1], "test": [2, 2]}),
        ("sizes", {"train": 5, "test": 3}),
    ],
)
def test_a_summary_that_disagrees_with_the_arrays_is_refused(tmp_path, key, value) -> None:
    save_dataset(tiny(), tmp_path / "d")
    meta = json.loads((tmp_path / "d/meta.json").read_text())
    meta[key] = value
    (tmp_path / "d/meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=rf"meta.json: {key} is .* but the arrays give"):
        load_dataset(tmp_path / "d")


def test_truncated_npz_is_a_clear_error(tmp_path) -> None:
    save_dataset(tiny(), tmp_path / "d")
    data = (tmp_path / "d/data.npz").read_bytes()
    (tmp_path / "d/data.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"data.npz is corrupt or truncated"):
        load_dataset(tmp_path / "d")


def test_pickled_member_is_refused(tmp_path) -> None:
    save_dataset(tiny(), tmp_path / "d")
    path = tmp_path / "d/data.npz"
    with zipfile.ZipFile(path, "a") as archive:
        buffer = __import__("io").BytesIO()
        np.save(buffer, np.array([object()], dtype=object), allow_pickle=True)
        archive.writestr("evil.npy", buffer.getvalue())
    with pytest.raises(ArtifactError):
        load_dataset(tmp_path / "d")


def test_newer_format_and_missing_files(tmp_path) -> None:
    save_dataset(tiny(), tmp_path / "d")
    meta = json.loads((tmp_path / "d/meta.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "d/meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="format_version 99"):
        load_dataset(tmp_path / "d")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"meta\.json is missing"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/meta.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_dataset(tmp_path / "bad")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"train_images": np.zeros((5, 8, 8), np.uint8)}, "N x H x W x 3"),
        ({"train_images": np.zeros((5, 8, 8, 3), np.float32)}, "uint8"),
        ({"train_labels": np.array([0, 0, 0, 1, 2], dtype=np.int64)}, r"labels must lie in 0..1"),
        ({"train_labels": np.array([0, 0, 0, 1, 1], dtype=np.int32)}, "int64"),
        ({"test_images": np.zeros((4, 9, 9, 3), np.uint8)}, "test images are"),
        ({"class_names": ()}, "no classes"),
    ],
)
def test_invalid_arrays_are_refused(change: dict, match: str) -> None:
    fields = {k: getattr(tiny(), k) for k in ImageDataset.__dataclass_fields__}
    fields.update(change)
    with pytest.raises(DataError, match=match):
        ImageDataset(**fields)


def test_save_refuses_a_file_as_output(tmp_path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        save_dataset(tiny(), tmp_path / "f")
