"""``climbq verify MODEL [GOLDEN]``: the reference-vs-device check, on the device (numpy and
the runtime only; :mod:`climbq_deploy.verify`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from climbq_deploy.cli._args import add_command, add_json_flag, positive_int
from climbq_deploy.cli._targets import (
    add_target_option_flags,
    given_options,
    owner_suffixes,
    refuse_foreign,
)


def add_commands(commands: Any) -> None:
    vf = add_command(
        commands,
        "verify",
        "check a model on this device against its golden file (exit 1 when it differs)",
        epilog="`climbq export` writes MODEL.golden.npz beside the model: test images, their "
        "labels and the NumPy reference's outputs. verify runs MODEL with its runtime on "
        "them and compares every quantized layer's codes (where the runtime exposes them) "
        "and the top-1 class. Exit 0: exact (or top-1 agreement >= --min-agreement when that "
        "is below 1); 1: it differs (the first divergent layer and the counts are printed); "
        "2: bad input; 3: the runtime is not installed here.",
    )
    vf.add_argument("model", type=Path, help="the exported model (.tflite, .onnx, .climbq)")
    vf.add_argument(
        "golden",
        type=Path,
        nargs="?",
        default=None,
        help="its golden file (default: MODEL.golden.npz beside it)",
    )
    vf.add_argument(
        "--min-agreement",
        type=float,
        default=1.0,
        metavar="A",
        help="pass when top-1 agreement with the reference is >= A even if codes differ; "
        "1.0 requires every code and every top-1 to be equal (default: %(default)s)",
    )
    vf.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="runtime threads, where it takes a count (default: the runtime's own)",
    )
    vf.add_argument(
        "--batch-size", type=positive_int, default=32, help="images per invoke (default: 32)"
    )
    add_target_option_flags(vf, {"run"})
    add_json_flag(vf, "print the record as one JSON object (also when it fails)")
    vf.set_defaults(handler=_cmd_verify)


def _cmd_verify(args: argparse.Namespace) -> None:
    from climbq_deploy.targets import target_for_path
    from climbq_deploy.verify import VerificationError, failure_summary, verify_model

    given = given_options(args)
    refuse_foreign(given, target_for_path(args.model), owner_suffixes, args.model.name)
    record = verify_model(
        args.model,
        args.golden,
        min_agreement=args.min_agreement,
        threads=args.threads,
        batch_size=args.batch_size,
        options=given,
        raise_on_failure=False,
    )
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        verdict = "exact" if record["exact_match"] else "DIFFERS"
        print(
            f"{record['model']}: {verdict} on {record['n_images']} golden images "
            f"({record['kernels']}); codes of {record['layers_compared']} of "
            f"{record['layers_total']} layers compared, {record['layers_differing']} differ; "
            f"top-1 agreement {record['top1_agreement']:.4f}; top-1 {record['top1']:.2f}% "
            f"(reference {record['reference_top1']:.2f}%); max |logit diff| "
            f"{record['max_abs_logit_diff']:.3g}"
        )
        if not record["model_matches_export"]:
            print(f"note: {record['model']} is not the file the golden file was written for")
    sys.stdout.flush()
    if not record["passed"]:
        raise VerificationError(failure_summary(record), record)
