"""``climbq demo``: the main job, end to end on the embedded default (no download).

Stages (each resumable: a finished stage's files are reused when the demo runs again):

1. data — SynDigits-LT gamma 50, seed 0, rendered here (``DIR/data/syndigits-lt-g50``);
2. train — full-precision ResNet-20, then 4-bit ClimbQ+ QAT from it, the same with class
   scaling off (for the weight-error view), and a 4-bit LSQ baseline (``DIR/runs/<name>``);
3. export — the ClimbQ+ model to every target that can run here: NumPy reference, TFLite
   (the fast builtin forms, and the fused CLIMBQ_CONV_COUNT kernel), TensorRT-bound ONNX
   under ONNX Runtime
   (``DIR/runs/<run>/targets/<label>/model.*``); a target that cannot run here is listed with
   its reason, never faked;
4. check — each artifact against the torch model and the NumPy reference on the test set
   (``check.json`` beside the artifact);
5. bench — batch-1 latency p50/p90/p99 and images/s of each artifact (``bench.json``);
6. report — ``DIR/report.md``, ``DIR/report.html`` and the plots; ``DIR/summary.json`` (written
   before the report too: the report shows its reasons for what was not deployed).

``--quick`` runs every stage with fewer epochs and a 200-image check (a smoke run, ~3 min on
2 cores); the full demo trains longer and checks the whole test set.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from climbq_deploy.errors import ConfigError, TargetUnavailableError
from climbq_deploy.fileio import write_json
from climbq_deploy.runfolder import absolute_path
from climbq_deploy.train.config import PATH_FIELDS, SHORT_FP32_PRETRAINING, SHORT_QAT, TrainConfig

DATASET = "syndigits-lt-g50"


@dataclass(frozen=True)
class DemoPlan:
    """How much work each stage does."""

    fp32_epochs: int
    qat_epochs: int
    check_limit: int | None  # None: the whole test set
    bench_repeats: int


QUICK = DemoPlan(fp32_epochs=4, qat_epochs=2, check_limit=200, bench_repeats=30)
FULL = DemoPlan(fp32_epochs=30, qat_epochs=10, check_limit=None, bench_repeats=100)


@dataclass(frozen=True)
class ModelSpec:
    """One trained model of the demo."""

    name: str
    method: str
    bits: int = 32
    act_scaling: str = "faithful"
    deploy: bool = False  # exported to every target


MODELS = (
    ModelSpec("fp32", "fp32"),
    ModelSpec("climbq+-w4a4", "climbq+", 4, deploy=True),
    ModelSpec("climbq+-w4a4-noscale", "climbq+", 4, act_scaling="off"),
    ModelSpec("lsq-w4a4", "lsq", 4),
)


@dataclass(frozen=True)
class TargetSpec:
    """One deployment of the ClimbQ+ model: a target name and its options."""

    label: str
    target: str
    kernels: str | None = None
    weights: str | None = None
    ops: str | None = None


TARGETS = (
    TargetSpec("numpy", "numpy"),
    TargetSpec("tflite-xnnpack", "tflite", "xnnpack"),
    TargetSpec("tflite-fused-xnnpack", "tflite", "xnnpack", ops="climbq"),
    TargetSpec("tensorrt-onnxruntime", "tensorrt", "onnxruntime"),
)


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _stage(name: str, seconds: dict[str, float], work: Callable[[], Any]) -> Any:
    _say(f"{name} ...")
    began = time.perf_counter()
    result = work()
    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - began
    _say(f"{name} done in {seconds[name]:.1f} s")
    return result


def _dataset(out: Path) -> Path:
    from climbq_deploy.data.dataset import META_FILE, load_dataset, save_dataset
    from climbq_deploy.data.syndigits import build_syndigits

    folder = out / "data" / DATASET
    if (folder / META_FILE).is_file():
        load_dataset(folder)  # verifies the hashes
        return folder
    save_dataset(build_syndigits(50, seed=0), folder)
    return folder


def _config(spec: ModelSpec, data: Path, plan: DemoPlan, init: Path | None) -> TrainConfig:
    if spec.method == "fp32":
        return TrainConfig(data=str(data), **{**SHORT_FP32_PRETRAINING, "epochs": plan.fp32_epochs})
    return TrainConfig(
        data=str(data),
        method=spec.method,
        wbits=spec.bits,
        abits=spec.bits,
        act_scaling=spec.act_scaling,
        init=str(init),
        **{**SHORT_QAT, "epochs": plan.qat_epochs},
    )


def _train(spec: ModelSpec, config: TrainConfig, run: Path) -> dict[str, Any]:
    """Train (or reuse a finished run with the same configuration; resume a partial one)."""
    from climbq_deploy.train.loop import train

    metrics_file = run / "metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        if _same_run(metrics.get("config", {}), config):
            _say(f"{spec.name}: reusing {metrics_file}")
            return metrics
    resume = (run / "checkpoint.pt").is_file() and not metrics_file.is_file()
    if metrics_file.is_file():  # the demo's own run, finished with other settings (--quick)
        _say(f"{spec.name}: {run} was trained with other settings; training it again")
    return train(config, run, resume=resume, overwrite=not resume)


def _same_run(done: dict[str, Any], config: TrainConfig) -> bool:
    """Whether a finished run's config (metrics.json) is ``config``'s, the device aside and
    the folders it names compared as absolute paths (a run stores them so; an older one as
    given, relative to the demo's working directory)."""

    def comparable(values: dict[str, Any]) -> dict[str, Any]:
        paths = {k: absolute_path(values[k]) for k in PATH_FIELDS if values.get(k) is not None}
        return {k: v for k, v in {**values, **paths}.items() if k != "device"}

    return comparable(done) == comparable(config.as_dict())


def _deploy(run: Path, spec: TargetSpec, plan: DemoPlan, data: Path) -> dict[str, Any]:
    """Export, check and bench one target; the record says why when it cannot run here."""
    from climbq_deploy.bench import bench_artifact
    from climbq_deploy.check import check_run
    from climbq_deploy.export import load_run, lower_run
    from climbq_deploy.targets import get_target

    folder = run / "targets" / spec.label
    record: dict[str, Any] = {"label": spec.label, **asdict(spec)}
    try:
        target = get_target(spec.target, spec.kernels, spec.weights, spec.ops)
    except ConfigError as exc:
        return {**record, "status": "unavailable", "reason": str(exc)}
    reason = target.unavailable()
    if reason:
        return {**record, "status": "unavailable", "reason": reason}
    artifact = folder / f"model{target.suffix}"
    graph = lower_run(load_run(run), input_bits=target.input_bits)
    target.export(graph, artifact)
    record.update(artifact=str(artifact), bytes=artifact.stat().st_size)
    check = check_run(
        run,
        spec.target,
        artifact=artifact,
        limit=plan.check_limit,
        progress=True,
        kernels=spec.kernels,
    )
    write_json(folder / "check.json", check)
    try:
        bench = bench_artifact(
            artifact, threads=1, kernels=spec.kernels, repeats=plan.bench_repeats, data=None
        )
    except TargetUnavailableError as exc:
        bench = {"status": "unavailable", "reason": str(exc)}
    write_json(folder / "bench.json", bench)
    return {**record, "status": "ok", "check": check, "bench": bench}


def run_demo(out: Path, quick: bool = False, plan: DemoPlan | None = None) -> dict[str, Any]:
    """Run every stage into ``out``; returns (and writes) ``out/summary.json``."""
    plan = plan or (QUICK if quick else FULL)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    seconds: dict[str, float] = {}
    data = _stage("data", seconds, lambda: _dataset(out))
    runs: dict[str, Path] = {}
    models: list[dict[str, Any]] = []
    for spec in MODELS:
        run = out / "runs" / spec.name
        init = runs.get("fp32")
        config = _config(spec, data, plan, init)
        metrics = _stage(
            f"train {spec.name}", seconds, lambda s=spec, c=config, r=run: _train(s, c, r)
        )
        runs[spec.name] = run
        models.append(
            {
                "name": spec.name,
                "run": str(run),
                **{
                    k: metrics.get(k)
                    for k in (
                        "method",
                        "arch",
                        "wbits",
                        "abits",
                        "top1",
                        "many",
                        "medium",
                        "few",
                        "per_class",
                        "train_counts",
                        "epochs",
                        "seconds",
                    )
                },
                "act_scaling": spec.act_scaling,
            }
        )
    deployments: list[dict[str, Any]] = []
    for spec in MODELS:
        if not spec.deploy:
            continue
        for target in TARGETS:
            deployments.append(
                _stage(
                    f"deploy {spec.name} {target.label}",
                    seconds,
                    lambda t=target, s=spec: {
                        "model": s.name,
                        **_deploy(runs[s.name], t, plan, data),
                    },
                )
            )
    not_deployed = [
        {"model": spec.name, "reason": _not_deployed_reason(spec)}
        for spec in MODELS
        if not spec.deploy
    ]
    summary = {
        "plan": asdict(plan),
        "quick": quick,
        "dataset": str(data),
        "models": models,
        "targets": [_target_summary(d) for d in deployments],
        "not_deployed": not_deployed,
        "report": None,
        "stage_seconds": seconds,
        "total_seconds": None,
    }
    write_json(out / "summary.json", summary)  # the report reads why a run was not deployed
    summary["report"] = _stage("report", seconds, lambda: _report(list(runs.values()), out))
    summary["total_seconds"] = time.perf_counter() - began
    write_json(out / "summary.json", summary)
    print(summary_table(summary))
    return summary


def _not_deployed_reason(spec: ModelSpec) -> str:
    if spec.method == "fp32":
        return "full precision: the reference for accuracy, not an integer program"
    if spec.method == "lsq":
        return "LSQ baseline: trained and evaluated for comparison (its residual adds mix scales)"
    return "a training-side ablation (weight-error view), not deployed"


def _target_summary(record: dict[str, Any]) -> dict[str, Any]:
    summary = {
        k: record.get(k)
        for k in (
            "model",
            "label",
            "target",
            "kernels",
            "weights",
            "status",
            "reason",
            "artifact",
            "bytes",
        )
    }
    check = record.get("check") or {}
    bench = record.get("bench") or {}
    for key in (
        "n_images",
        "top1_agreement",
        "code_agreement",
        "exact_match",
        "ref_top1",
        "torch_top1",
        "torch_fp32_top1",
    ):
        summary[key] = check.get(key)
    summary["latency_ms"] = bench.get("latency_ms")
    summary["images_per_second"] = bench.get("images_per_second")
    return summary


def _report(runs: list[Path], out: Path) -> dict[str, Any]:
    import torch

    from climbq_deploy.report import make_report

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small eval batches: one thread is faster on a busy machine
    try:
        files = make_report(runs, out, progress=True)
    finally:
        torch.set_num_threads(threads)
    return {
        "markdown": str(files.markdown),
        "html": str(files.html),
        "json": str(files.json),
        "plots": [str(p) for p in files.plots],
    }


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec) if isinstance(value, float) else str(value)


def summary_table(summary: dict[str, Any]) -> str:
    """The terminal summary: accuracy per model, agreement and latency per target."""
    lines = ["", f"{'model':<22}{'top-1':>8}{'many':>8}{'medium':>8}{'few':>8}{'epochs':>8}"]
    for m in summary["models"]:
        cells = "".join(f"{_fmt(m[k]):>8}" for k in ("top1", "many", "medium", "few", "epochs"))
        lines.append(f"{m['name']:<22}{cells}")
    lines += ["", f"{'target':<24}{'status':<13}{'exact':>7}{'agree':>8}{'top-1':>8}{'p50 ms':>9}"]
    for t in summary["targets"]:
        p50 = (t.get("latency_ms") or {}).get("p50")
        lines.append(
            f"{t['label']:<24}{t['status']:<13}{_fmt(t.get('exact_match')):>7}"
            f"{_fmt(t.get('top1_agreement'), '.4f'):>8}{_fmt(t.get('ref_top1')):>8}"
            f"{_fmt(p50, '.2f'):>9}"
        )
        if t["status"] != "ok":
            lines.append(f"    {t.get('reason')}")
    report = summary["report"]
    where = report.get("markdown") if isinstance(report, dict) else report
    lines.append(f"\ntotal {summary['total_seconds']:.0f} s; report: {where}")
    return "\n".join(lines)


__all__ = ["FULL", "MODELS", "QUICK", "TARGETS", "DemoPlan", "run_demo", "summary_table"]
