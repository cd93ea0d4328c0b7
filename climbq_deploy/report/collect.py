"""Read training runs and their per-target results into typed records, keeping the source of
every value (file + key) so that the report can say where each number came from.

A run folder (``climbq train --out RUN``) holds ``metrics.json`` and ``checkpoint.pt``; after
``climbq demo`` it may also hold ``targets/<label>/check.json`` (the record of
:func:`climbq_deploy.check.check_run`) and ``targets/<label>/bench.json`` (the record of
``climbq bench``). Either target file may be missing: its cells are then "not measured".
Nothing is invented or defaulted: a value absent from every file stays ``None``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from climbq_deploy.errors import ArtifactError, ConfigError

METRICS_FILE = "metrics.json"
CHECK_FILE = "check.json"
BENCH_FILE = "bench.json"
TARGETS_DIR = "targets"
# metrics.json keys the report cannot do without.
REQUIRED_METRICS = ("top1", "per_class", "train_counts", "method", "arch", "wbits", "abits")


@dataclass(frozen=True)
class Sourced:
    """One value as read from a file: ``value`` is ``file[key]`` (``key`` a dotted path with
    list indices in brackets, e.g. ``latency_ms.p50`` or ``per_class[3]``). For a computed
    value ``how`` states the formula and ``file``/``key`` name its input."""

    value: Any
    file: str
    key: str
    how: str | None = None

    def source(self) -> dict[str, str]:
        """``{"file", "key"}`` (+ ``"computed"``) for report.json."""
        out = {"file": self.file, "key": self.key}
        if self.how:
            out["computed"] = self.how
        return out


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object.

    Raises:
        ArtifactError: the file is missing, unreadable, not JSON, or not a JSON object.
    """
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} cannot be read: {exc}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path} must hold a JSON object, found {type(obj).__name__}")
    return obj


def lookup(obj: dict[str, Any], key: str) -> Any:
    """``obj`` at a dotted ``key`` (``a.b``); ``None`` where any part is missing."""
    value: Any = obj
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TargetResult:
    """One deployed target of a run: ``RUN/targets/<label>/{check,bench}.json`` (each may be
    absent: ``None``)."""

    label: str
    folder: Path
    check: dict[str, Any] | None
    bench: dict[str, Any] | None

    def get(self, which: str, key: str) -> Sourced | None:
        """``which`` ("check" or "bench") file's value at ``key``; None if absent or null."""
        record = self.check if which == "check" else self.bench
        if record is None:
            return None
        value = lookup(record, key)
        if value is None:
            return None
        name = CHECK_FILE if which == "check" else BENCH_FILE
        return Sourced(value, str(self.folder / name), key)

    def number(self, which: str, key: str) -> Sourced | None:
        """Like :meth:`get` but only a finite number counts (a bool or string is refused).

        Raises:
            ArtifactError: the key holds something other than a number or null.
        """
        found = self.get(which, key)
        if found is not None and not _is_number(found.value):
            raise ArtifactError(f"{found.file}: {key} must be a number, got {found.value!r}")
        return found

    def first(self, *choices: tuple[str, str]) -> Sourced | None:
        """The first of ``(which, key)`` present, else None."""
        for which, key in choices:
            found = self.get(which, key)
            if found is not None:
                return found
        return None


@dataclass(frozen=True)
class RunRecord:
    """A training run as the report sees it: ``metrics.json`` plus its target results."""

    folder: Path
    name: str
    metrics: dict[str, Any]
    targets: list[TargetResult] = field(default_factory=list)

    @property
    def metrics_file(self) -> str:
        return str(self.folder / METRICS_FILE)

    def get(self, key: str) -> Sourced | None:
        """metrics.json's value at dotted ``key``; None if absent or null."""
        value = lookup(self.metrics, key)
        return None if value is None else Sourced(value, self.metrics_file, key)

    def series(self, key: str) -> list[Sourced]:
        """Each entry of the list ``metrics[key]`` with its own key ``key[i]``."""
        return [
            Sourced(v, self.metrics_file, f"{key}[{i}]") for i, v in enumerate(self.metrics[key])
        ]

    @property
    def method(self) -> str:
        return str(self.metrics["method"])

    @property
    def loss(self) -> str | None:
        return self.metrics.get("loss")

    @property
    def act_scaling(self) -> str | None:
        return lookup(self.metrics, "config.act_scaling")

    @property
    def quantized(self) -> bool:
        return self.method != "fp32" and 32 not in (self.metrics["wbits"], self.metrics["abits"])

    @property
    def label(self) -> str:
        """Short description: ``climbq+ w4a4`` or ``fp32``."""
        if not self.quantized:
            return self.method
        return f"{self.method} w{self.metrics['wbits']}a{self.metrics['abits']}"


def _check_metrics(metrics: dict[str, Any], path: Path) -> None:
    for key in REQUIRED_METRICS:
        if key not in metrics:
            raise ArtifactError(f"{path} has no {key!r}; is it a metrics.json of `climbq train`?")
    for key in ("per_class", "train_counts"):
        values = metrics[key]
        if not isinstance(values, list) or not values:
            raise ArtifactError(f"{path}: {key} must be a non-empty list, got {values!r}")
        bad = [i for i, v in enumerate(values) if not _is_number(v)]
        if bad:
            raise ArtifactError(f"{path}: {key}[{bad[0]}] is not a number ({values[bad[0]]!r})")
    if len(metrics["per_class"]) != len(metrics["train_counts"]):
        raise ArtifactError(
            f"{path}: per_class has {len(metrics['per_class'])} classes but train_counts "
            f"{len(metrics['train_counts'])}"
        )
    for key in ("top1", "many", "medium", "few", "epochs", "seconds"):
        value = metrics.get(key)
        if value is not None and not _is_number(value):
            raise ArtifactError(f"{path}: {key} must be a number or null, got {value!r}")


def read_targets(folder: Path) -> list[TargetResult]:
    """Every ``folder/targets/<label>/`` holding a check.json or bench.json, sorted by label."""
    root = folder / TARGETS_DIR
    if not root.is_dir():
        return []
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        check = read_json_object(sub / CHECK_FILE) if (sub / CHECK_FILE).exists() else None
        bench = read_json_object(sub / BENCH_FILE) if (sub / BENCH_FILE).exists() else None
        if check is not None or bench is not None:
            out.append(TargetResult(sub.name, sub, check, bench))
    return out


def read_run(folder: str | Path) -> RunRecord:
    """Read one run folder's metrics.json and target results.

    Raises:
        ArtifactError: the folder or its metrics.json is missing, or a JSON file is corrupt or
            lacks what the report needs (the message names the file).
    """
    folder = Path(folder)
    if not folder.exists():
        raise ArtifactError(f"run folder {folder} does not exist")
    if not folder.is_dir():
        raise ArtifactError(f"{folder} is a file, not a run folder (made by `climbq train`)")
    path = folder / METRICS_FILE
    if not path.is_file():
        raise ArtifactError(f"{folder} is not a training run: no {path}")
    metrics = read_json_object(path)
    _check_metrics(metrics, path)
    return RunRecord(folder, folder.name, metrics, read_targets(folder))


def read_runs(folders: list[str | Path]) -> list[RunRecord]:
    """Read runs in the order given; names are folder names (with the parent folder where two
    runs share a name).

    Raises:
        ConfigError: no run, or the same folder given twice.
        ArtifactError: see :func:`read_run`.
    """
    if not folders:
        raise ConfigError("give at least one RUN folder")
    resolved = [Path(f).resolve() for f in folders]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise ConfigError(f"run folder {folders[i]} is given twice")
    runs = [read_run(f) for f in folders]
    names = [r.name for r in runs]
    return [
        RunRecord(r.folder, f"{r.folder.parent.name}/{r.name}", r.metrics, r.targets)
        if names.count(r.name) > 1
        else r
        for r in runs
    ]


def artifact_bytes(target: TargetResult) -> Sourced | None:
    """The artifact's size in bytes: a ``bytes``/``artifact_bytes`` key of check.json or
    bench.json, else the size of the file named by check.json ``artifact`` / bench.json
    ``model`` if it exists (source: that file, key ``st_size``); None if unknown."""
    for which in ("check", "bench"):
        for key in ("artifact_bytes", "bytes"):
            found = target.number(which, key)
            if found is not None:
                return found
    for which, key in (("check", "artifact"), ("bench", "model")):
        found = target.get(which, key)
        if found is None or not isinstance(found.value, str):
            continue
        named = Path(found.value)
        run_folder = target.folder.parent.parent
        for candidate in (named, target.folder / named.name, run_folder / named.name):
            if candidate.is_file():
                return Sourced(candidate.stat().st_size, str(candidate), "st_size")
    return None


SUMMARY_FILE = "summary.json"  # `climbq demo`'s record, in DIR beside DIR/runs/<run>


@dataclass(frozen=True)
class NotDeployed:
    """Why a run, or one target of it (``label``), has no measurements: the reason a demo's
    summary.json gives (``source`` its file and key), else one the report infers."""

    run: str
    label: str | None
    reason: Sourced


def _demo_summary(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The summary.json of the demo whose run ``folder`` is (``DIR/runs/<run>``), if any."""
    path = folder.resolve().parent.parent / SUMMARY_FILE
    if not path.is_file():
        return None
    summary = read_json_object(path)
    return path, summary


def not_deployed(runs: list[RunRecord]) -> list[NotDeployed]:
    """The runs without any target result, and the targets a demo could not run here, each
    with its reason: summary.json's ``not_deployed[i].reason`` and ``targets[i].reason`` (a
    target whose status is not ok) where the run comes from ``climbq demo``; else, for a run
    without targets, what its files show (a full-precision run has no integer program; any
    other was not exported, checked or benchmarked into ``RUN/targets/<label>/``)."""
    found: list[NotDeployed] = []
    for run in runs:
        known = _demo_summary(run.folder)
        demo_name = run.folder.name
        reasons: list[NotDeployed] = []
        if known is not None:
            path, summary = known
            for key in ("not_deployed", "targets"):
                entries = summary.get(key)
                for i, entry in enumerate(entries if isinstance(entries, list) else []):
                    if not isinstance(entry, dict) or entry.get("model") != demo_name:
                        continue
                    if key == "targets" and entry.get("status") == "ok":
                        continue
                    reason = entry.get("reason")
                    if isinstance(reason, str) and reason:
                        label = entry.get("label") if key == "targets" else None
                        source = Sourced(reason, str(path), f"{key}[{i}].reason")
                        reasons.append(NotDeployed(run.name, label, source))
        if not run.targets and not any(r.label is None for r in reasons):
            reasons.insert(0, NotDeployed(run.name, None, _inferred_reason(run)))
        found += reasons
    return found


def _inferred_reason(run: RunRecord) -> Sourced:
    if not run.quantized:
        text = "full precision: no integer program to deploy (the accuracy reference)"
        return Sourced(text, run.metrics_file, "method", "method fp32 or 32 bits")
    text = f"no {run.folder / TARGETS_DIR}/<label>/check.json or bench.json: not deployed"
    return Sourced(text, str(run.folder / TARGETS_DIR), "", "no target results found")
