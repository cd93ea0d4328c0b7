"""Run folders as outputs: never written over their own inputs, never replaced unasked.

A run folder (``climbq train``, ``climbq calibrate``, ``climbq adjust-logits``) is a user's
result. A command that writes one refuses, before any work:

- an output folder that *is* one of its input runs (``calibrate FP --out FP`` would replace the
  full-precision checkpoint it reads);
- an output folder that already holds a run (``checkpoint.pt``), unless the caller continues it
  (``train --resume``) or asks to replace it (``--overwrite``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from climbq_deploy.errors import ConfigError

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
