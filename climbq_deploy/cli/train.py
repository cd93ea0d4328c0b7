"""``climbq train``, ``calibrate`` and ``adjust-logits``: the commands that make run folders."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from climbq_deploy.cli._args import (
    add_command,
    add_json_flag,
    add_run_output,
    groups_text,
    key_value,
    non_negative_int,
    output_folder,
    picked,
    positive_float,
    positive_int,
    printed_as_json,
)

# the train options passed to TrainConfig unchanged, by their names
TRAIN_OPTIONS = (
    "arch",
    "model",
    "method",
    "wbits",
    "abits",
    "loss",
    "act_scaling",
    "faithful_mbv2",
    "epochs",
    "batch_size",
    "lr",
    "schedule",
    "warmup_epochs",
    "seed",
    "init",
    "precision",
    "val_fraction",
    "device",
    "init_bn_gamma",
    "eval_every",
    "distill",
    "distill_temperature",
    "teacher",
)
# What --arch, --method, --loss and the bits accept, shown in the help. The library validates
# them (with its own messages; `--method ptq` points to `climbq calibrate`), and a test keeps
# these equal to its lists (climbq_deploy.models.ARCHS, ...), which this module cannot import
# without torch.
ARCH_NAMES = ("resnet20", "resnet32", "resnet56", "mobilenetv2")
TRAIN_METHODS = ("fp32", "climbq", "climbq+", "uniform", "lsq")
LOSS_NAMES = ("ce", "cb", "la", "homovar")
BITS = (2, 3, 4, 5, 6, 7, 8, 32)


def _one_of(names: tuple[str, ...]) -> str:
    return "{" + ",".join(names) + "}"


def add_commands(commands: Any) -> None:
    _add_train(commands)
    _add_calibrate(commands)
    _add_adjust_logits(commands)


def _add_train(commands: Any) -> None:
    tr = add_command(commands, "train", "train a full-precision or quantized model")
    tr.add_argument(
        "--data",
        required=True,
        help="dataset folder made by `climbq data` (the run stores its absolute path)",
    )
    _add_model_options(tr)
    _add_schedule_options(tr)
    _add_start_options(tr)
    add_run_output(tr, "RUN folder to write (checkpoint.pt, metrics.json, history.jsonl)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.set_defaults(handler=_cmd_train)


def _add_model_options(tr: argparse.ArgumentParser) -> None:
    which = tr.add_mutually_exclusive_group()
    which.add_argument(
        "--arch",
        default=None,
        metavar=_one_of(ARCH_NAMES),
        help="a built-in model (default: resnet20, unless --model)",
    )
    which.add_argument(
        "--model",
        default=None,
        metavar="FILE.py:FACTORY",
        help="your own float CNN instead: FACTORY(num_classes=N) (or FACTORY()) in FILE.py or "
        "in package.module returns an nn.Module, quantized as --method/--wbits/--abits say "
        "(default: none, the built-in --arch)",
    )
    tr.add_argument(
        "--method",
        default="fp32",
        metavar=_one_of(TRAIN_METHODS),
        help="quantization: fp32 (none), climbq, climbq+ (ClimbQ trained with HomoVar), "
        "uniform or lsq; post-training quantization is `climbq calibrate`",
    )
    for flag, what in (("--wbits", "weight"), ("--abits", "activation")):
        tr.add_argument(
            flag,
            type=positive_int,
            choices=BITS,
            default=32,
            metavar="{2-8,32}",
            help=f"{what} bits (32: float, with --method fp32)",
        )
    tr.add_argument(
        "--loss",
        default=None,
        metavar=_one_of(LOSS_NAMES),
        help="cross-entropy, class-balanced, logit-adjusted or HomoVar "
        "(default: homovar for climbq+, ce otherwise)",
    )
    tr.add_argument(
        "--loss-option",
        action="append",
        default=[],
        type=key_value,
        metavar="KEY=VALUE",
        help="loss keyword, repeatable: homovar alpha/beta/variant/form/tau, cb beta/form, la tau "
        "(default: none, the loss's own values)",
    )
    tr.add_argument(
        "--act-scaling",
        choices=("faithful", "off"),
        default="faithful",
        help="ClimbQ's class-scaled activation sigma in training (off: sigma fixed at 2)",
    )
    tr.add_argument(
        "--faithful-mbv2",
        action="store_true",
        help="the authors' MobileNetV2 (unquantized conv shortcut; cannot be exported)",
    )


def _add_schedule_options(tr: argparse.ArgumentParser) -> None:
    tr.add_argument("--epochs", type=positive_int, default=50, help="training epochs")
    tr.add_argument("--batch-size", type=positive_int, default=128, help="training images per step")
    tr.add_argument("--lr", type=positive_float, default=0.04, help="SGD learning rate")
    tr.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="learning-rate schedule after the warm-up",
    )
    tr.add_argument(
        "--warmup-epochs", type=non_negative_int, default=0, help="linear learning-rate warm-up"
    )
    tr.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    tr.add_argument(
        "--eval-every",
        type=positive_int,
        default=1,
        metavar="N",
        help="test-set pass every N epochs (always after the last)",
    )
    tr.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: convs and linears autocast to bfloat16 (the quantizers stay fp32)",
    )
    tr.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="hold out this share of each training class, in [0, 1); report the best epoch "
        "on it (0: no validation split)",
    )
    tr.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default="cpu",
        help="where to train (auto: cuda if available); checkpoints always load on a CPU",
    )


def _add_start_options(tr: argparse.ArgumentParser) -> None:
    tr.add_argument(
        "--init",
        default=None,
        metavar="RUN",
        help="RUN folder whose weights start this run, e.g. QAT from a fp32 run "
        "(default: none, random initialisation)",
    )
    tr.add_argument(
        "--init-bn-gamma",
        type=positive_float,
        default=None,
        metavar="G",
        help="after --init, set every BatchNorm |gamma| to G (beta scaled alike): "
        "2 spreads ClimbQ's 2-bit codes (default: as --init trained them)",
    )
    tr.add_argument(
        "--distill",
        type=float,
        default=0.0,
        metavar="W",
        help="weight W in [0, 1] of distillation from the teacher (--teacher, else --init): "
        "(1-W) loss + W KD (0: no distillation)",
    )
    tr.add_argument(
        "--distill-temperature",
        type=positive_float,
        default=4.0,
        metavar="T",
        help="distillation temperature",
    )
    tr.add_argument(
        "--teacher",
        default=None,
        metavar="RUN",
        help="RUN folder of the distillation teacher (default: the --init run)",
    )


def _add_calibrate(commands: Any) -> None:
    cal = add_command(
        commands, "calibrate", "post-training quantization of a full-precision run (no training)"
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
    cal.add_argument("--calib-size", type=positive_int, default=500, help="calibration images")
    cal.add_argument(
        "--range",
        choices=("minmax", "percentile"),
        default=None,
        help="ptq recipes' activation ranges: observed min/max, or the --percentile of "
        "|activation| (default: minmax; climbq-ptq has no ranges)",
    )
    cal.add_argument(
        "--percentile", type=float, default=99.99, help="the percentile rule's p, in %%"
    )
    cal.add_argument("--seed", type=non_negative_int, default=0, help="calibration set seed")
    cal.add_argument("--batch-size", type=positive_int, default=250, help="forward-pass batch")
    cal.add_argument(
        "--data",
        default=None,
        help="dataset folder, where it is not where the run was trained from (default: the run's)",
    )
    add_run_output(cal)
    add_json_flag(cal, "print metrics.json")
    cal.set_defaults(handler=_cmd_calibrate)


def _add_adjust_logits(commands: Any) -> None:
    adj = add_command(
        commands, "adjust-logits", "post-hoc logit adjustment of a finished run (no training)"
    )
    adj.add_argument("run", type=Path, help="finished RUN folder (climbq train)")
    add_run_output(adj)
    adj.add_argument(
        "--tau", type=float, default=1.0, help="bias -= tau * log(prior); 1 (default) undoes it"
    )
    add_json_flag(adj, "print metrics.json")
    adj.set_defaults(handler=_cmd_adjust_logits)


def _cmd_train(args: argparse.Namespace) -> None:
    from climbq_deploy.api import train

    output_folder(args.out)
    out = train(
        args.data,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        loss_options=dict(args.loss_option),
        **picked(args, *TRAIN_OPTIONS),
    )
    if os.environ.get("RANK", "0") != "0":  # torchrun: process 0 speaks for all
        return
    _print_training(json.loads((out / "metrics.json").read_text()), out)


def _print_training(metrics: dict[str, Any], out: Path) -> None:
    print(
        f"top-1 {metrics['top1']:.2f}% ({groups_text(metrics)}) after {metrics['epochs']} epochs, "
        f"{metrics['seconds']:.1f} s; wrote {out / 'metrics.json'}"
    )
    if metrics["best_val"] is not None:
        best = metrics["best_val"]
        print(
            f"best on validation: epoch {best['epoch']} (balanced val top-1 "
            f"{best['val_balanced_top1']:.2f}%, test top-1 {best['test']['top1']:.2f}%); "
            f"weights in {out / 'best.pt'}"
        )


def _cmd_calibrate(args: argparse.Namespace) -> None:
    from climbq_deploy.calibration import CalibrateConfig, calibrate

    output_folder(args.out)
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
    metrics = calibrate(config, args.out, overwrite=args.overwrite)
    if printed_as_json(args, metrics):
        return
    counts = metrics["calibration"]["set"]["counts"]
    print(
        f"{args.method} ({args.calib} calibration, {sum(counts)} images {counts}): top-1 "
        f"{metrics['top1']:.2f}% ({groups_text(metrics)}); wrote {args.out}"
    )


def _cmd_adjust_logits(args: argparse.Namespace) -> None:
    from climbq_deploy.train.posthoc import adjust_logits

    metrics = adjust_logits(args.run, output_folder(args.out), args.tau, args.overwrite)
    if printed_as_json(args, metrics):
        return
    before = metrics["unadjusted"]
    print(
        f"logit adjustment (tau {args.tau:g}): top-1 {before['top1']:.2f} -> "
        f"{metrics['top1']:.2f}% ({groups_text(metrics, before)}); wrote {args.out}"
    )
