"""``climbq export``, ``check`` and ``bench``: a run's integer artifact for a target, compared
with the torch model, and timed. The targets, their flags and their help come from the
registry (:mod:`climbq_deploy.cli._targets`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from climbq_deploy.cli._args import (
    add_command,
    add_json_flag,
    non_negative_int,
    picked,
    positive_int,
    printed_as_json,
)
from climbq_deploy.cli._targets import (
    add_target_argument,
    add_target_option_flags,
    given_options,
    owner_suffixes,
    owner_targets,
    refuse_foreign,
)
from climbq_deploy.targets import HEADS

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


def _lowering_epilog() -> str:
    """``export``/``check`` help's table: what each target lowers exactly (the targets'
    declared ``lowers``)."""
    from climbq_deploy.targets import lowering_table

    return "\n".join(
        [
            "what each target lowers exactly (method, weight bits w, activation bits a, head); "
            "other runs are refused before any lowering, and a layer of an unusual model "
            "beyond a target's integer bounds is still refused by name:",
            *(f"  {line}" for line in lowering_table()),
        ]
    )


def _add_export(commands: Any) -> None:
    ex = add_command(
        commands,
        "export",
        "lower a trained run to a target's integer artifact",
        epilog=_lowering_epilog(),
    )
    ex.add_argument("run", type=Path, help="RUN folder made by `climbq train`")
    add_target_argument(ex, {"export"})
    ex.add_argument(
        "--out", type=Path, default=None, help="artifact path (default: RUN/model.<suffix>)"
    )
    ex.add_argument(
        "--data",
        type=Path,
        default=None,
        help="dataset folder whose normalisation and image shape the artifact takes, where it "
        "is not where the run was trained from (default: the run's)",
    )
    ex.add_argument(
        "--head",
        choices=HEADS,
        default="float",
        help="classifier head (int4: a 4-bit head in the program itself)",
    )
    ex.add_argument(
        "--golden",
        type=non_negative_int,
        default=256,
        metavar="N",
        help="also write ARTIFACT.golden.npz: N test images and the NumPy reference's outputs "
        "on them, for `climbq verify` on the device; 0: none (default: %(default)s)",
    )
    add_json_flag(ex, "print a JSON summary")
    ex.set_defaults(handler=_cmd_export)


def _add_check(commands: Any) -> None:
    ck = add_command(
        commands,
        "check",
        "compare a target's artifact with the torch model",
        epilog="without --artifact, check exports the run afresh (with --head and the target's "
        "export options) into a temporary file, checks it and deletes it: nothing in RUN is "
        "written or replaced. To check the file `climbq export` wrote, give it: "
        "--artifact RUN/model.tflite; it is checked as it is.\n\n" + _lowering_epilog(),
    )
    ck.add_argument("run", type=Path, help="RUN folder made by `climbq train`")
    add_target_argument(ck, {"export", "run"})
    ck.add_argument(
        "--artifact",
        type=Path,
        default=None,
        help="the file to check, as it is (default: a fresh export into a temporary file, "
        "deleted afterwards; never into RUN)",
    )
    ck.add_argument(
        "--data",
        type=Path,
        default=None,
        help="dataset folder whose test split is compared, where it is not where the run was "
        "trained from (default: the run's)",
    )
    ck.add_argument("--head", choices=HEADS, default="float", help="classifier head of the export")
    ck.add_argument("--batch-size", type=positive_int, default=100, help="images per batch")
    ck.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="N evenly spaced test images (default: the whole test split)",
    )
    add_json_flag(ck)
    ck.set_defaults(handler=_cmd_check)


def _add_bench(commands: Any) -> None:
    bn = add_command(
        commands,
        "bench",
        "load time, latency (p50/p90/p99), memory and accuracy of one or more model files",
        epilog="Several models are each measured in their own process (so peak RSS is each "
        "model's own) and printed as one table (--format md, csv or json). A .tflite or .onnx "
        "that climbq did not write is timed as it is: no --data, kernels or target options, "
        "no agreement column.",
    )
    bn.add_argument(
        "model",
        type=Path,
        nargs="+",
        help="artifacts from `climbq export` (any target's) or plain .tflite / .onnx files",
    )
    bn.add_argument(
        "--threads", type=positive_int, default=1, help="threads, where the runtime takes a count"
    )
    add_target_option_flags(bn, {"run"})
    bn.add_argument("--warmup", type=non_negative_int, default=10, help="untimed invokes first")
    bn.add_argument("--repeats", type=positive_int, default=100, help="timed invokes")
    bn.add_argument(
        "--data",
        type=Path,
        default=None,
        help="dataset folder: also top-1 on its test split (default: none, latency only)",
    )
    bn.add_argument(
        "--batch",
        type=positive_int,
        default=1,
        help="images per invoke (the model's batch axis resized; a fused-op .tflite and "
        "files exported with a fixed batch take 1 only)",
    )
    bn.add_argument(
        "--format",
        choices=("text", "md", "csv", "json"),
        default="text",
        help="text: a summary for one model, a Markdown table for several; md / csv: the "
        "table; json: the record (a list of records for several models) (default: text)",
    )
    add_json_flag(bn, "same as --format json")
    bn.set_defaults(handler=_cmd_bench)


def _cmd_export(args: argparse.Namespace) -> None:
    from climbq_deploy.export import export_artifact

    # export_artifact is climbq_deploy.export's own body; it also returns the program
    exported = export_artifact(
        args.run,
        args.target,
        args.out,
        head=args.head,
        data=args.data,
        golden=args.golden,
        **given_options(args),
    )
    path, graph = exported.path, exported.graph
    size = path.stat().st_size
    summary = {
        "artifact": str(path),
        "target": args.target,
        "bytes": size,
        "nodes": len(graph.nodes),
        "head": args.head,
        "golden": None if exported.golden is None else str(exported.golden),
    }
    if not printed_as_json(args, summary):
        print(f"wrote {path} ({size} bytes, {len(graph.nodes)} integer ops)")
        if exported.golden is not None:
            print(f"wrote {exported.golden} (check it on the device: climbq verify {path})")


def _cmd_check(args: argparse.Namespace) -> None:
    from climbq_deploy.api import check
    from climbq_deploy.targets import TARGETS

    given = given_options(args)
    refuse_foreign(given, TARGETS[args.target], owner_targets, repr(args.target))
    options = picked(args, "artifact", "data", "batch_size", "limit", "head")
    record = check(args.run, args.target, progress=True, **options, **given)
    if printed_as_json(args, record):
        return
    for key in CHECK_KEYS:
        if key in record:
            print(f"{key:>26}: {record[key]}")


def _cmd_bench(args: argparse.Namespace) -> None:
    from climbq_deploy.api import bench
    from climbq_deploy.bench_table import bench_in_subprocess, render
    from climbq_deploy.errors import ClimbQError
    from climbq_deploy.targets import target_for_path

    given = given_options(args)
    for model in args.model:
        refuse_foreign(given, target_for_path(model), owner_suffixes, model.name)
    options = picked(args, "threads", "batch", "warmup", "repeats", "data")
    fmt = "json" if args.json else args.format
    if len(args.model) > 1:
        sent = {k: str(v) if isinstance(v, Path) else v for k, v in {**options, **given}.items()}
        records = [bench_in_subprocess(model, sent) for model in args.model]
        print(render(records, "md" if fmt == "text" else fmt))
        failed = [r for r in records if "error" in r]
        if failed:
            raise ClimbQError(
                f"{len(failed)} of {len(records)} models failed: {failed[0]['error']}"
            )
        return
    record = bench(args.model[0], **options, **given)
    if fmt == "json":
        print(json.dumps(record, indent=2))
        return
    if fmt in ("md", "csv"):
        print(render([record], fmt))
        return
    lat = record["latency_ms"]
    threads = record["threads"]  # None: the runtime's own pool (NumPy's BLAS)
    pool = "its own threads" if threads is None else f"{threads} thread(s)"
    print(
        f"{record['model']}: p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, p99 "
        f"{lat['p99']:.2f} ms, {record['images_per_second']:.1f} img/s "
        f"({record['kernels']}, {pool}, {record['cpu']})"
    )
    ops = record.get("delegation")
    if ops:
        left = ", ".join(ops["left_ops"][:6]) + (" ..." if len(ops["left_ops"]) > 6 else "")
        print(
            f"delegate ops: {ops['delegated_ops']} of {ops['total_ops']} in "
            f"{ops['partitions']} partition(s)" + (f"; LiteRT runs {left}" if left else "")
        )
    rss = record.get("peak_rss_mb")
    print(
        f"load {record['load_ms']:.1f} ms, first invoke {record['first_invoke_ms']:.2f} ms, "
        f"file {record['file_bytes'] / 2**20:.3f} MB"
        + (f", peak RSS {rss:.1f} MB" if rss is not None else "")
        + (" (not written by climbq: no reference to agree with)" if record["foreign"] else "")
    )
    if record["top1"] is not None:
        print(f"top-1 {record['top1']:.2f}% on {record['n_images']} images")
