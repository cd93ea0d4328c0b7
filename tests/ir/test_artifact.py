"""The .climbq container: round trips, deterministic bytes, and every corruption it must catch."""

import hashlib
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from climbq_deploy.errors import ArtifactError
from climbq_deploy.ir.artifact import (
    SCHEMA_VERSION,
    SUFFIX,
    artifact_size_report,
    read_artifact,
    write_artifact,
)


def sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "weights/conv1": rng.integers(-128, 128, (4, 3, 3, 3), dtype=np.int8),
        "bias/conv1": rng.integers(-(2**20), 2**20, (4,), dtype=np.int32),
        "thresholds/act1": rng.integers(-(2**40), 2**40, (4, 15), dtype=np.int64),
        "shift": np.array([3, -2], dtype=np.int16),
        "image": rng.integers(0, 256, (2, 5), dtype=np.uint8),
        "scale": rng.normal(size=(3,)).astype(np.float32),
        "ref": rng.normal(size=(2, 2)).astype(np.float64),
        "mask": np.array([[True, False, True]]),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "codes4": rng.integers(0, 16, (3, 7), dtype=np.uint8),
        "codes3": rng.integers(0, 8, (11,), dtype=np.uint16),
    }


PACKED = {"codes4": 4, "codes3": 3}


def write_sample(path: Path) -> Path:
    return write_artifact(path, {"model": "resnet20", "bits": 4}, sample_arrays(), PACKED)


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    return write_sample(tmp_path / f"model{SUFFIX}")


def rewrite(path: Path, edit: Callable[[dict[str, bytes]], None]) -> None:
    """Rebuild the zip with ``edit`` applied to its {member: bytes} (CRCs recomputed)."""
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        members = {info.filename: archive.read(info) for info in infos}
    edit(members)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data, zipfile.ZIP_DEFLATED)


def edit_manifest(path: Path, change: Callable[[dict], None]) -> None:
    def edit(members: dict[str, bytes]) -> None:
        manifest = json.loads(members["manifest.json"])
        change(manifest)
        members["manifest.json"] = json.dumps(manifest).encode()

    rewrite(path, edit)


def test_round_trip_keeps_values_dtypes_shapes_and_manifest(artifact: Path) -> None:
    manifest, arrays = read_artifact(artifact)
    expected = sample_arrays()
    assert sorted(arrays) == sorted(expected)
    for name, value in expected.items():
        want_dtype = np.uint8 if name in PACKED else value.dtype
        assert arrays[name].dtype == want_dtype and arrays[name].shape == value.shape, name
        np.testing.assert_array_equal(arrays[name], value)
        assert not arrays[name].flags.writeable
    assert manifest["model"] == "resnet20" and manifest["bits"] == 4
    assert manifest["format"] == "climbq-artifact" and manifest["schema_version"] == SCHEMA_VERSION
    entry = manifest["arrays"]["codes3"]
    assert entry["packed_bits"] == 3 and entry["dtype"] == "uint8" and entry["shape"] == [11]
    assert entry["bytes"] == 5 and entry["member"] == "arrays/codes3.bin"  # ceil(33/8)
    with zipfile.ZipFile(artifact) as archive:
        data = archive.read("arrays/shift.bin")
    assert data == bytes([3, 0, 0xFE, 0xFF])  # little-endian int16 3, -2
    assert manifest["arrays"]["shift"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_big_endian_input_is_stored_little_endian(tmp_path: Path) -> None:
    value = np.array([1.5, -2.0], dtype=">f8")
    write_artifact(tmp_path / "a.climbq", {}, {"x": value})
    with zipfile.ZipFile(tmp_path / "a.climbq") as archive:
        assert archive.read("arrays/x.bin") == value.astype("<f8").tobytes()
    np.testing.assert_array_equal(read_artifact(tmp_path / "a.climbq")[1]["x"], value)


def test_members_are_sorted_dated_1980_and_compressed_as_documented(artifact: Path) -> None:
    with zipfile.ZipFile(artifact) as archive:
        infos = archive.infolist()
    names = [info.filename for info in infos]
    assert names == sorted(names) and "manifest.json" in names
    assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in infos)
    kinds = {info.filename: info.compress_type for info in infos}
    for stored in ("weights/conv1", "codes4", "codes3"):
        assert kinds[f"arrays/{stored}.bin"] == zipfile.ZIP_STORED
    for deflated in ("manifest.json", "arrays/bias/conv1.bin", "arrays/mask.bin"):
        assert kinds[deflated] == zipfile.ZIP_DEFLATED


def test_same_inputs_give_byte_identical_files(tmp_path: Path) -> None:
    write_sample(tmp_path / "a.climbq")
    reordered = dict(reversed(list(sample_arrays().items())))
    write_artifact(tmp_path / "b.climbq", {"bits": 4, "model": "resnet20"}, reordered, PACKED)
    assert (tmp_path / "a.climbq").read_bytes() == (tmp_path / "b.climbq").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.climbq", "b.climbq"]  # no temp left


def test_size_report_counts_file_and_packed_bytes(artifact: Path) -> None:
    report = artifact_size_report(artifact)
    assert report["file_bytes"] == artifact.stat().st_size
    assert report["arrays"]["codes4"]["stored_bytes"] == 11  # ceil(21*4/8), stored
    assert report["arrays"]["weights/conv1"]["stored_bytes"] == 108
    assert not report["arrays"]["codes4"]["compressed"]
    total = report["manifest_bytes"] + report["overhead_bytes"]
    total += sum(a["stored_bytes"] for a in report["arrays"].values())
    assert total == report["file_bytes"] and report["overhead_bytes"] > 0


def test_flipped_bit_in_a_member_fails_its_hash(artifact: Path) -> None:
    def flip(members: dict[str, bytes]) -> None:
        data = bytearray(members["arrays/weights/conv1.bin"])
        data[7] ^= 0x10
        members["arrays/weights/conv1.bin"] = bytes(data)

    rewrite(artifact, flip)
    with pytest.raises(
        ArtifactError, match=rf"{re.escape(str(artifact))}: array 'weights/conv1' fails its sha256"
    ):
        read_artifact(artifact)


def test_flipped_byte_in_the_raw_file_is_caught(artifact: Path) -> None:
    raw = bytearray(artifact.read_bytes())
    with zipfile.ZipFile(artifact) as archive:
        info = archive.getinfo("arrays/weights/conv1.bin")
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 5
    raw[offset] ^= 0x01
    artifact.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match=r"weights/conv1.*(corrupt|sha256)"):
        read_artifact(artifact)


def test_truncated_file_is_not_an_artifact(artifact: Path) -> None:
    data = artifact.read_bytes()
    artifact.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"is not a climbq artifact \(truncated or corrupt zip"):
        read_artifact(artifact)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"no climbq artifact at .*nope\.climbq"):
        read_artifact(tmp_path / "nope.climbq")


@pytest.mark.parametrize("value", ["onnx", None])
def test_wrong_or_missing_format_is_refused(artifact: Path, value: str | None) -> None:
    edit_manifest(artifact, lambda m: m.update(format=value) if value else m.pop("format"))
    with pytest.raises(ArtifactError, match=r"not a climbq artifact: manifest format is"):
        read_artifact(artifact)


def test_newer_schema_version_asks_for_a_newer_reader(artifact: Path) -> None:
    edit_manifest(artifact, lambda m: m.update(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(ArtifactError, match=r"schema_version 2 .* needs a newer climbq_deploy"):
        read_artifact(artifact)


MISSING = object()


@pytest.mark.parametrize("value", [MISSING, None, "1", 1.0, 0, True])
def test_missing_or_non_int_schema_version_is_refused(artifact: Path, value: object) -> None:
    def change(manifest: dict) -> None:
        manifest.pop("schema_version")
        if value is not MISSING:
            manifest["schema_version"] = value

    edit_manifest(artifact, change)
    with pytest.raises(ArtifactError, match=r"schema_version must be a positive int"):
        read_artifact(artifact)


def test_edited_manifest_hash_is_a_mismatch(artifact: Path) -> None:
    edit_manifest(artifact, lambda m: m["arrays"]["scale"].update(sha256="0" * 64))
    with pytest.raises(ArtifactError, match=r"array 'scale' fails its sha256"):
        read_artifact(artifact)


def test_edited_manifest_byte_count_is_refused(artifact: Path) -> None:
    edit_manifest(artifact, lambda m: m["arrays"]["scale"].update(bytes=16))
    with pytest.raises(ArtifactError, match=r"array 'scale' lists 16 bytes but .* need 12"):
        read_artifact(artifact)


def test_member_of_the_wrong_length_is_refused(artifact: Path) -> None:
    def grow(members: dict[str, bytes]) -> None:
        members["arrays/scale.bin"] += b"\0\0\0\0"

    rewrite(artifact, grow)
    with pytest.raises(
        ArtifactError, match=r"array 'scale' member holds 16 bytes, manifest says 12"
    ):
        read_artifact(artifact)


def test_extra_unlisted_member_is_refused(artifact: Path) -> None:
    rewrite(artifact, lambda members: members.update({"arrays/sneaky.bin": b"x"}))
    with pytest.raises(
        ArtifactError, match=r"members not listed in its manifest: \['arrays/sneaky.bin'\]"
    ):
        read_artifact(artifact)


def test_listed_array_without_member_is_refused(artifact: Path) -> None:
    rewrite(artifact, lambda members: members.pop("arrays/mask.bin"))
    with pytest.raises(ArtifactError, match=r"lacks the members of listed arrays \['mask'\]"):
        read_artifact(artifact)


def test_nonzero_padding_in_a_packed_member_is_refused(artifact: Path) -> None:
    def pad(members: dict[str, bytes]) -> None:
        data = bytearray(members["arrays/codes3.bin"])
        data[-1] |= 0x80  # 11 codes * 3 bits = 33 bits; bit 39 is padding
        members["arrays/codes3.bin"] = bytes(data)
        manifest = json.loads(members["manifest.json"])
        manifest["arrays"]["codes3"]["sha256"] = hashlib.sha256(data).hexdigest()
        members["manifest.json"] = json.dumps(manifest).encode()

    rewrite(artifact, pad)
    with pytest.raises(ArtifactError, match=r"array 'codes3'.*nonzero padding bits"):
        read_artifact(artifact)


@pytest.mark.parametrize("name", ["../evil", "a/../b", "a b", "", "/abs", "a//b", "x/.", "ü"])
def test_bad_array_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ArtifactError, match=r"array name"):
        write_artifact(tmp_path / "a.climbq", {}, {name: np.zeros(2, dtype=np.int8)})
    assert not (tmp_path / "a.climbq").exists()


def test_bad_array_name_in_a_manifest_is_refused(artifact: Path) -> None:
    edit_manifest(artifact, lambda m: m["arrays"].update({"../x": m["arrays"].pop("scale")}))
    with pytest.raises(ArtifactError, match=r"array name '\.\./x'"):
        read_artifact(artifact)


@pytest.mark.parametrize("dtype", ["float16", "uint16", "complex64", "object", "<U3"])
def test_unsupported_dtypes_are_refused(tmp_path: Path, dtype: str) -> None:
    with pytest.raises(ArtifactError, match=r"array 'x' has unsupported dtype .*allowed: int8"):
        write_artifact(tmp_path / "a.climbq", {}, {"x": np.zeros(2, dtype=dtype)})


def test_packing_demands_unsigned_in_range_codes(tmp_path: Path) -> None:
    path = tmp_path / "a.climbq"
    with pytest.raises(ArtifactError, match=r"array 'c' .* only unsigned integer code arrays"):
        write_artifact(path, {}, {"c": np.array([1, 2], dtype=np.int8)}, {"c": 2})
    with pytest.raises(ArtifactError, match=r"array 'c': code 9 .* 3-bit range 0\.\.7"):
        write_artifact(path, {}, {"c": np.array([1, 9], dtype=np.uint8)}, {"c": 3})
    with pytest.raises(ArtifactError, match=r"packed_bits names arrays that are not given"):
        write_artifact(path, {}, {}, {"c": 3})


def test_writer_owned_or_non_json_manifest_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"writer-owned keys \['format'\]"):
        write_artifact(tmp_path / "a.climbq", {"format": "x"}, {})
    with pytest.raises(ArtifactError, match=r"not plain JSON"):
        write_artifact(tmp_path / "a.climbq", {"x": float("nan")}, {})
