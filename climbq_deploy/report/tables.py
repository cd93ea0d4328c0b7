"""The report's tables as data: every cell holds the text shown and the value it came from
(file + key, or the formula and input of a computed value).

Formats (the text is the value rounded for display; report.json keeps the exact value):
accuracies in %, 2 decimals; agreements as fractions, 4 decimals; latencies in ms, 3 decimals;
images/s 1 decimal; seconds 1 decimal; counts, bytes, threads and bits as integers; booleans as
yes/no. A value absent from every input file is shown as ``not measured``; ``n/a`` marks a
value that does not apply (a null shot group, exact match of the NumPy reference itself).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from climbq_deploy.report.analysis import TOTAL_ERROR_METRIC, HomoVarWeights, WeightError
from climbq_deploy.report.collect import RunRecord, Sourced

NOT_MEASURED = "not measured"
NOT_APPLICABLE = "n/a"


@dataclass(frozen=True)
class Cell:
    """Shown text and, for a value, where it came from."""

    text: str
    source: Sourced | None = None

    def as_json(self) -> dict[str, Any]:
        if self.source is None:
            return {"shown": self.text}
        return {"shown": self.text, "value": self.source.value, **self.source.source()}


@dataclass
class Table:
    """A titled table; ``key`` names it in report.json."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": self.columns,
            "note": self.note,
            "rows": [[c.as_json() for c in row] for row in self.rows],
        }


def fmt_pct(v: float) -> str:
    return f"{v:.2f}"


def fmt_frac(v: float) -> str:
    return f"{v:.4f}"


def fmt_ms(v: float) -> str:
    return f"{v:.3f}"


def fmt_1(v: float) -> str:
    return f"{v:.1f}"


def fmt_int(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def fmt_bool(v: Any) -> str:
    return "yes" if v is True else "no" if v is False else str(v)


def cell(
    found: Sourced | None, fmt: Callable[[Any], str] = str, missing: str = NOT_MEASURED
) -> Cell:
    """A cell of ``found`` formatted with ``fmt``, or ``missing`` when there is no value."""
    return Cell(missing) if found is None else Cell(fmt(found.value), found)


def text(value: str) -> Cell:
    return Cell(value)


def accuracy_table(runs: Sequence[RunRecord]) -> Table:
    """Per-model accuracy from each run's metrics.json."""
    table = Table(
        "accuracy",
        "Per-model accuracy (balanced test set, final epoch)",
        [
            "run",
            "method",
            "W bits",
            "A bits",
            "loss",
            "class scaling",
            "top-1 (%)",
            "many (%)",
            "medium (%)",
            "few (%)",
            "epochs",
            "train time (s)",
        ],
    )
    for run in runs:
        table.rows.append(
            [
                text(run.name),
                cell(run.get("method")),
                cell(run.get("wbits"), fmt_int),
                cell(run.get("abits"), fmt_int),
                cell(run.get("loss")),
                cell(run.get("config.act_scaling"))
                if run.method in ("climbq", "climbq+")
                else text(NOT_APPLICABLE),
                cell(run.get("top1"), fmt_pct),
                *(cell(run.get(g), fmt_pct, NOT_APPLICABLE) for g in ("many", "medium", "few")),
                cell(run.get("epochs"), fmt_int),
                cell(run.get("seconds"), fmt_1),
            ]
        )
    table.note = (
        "many/medium/few: shot groups of the training counts (metrics.json); n/a: no "
        "class in that group."
    )
    return table


def _computed(value: float, file: str, key: str, how: str) -> Sourced:
    return Sourced(value, file, key, how)


def weight_error_table(items: Sequence[tuple[RunRecord, WeightError]]) -> Table:
    """Totals of the per-layer weight quantization error per quantized run."""
    table = Table(
        "weight_error",
        "Weight quantization error per run (totals over layers)",
        [
            "run",
            "method",
            "W bits",
            "class scaling",
            "layers",
            "E (%)",
            "sum of eps_l",
            "largest e_l (%)",
            "at layer",
        ],
    )
    for run, error in items:
        ckpt = str(run.folder / "checkpoint.pt")
        worst = max(error.layers, key=lambda layer: layer.relative, default=None)
        scaling = run.act_scaling if run.method in ("climbq", "climbq+") else NOT_APPLICABLE
        table.rows.append(
            [
                text(run.name),
                cell(run.get("method")),
                cell(run.get("wbits"), fmt_int),
                cell(run.get("config.act_scaling")) if scaling != NOT_APPLICABLE else text(scaling),
                Cell(str(len(error.layers))),
                cell(
                    _computed(error.total_relative, ckpt, "model.*.weight", TOTAL_ERROR_METRIC),
                    lambda v: f"{100 * v:.3f}",
                ),
                cell(
                    _computed(
                        error.total,
                        ckpt,
                        "model.*.weight",
                        "sum_l min_alpha ||W_l - alpha*W_hat_l||^2 (weight units^2)",
                    ),
                    lambda v: f"{v:.4g}",
                ),
                cell(
                    None
                    if worst is None
                    else _computed(worst.relative, ckpt, f"model.{worst.layer}.weight", "e_l"),
                    lambda v: f"{100 * v:.3f}",
                ),
                text(worst.layer if worst else NOT_MEASURED),
            ]
        )
    return table


def homovar_table(items: Sequence[tuple[RunRecord, HomoVarWeights]]) -> Table:
    """HomoVar weights per class (mean, min, max over batches) beside class-balanced ones."""
    table = Table(
        "homovar",
        "HomoVar class weights (sum over classes = K)",
        ["run", "class", "n_k", "HomoVar w_k (mean)", "min", "max", "class-balanced w_k"],
    )
    for run, w in items:
        ckpt = str(run.folder / "checkpoint.pt")
        how = (
            f"homovar_bounds weights on penultimate features, {w.batches} training batches of "
            f"{w.batch_size}, alpha={w.alpha}, beta={w.beta}, variant={w.variant}"
        )
        for k, n in enumerate(w.counts):
            key = f"class {k}"
            table.rows.append(
                [
                    text(run.name),
                    Cell(str(k)),
                    Cell(str(int(n))),
                    *(
                        cell(
                            _computed(float(arr[k]), ckpt, key, f"{stat} of {how}"),
                            lambda v: f"{v:.4f}",
                        )
                        for stat, arr in (("mean", w.mean), ("min", w.low), ("max", w.high))
                    ),
                    cell(
                        _computed(
                            float(w.class_balanced[k]),
                            ckpt,
                            key,
                            f"(1-beta)/(1-beta^n_k) normalised to sum K, beta={w.beta}",
                        ),
                        lambda v: f"{v:.4f}",
                    ),
                ]
            )
    return table


PAPER_SOURCE = "ClimbQ supplement (NeurIPS 2022), as quoted in docs/climbq-method.md §8"
# Method card §8: top-1 % of the supplement, keyed (dataset, arch, method, bits, gamma); W = A bits.
PAPER_TOP1: dict[tuple[str, str, str, int, int], float] = {
    **{
        ("cifar10-lt", "resnet20", "climbq+", b, g): v
        for (b, g), v in {(4, 50): 72.28, (4, 200): 61.69, (2, 50): 71.73, (2, 200): 61.06}.items()
    },
    **{
        ("syndigits-lt", "resnet20", "climbq+", b, g): v
        for b, row in {4: (96.45, 89.55, 80.70), 2: (95.75, 88.90, 80.55)}.items()
        for g, v in zip((10, 50, 200), row, strict=True)
    },
    **{
        ("syndigits-lt", "mobilenetv2", "climbq+", b, g): v
        for b, row in {4: (95.45, 83.50, 66.90), 2: (93.50, 83.20, 67.20)}.items()
        for g, v in zip((10, 50, 200), row, strict=True)
    },
    **{
        ("syndigits-lt", "resnet20", "climbq", 4, g): v
        for g, v in zip((10, 50, 200), (95.90, 88.07, 77.25), strict=True)
    },
}


def paper_table(runs: Sequence[RunRecord], gammas: dict[str, float | None]) -> Table | None:
    """This run's top-1 beside the paper's (§8) where dataset, arch, method, bits (W = A) and
    gamma match; None when no run matches. ``gammas`` maps run name to its dataset's gamma."""
    table = Table(
        "paper",
        "Against the paper's figures (method card §8)",
        ["run", "setting", "top-1 (%)", "paper top-1 (%)"],
    )
    for run in runs:
        gamma = gammas.get(run.name)
        m = run.metrics
        if gamma is None or m["wbits"] != m["abits"] or not float(gamma).is_integer():
            continue
        key = (str(m.get("dataset")), str(m["arch"]), run.method, int(m["wbits"]), int(gamma))
        if key not in PAPER_TOP1:
            continue
        setting = f"{key[0]} gamma {key[4]}, {key[1]}, {key[2]} {key[3]}-bit"
        paper = Sourced(PAPER_TOP1[key], PAPER_SOURCE, setting)
        table.rows.append(
            [text(run.name), text(setting), cell(run.get("top1"), fmt_pct), cell(paper, fmt_pct)]
        )
    table.note = (
        "The paper trains 50 QAT epochs on the authors' images; SynDigits-LT here is "
        "rendered by this toolkit, and short runs are not expected to reach the "
        "paper's figures."
    )
    return table if table.rows else None
