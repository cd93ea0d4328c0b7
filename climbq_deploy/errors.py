"""The toolkit's own exception types.

Every error a user can cause (a bad path, a corrupt file, an unsupported option) is raised as a
:class:`ClimbQError` subclass whose message names the offending file, layer, shape or value. The
CLI prints the message and exits non-zero; library users can catch :class:`ClimbQError`.
"""


class ClimbQError(Exception):
    """Base class of every error the toolkit raises on purpose."""

    exit_code = 2


class DataError(ClimbQError):
    """A dataset, image file, split list or archive is missing, malformed or inconsistent."""


class ConfigError(ClimbQError):
    """An option or combination of options is not supported (bits, gamma, arch, ...)."""


class ArtifactError(ClimbQError):
    """A saved file (artifact, checkpoint, dataset cache) is corrupt, truncated or too new."""


class LoweringError(ClimbQError):
    """A layer cannot be lowered exactly (names the layer, the value and why): a model that
    cannot become a (safe) integer program, or a program a target has no exact form for."""


class KernelError(DataError, ValueError):
    """Inputs outside a reference kernel's integer contract (they would overflow int32)."""


class WriteError(ClimbQError, OSError):
    """A file could not be written (a read-only folder, a full disk, a path below a file):
    ``cannot write PATH: reason``. Also an :class:`OSError` (``errno``, ``strerror``,
    ``filename``), for callers that catch those."""

    def __init__(self, path: object, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


class TargetUnavailableError(ConfigError):
    """A target's runtime or hardware is missing on this machine (e.g. TensorRT, a GPU); a
    distinct exit code (3) so that scripts can tell "cannot run here" from bad input."""

    exit_code = 3
