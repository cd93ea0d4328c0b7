"""Crash-safe file writing and hashing.

Every file the toolkit produces is written to a temporary file in the destination folder, flushed
and fsync'ed, then moved into place with :func:`os.replace` (atomic on POSIX). A reader therefore
sees either the old complete file or the new complete file, never a partial one.

A process killed mid-write (``kill -9``, power loss) leaves only its temporary file,
``.<name>.<pid>.<random>.tmp``; the next write of the same file removes it
(:func:`remove_stale_temps`). The final file gets the permissions a plain ``open`` would give it
(``0o666`` less the umask), or keeps those of the file it replaces.

Test hook (inert unless set): with ``CLIMBQ_TEST_PAUSE_IN_WRITE=<substring>[@<n>]`` the ``n``-th
(default first) write in this process of a file whose name contains ``<substring>`` stops after
its temporary file is complete and before :func:`os.replace`, writes that temporary path to the
file named by ``CLIMBQ_TEST_PAUSE_MARKER`` and sleeps :data:`TEST_PAUSE_SECONDS`, so a test can
kill the process exactly inside the write window.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import os
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from climbq_deploy.errors import WriteError

# Fixed member timestamp so that the same arrays always give byte-identical .npz files.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
# When this process (or at least this module) started: a temporary file last touched before
# then by a process that is gone cannot belong to a write still in progress.
_STARTED = time.time()
TEST_PAUSE_ENV = "CLIMBQ_TEST_PAUSE_IN_WRITE"
TEST_MARKER_ENV = "CLIMBQ_TEST_PAUSE_MARKER"
TEST_PAUSE_SECONDS = 60.0
_paused_writes: Counter[str] = Counter()
# A temporary file of a dead writer untouched this long is stale even if this process is older.
STALE_AFTER_SECONDS = 600.0


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary siblings of ``path`` left by killed writers; return what was removed.

    A sibling ``.<name>.<pid>.<random>.tmp`` is stale when its writer ``pid`` is no longer
    running on this machine and the file was last modified before this process started or more
    than :data:`STALE_AFTER_SECONDS` ago (so a live writer on another machine or container
    sharing the folder, whose pid means nothing here, is left alone while it is writing). Other
    files are never touched; a file that cannot be removed is left where it is.
    """
    target = Path(path)
    prefix = f".{target.name}."
    removed: list[Path] = []
    for name in glob.glob(glob.escape(str(target.parent / prefix)) + "*.tmp"):
        candidate = Path(name)
        parts = candidate.name[len(prefix) : -len(".tmp")].split(".")
        if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 9:
            continue
        pid = int(parts[0])
        if pid == os.getpid():
            continue
        try:
            modified = candidate.stat().st_mtime
        except OSError:  # vanished meanwhile (its writer finished or another cleaner won)
            continue
        old = modified < _STARTED or time.time() - modified > STALE_AFTER_SECONDS
        if old and not _pid_alive(pid):
            with contextlib.suppress(OSError):
                candidate.unlink()
                removed.append(candidate)
    return removed


def _pause_for_tests(target: Path, tmp_name: str) -> None:
    """The ``CLIMBQ_TEST_PAUSE_IN_WRITE`` hook (see the module docstring); inert unless set."""
    spec = os.environ.get(TEST_PAUSE_ENV)
    if not spec:
        return
    pattern, _, nth = spec.partition("@")
    if pattern not in target.name:
        return
    _paused_writes[pattern] += 1
    if _paused_writes[pattern] != int(nth or 1):
        return
    marker = os.environ.get(TEST_MARKER_ENV)
    if marker:
        Path(marker + ".part").write_text(tmp_name)
        os.replace(marker + ".part", marker)
    time.sleep(TEST_PAUSE_SECONDS)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success move it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched. Stale
    temporary siblings of ``path`` from killed writers are removed first. A failure to write
    (a read-only folder, a full disk, a path below a file) is a :class:`WriteError` naming
    ``path`` (an OSError too).
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)
        try:
            permissions = target.stat().st_mode & 0o777
        except FileNotFoundError:
            permissions = 0o666 & ~_UMASK
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent
        )
    except OSError as exc:
        raise WriteError(target, exc) from exc
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, permissions)
        _pause_for_tests(target, tmp_name)
        os.replace(tmp_name, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError) and _about(exc, target):
            raise WriteError(target, exc) from exc
        raise
    _fsync_dir(target.parent)


def _about(exc: OSError, target: Path) -> bool:
    """True when ``exc`` is about writing ``target``: it names no file (a write or flush on the
    handle: a full disk) or the temporary file (chmod, replace)."""
    return exc.filename is None or Path(exc.filename).parent == target.parent


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    with atomic_write(path, "w") as handle:
        handle.write(text)


def array_sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and C-order bytes (so a reshape changes the hash)."""
    digest = hashlib.sha256()
    digest.update(f"{array.dtype.str}|{tuple(array.shape)}|".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def write_npz(
    path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], compress: bool = False
) -> None:
    """Write arrays as a ``.npz`` that :func:`numpy.load` reads (``compress``: deflated, as
    :func:`numpy.savez_compressed`; else stored), atomically.

    Unlike :func:`numpy.savez` the zip members carry a fixed timestamp, so equal arrays give a
    byte-identical file. Object arrays are refused (they would need pickle to load).
    """
    with atomic_write(path, "wb") as handle, zipfile.ZipFile(handle, "w") as archive:
        for name, array in arrays.items():
            array = np.asarray(array)
            if array.dtype.hasobject:
                raise TypeError(f"array {name!r} has dtype object; refusing to pickle it")
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())
