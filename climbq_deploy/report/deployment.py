"""The report's answer first: which deployed model to ship, and how it compares with plain int8
on the same runtime; then the deployments in two narrow tables (accuracy; latency and size)
and the runs or targets that were not deployed, with the reason.

A *deployment* is one ``RUN/targets/<label>/`` (check.json and/or bench.json). Its *plain int8
counterpart* is a deployment with the same label (so the same target, kernels and options, as
the demo names them) of a plain int8 model: a run of ``method ptq`` with 8-bit weights and
activations (``climbq calibrate FP --method ptq-int8``: per-channel int8 weights, per-tensor
int8 activations), or a target result whose check.json or bench.json says
``"form": "plain-int8"`` (a benchmark's int8 yardstick of the same shape). None is invented:
where no counterpart was given, the report says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from climbq_deploy.report.collect import (
    BENCH_FILE,
    CHECK_FILE,
    NotDeployed,
    RunRecord,
    Sourced,
    TargetResult,
    artifact_bytes,
)
from climbq_deploy.report.tables import (
    NOT_APPLICABLE,
    NOT_MEASURED,
    Cell,
    Table,
    cell,
    fmt_1,
    fmt_bool,
    fmt_frac,
    fmt_int,
    fmt_ms,
    fmt_pct,
    text,
)

PLAIN_INT8_FORM = "plain-int8"


@dataclass(frozen=True)
class Deployment:
    """One (run, target result)."""

    run: RunRecord
    target: TargetResult

    @property
    def name(self) -> str:
        return f"{self.run.name} · {self.target.label}"

    @property
    def plain_int8(self) -> bool:
        """A plain int8 model (module docstring): the yardstick, not a candidate to ship."""
        form = self.target.first(("check", "form"), ("bench", "form"))
        if form is not None and form.value == PLAIN_INT8_FORM:
            return True
        m = self.run.metrics
        return self.run.method == "ptq" and m.get("wbits") == 8 and m.get("abits") == 8

    @property
    def top1(self) -> Sourced | None:
        """Deployed top-1 (%): check.json's ``ref_top1``, else bench.json's ``top1``."""
        return self.target.number("check", "ref_top1") or self.target.number("bench", "top1")

    @property
    def p50(self) -> Sourced | None:
        return self.target.number("bench", "latency_ms.p50")

    @property
    def exact(self) -> bool | None:
        """check.json's ``exact_match`` (True for the NumPy reference itself); None unknown."""
        found = self.target.get("check", "exact_match")
        if found is not None:
            return found.value is True
        return True if _reference_check(self.target) else None


def deployments(runs: Sequence[RunRecord]) -> list[Deployment]:
    return [Deployment(run, target) for run in runs for target in run.targets]


def plain_int8_for(ours: Deployment, every: Sequence[Deployment]) -> Deployment | None:
    """The plain int8 counterpart of ``ours`` on the same runtime (same label), if given."""
    return next(
        (
            d
            for d in every
            if d.plain_int8 and d is not ours and d.target.label == ours.target.label
        ),
        None,
    )


def ship_choice(every: Sequence[Deployment]) -> Deployment | None:
    """The deployment to ship: among those whose deployed top-1 is known and whose artifact is
    not known to differ from the NumPy reference (plain int8 yardsticks only where nothing
    else was deployed), the highest deployed top-1, then the lowest p50 latency (unmeasured
    last), then the order given."""
    known = [d for d in every if d.top1 is not None and d.exact is not False]
    candidates = [d for d in known if not d.plain_int8] or known
    if not candidates:
        return None

    def rank(d: Deployment) -> tuple[float, float]:
        top1, p50 = d.top1, d.p50
        return (
            -float(top1.value) if top1 is not None else 0.0,
            float(p50.value) if p50 is not None else float("inf"),
        )

    return min(candidates, key=rank)


def _reference_check(target: TargetResult) -> bool:
    """True when check.json is that of the NumPy reference target itself."""
    from climbq_deploy.targets import TARGETS

    name = target.get("check", "target")
    return name is not None and name.value in TARGETS and bool(TARGETS[name.value].reference)


def _missing(target: TargetResult, which: str) -> str:
    """What a cell of ``which`` file says without a value: ``no bench.json`` where the target
    has no such file, else ``not measured``."""
    record = target.check if which == "check" else target.bench
    name = CHECK_FILE if which == "check" else BENCH_FILE
    return NOT_MEASURED if record is not None else f"no {name}"


def _exact_cell(d: Deployment) -> Cell:
    found = d.target.get("check", "exact_match")
    if found is not None:
        return Cell(fmt_bool(found.value), found)
    if _reference_check(d.target):
        return text(f"{NOT_APPLICABLE} (reference)")
    return text(_missing(d.target, "check"))


def _shown_name(d: Deployment | None, fallback: str) -> Cell:
    return text(fallback if d is None else d.name)


def summary_table(
    ship: Deployment, plain: Deployment | None, full_precision: RunRecord | None
) -> Table:
    """The model to ship beside plain int8 on its runtime and the full-precision model."""
    columns = ["", "ship", "plain int8, same runtime"]
    if full_precision is not None:
        columns.append("full precision (torch)")
    table = Table("summary", "Summary: the model to ship", columns)

    def row(label: str, ours: Cell, theirs: Cell | None, fp: Cell | None) -> None:
        missing = f"none on {ship.target.label}" if not table.rows else NOT_MEASURED
        cells = [text(label), ours, theirs or text(missing)]
        if full_precision is not None:
            cells.append(fp or text(f"{NOT_APPLICABLE} (not deployed)"))
        table.rows.append(cells)

    fp_top1 = None if full_precision is None else cell(full_precision.get("top1"), fmt_pct)
    row(
        "model",
        _shown_name(ship, ""),
        None if plain is None else _shown_name(plain, ""),
        None if full_precision is None else text(full_precision.name),
    )
    row(
        "top-1 on the test set (%)",
        cell(ship.top1, fmt_pct),
        None if plain is None else cell(plain.top1, fmt_pct),
        fp_top1,
    )
    row(
        "exact match with its NumPy reference",
        _exact_cell(ship),
        None if plain is None else _exact_cell(plain),
        None,
    )
    row(
        "latency p50 (ms per invoke)",
        cell(ship.p50, fmt_ms, _missing(ship.target, "bench")),
        None if plain is None else cell(plain.p50, fmt_ms, _missing(plain.target, "bench")),
        None,
    )
    images = ("bench", "images_per_second")
    row(
        "images/s",
        cell(ship.target.number(*images), fmt_1, _missing(ship.target, "bench")),
        None if plain is None else cell(plain.target.number(*images), fmt_1),
        None,
    )
    row(
        "artifact (bytes)",
        cell(artifact_bytes(ship.target), fmt_int),
        None if plain is None else cell(artifact_bytes(plain.target), fmt_int),
        None,
    )
    table.note = (
        "ship: the highest deployed top-1 among deployments that match their NumPy reference, "
        "then the lowest p50; plain int8: a w8a8 PTQ run (or a plain-int8 yardstick) deployed "
        "to the same target label; full precision: the fp32 run's torch top-1."
    )
    return table


def summary_text(
    ship: Deployment | None, plain: Deployment | None, every: Sequence[Deployment]
) -> str:
    """The summary's opening sentences (the answer, and what is not measured, with why)."""
    if ship is None:
        if not every:
            return (
                "Nothing to ship yet: no run has a deployed target (RUN/targets/<label>/"
                "check.json or bench.json, as `climbq demo` writes them). Export, check and "
                "bench a quantized run to get this answer."
            )
        return (
            "Nothing to ship: no deployment has both a deployed top-1 and an artifact that "
            "matches its NumPy reference (see the deployment tables below)."
        )
    parts = [f"Ship {ship.run.name} as {ship.target.label}"]
    kernels = ship.target.first(("check", "kernels"), ("bench", "kernels"))
    if kernels is not None:
        parts[0] += f" ({kernels.value})"
    top1 = ship.top1
    parts.append(f"deployed top-1 {fmt_pct(top1.value)}%" if top1 else "")
    if ship.p50 is not None:
        threads = ship.target.number("bench", "threads")
        batch = ship.target.number("bench", "batch")
        where = ", ".join(
            x
            for x in (
                None if batch is None else f"batch {fmt_int(batch.value)}",
                None if threads is None else f"{fmt_int(threads.value)} thread(s)",
            )
            if x
        )
        parts.append(f"p50 {fmt_ms(ship.p50.value)} ms" + (f" ({where})" if where else ""))
    size = artifact_bytes(ship.target)
    if size is not None:
        parts.append(f"{fmt_int(size.value)} bytes")
    sentence = parts[0] + ": " + ", ".join(p for p in parts[1:] if p) + "."
    if plain is None:
        sentence += (
            f" Plain int8 on {ship.target.label}: not measured, none of the runs given is a "
            "plain int8 model deployed there. To compare, make one with `climbq calibrate "
            "FP_RUN --method ptq-int8 --out RUN8` and give RUN8 with its "
            f"RUN8/targets/{ship.target.label}/check.json and bench.json (the records of "
            "`climbq check --json` and `climbq bench --json`)."
        )
        return sentence
    sentence += f" Plain int8 on the same runtime ({plain.name}):"
    compared = []
    if top1 is not None and plain.top1 is not None:
        delta = float(top1.value) - float(plain.top1.value)
        compared.append(f"top-1 {fmt_pct(plain.top1.value)}% ({delta:+.2f} points for ours)")
    if ship.p50 is not None and plain.p50 is not None and float(plain.p50.value) > 0:
        ratio = float(ship.p50.value) / float(plain.p50.value)
        compared.append(f"p50 {fmt_ms(plain.p50.value)} ms (ours {ratio:.2f}x its latency)")
    else:
        compared.append("latency not measured for both")
    ours_size, their_size = artifact_bytes(ship.target), artifact_bytes(plain.target)
    if ours_size is not None and their_size is not None and float(their_size.value) > 0:
        share = float(ours_size.value) / float(their_size.value)
        compared.append(f"{fmt_int(their_size.value)} bytes (ours {100 * share:.0f}% of it)")
    return sentence + " " + ", ".join(compared) + "."


ACCURACY_COLUMNS = [
    "run",
    "target",
    "kernels",
    "images",
    "exact match",
    "top-1 agreement",
    "code agreement",
    "deployed top-1 (%)",
    "torch top-1 (%)",
]
SPEED_COLUMNS = [
    "run",
    "target",
    "runtime",
    "threads",
    "batch",
    "artifact (bytes)",
    "p50 (ms)",
    "plain int8 p50 (ms)",
    "p90 (ms)",
    "p99 (ms)",
    "images/s",
]


def accuracy_table(every: Sequence[Deployment]) -> Table:
    """Per deployment: agreement with the torch model and the NumPy reference (check.json)."""
    table = Table("deployed_accuracy", "Deployed accuracy (check.json)", list(ACCURACY_COLUMNS))
    for d in every:
        t, missing = d.target, _missing(d.target, "check")
        table.rows.append(
            [
                text(d.run.name),
                text(t.label),
                cell(t.first(("check", "kernels"), ("bench", "kernels"))),
                cell(t.number("check", "n_images"), fmt_int, missing),
                _exact_cell(d),
                cell(t.number("check", "top1_agreement"), fmt_frac, missing),
                cell(t.number("check", "code_agreement"), fmt_frac, missing),
                cell(d.top1, fmt_pct, missing),
                cell(t.number("check", "torch_top1"), fmt_pct, missing),
            ]
        )
    table.note = (
        "top-1 / code agreement: share of test images (codes) where the target equals the "
        "torch model; exact match: the target equals the NumPy reference of its integer "
        "program bit for bit; deployed top-1: the target's own (check.json ref_top1, else "
        "bench.json top1)."
    )
    return table


def speed_table(every: Sequence[Deployment]) -> Table:
    """Per deployment: latency, throughput and file size (bench.json), with the plain int8
    counterpart's p50 on the same runtime beside ours."""
    table = Table("deployed_speed", "Deployed latency and size (bench.json)", list(SPEED_COLUMNS))
    for d in every:
        t, missing = d.target, _missing(d.target, "bench")
        plain = None if d.plain_int8 else plain_int8_for(d, every)
        if d.plain_int8:
            plain_cell = text(f"{NOT_APPLICABLE} (is plain int8)")
        elif plain is None:
            plain_cell = text("none given")
        else:
            plain_cell = cell(plain.p50, fmt_ms, _missing(plain.target, "bench"))
        table.rows.append(
            [
                text(d.run.name),
                text(t.label),
                cell(t.first(("bench", "runtime"), ("bench", "runtime_version")), str, missing),
                cell(t.number("bench", "threads"), fmt_int, missing),
                cell(t.number("bench", "batch"), fmt_int, missing),
                cell(artifact_bytes(t), fmt_int),
                cell(d.p50, fmt_ms, missing),
                plain_cell,
                *(
                    cell(t.number("bench", f"latency_ms.{q}"), fmt_ms, missing)
                    for q in ("p90", "p99")
                ),
                cell(t.number("bench", "images_per_second"), fmt_1, missing),
            ]
        )
    table.note = (
        "latency per invoke of the bench's batch; plain int8 p50: the plain int8 model "
        "deployed to the same target label, where one was given."
    )
    return table


def not_deployed_table(items: Sequence[NotDeployed]) -> Table:
    """Runs without target results, and targets that could not run, with the reason."""
    table = Table("not_deployed", "Not deployed", ["run", "target", "reason"])
    for item in items:
        table.rows.append(
            [text(item.run), text(item.label or "any"), Cell(str(item.reason.value), item.reason)]
        )
    table.note = (
        "reasons from the demo's summary.json where the run comes from `climbq demo`, else "
        "from the run's own files."
    )
    return table
