"""Run folders: outputs never written over their own inputs nor replaced unasked, and the
folders a run names (its dataset, its ``--init`` and ``--teacher`` runs) found again from any
working directory.

A run folder (``climbq train``, ``climbq calibrate``, ``climbq adjust-logits``) is a user's
result. A command that writes one refuses, before any work:

- an output folder that *is* one of its input runs (``calibrate FP --out FP`` would replace the
  full-precision checkpoint it reads);
- an output folder that already holds a run (``checkpoint.pt``), unless the caller continues it
  (``train --resume``) or asks to replace it (``--overwrite``).

A run stores the folders it names as absolute paths (:func:`absolute_path`), so that
``climbq export RUN`` works from any directory. Run folders of older versions stored them as
typed, relative to the directory training started in; :func:`locate_run_path` finds those again
(:func:`run_path_candidates` lists where it looks) or says where it looked.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from climbq_deploy.errors import ConfigError, DataError

CHECKPOINT = "checkpoint.pt"


def guard_output_run(
    out: str | Path,
    inputs: Mapping[str, str | Path | None],
    overwrite: bool = False,
    resume: bool | None = None,
) -> Path:
    """``out`` as a Path after the checks above; ``inputs`` maps an option name (as the user
    typed it, e.g. ``"--init"``) to the run folder it names (None: not given); ``resume`` is
    None for a command that cannot continue a run (the error then offers only ``--overwrite``).

    Raises:
        ConfigError: ``out`` resolves to an input run, or holds a run and neither ``resume``
            nor ``overwrite`` is set.
    """
    out = Path(out)
    for option, source in inputs.items():
        if source is not None and Path(source).resolve() == out.resolve():
            raise ConfigError(f"--out {out} is the {option} run; write the new run elsewhere")
    if (out / CHECKPOINT).is_file() and not (resume or overwrite):
        hint = "pass --resume to continue it or " if resume is not None else ""
        raise ConfigError(
            f"{out} already holds a run ({CHECKPOINT}); {hint}pass --overwrite to replace it"
        )
    return out


def absolute_path(path: str | Path) -> str:
    """``path`` made absolute against the working directory (symlinks resolved): what a run
    folder stores for a folder it names."""
    return str(Path(path).resolve())


def run_path_candidates(folder: str | Path, stored: str | Path) -> list[Path]:
    """Where a folder that run ``folder`` stored as ``stored`` may be, in the order tried.

    An absolute ``stored`` is itself. A relative one (a run folder of an older version, which
    stored paths as typed) is tried run-relative first: against ``folder`` and then each folder
    above it, one of which is the directory training started in when ``--out`` was given below
    it (``--out runs/r1`` beside ``data/syn``); then against the working directory."""
    stored = Path(stored)
    if stored.is_absolute():
        return [stored]
    run = Path(folder).resolve()
    tried = [base / stored for base in (run, *run.parents)] + [Path.cwd() / stored]
    return list(dict.fromkeys(path.resolve() for path in tried))


def locate_run_path(folder: str | Path, field: str, stored: str | Path, hint: str = "") -> Path:
    """The existing folder that run ``folder`` names in its config ``field`` as ``stored``
    (see :func:`run_path_candidates`).

    Raises:
        DataError: none of the candidates is a folder; the message names the field, the stored
            value, every path tried and ``hint`` (how to give the folder instead).
    """
    candidates = run_path_candidates(folder, stored)
    for path in candidates:
        if path.is_dir():
            return path
    tried = ", ".join(str(path) for path in candidates)
    raise DataError(
        f"run {folder}: its {field} folder {str(stored)!r} is not there (tried {tried})"
        + (f"; {hint}" if hint else "")
    )
