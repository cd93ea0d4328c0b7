"""The ``climbq`` command line: a thin layer over the library functions.

Every user error surfaces as one ``climbq: error: ...`` line on stderr and a non-zero exit
(2 for bad input, 1 for an unexpected internal error, 130 on Ctrl-C); ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from climbq_deploy import __version__
from climbq_deploy.errors import ClimbQError, ConfigError


def _gamma(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"gamma must be a number, got {text!r}") from None
    if not value >= 1 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"gamma must be a finite number >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _output_folder(path: Path, option: str = "--out") -> Path:
    """``path`` as a folder to write into: refused when it exists as anything else."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} exists and is not a folder")
    return path


def _key_value(text: str) -> tuple[str, float | str]:
    """``KEY=VALUE`` with VALUE a number when it parses as one."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, float(value)
    except ValueError:
        return key, value


def _add_common_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output dataset folder")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=_positive_int, default=32, help="image side in pixels")
    parser.add_argument("--preview", action="store_true", help="also write OUT/preview.png")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="climbq",
        description="ClimbQ deployment toolkit: long-tailed data, low-bit models, integer targets.",
    )
    parser.add_argument("--version", action="version", version=f"climbq_deploy {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="build or inspect long-tailed datasets")
    kinds = data.add_subparsers(dest="kind", required=True, metavar="KIND")

    syn = kinds.add_parser(
        "syndigits", help="render SynDigits-LT (the embedded default, no download)"
    )
    syn.add_argument("--gamma", type=_gamma, required=True, help="imbalance ratio (>= 1)")
    syn.add_argument("--test-per-class", type=_positive_int, default=200)
    _add_common_output(syn)
    syn.set_defaults(handler=_cmd_syndigits)

    for name, help_text in (
        ("cifar10", "CIFAR-10-LT from a folder, zip or python-batches folder"),
        ("folder", "a long-tailed set from any train/<class>/*, test/<class>/* folder or zip"),
    ):
        sub = kinds.add_parser(name, help=help_text)
        sub.add_argument("--source", required=True, type=Path, help="folder or .zip of images")
        sub.add_argument("--gamma", type=_gamma, help="imbalance ratio for the §6 formula")
        sub.add_argument("--split-csv", type=Path, help="exact training list (image,label)")
        sub.add_argument("--test-csv", type=Path, help="exact test list (default: all of test/)")
        sub.add_argument("--n-max", type=_positive_int, help="head-class images (default: all)")
        sub.add_argument("--cap", action="store_true", help="cap counts at what is available")
        sub.add_argument("--skip-bad", action="store_true", help="skip unreadable images")
        sub.add_argument("--augment", choices=("crop_flip", "none"), default="crop_flip")
        if name == "folder":
            sub.add_argument("--name", default=None, help="dataset name (default: SOURCE-lt)")
        _add_common_output(sub)
        sub.set_defaults(handler=_cmd_imagefolder)

    dig = kinds.add_parser("digits", help="digits-LT from scikit-learn's bundled 8x8 digits")
    dig.add_argument("--gamma", type=_gamma, required=True, help="imbalance ratio (>= 1)")
    dig.add_argument("--test-per-class", type=_positive_int, default=50)
    dig.add_argument("--cap", action="store_true", help="cap counts at what is available")
    _add_common_output(dig)
    dig.set_defaults(handler=_cmd_digits)

    show = kinds.add_parser("show", help="verify a dataset folder and print its summary")
    show.add_argument("folder", type=Path)
    show.add_argument("--json", action="store_true", help="print the summary as JSON")
    show.add_argument("--preview", action="store_true", help="(re)write FOLDER/preview.png")
    show.set_defaults(handler=_cmd_show)

    tr = commands.add_parser("train", help="train a full-precision or quantized model")
    tr.add_argument("--data", required=True, help="dataset folder made by `climbq data`")
    tr.add_argument("--arch", default="resnet20")
    tr.add_argument("--method", default="fp32", help="fp32, climbq, climbq+, uniform, lsq")
    tr.add_argument("--wbits", type=_positive_int, default=32)
    tr.add_argument("--abits", type=_positive_int, default=32)
    tr.add_argument("--loss", default=None, help="ce, cb, la, homovar (default by method)")
    tr.add_argument(
        "--loss-option",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="loss keyword, repeatable: homovar alpha/beta/variant/form/tau, cb beta/form, la tau",
    )
    tr.add_argument("--act-scaling", choices=("faithful", "off"), default="faithful")
    tr.add_argument("--faithful-mbv2", action="store_true")
    tr.add_argument("--epochs", type=_positive_int, default=50)
    tr.add_argument("--batch-size", type=_positive_int, default=128)
    tr.add_argument("--lr", type=_positive_float, default=0.04)
    tr.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    tr.add_argument("--warmup-epochs", type=_non_negative_int, default=0)
    tr.add_argument("--seed", type=_non_negative_int, default=0)
    tr.add_argument(
        "--eval-every",
        type=_positive_int,
        default=1,
        metavar="N",
        help="test-set pass every N epochs (always after the last)",
    )
    tr.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast convs"
    )
    tr.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="hold out this share of each training class; report the best epoch on it",
    )
    tr.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default="cpu",
        help="where to train (auto: cuda if available); checkpoints always load on a CPU",
    )
    tr.add_argument("--init", default=None, help="RUN folder to start from (QAT from fp32)")
    tr.add_argument(
        "--init-bn-gamma",
        type=_positive_float,
        default=None,
        metavar="G",
        help="after --init, set every BatchNorm |gamma| to G (beta scaled alike): "
        "2 spreads ClimbQ's 2-bit codes",
    )
    tr.add_argument(
        "--distill",
        type=float,
        default=0.0,
        metavar="W",
        help="weight of distillation from the teacher (--teacher, else --init): (1-W) loss + W KD",
    )
    tr.add_argument("--distill-temperature", type=_positive_float, default=4.0, metavar="T")
    tr.add_argument(
        "--teacher",
        default=None,
        metavar="RUN",
        help="RUN folder of the distillation teacher (default: the --init run)",
    )
    tr.add_argument("--out", required=True, type=Path, help="RUN folder")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.set_defaults(handler=_cmd_train)

    cal = commands.add_parser(
        "calibrate", help="post-training quantization of a full-precision run (no training)"
    )
    cal.add_argument("fp_run", type=Path, help="full-precision RUN folder (climbq train)")
    cal.add_argument(
        "--method",
        required=True,
        choices=("ptq-int8", "ptq-w4a4", "climbq-ptq"),
        help="PTQ int8 / 4-bit, or ClimbQ 4-bit with BatchNorm re-estimation",
    )
    cal.add_argument(
        "--calib",
        choices=("natural", "balanced"),
        default="natural",
        help="calibration set: a draw that follows the long tail, or equal per class",
    )
    cal.add_argument("--calib-size", type=_positive_int, default=500, help="images (default 500)")
    cal.add_argument(
        "--range",
        choices=("minmax", "percentile"),
        default=None,
        help="ptq activation ranges (default minmax)",
    )
    cal.add_argument("--percentile", type=float, default=99.99, help="percentile rule's p (%%)")
    cal.add_argument("--seed", type=_non_negative_int, default=0, help="calibration set seed")
    cal.add_argument("--batch-size", type=_positive_int, default=250)
    cal.add_argument("--data", default=None, help="dataset folder (default: the run's)")
    cal.add_argument("--out", required=True, type=Path, help="output RUN folder")
    cal.add_argument("--json", action="store_true", help="print metrics.json")
    cal.set_defaults(handler=_cmd_calibrate)

    adj = commands.add_parser(
        "adjust-logits", help="post-hoc logit adjustment of a finished run (no training)"
    )
    adj.add_argument("run", type=Path, help="finished RUN folder (climbq train)")
    adj.add_argument("--out", required=True, type=Path, help="output RUN folder")
    adj.add_argument(
        "--tau", type=float, default=1.0, help="bias -= tau * log(prior); 1 (default) undoes it"
    )
    adj.add_argument("--json", action="store_true", help="print metrics.json")
    adj.set_defaults(handler=_cmd_adjust_logits)

    ex = commands.add_parser("export", help="lower a trained run to a target's integer artifact")
    ex.add_argument("run", type=Path, help="RUN folder made by `climbq train`")
    ex.add_argument("--target", default="numpy", help="numpy (model.climbq) or tflite")
    ex.add_argument("--out", type=Path, default=None, help="artifact path (default RUN/model.*)")
    ex.add_argument(
        "--head",
        choices=("float", "int8", "int4"),
        default="float",
        help="classifier head (int4: a 4-bit head in the program itself)",
    )
    ex.add_argument("--no-pack", action="store_true", help="store weights as int8, not packed")
    ex.add_argument(
        "--weights",
        choices=("int8", "int4"),
        default=None,
        help="int8 (default) or int4 (tensorrt: INT4 weight-only head)",
    )
    ex.add_argument("--json", action="store_true", help="print a JSON summary")
    ex.set_defaults(handler=_cmd_export)

    ck = commands.add_parser("check", help="compare a target's artifact with the torch model")
    ck.add_argument("run", type=Path, help="RUN folder made by `climbq train`")
    ck.add_argument("--target", default="numpy", help="numpy or tflite")
    ck.add_argument(
        "--kernels",
        choices=("xnnpack", "optimized", "ref"),
        default=None,
        help="tflite: LiteRT default (XNNPACK), builtin optimized, or reference",
    )
    ck.add_argument(
        "--runtime",
        choices=("onnxruntime", "tensorrt"),
        default=None,
        help="tensorrt: ONNX Runtime (CPU) or a TensorRT engine (GPU)",
    )
    ck.add_argument("--artifact", type=Path, default=None, help="default: export afresh")
    ck.add_argument("--data", type=Path, default=None, help="dataset folder (default: the run's)")
    ck.add_argument("--head", choices=("float", "int8", "int4"), default="float")
    ck.add_argument("--batch-size", type=_positive_int, default=100)
    ck.add_argument("--limit", type=_positive_int, default=None, help="N evenly spaced test images")
    ck.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ck.set_defaults(handler=_cmd_check)

    bn = commands.add_parser("bench", help="latency (p50/p90/p99) and accuracy of a model file")
    bn.add_argument("model", type=Path, help="a .tflite, .onnx or .climbq from `climbq export`")
    bn.add_argument("--threads", type=_positive_int, default=1)
    bn.add_argument(
        "--kernels",
        choices=("xnnpack", "optimized", "ref"),
        default=None,
        help=".tflite: LiteRT kernels (default xnnpack)",
    )
    bn.add_argument("--warmup", type=_non_negative_int, default=10)
    bn.add_argument("--repeats", type=_positive_int, default=100)
    bn.add_argument("--data", type=Path, default=None, help="dataset folder: also top-1")
    bn.add_argument(
        "--runtime",
        choices=("onnxruntime", "tensorrt"),
        default=None,
        help=".onnx: ONNX Runtime (CPU, default) or TensorRT (GPU)",
    )
    bn.add_argument(
        "--batch",
        type=_positive_int,
        default=1,
        help=".onnx/.climbq: images per invoke (.tflite: 1)",
    )
    bn.add_argument("--json", action="store_true", help="one JSON object on stdout")
    bn.set_defaults(handler=_cmd_bench)

    rp = commands.add_parser("report", help="report.md/.html with plots from training runs")
    rp.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="RUN folders (climbq train)")
    rp.add_argument("--out", type=Path, default=Path("report"), help="folder (default ./report)")
    rp.add_argument("--data", type=Path, default=None, help="dataset folder (default: the runs')")
    rp.set_defaults(handler=_cmd_report)

    dm = commands.add_parser("demo", help="the main job: data, train, export, check, bench, report")
    dm.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    dm.add_argument(
        "--quick", action="store_true", help="every stage, fewer epochs, 200-image checks"
    )
    dm.set_defaults(handler=_cmd_demo)
    return parser


def _cmd_demo(args: argparse.Namespace) -> None:
    from climbq_deploy.demo import run_demo

    _output_folder(args.out)
    run_demo(args.out, quick=args.quick)


def _cmd_report(args: argparse.Namespace) -> None:
    from climbq_deploy.report import make_report

    _output_folder(args.out)
    files = make_report(args.runs, args.out, data=args.data, progress=True)
    print(f"wrote {files.markdown}, {files.html}, {files.json} and {len(files.plots)} plots")


def _cmd_bench(args: argparse.Namespace) -> None:
    from climbq_deploy.bench import bench_artifact

    suffix = args.model.suffix
    if args.kernels is not None and suffix != ".tflite":
        raise ConfigError(f"--kernels applies to .tflite models, not {args.model.name}")
    if args.runtime is not None and suffix != ".onnx":
        raise ConfigError(f"--runtime applies to .onnx models, not {args.model.name}")
    kernels = {".onnx": args.runtime or "onnxruntime", ".tflite": args.kernels or "xnnpack"}.get(
        suffix
    )
    record = bench_artifact(
        args.model,
        threads=args.threads,
        kernels=kernels,
        batch=args.batch,
        warmup=args.warmup,
        repeats=args.repeats,
        data=args.data,
    )
    if args.json:
        print(json.dumps(record, indent=2))
        return
    lat = record["latency_ms"]
    print(
        f"{record['model']}: p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, p99 "
        f"{lat['p99']:.2f} ms, {record['images_per_second']:.1f} img/s "
        f"({record['kernels']}, {record['threads']} thread(s), {record['cpu']})"
    )
    if record["top1"] is not None:
        print(f"top-1 {record['top1']:.2f}% on {record['n_images']} images")


def _cmd_calibrate(args: argparse.Namespace) -> None:
    from climbq_deploy.calibration import CalibrateConfig, calibrate

    _output_folder(args.out)
    config = CalibrateConfig(
        str(args.fp_run),
        args.method,
        args.calib,
        args.calib_size,
        args.range,
        args.percentile,
        args.seed,
        args.batch_size,
        args.data,
    )
    metrics = calibrate(config, args.out)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return
    groups = ", ".join(
        f"{g} {metrics[g]:.2f}" for g in ("many", "medium", "few") if metrics[g] is not None
    )
    counts = metrics["calibration"]["set"]["counts"]
    print(
        f"{args.method} ({args.calib} calibration, {sum(counts)} images {counts}): top-1 "
        f"{metrics['top1']:.2f}% ({groups}); wrote {args.out}"
    )


def _cmd_adjust_logits(args: argparse.Namespace) -> None:
    from climbq_deploy.train.posthoc import adjust_logits

    metrics = adjust_logits(args.run, _output_folder(args.out), args.tau)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return
    before = metrics["unadjusted"]
    groups = ", ".join(
        f"{g} {before[g]:.2f} -> {metrics[g]:.2f}"
        for g in ("many", "medium", "few")
        if metrics[g] is not None and before.get(g) is not None
    )
    print(
        f"logit adjustment (tau {args.tau:g}): top-1 {before['top1']:.2f} -> "
        f"{metrics['top1']:.2f}% ({groups}); wrote {args.out}"
    )


def _cmd_export(args: argparse.Namespace) -> None:
    from climbq_deploy.export import load_run, lower_run
    from climbq_deploy.ir.serialize import save_program
    from climbq_deploy.targets import get_target

    target = get_target(args.target, weights=args.weights)
    out = args.out or args.run / f"model{target.suffix}"
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the artifact's file name")
    graph = lower_run(load_run(args.run), head=args.head, input_bits=target.input_bits)
    if args.target == "numpy":
        path = save_program(graph, out, pack=not args.no_pack)
    else:
        path = target.export(graph, out)
    size = path.stat().st_size
    summary = {
        "artifact": str(path),
        "target": args.target,
        "bytes": size,
        "nodes": len(graph.nodes),
        "head": args.head,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {path} ({size} bytes, {len(graph.nodes)} integer ops)")


def _cmd_check(args: argparse.Namespace) -> None:
    from climbq_deploy.check import check_run

    if args.kernels is not None and args.target != "tflite":
        raise ConfigError(f"--kernels applies to --target tflite, not {args.target!r}")
    if args.runtime is not None and args.target != "tensorrt":
        raise ConfigError(f"--runtime applies to --target tensorrt, not {args.target!r}")
    record = check_run(
        args.run,
        target=args.target,
        artifact=args.artifact,
        data=args.data,
        batch_size=args.batch_size,
        limit=args.limit,
        head=args.head,
        progress=True,
        kernels=args.kernels or args.runtime,
    )
    if args.json:
        print(json.dumps(record, indent=2))
        return
    keys = (
        "n_images",
        "top1_agreement",
        "code_agreement",
        "max_abs_logit_diff",
        "ref_top1",
        "torch_top1",
        "first_divergent_layer",
        "torch_fp32_top1",
        "torch_fp32_top1_agreement",
        "exact_match",
    )
    for key in keys:
        if key in record:
            print(f"{key:>26}: {record[key]}")


def _cmd_train(args: argparse.Namespace) -> None:
    from climbq_deploy.train.config import TrainConfig
    from climbq_deploy.train.loop import train

    _output_folder(args.out)
    config = TrainConfig(
        data=args.data,
        arch=args.arch,
        method=args.method,
        wbits=args.wbits,
        abits=args.abits,
        loss=args.loss,
        act_scaling=args.act_scaling,
        faithful_mbv2=args.faithful_mbv2,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=args.schedule,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed,
        init=args.init,
        loss_options=dict(args.loss_option),
        precision=args.precision,
        val_fraction=args.val_fraction,
        device=args.device,
        init_bn_gamma=args.init_bn_gamma,
        eval_every=args.eval_every,
        distill=args.distill,
        distill_temperature=args.distill_temperature,
        teacher=args.teacher,
    )
    metrics = train(config, args.out, resume=args.resume)
    if os.environ.get("RANK", "0") != "0":  # torchrun: process 0 speaks for all
        return
    groups = ", ".join(
        f"{g} {metrics[g]:.2f}" for g in ("many", "medium", "few") if metrics[g] is not None
    )
    print(
        f"top-1 {metrics['top1']:.2f}% ({groups}) after {metrics['epochs']} epochs, "
        f"{metrics['seconds']:.1f} s; wrote {args.out / 'metrics.json'}"
    )
    if metrics["best_val"] is not None:
        best = metrics["best_val"]
        print(
            f"best on validation: epoch {best['epoch']} (balanced val top-1 "
            f"{best['val_balanced_top1']:.2f}%, test top-1 {best['test']['top1']:.2f}%); "
            f"weights in {args.out / 'best.pt'}"
        )


def _finish_dataset(dataset: Any, out: Path, args: argparse.Namespace, write: bool = True) -> None:
    from climbq_deploy.data.dataset import META_FILE, save_dataset
    from climbq_deploy.data.preview import write_contact_sheet

    if write:
        save_dataset(dataset, out)
    meta = json.loads((out / META_FILE).read_text())
    preview = write_contact_sheet(dataset, out / "preview.png") if args.preview else None
    if args.json:
        summary = {
            "folder": str(out),
            "name": meta["name"],
            "class_names": meta["class_names"],
            "counts": meta["counts"],
            "sizes": meta["sizes"],
            "sha256": {k: v["sha256"] for k, v in meta["arrays"].items()},
            "preview": str(preview) if preview else None,
        }
        print(json.dumps(summary, indent=2))
        return
    print(dataset.summary())
    print(f"saved: {out / 'data.npz'} + {out / META_FILE}")
    print(f"sha256 train_images: {meta['arrays']['train_images']['sha256']}")
    if preview:
        print(f"preview: {preview}")


def _cmd_syndigits(args: argparse.Namespace) -> None:
    from climbq_deploy.data.syndigits import build_syndigits

    dataset = build_syndigits(
        args.gamma, seed=args.seed, size=args.size, test_per_class=args.test_per_class
    )
    _finish_dataset(dataset, args.out, args)


def _cmd_imagefolder(args: argparse.Namespace) -> None:
    from climbq_deploy.data.imagefolder import build_image_dataset

    default_name = f"{args.source.stem.lower()}-lt"
    name = "cifar10-lt" if args.kind == "cifar10" else (args.name or default_name)
    dataset = build_image_dataset(
        args.source,
        args.gamma,
        split_csv=args.split_csv,
        test_csv=args.test_csv,
        seed=args.seed,
        n_max=args.n_max,
        size=args.size,
        skip_bad=args.skip_bad,
        cap=args.cap,
        name=name,
        augment=args.augment,
    )
    skipped = dataset.info.get("skipped", {}).get("count", 0)
    if skipped:
        print(f"skipped {skipped} unreadable image(s); see meta.json info.skipped", file=sys.stderr)
    _finish_dataset(dataset, args.out, args)


def _cmd_digits(args: argparse.Namespace) -> None:
    from climbq_deploy.data.digits import build_digits

    dataset = build_digits(
        args.gamma, seed=args.seed, size=args.size, test_per_class=args.test_per_class, cap=args.cap
    )
    _finish_dataset(dataset, args.out, args)


def _cmd_show(args: argparse.Namespace) -> None:
    from climbq_deploy.data.dataset import load_dataset

    dataset = load_dataset(args.folder)
    _finish_dataset(dataset, args.folder, args, write=False)


def _show_warning(message: Any, category: Any, filename: str, lineno: int, *_: Any) -> None:
    print(f"climbq: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        args.handler(args)
    except ClimbQError as exc:
        if args.debug:
            raise
        print(f"climbq: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("climbq: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: say so briefly, the traceback is one flag away
        if args.debug:
            raise
        print(
            f"climbq: internal error: {type(exc).__name__}: {exc} "
            "(re-run with --debug for the traceback and please report it)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
