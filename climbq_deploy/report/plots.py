"""The report's four PNG plots (matplotlib's Agg canvas, no pyplot state, 100 dpi).

Each function takes plain data, writes one PNG atomically and returns its path. A plot whose
data is missing still gets written, with the reason in its middle ("not measured"), so that the
report always has the same four figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from climbq_deploy.fileio import atomic_write
from climbq_deploy.report.analysis import HomoVarWeights, WeightError

DPI = 100
MARKERS = ("o", "^", "s", "D", "v", "P")
LEGEND_COLUMNS = 4  # runs per legend row below a plot
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=DPI)
    return path


def _empty(axes: Axes, text: str) -> None:
    axes.text(
        0.5,
        0.5,
        text,
        ha="center",
        va="center",
        transform=axes.transAxes,
        fontsize=12,
        color="#555555",
        wrap=True,
    )
    axes.set_xticks([])
    axes.set_yticks([])


def per_class_accuracy(
    path: Path,
    names: Sequence[str],
    accuracies: Sequence[Sequence[float]],
    counts: Sequence[int] | None,
) -> Path:
    """Grouped bars: per-class test accuracy (%) of each run, class 0 (head) to tail.

    ``counts`` (training images per class) label the ticks when all runs share them. The
    legend sits below the axes, so that no bar (the tail's least of all) is hidden behind it.
    """
    rows = -(-len(names) // LEGEND_COLUMNS)
    figure = _figure(max(8.0, 0.9 * max(len(a) for a in accuracies) + 3), 4.8 + 0.25 * rows)
    axes = figure.add_subplot()
    classes = max(len(a) for a in accuracies)
    width = 0.8 / len(names)
    for i, (name, acc) in enumerate(zip(names, accuracies, strict=True)):
        x = np.arange(len(acc)) + (i - (len(names) - 1) / 2) * width
        axes.bar(x, acc, width, label=name, color=COLORS[i % len(COLORS)])
    axes.set_xticks(np.arange(classes))
    if counts is not None:
        axes.set_xticklabels([f"{k}\nn={n}" for k, n in enumerate(counts)])
        axes.set_xlabel("class (head → tail), n = training images")
    else:
        axes.set_xlabel("class index (head → tail; runs differ in training counts)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_ylim(0, 105)
    axes.set_title("Per-class test accuracy, head to tail")
    axes.grid(axis="y", alpha=0.3)
    figure.legend(loc="outside lower center", ncols=min(len(names), LEGEND_COLUMNS), fontsize=9)
    return _save(figure, path)


@dataclass(frozen=True)
class ErrorSeries:
    """One quantized run's weight error for the Fig. 3 plot; ``scaling`` is "on", "off" or
    "n/a" (methods without class scaling)."""

    name: str
    scaling: str
    error: WeightError


def weight_quant_error(path: Path, series: Sequence[ErrorSeries], metric: str) -> Path:
    """Left: per-layer relative error ``e_l`` (%) of each quantized run, bars hatched by class
    scaling; right: the total ``E`` (%) per run, grouped by class scaling."""
    figure = _figure(14, 5.2)
    left, right = figure.subplots(1, 2, width_ratios=(4, 1))
    figure.suptitle(
        f"Per-layer weight quantization error, with and without class scaling\n{metric}",
        fontsize=10,
    )
    if not series:
        _empty(left, "no quantized run given: not measured")
        _empty(right, "not measured")
        return _save(figure, path)
    hatch = {"on": "", "off": "//", "n/a": ".."}
    layers = max(len(s.error.layers) for s in series)
    width = 0.8 / len(series)
    for i, s in enumerate(series):
        x = np.arange(len(s.error.layers)) + (i - (len(series) - 1) / 2) * width
        rel = [100 * layer.relative for layer in s.error.layers]
        left.bar(
            x,
            rel,
            width,
            color=COLORS[i % len(COLORS)],
            hatch=hatch[s.scaling],
            edgecolor="black",
            linewidth=0.3,
            label=f"{s.name} (class scaling {s.scaling})",
        )
    longest = max(series, key=lambda s: len(s.error.layers))
    left.set_xticks(np.arange(layers))
    left.set_xticklabels(
        [layer.layer for layer in longest.error.layers], rotation=70, ha="right", fontsize=7
    )
    left.set_xlabel("quantized conv layer (definition order)")
    left.set_ylabel("relative error e_l (%)")
    left.grid(axis="y", alpha=0.3)
    top = max(100 * layer.relative for s in series for layer in s.error.layers)
    left.set_ylim(0, 1.35 * top if top > 0 else 1.0)  # room for the legend above the bars
    left.legend(fontsize=8, loc="upper left", ncols=2)
    order = sorted(range(len(series)), key=lambda i: ("on", "n/a", "off").index(series[i].scaling))
    for pos, i in enumerate(order):
        s = series[i]
        right.bar(
            pos,
            100 * s.error.total_relative,
            0.7,
            color=COLORS[i % len(COLORS)],
            hatch=hatch[s.scaling],
            edgecolor="black",
            linewidth=0.3,
        )
    right.set_xticks(range(len(order)))
    right.set_xticklabels(
        [f"{series[i].name}\nscaling {series[i].scaling}" for i in order],
        rotation=60,
        ha="right",
        fontsize=7,
    )
    right.set_ylabel("total relative error E (%)")
    right.set_title("Total over layers", fontsize=10)
    right.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def homovar_class_weights(
    path: Path,
    series: Sequence[tuple[str, HomoVarWeights]],
    cb_counts: Sequence[int] | None,
    cb_weights: Sequence[float] | None,
    beta: float,
) -> Path:
    """HomoVar weights (mean over batches, min-max bars) against class size ``n_k`` (log x),
    beside the class-balanced weights normalised alike (sum K)."""
    figure = _figure(8, 5)
    axes = figure.add_subplot()
    if cb_counts is not None and cb_weights is not None:
        order = np.argsort(cb_counts)
        axes.plot(
            np.asarray(cb_counts)[order],
            np.asarray(cb_weights)[order],
            "k--",
            marker="s",
            markersize=4,
            label=f"class-balanced (1-β)/(1-β^n_k), β={beta}",
            zorder=1,
        )
    for i, (name, w) in enumerate(series):
        yerr = np.clip(np.vstack([w.mean - w.low, w.high - w.mean]), 0, None)  # rounding
        axes.errorbar(
            w.counts,
            w.mean,
            yerr=yerr,
            fmt=MARKERS[i % len(MARKERS)],
            markersize=max(9 - 2 * i, 4),
            markerfacecolor="none" if i % 2 else None,
            capsize=3,
            color=COLORS[i % len(COLORS)],
            zorder=2,
            label=f"{name}: HomoVar, mean of {w.batches} batches of {w.batch_size} (bars: min-max)",
        )
    if not series:
        axes.text(
            0.5,
            0.9,
            "no ClimbQ+ (HomoVar) run given: HomoVar weights not measured",
            ha="center",
            transform=axes.transAxes,
            color="#555555",
        )
    axes.set_xscale("log")
    axes.set_xlabel("training images of the class n_k (log scale)")
    axes.set_ylabel("class weight w_k (normalised: sum over classes = K)")
    axes.set_title("HomoVar class weights against class size")
    axes.grid(alpha=0.3, which="both")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    return _save(figure, path)


@dataclass(frozen=True)
class TargetBar:
    """One (run, target) for the targets plot; None where not measured."""

    name: str
    p50_ms: float | None
    agreement: float | None  # top-1 agreement as a fraction in [0, 1]
    plain_int8_ms: float | None = None  # p50 of plain int8 on the same runtime, where given


def targets(path: Path, bars: Sequence[TargetBar]) -> Path:
    """Left: latency p50 (ms) per target, with a black line at plain int8's p50 on the same
    runtime where one was measured; right: top-1 agreement with the torch model (%)."""
    figure = _figure(12, max(3.0, 0.45 * len(bars) + 1.8))
    left, right = figure.subplots(1, 2, sharey=True)
    figure.suptitle("Deployed targets: latency and agreement with the trained model")
    if not bars:
        _empty(left, "no target results (RUN/targets/*/check.json, bench.json): not measured")
        _empty(right, "not measured")
        return _save(figure, path)
    y = np.arange(len(bars))
    for axes, values, label, scale in (
        (left, [b.p50_ms for b in bars], "latency p50 (ms per invoke)", 1.0),
        (right, [b.agreement for b in bars], "top-1 agreement with torch (%)", 100.0),
    ):
        shown = [scale * v if v is not None else 0.0 for v in values]
        axes.barh(y, shown, 0.6, color=[COLORS[i % len(COLORS)] for i in range(len(bars))])
        plain = [b.plain_int8_ms for b in bars] if axes is left else []
        top = max([*shown, *(v for v in plain if v is not None)])
        top = top if top > 0 else 1.0
        for yi, v in zip(y, plain, strict=False):
            if v is not None:
                axes.plot([v, v], [yi - 0.4, yi + 0.4], color="black", linewidth=2.5)
                axes.text(v, yi - 0.42, "plain int8", ha="center", va="bottom", fontsize=7)
        for yi, v in zip(y, values, strict=True):
            text = "not measured" if v is None else f"{scale * v:.4g}"
            axes.text(
                0 if v is None else scale * v + 0.01 * top,
                yi,
                " " + text,
                va="center",
                fontsize=8,
                color="#555555" if v is None else "black",
            )
        axes.set_xlim(0, top * 1.25)
        axes.set_xlabel(label)
        axes.grid(axis="x", alpha=0.3)
    left.set_yticks(y)
    left.set_yticklabels([b.name for b in bars], fontsize=8)
    left.invert_yaxis()
    return _save(figure, path)
