"""``make_report(RUNS, out)``: read runs, compute the weight error and HomoVar weights, draw the
four plots, and write report.md, report.html and report.json into ``out``.

The report leads with the answer (the model to ship, against plain int8 on its runtime), then
the deployments and what was not deployed (with why), then accuracy, then the science (weight
quantization error, HomoVar class weights)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy import __version__
from climbq_deploy.data.dataset import ImageDataset, load_dataset, read_meta
from climbq_deploy.export import TrainedRun, load_run
from climbq_deploy.fileio import write_json
from climbq_deploy.losses import class_balanced_weights
from climbq_deploy.report import deployment, plots
from climbq_deploy.report.analysis import (
    TOTAL_ERROR_METRIC,
    WEIGHT_ERROR_METRIC,
    HomoVarWeights,
    WeightError,
    homovar_weights,
    weight_quant_errors,
)
from climbq_deploy.report.collect import RunRecord, Sourced, not_deployed, read_runs
from climbq_deploy.report.render import Block, Heading, Image, Paragraph, to_html, to_markdown
from climbq_deploy.report.render import write_text as write_text_file
from climbq_deploy.report.tables import (
    NOT_MEASURED,
    Table,
    accuracy_table,
    homovar_table,
    paper_table,
    weight_error_table,
)

PLOT_FILES = (
    "per_class_accuracy.png",
    "weight_quant_error.png",
    "homovar_weights.png",
    "targets.png",
)
DEFAULT_BETA = 0.999


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`make_report` wrote."""

    markdown: Path
    html: Path
    json: Path
    plots: list[Path]


@dataclass
class _Analysed:
    record: RunRecord
    run: TrainedRun | None = None
    error: WeightError | None = None
    homovar: HomoVarWeights | None = None
    gamma: float | None = None


def _log(message: str, progress: bool) -> None:
    if progress:
        print(f"report: {message}", file=sys.stderr, flush=True)


def _analyse(records: list[RunRecord], data: Path | None, progress: bool) -> list[_Analysed]:
    """Load the model of every quantized or HomoVar run and compute what the plots need."""
    datasets: dict[str, ImageDataset] = {}
    out = []
    for record in records:
        item = _Analysed(record)
        homovar = record.loss == "homovar"
        if record.quantized or homovar:
            _log(f"loading {record.folder}", progress)
            item.run = load_run(record.folder, data)
            folder = str(data if data is not None else item.run.config.data)
            item.gamma = read_meta(folder).get("info", {}).get("gamma")
            if record.quantized:
                item.error = weight_quant_errors(item.run.model)
            if homovar:
                _log(f"HomoVar weights of {record.name} on its training set", progress)
                if folder not in datasets:
                    datasets[folder] = load_dataset(folder)
                item.homovar = homovar_weights(item.run, datasets[folder])
        out.append(item)
    return out


def _scaling(record: RunRecord) -> str:
    if record.method not in ("climbq", "climbq+"):
        return "n/a"
    return "on" if record.act_scaling == "faithful" else "off"


def _sourced(found: Sourced | None) -> dict[str, Any] | str:
    return NOT_MEASURED if found is None else {"value": found.value, **found.source()}


def _plot_accuracy(records: list[RunRecord], out: Path) -> tuple[Path, dict[str, Any]]:
    counts = records[0].metrics["train_counts"]
    same = all(r.metrics["train_counts"] == counts for r in records)
    path = plots.per_class_accuracy(
        out / PLOT_FILES[0],
        [r.name for r in records],
        [r.metrics["per_class"] for r in records],
        counts if same else None,
    )
    series = [
        {
            "run": r.name,
            "values": [_sourced(s) for s in r.series("per_class")],
            "train_counts": [_sourced(s) for s in r.series("train_counts")],
        }
        for r in records
    ]
    return path, {"file": path.name, "series": series}


def _plot_weight_error(items: list[_Analysed], out: Path) -> tuple[Path, dict[str, Any]]:
    quantized = [i for i in items if i.error is not None]
    series = [plots.ErrorSeries(i.record.name, _scaling(i.record), i.error) for i in quantized]
    path = plots.weight_quant_error(out / PLOT_FILES[1], series, WEIGHT_ERROR_METRIC)
    data = [
        {
            "run": i.record.name,
            "class_scaling": s.scaling,
            "file": str(i.record.folder / "checkpoint.pt"),
            "total_relative": s.error.total_relative,
            "total": s.error.total,
            "layers": [
                {
                    "layer": layer.layer,
                    "key": f"model.{layer.layer}.weight",
                    "relative": layer.relative,
                    "error": layer.error,
                    "weight_sq": layer.weight_sq,
                    "alpha": layer.alpha,
                }
                for layer in s.error.layers
            ],
        }
        for i, s in zip(quantized, series, strict=True)
    ]
    return path, {
        "file": path.name,
        "metric": WEIGHT_ERROR_METRIC,
        "total_metric": TOTAL_ERROR_METRIC,
        "series": data,
    }


def _plot_homovar(items: list[_Analysed], out: Path) -> tuple[Path, dict[str, Any]]:
    homo = [(i.record.name, i.homovar) for i in items if i.homovar is not None]
    if homo:
        cb_counts, cb_w, beta = homo[0][1].counts, homo[0][1].class_balanced, homo[0][1].beta
    else:  # the class-balanced curve alone, for the first run's counts
        cb_counts, beta = np.asarray(items[0].record.metrics["train_counts"]), DEFAULT_BETA
        cb_w = class_balanced_weights(cb_counts, beta).double().numpy()
    path = plots.homovar_class_weights(out / PLOT_FILES[2], homo, list(cb_counts), list(cb_w), beta)
    series = [
        {
            "run": name,
            "counts": w.counts.tolist(),
            "mean": w.mean.tolist(),
            "min": w.low.tolist(),
            "max": w.high.tolist(),
            "batches": w.batches,
            "batch_size": w.batch_size,
            "alpha": w.alpha,
            "beta": w.beta,
            "variant": w.variant,
            "bounds_bite_share": w.bite,
            "file": str(
                next(i.record.folder for i in items if i.record.name == name) / "checkpoint.pt"
            ),
        }
        for name, w in homo
    ]
    cb = {
        "counts": [int(c) for c in cb_counts],
        "weights": [float(w) for w in cb_w],
        "computed": "(1-beta)/(1-beta^n_k) normalised to sum K",
    }
    return path, {"file": path.name, "beta": beta, "class_balanced": cb, "series": series}


def _plot_targets(records: list[RunRecord], out: Path) -> tuple[Path, dict[str, Any]]:
    bars, data = [], []
    every = deployment.deployments(records)
    for d in every:
        target = d.target
        p50 = d.p50
        agree = target.number("check", "top1_agreement")
        kernels = target.first(("check", "kernels"), ("bench", "kernels"))
        plain = None if d.plain_int8 else deployment.plain_int8_for(d, every)
        plain_p50 = None if plain is None else plain.p50
        name = d.name + (f" ({kernels.value})" if kernels else "")
        bars.append(
            plots.TargetBar(
                name, p50 and p50.value, agree and agree.value, plain_p50 and plain_p50.value
            )
        )
        data.append(
            {
                "name": name,
                "p50_ms": _sourced(p50),
                "top1_agreement": _sourced(agree),
                "plain_int8_p50_ms": _sourced(plain_p50),
            }
        )
    path = plots.targets(out / PLOT_FILES[3], bars)
    return path, {"file": path.name, "bars": data}


def _draw(items: list[_Analysed], out: Path) -> tuple[list[Path], dict[str, Any]]:
    """The four PNGs, and the data behind each (with sources) for report.json."""
    records = [i.record for i in items]
    drawn = {
        "per_class_accuracy": _plot_accuracy(records, out),
        "weight_quant_error": _plot_weight_error(items, out),
        "homovar_weights": _plot_homovar(items, out),
        "targets": _plot_targets(records, out),
    }
    return [path for path, _ in drawn.values()], {k: d for k, (_, d) in drawn.items()}


def _summary(records: list[RunRecord]) -> tuple[str, Table | None]:
    """The summary's sentences and table (None when there is nothing to ship)."""
    every = deployment.deployments(records)
    ship = deployment.ship_choice(every)
    plain = None if ship is None else deployment.plain_int8_for(ship, every)
    text = deployment.summary_text(ship, plain, every)
    if ship is None:
        return text, None
    full = next((r for r in records if not r.quantized), None)
    return text, deployment.summary_table(ship, plain, full)


def _blocks(items: list[_Analysed], tables: dict[str, Table | None], summary: str) -> list[Block]:
    records = [i.record for i in items]
    homo = [i for i in items if i.homovar is not None]
    bite = "; ".join(
        f"{i.record.name}: bounds bite in {100 * i.homovar.bite:.1f}% of (batch, class) entries"
        for i in homo
        if i.homovar
    )
    blocks: list[Block] = [
        Heading(1, "ClimbQ deployment report"),
        Heading(2, "Summary"),
        Paragraph(summary),
    ]
    if tables.get("summary") is not None:
        blocks.append(tables["summary"])
    blocks += [
        Paragraph(
            f"Made by climbq_deploy {__version__} from {len(records)} run(s): "
            + ", ".join(f"{r.name} ({r.folder})" for r in records)
            + ". Every number "
            "comes from the run folders' metrics.json, targets/*/check.json and "
            "targets/*/bench.json (and a demo's summary.json), or is computed from "
            "checkpoint.pt; report.json lists each with its file and key. "
            f"'{NOT_MEASURED}' marks a value no file holds."
        ),
        Heading(2, "Deployment"),
    ]
    deployed = [tables["deployed_accuracy"], tables["deployed_speed"]]
    if all(table is not None and table.rows for table in deployed):
        blocks += [table for table in deployed if table is not None]
    else:
        blocks.append(Paragraph("No run has target results (RUN/targets/<label>/)."))
    blocks.append(
        Image(
            PLOT_FILES[3],
            "Latency p50 (ms) and top-1 agreement with the torch model (%) per target; "
            "a black line marks plain int8's p50 on the same runtime where one was given.",
        )
    )
    missing = tables["not_deployed"]
    if missing is not None and missing.rows:
        blocks.append(missing)
    blocks += [
        Heading(2, "Accuracy"),
        tables["accuracy"],
        Image(
            PLOT_FILES[0],
            "Per-class test accuracy (%), class 0 = head (most training "
            "images) to tail, one bar per run.",
        ),
    ]
    if tables.get("paper") is not None:
        blocks.append(tables["paper"])
    blocks += [
        Heading(2, "Weight quantization error (paper Fig. 3 view)"),
        Paragraph(
            f"Metric per quantized conv layer: {WEIGHT_ERROR_METRIC}; total over layers: "
            f"{TOTAL_ERROR_METRIC}. Class scaling is the training-time sigma scaling of "
            "ClimbQ's activation quantizer (config act_scaling faithful = on, off = off); "
            "uniform and LSQ runs have none (n/a)."
        ),
        tables["weight_error"],
        Image(
            PLOT_FILES[1],
            "Per-layer relative weight quantization error e_l (%) and the "
            "total E (%) per run; hatching: class scaling off.",
        ),
        Heading(2, "HomoVar class weights (paper Fig. 1 view)"),
        Paragraph(
            "For each ClimbQ+ (HomoVar loss) run: the model in eval mode gives the "
            "penultimate features of its training images, in batches of the run's batch "
            "size in its first epoch's order; each batch gives the HomoVar weights "
            "(climbq_deploy.losses.homovar, the run's alpha/beta/variant), averaged over "
            "batches (bars: min-max). The class-balanced weights (1-beta)/(1-beta^n_k) "
            "are normalised alike (sum over classes = K). "
            + (bite + "." if bite else "No HomoVar run was given: not measured.")
        ),
        Image(
            PLOT_FILES[2],
            "HomoVar class weights against class size n_k (log scale), "
            "beside the class-balanced weights.",
        ),
    ]
    if tables.get("homovar") is not None and tables["homovar"].rows:
        blocks.append(tables["homovar"])
    return blocks


def make_report(
    runs: list[str | Path],
    out: str | Path = "report",
    data: str | Path | None = None,
    progress: bool = False,
) -> ReportFiles:
    """Write ``out/report.md``, ``report.html``, ``report.json`` and four PNG plots.

    Args:
        runs: training run folders (``climbq train --out RUN``), shown in this order.
        out: report folder (created).
        data: dataset folder overriding the one each run was trained on.
        progress: print a line per stage on stderr.

    Raises:
        ArtifactError: a run folder, metrics.json or checkpoint is missing or corrupt, or a
            check.json/bench.json is not valid JSON (the message names the file).
        ConfigError: no run, or one run given twice.
    """
    out = Path(out)
    records = read_runs(list(runs))
    items = _analyse(records, Path(data) if data is not None else None, progress)
    out.mkdir(parents=True, exist_ok=True)
    _log("drawing plots", progress)
    pngs, plot_data = _draw(items, out)
    every = deployment.deployments(records)
    summary_text, summary_table = _summary(records)
    tables: dict[str, Table | None] = {
        "summary": summary_table,
        "deployed_accuracy": deployment.accuracy_table(every),
        "deployed_speed": deployment.speed_table(every),
        "not_deployed": deployment.not_deployed_table(not_deployed(records)),
        "accuracy": accuracy_table(records),
        "paper": paper_table(records, {i.record.name: i.gamma for i in items}),
        "weight_error": weight_error_table([(i.record, i.error) for i in items if i.error]),
        "homovar": homovar_table([(i.record, i.homovar) for i in items if i.homovar]),
    }
    blocks = _blocks(items, tables, summary_text)
    md = write_text_file(out / "report.md", to_markdown(blocks))
    page = write_text_file(out / "report.html", to_html(blocks, out, "ClimbQ deployment report"))
    summary = {
        "format": "climbq-report",
        "version": 1,
        "climbq_deploy": __version__,
        "runs": [
            {
                "name": r.name,
                "folder": str(r.folder),
                "metrics": r.metrics_file,
                "targets": [t.label for t in r.targets],
            }
            for r in records
        ],
        "summary": summary_text,
        "tables": {k: t.as_json() for k, t in tables.items() if t is not None},
        "plots": plot_data,
    }
    path = out / "report.json"
    write_json(path, summary)
    return ReportFiles(md, page, path, pngs)
