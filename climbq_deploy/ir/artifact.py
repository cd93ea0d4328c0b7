"""The versioned single-file container ``model.climbq`` (a zip archive).

File format, schema version 1:

* A zip archive whose members are sorted by name, each with the fixed timestamp 1980-01-01
  00:00:00, Unix permissions 0644 and ``create_system`` 3, so equal inputs give a byte-identical
  file on every platform.
* ``manifest.json``: UTF-8 compact JSON (``sort_keys=True``, separators ``,`` and ``:``) plus a
  final newline, ZIP_DEFLATED. It is the caller's manifest dict plus three keys added by the writer:

  - ``"format": "climbq-artifact"`` and ``"schema_version": 1`` (an int);
  - ``"arrays"``: ``{name: {"dtype", "shape", "sha256", "bytes", "packed_bits", "member"}}``
    where ``dtype`` is a numpy dtype name (``int8 int16 int32 int64 uint8 float32 float64
    bool``), ``shape`` a list of ints, ``member`` is ``"arrays/<name>.bin"``, ``bytes`` the
    member's length and ``sha256`` the hex SHA-256 of the member's bytes as stored (after
    packing, before zip compression).

* ``arrays/<name>.bin`` per array: the raw little-endian C-order bytes of the array, or, when
  ``packed_bits`` is ``b``, the codes packed by :func:`climbq_deploy.ir.packing.pack_bits`
  (``dtype`` is then ``uint8`` and ``shape`` that of the unpacked codes). Members of packed arrays
  and of arrays whose name starts with ``weights/`` are ZIP_STORED (already dense); all other
  members are ZIP_DEFLATED.

Array names use only ``[A-Za-z0-9_./-]``, have no empty, ``.`` or ``..`` path parts, and so map
to safe member paths. Reading never uses pickle: arrays are decoded with :func:`np.frombuffer`.

Reading trusts nothing in the file: a member is read only after its manifest entry checks out
(a shape's size times the itemsize must equal the declared byte count, which must equal the zip
header's), at most that many bytes are inflated, only stored and deflated members without
encryption are read, the manifest is at most :data:`MAX_MANIFEST_BYTES` of plain JSON (no NaN,
no ints of thousands of digits, no nesting deep enough to exhaust the parser), and a member
inflating more than :data:`BOMB_RATIO`:1 beyond 1 MiB is refused as a decompression bomb. Every
failure is an :class:`ArtifactError` naming the file and member.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy.errors import ArtifactError
from climbq_deploy.fileio import atomic_write
from climbq_deploy.ir.packing import pack_bits, packed_nbytes, unpack_bits

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "SUFFIX",
    "artifact_size_report",
    "read_artifact",
    "read_artifact_bytes",
    "write_artifact",
]

SCHEMA_VERSION = 1
SUFFIX = ".climbq"
FORMAT = "climbq-artifact"
MANIFEST = "manifest.json"
ALLOWED_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "float32", "float64", "bool")

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_NAME_RE = re.compile(r"[A-Za-z0-9_./-]+")
_WRITER_KEYS = ("arrays", "format", "schema_version")
_ENTRY_KEYS = ("bytes", "dtype", "member", "packed_bits", "sha256", "shape")
_UNSUPPORTED_FLAGS = 0x1 | 0x20 | 0x40  # encrypted, compressed patched data, strong encryption
MAX_MANIFEST_BYTES = 64 * 2**20  # a ResNet-20 manifest is ~30 KB
# A deflated member over 1 MiB that inflates more than 256:1 is refused as a decompression bomb:
# the deflated arrays (thresholds as byte planes, float head) compress below 20:1.
BOMB_MIN_BYTES, BOMB_RATIO = 2**20, 256
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _check_name(name: object, where: str = "") -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ArtifactError(
            f"{where}array name {name!r} must be non-empty and use only [A-Za-z0-9_./-]"
        )
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise ArtifactError(f"{where}array name {name!r} has an empty, '.' or '..' path part")
    return name


def _member(name: str) -> str:
    return f"arrays/{name}.bin"


def _zip_info(member: str, compress_type: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(member, date_time=_ZIP_EPOCH)
    info.create_system = 3  # Unix, whatever platform writes the file
    info.external_attr = 0o644 << 16
    info.compress_type = compress_type
    return info


def _encode(name: str, array: np.ndarray, bits: int | None) -> tuple[bytes, dict[str, Any]]:
    """Member bytes and manifest entry (without sha256/bytes) of one array."""
    array = np.asarray(array)
    if bits is not None:
        if array.dtype.kind != "u":
            raise ArtifactError(
                f"array {name!r} is listed in packed_bits but has dtype {array.dtype}; "
                "only unsigned integer code arrays can be packed"
            )
        try:
            data = pack_bits(array, bits).tobytes()
        except ArtifactError as exc:
            raise ArtifactError(f"array {name!r}: {exc}") from None
        return data, {"dtype": "uint8", "shape": list(array.shape), "packed_bits": int(bits)}
    if array.dtype.name not in ALLOWED_DTYPES:
        raise ArtifactError(
            f"array {name!r} has unsupported dtype {array.dtype}; "
            f"allowed: {', '.join(ALLOWED_DTYPES)}"
        )
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return little.tobytes(), {
        "dtype": array.dtype.name,
        "shape": list(array.shape),
        "packed_bits": None,
    }


def write_artifact(
    path: str | os.PathLike[str],
    manifest: dict[str, Any],
    arrays: dict[str, np.ndarray],
    packed_bits: dict[str, int] | None = None,
) -> Path:
    """Write ``manifest`` and ``arrays`` to the zip container at ``path`` atomically.

    ``packed_bits`` maps array names to a bit width 1..8; those arrays must hold unsigned codes and
    are stored bit-packed. The keys ``arrays``, ``format`` and ``schema_version`` are the writer's
    and may not appear in ``manifest``. Returns ``path`` as a :class:`Path`.
    """
    target = Path(path)
    packed_bits = dict(packed_bits or {})
    if not isinstance(manifest, dict):
        raise ArtifactError(f"manifest for {target} must be a dict, got {type(manifest).__name__}")
    reserved = sorted(set(manifest) & set(_WRITER_KEYS))
    if reserved:
        raise ArtifactError(f"manifest for {target} may not set writer-owned keys {reserved}")
    unknown = sorted(set(packed_bits) - set(arrays))
    if unknown:
        raise ArtifactError(f"packed_bits names arrays that are not given: {unknown}")

    members: dict[str, tuple[bytes, int]] = {}
    entries: dict[str, dict[str, Any]] = {}
    for name in sorted(arrays):
        _check_name(name)
        data, entry = _encode(name, arrays[name], packed_bits.get(name))
        dense = entry["packed_bits"] is not None or name.startswith("weights/")
        entry.update(member=_member(name), bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        entries[name] = entry
        members[_member(name)] = (data, zipfile.ZIP_STORED if dense else zipfile.ZIP_DEFLATED)

    full = {**manifest, "arrays": entries, "format": FORMAT, "schema_version": SCHEMA_VERSION}
    try:
        text = json.dumps(full, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"manifest for {target} is not plain JSON: {exc}") from None
    members[MANIFEST] = (text.encode("utf-8"), zipfile.ZIP_DEFLATED)

    with atomic_write(target, "wb") as handle, zipfile.ZipFile(handle, "w") as archive:
        for member in sorted(members):
            data, compress_type = members[member]
            archive.writestr(_zip_info(member, compress_type), data, compresslevel=6)
    return target


def _open(path: Path | str, data: bytes | None = None) -> zipfile.ZipFile:
    """The zip at ``path``, or of ``data`` (an artifact held in memory, named ``path``)."""
    if data is None and not Path(path).is_file():
        raise ArtifactError(f"no climbq artifact at {path}")
    try:
        return zipfile.ZipFile(Path(path) if data is None else io.BytesIO(data), "r")
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as exc:
        # ValueError: a central directory offset before the file start; UnicodeDecodeError (a
        # ValueError) a member name flagged UTF-8 that is not; NotImplementedError: a member
        # needing a newer zip version.
        raise ArtifactError(
            f"{path} is not a climbq artifact (truncated or corrupt zip: {exc})"
        ) from None


def _read_member(archive: zipfile.ZipFile, member: str, path: Path | str, limit: int) -> bytes:
    """The uncompressed bytes of ``member``, refused when they would exceed ``limit`` bytes
    (checked on the declared size and again while inflating: no decompression bombs)."""
    info = archive.getinfo(member)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ArtifactError(
            f"{path}: member {member} uses zip compression method {info.compress_type}; "
            "climbq artifacts use only stored (0) and deflated (8) members"
        )
    if info.flag_bits & _UNSUPPORTED_FLAGS:
        raise ArtifactError(
            f"{path}: member {member} is encrypted or patched (zip flags "
            f"0x{info.flag_bits:04x}); climbq artifacts never are"
        )
    if info.file_size > limit:
        raise ArtifactError(
            f"{path}: member {member} claims {info.file_size} bytes, more than the {limit} "
            "its manifest entry allows"
        )
    if info.file_size > max(BOMB_MIN_BYTES, BOMB_RATIO * info.compress_size):
        raise ArtifactError(
            f"{path}: member {member} inflates {info.compress_size} bytes to "
            f"{info.file_size} (over {BOMB_RATIO}:1): refused as a decompression "
            "bomb"
        )
    try:
        with archive.open(info) as handle:
            data = handle.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: member {member} is corrupt ({exc})") from None
    if len(data) > limit:
        raise ArtifactError(f"{path}: member {member} inflates beyond {limit} bytes")
    return data


def _check_entry(name: str, entry: object, path: Path | str) -> dict[str, Any]:
    """Validate one manifest array entry; return it with ``shape`` as a tuple."""
    _check_name(name, f"{path}: ")
    if not isinstance(entry, dict) or sorted(entry) != sorted(_ENTRY_KEYS):
        raise ArtifactError(f"{path}: manifest entry of array {name!r} is malformed: {entry!r}")
    bits, shape = entry["packed_bits"], entry["shape"]
    ok = (
        entry["member"] == _member(name)
        and entry["dtype"] in ALLOWED_DTYPES
        and isinstance(shape, list)
        and all(type(d) is int and d >= 0 for d in shape)
        and (bits is None or (type(bits) is int and 1 <= bits <= 8 and entry["dtype"] == "uint8"))
        and isinstance(entry["sha256"], str)
        and _SHA256_RE.fullmatch(entry["sha256"]) is not None
        and type(entry["bytes"]) is int
    )
    if not ok:
        raise ArtifactError(f"{path}: manifest entry of array {name!r} is malformed: {entry!r}")
    size = math.prod(shape)
    expected = packed_nbytes(size, bits) if bits else size * np.dtype(entry["dtype"]).itemsize
    if entry["bytes"] != expected:
        raise ArtifactError(
            f"{path}: array {name!r} lists {entry['bytes']!r} bytes but dtype {entry['dtype']}, "
            f"shape {tuple(shape)} and packed_bits {bits} need {expected}"
        )
    return {**entry, "shape": tuple(shape)}


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed (manifests are plain JSON)")


def _load_manifest(
    archive: zipfile.ZipFile, path: Path | str
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The parsed, checked manifest and its validated array entries (shapes as tuples)."""
    names = archive.namelist()
    if len(names) != len(set(names)):
        raise ArtifactError(f"{path} has duplicate zip members")
    if MANIFEST not in names:
        raise ArtifactError(f"{path} is not a climbq artifact: it has no {MANIFEST}")
    text = _read_member(archive, MANIFEST, path, MAX_MANIFEST_BYTES)
    try:
        manifest = json.loads(text.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: JSONDecodeError, NaN/Infinity, an int of more than 4300 digits;
        # RecursionError: arrays or objects nested thousands deep.
        raise ArtifactError(f"{path}: {MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: {MANIFEST} must hold a JSON object")
    if manifest.get("format") != FORMAT:
        raise ArtifactError(
            f"{path} is not a climbq artifact: manifest format is {manifest.get('format')!r}, "
            f"expected {FORMAT!r}"
        )
    version = manifest.get("schema_version")
    if type(version) is not int or version < 1:
        raise ArtifactError(f"{path}: schema_version must be a positive int, got {version!r}")
    if version > SCHEMA_VERSION:
        raise ArtifactError(
            f"{path} has schema_version {version} but this climbq_deploy reads up to "
            f"{SCHEMA_VERSION}; it needs a newer climbq_deploy"
        )
    if not isinstance(manifest.get("arrays"), dict):
        raise ArtifactError(f"{path}: manifest has no 'arrays' object")
    entries = {name: _check_entry(name, e, path) for name, e in manifest["arrays"].items()}
    listed = {entry["member"] for entry in entries.values()}
    extra = sorted(set(names) - listed - {MANIFEST})
    if extra:
        raise ArtifactError(f"{path} holds members not listed in its manifest: {extra}")
    missing = sorted(name for name, entry in entries.items() if entry["member"] not in names)
    if missing:
        raise ArtifactError(f"{path} lacks the members of listed arrays {missing}")
    return manifest, entries


def read_artifact(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify a ``.climbq`` file; return ``(manifest, arrays)``.

    Every member's byte length and SHA-256 are checked against the manifest before it is decoded.
    The returned arrays are read-only; packed arrays come back unpacked as ``uint8`` codes. The
    returned manifest is the stored JSON object, writer keys included.
    """
    source = Path(path)
    with _open(source) as archive:
        return _read(archive, source)


def read_artifact_bytes(
    data: bytes, name: str = "embedded program"
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """:func:`read_artifact` of an artifact held in memory; ``name`` starts error messages."""
    with _open(name, bytes(data)) as archive:
        return _read(archive, name)


def _read(
    archive: zipfile.ZipFile, source: Path | str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    manifest, entries = _load_manifest(archive, source)
    arrays: dict[str, np.ndarray] = {}
    for name, entry in entries.items():
        declared = archive.getinfo(entry["member"]).file_size
        if declared != entry["bytes"]:
            raise ArtifactError(
                f"{source}: array {name!r} member holds {declared} bytes, "
                f"manifest says {entry['bytes']}"
            )
        data = _read_member(archive, entry["member"], source, entry["bytes"])
        if len(data) != entry["bytes"]:
            raise ArtifactError(
                f"{source}: array {name!r} has {len(data)} bytes, manifest says {entry['bytes']}"
            )
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ArtifactError(f"{source}: array {name!r} fails its sha256 check")
        arrays[name] = _decode(name, data, entry, source)
    return manifest, arrays


def _decode(name: str, data: bytes, entry: dict[str, Any], path: Path | str) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8)
    if entry["packed_bits"] is not None:
        try:
            array = unpack_bits(raw, entry["packed_bits"], entry["shape"])
        except ArtifactError as exc:
            raise ArtifactError(f"{path}: array {name!r}: {exc}") from None
    else:
        if entry["dtype"] == "bool" and raw.size and raw.max() > 1:
            raise ArtifactError(f"{path}: bool array {name!r} holds bytes other than 0 and 1")
        dtype = np.dtype(entry["dtype"]).newbyteorder("<")
        array = np.frombuffer(data, dtype=dtype).reshape(entry["shape"])
    array.setflags(write=False)
    return array


def artifact_size_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Sizes of a ``.climbq`` file in bytes.

    Returns ``{"file_bytes", "manifest_bytes", "overhead_bytes", "arrays": {name: {"stored_bytes",
    "member_bytes", "packed_bits", "compressed"}}}``: ``stored_bytes`` is the member's size inside
    the zip (after compression), ``member_bytes`` its uncompressed size, ``overhead_bytes`` the zip
    headers and directory. The manifest is validated; array contents are not hashed.
    """
    source = Path(path)
    with _open(source) as archive:
        _, entries = _load_manifest(archive, source)
        arrays = {}
        for name, entry in entries.items():
            info = archive.getinfo(entry["member"])
            arrays[name] = {
                "stored_bytes": info.compress_size,
                "member_bytes": info.file_size,
                "packed_bits": entry["packed_bits"],
                "compressed": info.compress_type != zipfile.ZIP_STORED,
            }
        manifest_bytes = archive.getinfo(MANIFEST).compress_size
    file_bytes = source.stat().st_size
    stored = manifest_bytes + sum(a["stored_bytes"] for a in arrays.values())
    return {
        "file_bytes": file_bytes,
        "manifest_bytes": manifest_bytes,
        "overhead_bytes": file_bytes - stored,
        "arrays": arrays,
    }
