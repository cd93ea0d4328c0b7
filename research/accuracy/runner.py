"""Resumable runner of the accuracy grid (``grid.py``): one process per run, a dependency on the
dataset and on the shared fp32 pretraining, N runs at a time, one ``result.json`` per run.
Run from the repository root:

    python -m research.accuracy.runner list [--filter cifar10-lt-g50 --filter '!paper']
    python -m research.accuracy.runner run --jobs 2 [--filter ...] [--device auto]
    python -m research.accuracy.runner one NAME          # what ``run`` starts per run
    python -m research.accuracy.runner pack --out DIR    # tarballs of results and checkpoints
    python -m research.accuracy.runner keep-starts       # finished fp32 runs -> starts/
    python -m research.accuracy.runner restore-starts [--rev SHA]  # starts/ from git history

A run whose ``runs/accuracy/<name>/result.json`` exists is skipped; an interrupted run resumes
from its ``checkpoint.pt`` (every epoch is checkpointed) with the epoch count in that checkpoint,
on whatever device this machine has. ``--fp-seconds S`` lets a new fp32 pretraining choose its
epoch count: it times two epochs on this machine under the load of the moment and takes
``clamp(S / (1.15 t_epoch), --fp-min-epochs, --fp-epochs)`` (the shape of the cosine is then fixed
for the whole run). ``run`` and ``list`` first restore the fp32 starts kept in
``research/accuracy/starts/`` (``starts.py``) into a checkout that lacks them: a start's
checkpoint from that git-ignored folder, else from git history (``restore-starts``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from bench._common import cpu_model, git_commit, utc_timestamp
from research import REPO
from research.accuracy import grid, starts

MODULE = "research.accuracy.runner"  # ``run`` starts ``python -m MODULE one NAME`` per run
RESULT = "result.json"
ARC = "accuracy"  # top folder in the tarballs; collect.py unpacks it into its runs folder
MiB = 1 << 20


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------- one run
def build_data(spec: grid.DataSpec, source: Path) -> None:
    """Build ``spec`` into ``runs/accuracy/data/<name>`` unless its data.npz exists."""
    from climbq_deploy.data.dataset import save_dataset

    if (spec.path / "data.npz").is_file():
        return
    began = time.perf_counter()
    if spec.dataset == "cifar10-lt":
        from climbq_deploy.data.imagefolder import build_image_dataset

        dataset = build_image_dataset(
            source / "cifar10-jpg.zip",
            split_csv=source / "climbq-splits" / f"cifar10_train{spec.gamma}.csv",
            name="cifar10-lt",
            progress=False,
        )
    elif spec.dataset == "syndigits-lt":
        from climbq_deploy.data.syndigits import build_syndigits

        dataset = build_syndigits(spec.gamma, seed=0, progress=False)
    elif spec.dataset == "digits-lt":
        from climbq_deploy.data.digits import build_digits

        dataset = build_digits(spec.gamma, seed=0)
    else:
        raise SystemExit(f"unknown dataset {spec.dataset!r}")
    save_dataset(dataset, spec.path)
    log(
        f"built {spec.name}: {len(dataset.train_labels)} train + {len(dataset.test_labels)} "
        f"test images in {time.perf_counter() - began:.1f} s"
    )


def device_name(device: str) -> str:
    import torch

    from climbq_deploy.train.loop import resolve_device

    if resolve_device(device).type == "cuda":
        return torch.cuda.get_device_name(0)
    return cpu_model()


def saved_epochs(run: grid.Run) -> int | None:
    """The epoch count of the run's checkpoint, if it has one (a resume keeps it)."""
    from climbq_deploy.train.checkpoint import load_checkpoint

    path = run.path / "checkpoint.pt"
    return int(load_checkpoint(path)["config"]["epochs"]) if path.is_file() else None


def probe_fp_epochs(run: grid.Run, args: argparse.Namespace) -> int:
    """fp32 epochs that fit ``--fp-seconds``, from two timed epochs of this run's model."""
    from climbq_deploy.train.loop import train

    probe = run.path.with_name(run.path.name + ".probe")
    shutil.rmtree(probe, ignore_errors=True)
    train(run.config(2, args.device), probe, progress=False)
    history = [json.loads(line) for line in (probe / "history.jsonl").open()]
    shutil.rmtree(probe, ignore_errors=True)
    epoch_s = history[1]["seconds"] - history[0]["seconds"] + history[1]["test_seconds"]
    epochs = int(args.fp_seconds / (1.15 * epoch_s))
    chosen = max(args.fp_min_epochs, min(args.fp_epochs, epochs))
    log(f"{run.name}: probe {epoch_s:.2f} s/epoch -> {chosen} epochs for {args.fp_seconds} s")
    return chosen


def data_hashes(spec: grid.DataSpec) -> dict[str, str] | None:
    """sha256 of the train and test images of the dataset build in ``spec.path`` (from its
    meta.json), so a record names the exact pixels it was trained and tested on; None if the
    dataset is not built."""
    meta = spec.path / "meta.json"
    if not meta.is_file():
        return None
    arrays = json.loads(meta.read_text())["arrays"]
    return {k: arrays[k]["sha256"] for k in ("train_images", "test_images") if k in arrays}


def result_record(run: grid.Run, metrics: dict[str, Any], device: str) -> dict[str, Any]:
    """The benchmark's record of one finished run (collect.py adds deployed_top1)."""
    return {
        "name": run.name,
        "dataset": run.data.dataset,
        "gamma": run.data.gamma,
        "arch": run.arch,
        "method": run.method,
        "wbits": run.wbits,
        "abits": run.abits,
        "recipe": run.recipe,
        "variant": run.variant,
        "seed": run.seed,
        "loss": metrics["loss"],
        "top1": metrics["top1"],
        "many": metrics["many"],
        "medium": metrics["medium"],
        "few": metrics["few"],
        "per_class": metrics["per_class"],
        "deployed_top1": None,
        "epochs": metrics["epochs"],
        "seconds": metrics["seconds"],
        "commit": git_commit() or os.environ.get("CLIMBQ_COMMIT"),
        "device": device,
        "finished_utc": utc_timestamp(),
        "data_sha256": data_hashes(run.data),
    }


def run_one(name: str, args: argparse.Namespace) -> None:
    import torch

    from climbq_deploy.fileio import write_json
    from climbq_deploy.train.loop import train

    torch.set_num_threads(args.threads)
    source = Path(args.source)
    if name.startswith("data:"):
        specs = {s.name: s for s in grid.datasets(grid.grid())}
        build_data(specs[name[5:]], source)
        return
    by_name = {r.name: r for r in grid.grid()}
    run = by_name[name]
    if (run.path / RESULT).is_file():
        return
    if run.is_posthoc:
        adjust_run(run, by_name[run.init_name])
        return
    epochs = saved_epochs(run)
    if epochs is None:
        if args.smoke:
            epochs = 1
        elif run.is_fp and args.fp_seconds and run.fixed_epochs is None:
            epochs = probe_fp_epochs(run, args)
        else:
            epochs = run.epochs(args.fp_epochs if run.is_fp else args.qat_epochs)
    config = run.config(epochs, args.device)
    device = device_name(args.device)
    log(f"{name}: {epochs} epochs on {device}")
    metrics = train(config, run.path, resume=True, progress=False)
    write_json(run.path / RESULT, result_record(run, metrics, device))
    log(
        f"{name}: top-1 {metrics['top1']:.2f} after {metrics['epochs']} epochs, "
        f"{metrics['seconds']:.0f} s"
    )


def adjust_run(run: grid.Run, base: grid.Run) -> None:
    """A post-hoc variant: ``climbq adjust-logits`` of the finished ``base`` (no training).
    Its record keeps the base's epochs, training seconds and device (the model is the base's
    final epoch); the adjustment's own seconds are in its metrics.json."""
    from climbq_deploy.fileio import write_json
    from climbq_deploy.train.posthoc import RECORD, adjust_logits

    base_record = json.loads((base.path / RESULT).read_text())
    log(f"{run.name}: logit adjustment (tau {grid.POSTHOC_TAU:g}) of {base.name}")
    metrics = adjust_logits(base.path, run.path, grid.POSTHOC_TAU)
    write_json(run.path / RESULT, result_record(run, metrics, base_record["device"]))
    log(
        f"{run.name}: top-1 {metrics['unadjusted']['top1']:.2f} -> {metrics['top1']:.2f} "
        f"({metrics[RECORD]['seconds']:.0f} s)"
    )


# ---------------------------------------------------------------------------------- the grid
def restore_starts(everything: list[grid.Run]) -> None:
    """Put the kept fp32 starts into their run folders (:func:`starts.restore`), first
    fetching from git history the checkpoints the git-ignored kept folder lacks; without git
    or that commit, say so and go on (those starts are then trained like any fp32 run)."""
    lacking = starts.lacking_weights(everything)
    if lacking:
        try:
            got, left = starts.restore_from_git(starts.ARCHIVE_REV, lacking)
        except starts.StartsError as exc:
            got, left = [], [f"{', '.join(lacking)}: {exc}"]
        for name in got:
            log(f"checkpoint of {name} restored from git history ({starts.ARCHIVE_REV[:12]})")
        for why in left:
            log(f"kept start without its checkpoint here: {why}")
    for name in starts.restore(everything):
        log(f"restored {name} from {starts.STARTS / name}")


Job = tuple[float, list[str]]  # (priority, names of the jobs it waits for)


def is_done(run: grid.Run) -> bool:
    return (run.path / RESULT).is_file()


def plan_jobs(everything: list[grid.Run], selected: list[grid.Run]) -> dict[str, Job]:
    """The jobs of ``selected`` (unfinished runs): ``name -> (priority, dependencies)``, with a
    ``data:<dataset>`` job for each dataset not built yet and each run depending on the run it
    starts from (its fp32 pretraining, or the QAT run of :data:`grid.INIT_FROM`) unless that is
    done. A run whose start is neither done nor selected is left out (and logged)."""
    by_name = {r.name: r for r in everything}
    jobs: dict[str, Job] = {}
    for run in selected:
        deps = []
        if not (run.data.path / "data.npz").is_file():
            key = f"data:{run.data.name}"
            first = min(jobs.get(key, (run.priority + 0.5, []))[0] + 0.5, run.priority)
            jobs[key] = (first - 0.5, [])
            deps.append(key)
        starts_from = None if run.is_fp else by_name[run.init_name]  # fp32 or a QAT run
        if starts_from is not None and not is_done(starts_from):
            if starts_from not in selected:
                log(
                    f"skip {run.name}: the run it starts from, {starts_from.name}, is neither "
                    "done nor selected"
                )
                continue
            deps.append(starts_from.name)
        jobs[run.name] = (run.priority, deps)
    return jobs


def start_order(ready: list[tuple[float, str]], part_trained: set[str]) -> list[str]:
    """Names of the ready jobs ``(priority, name)`` in the order they start: part-trained runs
    first (a checkpoint and no result: resuming them finishes epochs already paid for, where a
    fresh start would leave them idle behind it), then by priority, then by name."""
    return [name for _, name in sorted(ready, key=lambda job: (job[1] not in part_trained, job))]


def run_grid(args: argparse.Namespace) -> int:
    """Schedule the selected runs: among those whose dataset and the run they start from are
    ready, part-trained runs first, then highest priority (:func:`start_order`), at most
    ``--jobs`` at a time; a failure blocks its dependents."""
    everything = grid.grid()
    restore_starts(everything)
    selected = [r for r in grid.select(everything, args.filter) if not is_done(r)]
    jobs = plan_jobs(everything, selected)
    part_trained = {r.name for r in selected if (r.path / "checkpoint.pt").is_file()}
    log(
        f"{len(jobs)} jobs ({sum(not k.startswith('data:') for k in jobs)} runs), "
        f"{args.jobs} at a time, device {args.device}"
    )
    running: dict[str, tuple[subprocess.Popen[bytes], float]] = {}
    finished, failed, seen_epochs = set(), set(), {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}

    def stop(*_: Any) -> None:
        for proc, _began in running.values():
            proc.terminate()
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, stop)
    logs = grid.RUNS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    while True:
        for name, (proc, began) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            (finished if proc.returncode == 0 else failed).add(name)
            status = "done" if proc.returncode == 0 else f"FAILED rc={proc.returncode}"
            log(f"{name}: {status} after {time.time() - began:.0f} s (see {logs / name}.log)")
        for name in running:  # per-epoch progress from the runs' history files
            history = grid.RUNS / name / "history.jsonl"
            if history.is_file():
                lines = history.read_text().splitlines()
                for line in lines[seen_epochs.get(name, 0) :]:
                    r = json.loads(line)
                    top1 = "–" if r["test_top1"] is None else f"{r['test_top1']:.2f}"
                    log(
                        f"  {name} epoch {r['epoch']}: train {r['seconds']:.1f} s total, "
                        f"test {r['test_seconds']:.2f} s, top-1 {top1}"
                    )
                seen_epochs[name] = len(lines)
        blocked = {n for n, (_, deps) in jobs.items() if any(d in failed for d in deps)}
        for name in blocked - failed:
            log(f"{name}: blocked by a failed dependency")
            failed.add(name)
        ready = [
            (p, n)
            for n, (p, deps) in jobs.items()
            if n not in running
            and n not in finished
            and n not in failed
            and all(d in finished for d in deps)
        ]
        for name in start_order(ready, part_trained)[: max(0, args.jobs - len(running))]:
            command = [sys.executable, "-m", MODULE, "one", name, *args.passthrough]
            handle = (logs / f"{name}.log").open("ab")
            proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
            running[name] = (proc, time.time())
            log(f"start {name}")
        if not running:
            break
        time.sleep(args.poll)
    left = [n for n in jobs if n not in finished]
    log(f"finished {len(finished)}, failed or blocked {len(failed)}, left {len(left)}")
    return 1 if failed else 0


# ---------------------------------------------------------------------------------- packing
def pack(args: argparse.Namespace) -> None:
    """Write ``OUT/accuracy_runs.tar.gz`` (every small file: results, metrics, histories, logs,
    dataset meta) and checkpoint tarballs ``OUT/accuracy_ckpt_K.tar.gz``, each under
    ``--tar-mib``, all under ``--total-mib``, checkpoints in order of use: finished fp32
    pretraining (slim), unfinished CIFAR runs (full, to resume), finished ClimbQ+ runs (slim,
    for the deployed check), then the rest."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    order = {r.name: i for i, r in enumerate(grid.grid())}
    small: list[tuple[Path, str]] = []  # (file, name in the tarball: under ARC = the runs dir)
    for folder in sorted(grid.RUNS.glob("*")):
        if folder.name in order:
            for file in ("result.json", "metrics.json", "history.jsonl"):
                if (folder / file).is_file():
                    small.append((folder / file, f"{ARC}/{folder.name}/{file}"))
    for meta in sorted(grid.DATA.glob("*/meta.json")):
        small.append((meta, f"{ARC}/device-meta/{meta.parent.name}.json"))
    small += [(p, f"{ARC}/logs/{p.name}") for p in sorted((grid.RUNS / "logs").glob("*.log"))]
    small += [(Path(p), f"{ARC}/device-logs/{Path(p).name}") for p in args.log if Path(p).is_file()]
    candidates = []
    for run in grid.grid():
        checkpoint = run.path / "checkpoint.pt"
        if not checkpoint.is_file():
            continue
        done = is_done(run)
        rank = (
            0
            if run.is_fp and done
            else 1
            if not done and run.data.dataset == "cifar10-lt"
            else 2
            if done and run.method == "climbq+"
            else 3
            if not done
            else 4
        )
        candidates.append((rank, order[run.name], run, done))
    tars: list[list[tuple[str, bytes]]] = [[]]
    sizes, total = [0], 0
    for path, arcname in small:
        data = path.read_bytes()
        tars[0].append((arcname, data))
        sizes[0] += len(data)
    total = sizes[0]
    for _, _, run, done in sorted(candidates, key=lambda c: c[:2]):
        path = run.path / "checkpoint.pt"
        try:
            data = starts.slim_checkpoint(path) if done else path.read_bytes()
        except Exception as exc:  # a checkpoint being replaced: next round
            log(f"pack: skipped {path}: {exc}")
            continue
        if total + len(data) > args.total_mib * MiB:
            continue
        if sizes[-1] + len(data) > args.tar_mib * MiB:
            if len(tars) == args.max_tars:
                continue
            tars.append([])
            sizes.append(0)
        tars[-1].append((f"{ARC}/{run.name}/checkpoint.pt", data))
        sizes[-1] += len(data)
        total += len(data)
    names = ["accuracy_runs.tar.gz"] + [f"accuracy_ckpt_{k}.tar.gz" for k in range(1, len(tars))]
    for name, members in zip(names, tars, strict=True):
        tmp = out / "partial.tmp"
        with tarfile.open(tmp, "w:gz", compresslevel=1) as archive:
            for arcname, data in members:
                info = tarfile.TarInfo(arcname)
                info.size, info.mtime = len(data), int(time.time())
                archive.addfile(info, io.BytesIO(data))
        os.replace(tmp, out / name)
    for stale in out.glob("accuracy_ckpt_*.tar.gz"):
        if stale.name not in names:
            stale.unlink()
    kept = sum(len(m) for m in tars[1:]) + sum(a.endswith(".pt") for a, _ in tars[0])
    log(
        f"pack: {len(names)} tarball(s), {total / MiB:.1f} MiB, {kept}/{len(candidates)} "
        f"checkpoints, {len(small)} small files"
    )


# ---------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("list", "run", "one"):
        p = sub.add_parser(name)
        if name == "one":
            p.add_argument("name")
        else:
            p.add_argument("--filter", action="append", help="name contains (!: does not)")
        p.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
        p.add_argument(
            "--source",
            default=str(REPO.parent / "shared" / "data"),
            help="folder with cifar10-jpg.zip and climbq-splits/",
        )
        p.add_argument("--fp-epochs", type=int, default=200, help="fp32 epochs (cap)")
        p.add_argument("--fp-seconds", type=float, default=0, help="fit fp32 into S seconds")
        p.add_argument("--fp-min-epochs", type=int, default=30)
        p.add_argument("--qat-epochs", type=int, default=50)
        p.add_argument("--threads", type=int, default=1, help="torch threads per run")
        p.add_argument("--smoke", action="store_true", help="1 epoch per run (a plumbing test)")
        if name == "run":
            p.add_argument("--jobs", type=int, default=1, help="runs at a time")
            p.add_argument("--poll", type=float, default=2.0)
    p = sub.add_parser("keep-starts", help="copy finished fp32 runs to research/accuracy/starts")
    p.add_argument("--max-mib", type=float, default=4.0, help="largest slim checkpoint kept")
    p = sub.add_parser(
        "restore-starts", help="write the kept starts' checkpoints from git history into starts/"
    )
    p.add_argument(
        "--rev",
        default=starts.ARCHIVE_REV,
        help="the commit that holds them under bench/accuracy/starts/ (default: the last one)",
    )
    p.add_argument("--name", action="append", help="only this start (repeatable)")
    p.add_argument("--force", action="store_true", help="rewrite checkpoints already here")
    p = sub.add_parser("pack")
    p.add_argument("--out", required=True)
    p.add_argument("--log", action="append", default=[], help="extra log file to include")
    p.add_argument("--tar-mib", type=float, default=15.5)
    p.add_argument("--total-mib", type=float, default=60.0)
    p.add_argument("--max-tars", type=int, default=6)
    args = parser.parse_args(argv)
    for key in ("source", "out"):  # paths given relative to the caller's folder
        if getattr(args, key, None):
            setattr(args, key, str(Path(getattr(args, key)).resolve()))
    if getattr(args, "log", None):
        args.log = [str(Path(p).resolve()) for p in args.log]
    os.chdir(REPO)
    if args.command == "pack":
        pack(args)
        return 0
    if args.command == "keep-starts":
        kept, left = starts.save(grid.grid(), args.max_mib)
        for name in kept:
            log(f"kept {name} in {starts.STARTS / name}")
        for why in left:
            log(f"not kept: {why}")
        if kept:
            log(
                f"commit only their records ({', '.join(starts.RECORDS)}); each "
                f"{starts.CHECKPOINT} is git-ignored: publish them as a release artifact "
                "(e.g. a tarball of research/accuracy/starts/*/checkpoint.pt attached to a "
                "GitHub release), never commit them"
            )
        return 0
    if args.command == "restore-starts":
        try:
            got, left = starts.restore_from_git(args.rev, args.name, force=args.force)
        except starts.StartsError as exc:
            print(f"restore-starts: {exc}", file=sys.stderr)
            return 2
        for name in got:
            log(f"{name}: checkpoint in {starts.STARTS / name}")
        for why in left:
            log(f"not restored: {why}")
        return 1 if left else 0
    args.passthrough = [
        f"--device={args.device}",
        f"--source={args.source}",
        f"--fp-epochs={args.fp_epochs}",
        f"--fp-seconds={args.fp_seconds}",
        f"--fp-min-epochs={args.fp_min_epochs}",
        f"--qat-epochs={args.qat_epochs}",
        f"--threads={args.threads}",
        *(["--smoke"] if args.smoke else []),
    ]
    if args.command == "list":
        restore_starts(grid.grid())
        for run in grid.select(grid.grid(), args.filter):
            partial = (run.path / "checkpoint.pt").is_file()
            state = "done" if is_done(run) else "partial" if partial else "-"
            print(f"{run.priority:6.2f}  {state:7}  {run.name}")
        return 0
    if args.command == "one":
        run_one(args.name, args)
        return 0
    return run_grid(args)


if __name__ == "__main__":
    sys.exit(main())
