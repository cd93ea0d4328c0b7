"""What every target provides: export a lowered program, load it, run it on images, time it.

``check``, ``bench`` and the CLI talk to targets only through :class:`Target` and
:class:`Runner`, so each backend folder stays thin and alike. A target is one class with
class attributes (``name``, ``suffixes``, ``input_bits``, ...), a frozen, validated
``Options`` dataclass (subclass of :class:`TargetOptions`, fields declared with
:func:`option`) and the methods of :class:`Target`; :class:`TargetBase` gives the common
constructor and defaults. The CLI makes one flag per ``Options`` field (see
:mod:`climbq_deploy.targets`, which holds the registry).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from climbq_deploy.errors import ConfigError
from climbq_deploy.ir.graph import Graph

Stage = Literal["export", "run"]


@dataclass
class RunOutput:
    """``logits`` (N, classes) float64 and, when asked, the integer activation outputs
    ``X_int`` (NHWC) of every quantized layer by its training-side module name."""

    logits: np.ndarray
    codes: dict[str, np.ndarray] = field(default_factory=dict)
    rectified: frozenset[str] = frozenset()
    """Layers whose codes are reported after the ReLU that is their only consumer: a target
    that fuses that ReLU into the layer (TFLite's fused op) never stores the code before it.
    Compare those with ``max(code, 0)`` (:meth:`expected`); the next layer reads exactly
    that, so exactness downstream is still checked in full."""

    def expected(self, source: str, codes: np.ndarray) -> np.ndarray:
        """``codes`` (the reference's for layer ``source``) as this output reports them."""
        return np.maximum(codes, 0) if source in self.rectified else codes


class Runner(Protocol):
    graph: Graph  # the integer program this runner computes (the oracle runs the same)

    def run(self, images: np.ndarray, with_codes: bool = False) -> RunOutput: ...


def option(
    default: Any, *, help: str, choices: tuple[Any, ...] | None = None, stage: Stage = "run"
) -> Any:
    """A field of a target's ``Options``: its default, the values it may take (``choices``),
    one line of ``help`` (the CLI flag's help text), and the ``stage`` it affects:
    ``"export"`` (what is written: ``climbq export`` and ``check``'s fresh export) or
    ``"run"`` (how an artifact is run: ``climbq check`` and ``bench``)."""
    if stage not in ("export", "run"):
        raise ConfigError(f"an option's stage is 'export' or 'run', not {stage!r}")
    return field(default=default, metadata={"help": help, "choices": choices, "stage": stage})


HEADS = ("float", "int8", "int4")  # the classifier heads a program can have (``--head``)
BITS = tuple(range(2, 9))  # the quantized bit widths a run can have (2..8)


@dataclass(frozen=True)
class Lowering:
    """One row of what a target lowers exactly: runs of a method in ``methods`` with weight
    bits in ``wbits`` and activation bits in ``abits`` (less the ``(wbits, abits)`` pairs in
    ``except_pairs``) and a classifier head in ``heads``. A target declares its rows
    (:attr:`TargetBase.lowers`) from exports actually tried; ``export`` and ``check`` refuse
    a run outside every row before lowering it (:func:`climbq_deploy.targets.refuse_unlowerable`).
    """

    methods: tuple[str, ...]
    wbits: tuple[int, ...] = BITS
    abits: tuple[int, ...] = BITS
    heads: tuple[str, ...] = HEADS
    except_pairs: tuple[tuple[int, int], ...] = ()

    def covers(self, method: str, wbits: int, abits: int, head: str) -> bool:
        return (
            method in self.methods
            and wbits in self.wbits
            and abits in self.abits
            and (wbits, abits) not in self.except_pairs
            and head in self.heads
        )

    def __str__(self) -> str:
        text = (
            f"{'/'.join(self.methods)} w{_span(self.wbits)} a{_span(self.abits)}"
            f"{''.join(f' not w{w}a{a}' for w, a in self.except_pairs)}"
        )
        return text if self.heads == HEADS else f"{text} (head {'/'.join(self.heads)} only)"


def _span(bits: tuple[int, ...]) -> str:
    """``2-7`` for a run of consecutive widths, else ``4,8``."""
    consecutive = list(bits) == list(range(bits[0], bits[-1] + 1))
    if consecutive and len(bits) > 1:
        return f"{bits[0]}-{bits[-1]}"
    return ",".join(map(str, bits))


def weights_option(help: str) -> Any:
    """The ``weights`` export option (``--weights int8|int4``, default int8) of a target that
    can store weights as INT4; ``help`` says which weights become INT4 there."""
    return option("int8", choices=("int8", "int4"), help=help, stage="export")


@dataclass(frozen=True)
class TargetOptions:
    """Base of every target's ``Options``: ``__post_init__`` checks each field against its
    ``choices`` and the type of its default (bool, int, str), raising ConfigError."""

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value, choices = getattr(self, spec.name), spec.metadata.get("choices")
            if choices is not None and value not in choices:
                raise ConfigError(f"{spec.name} must be one of {choices}, got {value!r}")
            kind = type(spec.default)
            if kind in (bool, int, str) and type(value) is not kind:
                raise ConfigError(f"{spec.name} must be a {kind.__name__}, got {value!r}")


@runtime_checkable
class Target(Protocol):
    """The protocol. Class attributes: ``name`` (``--target NAME``), ``summary`` (one line
    for ``--help``), ``suffixes`` (the artifact file suffixes it reads, ``bench`` picks the
    target by them), ``Options`` (frozen :class:`TargetOptions` dataclass), ``input_bits``
    (width of the program's integer input it reads), ``exact`` (``check`` fails loudly unless
    every code equals the NumPy reference's), ``reference`` (the target *is* that reference:
    nothing to compare it with), ``rank`` (position in listings: help, error messages).
    Optional: ``lowers``, the :class:`Lowering` rows of the runs it lowers exactly (absent or
    None: every run the integer IR lowers)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]]
    Options: ClassVar[type[TargetOptions]]
    input_bits: ClassVar[int]
    exact: ClassVar[bool]
    reference: ClassVar[bool]
    rank: ClassVar[int]
    options: TargetOptions

    @property
    def suffix(self) -> str:
        """The default artifact suffix under these options (``RUN/model<suffix>``)."""
        ...

    @property
    def engine(self) -> str:
        """What runs the artifact under these options (kernels, runtime; else the target's
        name): ``check`` and ``bench`` record it as ``kernels``."""
        ...

    def unavailable(self) -> str | None:
        """None when this machine can run the target, else the reason (one line)."""
        ...

    def export(self, graph: Graph, out: Path) -> Path:
        """Write ``graph`` as this target's artifact at ``out`` (atomically); returns it."""
        ...

    def load(self, path: Path, *, threads: int | None = None) -> Runner:
        """A runner of the artifact at ``path``; ``threads``: the runtime's thread count
        where it takes one (None: its default)."""
        ...

    def bench(
        self, path: Path, *, batch: int, threads: int, warmup: int, repeats: int
    ) -> dict[str, Any]:
        """Latency of ``repeats`` timed invokes of one batch after ``warmup`` ones: the
        record of :func:`climbq_deploy.bench.bench_artifact` without its dataset part."""
        ...


class TargetBase:
    """Common parts of the built-in targets: ``Target(*values, **options)`` builds
    ``self.options = self.Options(*values, **options)`` (positional values fill the fields in
    order), and defaults for the optional class attributes."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]]
    Options: ClassVar[type[TargetOptions]] = TargetOptions
    input_bits: ClassVar[int] = 32
    exact: ClassVar[bool] = False
    reference: ClassVar[bool] = False
    rank: ClassVar[int] = 100
    lowers: ClassVar[tuple[Lowering, ...] | None] = None  # None: whatever the IR lowers

    def __init__(self, *values: Any, **options: Any) -> None:
        names = [f.name for f in dataclasses.fields(self.Options)]
        if len(values) > len(names):
            raise ConfigError(
                f"target {self.name!r} takes {len(names)} option(s) ({', '.join(names)}), "
                f"got {len(values)} values"
            )
        unknown = sorted(set(options) - set(names))
        if unknown:
            known = ", ".join(names) or "none"
            raise ConfigError(f"target {self.name!r} has no option {unknown[0]!r} (it has {known})")
        self.options = self.Options(*values, **options)

    @property
    def suffix(self) -> str:
        return self.suffixes[0]

    @property
    def engine(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options})"
