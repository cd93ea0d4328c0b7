"""``climbq data``: build or inspect long-tailed datasets (syndigits, cifar10, folder, digits,
show)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from climbq_deploy.cli._args import (
    add_command,
    add_json_flag,
    gamma,
    non_negative_int,
    picked,
    positive_int,
    printed_as_json,
)


def add_commands(commands: Any) -> None:
    data = add_command(commands, "data", "build or inspect long-tailed datasets")
    kinds = data.add_subparsers(dest="kind", required=True, metavar="KIND")
    _add_syndigits(kinds)
    _add_image_folders(kinds)
    _add_digits(kinds)
    show = add_command(kinds, "show", "verify a dataset folder and print its summary")
    show.add_argument("folder", type=Path, help="dataset folder made by `climbq data`")
    add_json_flag(show, "print the summary as JSON")
    show.add_argument("--preview", action="store_true", help="(re)write FOLDER/preview.png")
    show.set_defaults(handler=_cmd_show)


def _add_common_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output dataset folder")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    parser.add_argument("--size", type=positive_int, default=32, help="image side in pixels")
    parser.add_argument("--preview", action="store_true", help="also write OUT/preview.png")
    add_json_flag(parser, "print the summary as JSON")


def _add_syndigits(kinds: Any) -> None:
    syn = add_command(kinds, "syndigits", "render SynDigits-LT (the embedded default, no download)")
    syn.add_argument("--gamma", type=gamma, required=True, help="imbalance ratio (>= 1)")
    syn.add_argument(
        "--test-per-class", type=positive_int, default=200, help="test images per class"
    )
    _add_common_output(syn)
    syn.set_defaults(handler=_cmd_syndigits)


def _add_image_folders(kinds: Any) -> None:
    for name, help_text in (
        ("cifar10", "CIFAR-10-LT from a folder, zip or python-batches folder"),
        ("folder", "a long-tailed set from any train/<class>/*, test/<class>/* folder or zip"),
    ):
        sub = add_command(kinds, name, help_text)
        sub.add_argument("--source", required=True, type=Path, help="folder or .zip of images")
        sub.add_argument(
            "--gamma",
            type=gamma,
            help="imbalance ratio (>= 1) of the §6 long-tail formula (default: none; give it "
            "or --split-csv)",
        )
        sub.add_argument(
            "--split-csv",
            type=Path,
            help="exact training list, a CSV of image,label rows (default: none, the --gamma "
            "formula)",
        )
        sub.add_argument("--test-csv", type=Path, help="exact test list (default: all of test/)")
        sub.add_argument("--n-max", type=positive_int, help="head-class images (default: all)")
        sub.add_argument("--cap", action="store_true", help="cap counts at what is available")
        sub.add_argument("--skip-bad", action="store_true", help="skip unreadable images")
        sub.add_argument(
            "--augment",
            choices=("crop_flip", "none"),
            default="crop_flip",
            help="training augmentation recorded with the dataset",
        )
        if name == "folder":
            sub.add_argument("--name", default=None, help="dataset name (default: SOURCE-lt)")
        _add_common_output(sub)
        sub.set_defaults(handler=_cmd_imagefolder)


def _add_digits(kinds: Any) -> None:
    dig = add_command(kinds, "digits", "digits-LT from scikit-learn's bundled 8x8 digits")
    dig.add_argument("--gamma", type=gamma, required=True, help="imbalance ratio (>= 1)")
    dig.add_argument(
        "--test-per-class", type=positive_int, default=50, help="test images per class"
    )
    dig.add_argument("--cap", action="store_true", help="cap counts at what is available")
    _add_common_output(dig)
    dig.set_defaults(handler=_cmd_digits)


def _finish_dataset(dataset: Any, out: Path, args: argparse.Namespace, write: bool = True) -> None:
    from climbq_deploy.data.dataset import META_FILE, save_dataset
    from climbq_deploy.data.preview import write_contact_sheet

    if write:
        save_dataset(dataset, out)
    meta = json.loads((out / META_FILE).read_text())
    preview = write_contact_sheet(dataset, out / "preview.png") if args.preview else None
    summary = {
        "folder": str(out),
        "name": meta["name"],
        "class_names": meta["class_names"],
        "counts": meta["counts"],
        "sizes": meta["sizes"],
        "sha256": {k: v["sha256"] for k, v in meta["arrays"].items()},
        "preview": str(preview) if preview else None,
    }
    if printed_as_json(args, summary):
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
    options = picked(
        args, "split_csv", "test_csv", "seed", "n_max", "size", "skip_bad", "cap", "augment"
    )
    dataset = build_image_dataset(args.source, args.gamma, name=name, **options)
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
