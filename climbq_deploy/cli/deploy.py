"""``climbq export``, ``check`` and ``bench``: a run's integer artifact for a target, compared
with the torch model, and timed. The targets, their flags and their help come from the
registry (:mod:`climbq_deploy.cli._targets`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from climbq_deploy.cli._args import add_command, non_negative_int, positive_int
from climbq_deploy.cli._targets import (
    add_target_argument,
    add_target_option_flags,
    given_options,
    owner_suffixes,
    owner_targets,
    refuse_foreign,
)
from climbq_deploy.errors import ConfigError

HEADS = ("float", "int8", "int4")
CHECK_KEYS = (
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


def add_commands(commands: Any) -> None:
    _add_export(commands)
    _add_check(commands)
    _add_bench(commands)


def _add_export(commands: Any) -> None:
    ex = add_command(commands, "export", "lower a trained run to a target's integer artifact")
    ex.add_argument("run", type=Path, help="RUN folder made by `climbq train`")
    add_target_argument(ex, {"export"})
    ex.add_argument("--out", type=Path, default=None, help="artifact path (default RUN/model.*)")
    ex.add_argument(
        "--head",
        choices=HEADS,
        default="float",
        help="classifier head (int4: a 4-bit head in the program itself)",
    )
    ex.add_argument("--json", action="store_true", help="print a JSON summary")
    ex.set_defaults(handler=_cmd_export)


def _add_check(commands: Any) -> None:
    ck = add_command(commands, "check", "compare a target's artifact with the torch model")
    ck.add_argument("run", type=Path, help="RUN folder made by `climbq train`")
    add_target_argument(ck, {"export", "run"})
    ck.add_argument(
        "--artifact", type=Path, default=None, help="default: export afresh to RUN/model.*"
    )
    ck.add_argument("--data", type=Path, default=None, help="dataset folder (default: the run's)")
    ck.add_argument("--head", choices=HEADS, default="float", help="classifier head of the export")
    ck.add_argument("--batch-size", type=positive_int, default=100, help="images per batch")
    ck.add_argument("--limit", type=positive_int, default=None, help="N evenly spaced test images")
    ck.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ck.set_defaults(handler=_cmd_check)


def _add_bench(commands: Any) -> None:
    bn = add_command(commands, "bench", "latency (p50/p90/p99) and accuracy of a model file")
    bn.add_argument("model", type=Path, help="an artifact from `climbq export` (any target's)")
    bn.add_argument(
        "--threads", type=positive_int, default=1, help="threads, where the runtime takes a count"
    )
    add_target_option_flags(bn, {"run"})
    bn.add_argument("--warmup", type=non_negative_int, default=10, help="untimed invokes first")
    bn.add_argument("--repeats", type=positive_int, default=100, help="timed invokes")
    bn.add_argument("--data", type=Path, default=None, help="dataset folder: also top-1")
    bn.add_argument(
        "--batch",
        type=positive_int,
        default=1,
        help="images per invoke (1 where the model's batch is fixed at export)",
    )
    bn.add_argument("--json", action="store_true", help="one JSON object on stdout")
    bn.set_defaults(handler=_cmd_bench)


def _cmd_export(args: argparse.Namespace) -> None:
    from climbq_deploy.export import load_run, lower_run
    from climbq_deploy.targets import get_target

    target = get_target(args.target, **given_options(args))
    out = args.out or args.run / f"model{target.suffix}"
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the artifact's file name")
    graph = lower_run(load_run(args.run), head=args.head, input_bits=target.input_bits)
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
    from climbq_deploy.targets import TARGETS

    cls = TARGETS[args.target]
    given = given_options(args)
    refuse_foreign(given, cls, owner_targets, repr(args.target))
    record = check_run(
        args.run,
        target=cls(**given),
        artifact=args.artifact,
        data=args.data,
        batch_size=args.batch_size,
        limit=args.limit,
        head=args.head,
        progress=True,
    )
    if args.json:
        print(json.dumps(record, indent=2))
        return
    for key in CHECK_KEYS:
        if key in record:
            print(f"{key:>26}: {record[key]}")


def _cmd_bench(args: argparse.Namespace) -> None:
    from climbq_deploy.bench import bench_artifact
    from climbq_deploy.targets import target_for_path

    given = given_options(args)
    refuse_foreign(given, target_for_path(args.model), owner_suffixes, args.model.name)
    record = bench_artifact(
        args.model,
        threads=args.threads,
        batch=args.batch,
        warmup=args.warmup,
        repeats=args.repeats,
        data=args.data,
        options=given,
    )
    if args.json:
        print(json.dumps(record, indent=2))
        return
    lat = record["latency_ms"]
    threads = record["threads"]  # None: the runtime's own pool (NumPy's BLAS)
    pool = "its own threads" if threads is None else f"{threads} thread(s)"
    print(
        f"{record['model']}: p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, p99 "
        f"{lat['p99']:.2f} ms, {record['images_per_second']:.1f} img/s "
        f"({record['kernels']}, {pool}, {record['cpu']})"
    )
    if record["top1"] is not None:
        print(f"top-1 {record['top1']:.2f}% on {record['n_images']} images")
