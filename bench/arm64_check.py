"""Whole-model exactness of exported ``.tflite`` models on arm64, under qemu-user (issue 40).

On the host (x86): ``climbq export`` writes the builtin (``--ops builtin``) and fused
(``--ops climbq``, custom op ``CLIMBQ_CONV_COUNT``) forms of each run, the NumPy reference
(:class:`climbq_deploy.kernels.ReferenceModel` of the program the file embeds) gives every
layer's codes and the logits of ``--images`` evenly spaced test images (an npz), the fused
kernel library and the LiteRT runner shim are cross-compiled with ``aarch64-linux-gnu-gcc``,
and the package's Python sources are staged without any x86 ``.so``. Then
``bench/arm64_device.py`` (torch-free) runs under ``qemu-aarch64`` with an aarch64 Python
3.11 and the aarch64 ai-edge-litert wheel: the builtin form on LiteRT's XNNPACK, optimized
and reference kernels; the fused form through LiteRT's C API with the kernel's neon-dot (auto
under ``-cpu max``), neon and scalar paths; every code tensor and the logits are compared with
the npz. Correctness only: times under emulation mean nothing.

The aarch64 environment (outside the repository; nothing is downloaded here)::

    dpkg --add-architecture arm64 && apt-get update
    mkdir -p /opt/arm64py/debs && cd /opt/arm64py/debs
    apt-get download $(apt-cache depends --recurse --no-recommends --no-suggests \
        --no-conflicts --no-breaks --no-replaces --no-enhances python3.11-minimal:arm64 \
        libpython3.11-stdlib:arm64 libstdc++6:arm64 | grep ':arm64' \
        | grep -vE '^(dpkg|tar|install-info):' | sort -u)
    for d in *.deb; do dpkg -x "$d" /opt/arm64py/root; done
    pip install --target /opt/arm64py/site --only-binary=:all: --python-version 3.11 \
        --implementation cp --abi cp311 --platform manylinux_2_27_aarch64 \
        --platform manylinux2014_aarch64 numpy ai-edge-litert==2.3.0 flatbuffers tflite

qemu: by default ``/opt/arm64py/qemu/qemu-aarch64`` when it exists, a static qemu 10.0.2
(``apt-get download -t bookworm-backports qemu-user``, ``dpkg -x``: its ``usr/bin/qemu-aarch64``),
else the system's. qemu 7.2 (Debian bookworm) passes the host's x86 ``/proc/cpuinfo`` through to
the guest, and LiteRT's cpuinfo library dereferences NULL on it (SIGSEGV in ``Interpreter()``,
every resolver); with a qemu older than 8.1 the device run therefore goes (as root) through
``unshare --mount`` with a Neoverse-N1 ``/proc/cpuinfo`` bind-mounted over it, and ``-cpu
neoverse-n1`` to match it (cpuinfo takes the ISA features from that file: a file claiming more
than the emulated CPU has ends in SIGILL). Under qemu 7.2 ``-cpu max`` (SME) the builtin form on
XNNPACK gives wrong codes (qemu 7.2's SME emulation, by all signs: qemu 10.0.2 ``-cpu max`` is
exact); ``-cpu max,sme=off`` is exact.

Usage::

    .venv/bin/python -m bench.arm64_check [--runs resnet20-climbq+-w4a4] [--images 200]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import (
    DEFAULT_OUT,
    REPO_ROOT,
    markdown_table,
    provenance_markdown,
    run_header,
    write_results,
)

NAME = "arm64_check"
CC = "aarch64-linux-gnu-gcc"
DEFAULT_ENV = Path("/opt/arm64py")
QEMU = str(DEFAULT_ENV / "qemu" / "qemu-aarch64")
if not Path(QEMU).is_file():
    QEMU = "qemu-aarch64"
KERNEL_SOURCES = ["climbq_conv_count.c", "cc_x86.c", "cc_arm.c", "cc_int32.c"]
SUFFIX = ".cpython-311-aarch64-linux-gnu.so"
# An aarch64 /proc/cpuinfo (two Neoverse-N1-like cores) for qemu versions that pass the host's
# through (qemu < 8.1 has no aarch64 /proc/cpuinfo emulation).
CPUINFO = "".join(
    f"processor\t: {k}\nBogoMIPS\t: 50.00\n"
    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
    "asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
    "CPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n"
    for k in range(2)
)


def qemu_version(qemu: str) -> tuple[int, int]:
    """``(major, minor)`` of ``qemu --version``."""
    text = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout
    major, minor = text.split("version", 1)[1].split()[0].split(".")[:2]
    return int(major), int(minor)


def environment_problem(env: Path, qemu: str = QEMU) -> str | None:
    """None when the cross compiler, qemu and the aarch64 Python with LiteRT are there."""
    missing = [tool for tool in (CC, qemu) if shutil.which(tool) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not found (apt-get install gcc-aarch64-linux-gnu qemu-user)"
        )
    if not (env / "root" / "usr" / "bin" / "python3.11").is_file():
        return f"no aarch64 Python at {env}/root/usr/bin/python3.11 (see bench/arm64_check.py)"
    if not (env / "site" / "ai_edge_litert" / "libLiteRt.so").is_file():
        return f"no aarch64 ai-edge-litert in {env}/site (see bench/arm64_check.py)"
    return None


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    print("+", shlex.join(command), flush=True)
    return subprocess.run(command, text=True, check=True, **kwargs)


def export_forms(run: Path, work: Path, forms: list[str]) -> dict[str, Path]:
    """``climbq export RUN --target tflite --ops FORM`` for each form."""
    paths = {}
    for form in forms:
        out = work / f"{run.name}-{form}.tflite"
        command = [sys.executable, "-m", "climbq_deploy", "export", str(run)]
        _run([*command, "--target", "tflite", "--ops", form, "--out", str(out)], cwd=REPO_ROOT)
        paths[form] = out
    return paths


def write_reference(models: dict[str, Path], data: Path | None, images: int, out: Path) -> dict:
    """The npz of the device check: ``images``, ``logits`` and ``code:<layer>`` of the NumPy
    reference of the program embedded in the files (the same program in every form)."""
    from climbq_deploy.data.dataset import load_dataset
    from climbq_deploy.ir.graph import ThresholdAct
    from climbq_deploy.kernels import ReferenceModel
    from climbq_deploy.targets.tflite.reader import read_program_bytes, read_tflite

    digests = {
        form: hashlib.sha256(read_program_bytes(path.read_bytes(), path)).hexdigest()
        for form, path in models.items()
    }
    if len(set(digests.values())) != 1:
        raise SystemExit(f"the forms embed different programs: {digests}")
    first = next(iter(models.values()))
    graph, _ = read_tflite(first.read_bytes(), first)
    dataset = load_dataset(data)
    test = dataset.test_images
    chosen = np.unique(np.round(np.linspace(0, len(test) - 1, images)).astype(np.int64))
    batch = test[chosen]
    acts = {n.output: n.source for n in graph.nodes if isinstance(n, ThresholdAct)}
    values = ReferenceModel(graph).run(batch, keep=set(acts))
    arrays = {"images": batch, "indices": chosen, "logits": values[graph.output]}
    for tensor, source in acts.items():
        arrays[f"code:{source}"] = values[tensor].astype(np.int8)
    np.savez_compressed(out, **arrays)
    return {"program_sha256": next(iter(digests.values())), "images": len(batch)}


def stage_package(work: Path) -> Path:
    """``work/pkg/climbq_deploy``: the package's Python sources as installed (``kernels``,
    ``targets``, ``calibration`` as sub-packages), no x86 ``.so``, plus the aarch64 builds of
    the fused kernel and the LiteRT runner shim (plain shared libraries: both are loaded with
    ctypes, so they need no Python headers)."""
    pkg = work / "pkg"
    shutil.rmtree(pkg, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc")
    target = pkg / "climbq_deploy"
    shutil.copytree(REPO_ROOT / "climbq_deploy", target, ignore=ignore)
    for sub in ("kernels", "targets", "calibration"):
        shutil.copytree(REPO_ROOT / sub, target / sub, ignore=ignore)
    native = REPO_ROOT / "kernels" / "csrc"
    flags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared", f"-I{native}"]
    kernel = target / "kernels" / f"_climbq_native{SUFFIX}"
    _run([CC, "-O3", *flags, *(str(native / s) for s in KERNEL_SOURCES), "-o", str(kernel)])
    shim = target / "targets" / "tflite" / f"_climbq_litert_runner{SUFFIX}"
    source = REPO_ROOT / "targets" / "tflite" / "native" / "climbq_litert_runner.c"
    _run([CC, "-O2", *flags, str(source), "-o", str(shim), "-ldl"])
    return pkg


def device_command(
    qemu_path: str, env: Path, cpu: str, work: Path, script_args: list[str]
) -> list[str]:
    """qemu-aarch64 running the device script; a qemu older than 8.1 (no aarch64
    /proc/cpuinfo of its own) is wrapped in a private mount namespace with a Neoverse-N1
    /proc/cpuinfo when we may mount (root)."""
    python = env / "root" / "usr" / "bin" / "python3.11"
    device = REPO_ROOT / "bench" / "arm64_device.py"
    qemu = [qemu_path, "-L", str(env / "root"), "-cpu", cpu, str(python), str(device)]
    qemu += script_args
    old = qemu_version(qemu_path) < (8, 1)
    if not old or platform.machine() == "aarch64" or os.geteuid() != 0:
        return qemu
    if shutil.which("unshare") is None:
        return qemu
    fake = work / "cpuinfo"
    fake.write_text(CPUINFO)
    inner = f"mount --bind {shlex.quote(str(fake))} /proc/cpuinfo && exec {shlex.join(qemu)}"
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", default=["resnet20-climbq+-w4a4"])
    parser.add_argument("--runs-dir", type=Path, default=REPO_ROOT / "runs" / "lowering")
    parser.add_argument("--data", type=Path, default=None, help="default: each run's dataset")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--ref-images", type=int, default=None, help="for LiteRT's ref kernels")
    parser.add_argument("--forms", nargs="+", default=["builtin", "climbq"])
    parser.add_argument("--env", type=Path, default=DEFAULT_ENV)
    parser.add_argument("--qemu", default=QEMU)
    parser.add_argument(
        "--cpu", default=None, help="qemu -cpu (default: max; neoverse-n1 with qemu < 8.1)"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/climbq-arm64"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    problem = environment_problem(args.env, args.qemu)
    if problem:
        raise SystemExit(f"arm64 check cannot run: {problem}")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.cpu is None:
        args.cpu = "max" if qemu_version(args.qemu) >= (8, 1) else "neoverse-n1"
    header = run_header()
    qemu_text = subprocess.run([args.qemu, "--version"], capture_output=True, text=True).stdout
    pkg = stage_package(args.work)  # the runner's sources, and the libraries the fused form needs
    results, rows = [], []
    for name in args.runs:
        from climbq_deploy.export import run_config

        run = args.runs_dir / name
        data = args.data or Path(run_config(run).data)
        data = data if data.is_absolute() else REPO_ROOT / data
        models = export_forms(run, args.work, args.forms)
        npz = args.work / f"{name}-reference.npz"
        reference = write_reference(models, data, args.images, npz)
        out = args.work / f"{name}-device.json"
        script = ["--reference", str(npz), "--out", str(out)]
        script += [f"--model={form}={path}" for form, path in models.items()]
        if args.ref_images:
            script += ["--ref-images", str(args.ref_images)]
        command = device_command(args.qemu, args.env, args.cpu, args.work, script)
        env = {
            **os.environ,
            "PYTHONPATH": f"{pkg}:{args.env / 'site'}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "CLIMBQ_QEMU_CPU": args.cpu,
        }
        env.pop("CLIMBQ_NATIVE_ISA", None)
        env.pop("CLIMBQ_NATIVE_LIB", None)
        _run(command, env=env, cwd=args.work)
        device = json.loads(out.read_text())
        results.append(
            {
                "run": str(run.relative_to(REPO_ROOT))
                if run.is_relative_to(REPO_ROOT)
                else str(run),
                "models": {
                    f: {"file": p.name, "bytes": p.stat().st_size} for f, p in models.items()
                },
                **reference,
                "device_command": shlex.join(command),
                "device": device,
            }
        )
        for r in device["records"]:
            rows.append(
                (
                    name,
                    r["form"],
                    r["kernels"],
                    r.get("isa", "-") or "-",
                    r.get("images", "-"),
                    r.get("code_elements", "-"),
                    r.get("code_mismatches", r.get("error", "-")),
                    r.get("top1_mismatches", "-"),
                    f"{r['max_abs_logit_diff']:.1e}" if "max_abs_logit_diff" in r else "-",
                    "yes" if r["ok"] else "NO",
                )
            )
    first = results[0]["device"] if results else {}
    markdown = (
        "# Exported .tflite on arm64 (qemu-user): codes and logits against the NumPy "
        "reference\n\n"
        f"Device: {first.get('machine')} under `{qemu_text.splitlines()[0]}` "
        f"(`-cpu {args.cpu}`), Python {first.get('python')}, ai-edge-litert "
        f"{first.get('litert')}, NumPy {first.get('numpy')}; torch imported on the device: "
        f"{first.get('torch_imported')}. Fused route self-test: {first.get('fused_support')}. "
        "Codes: every layer's activation codes, element by element; logits: float32 head "
        "against the float64 reference (top-1 must agree). `isa`: the fused kernel's SIMD "
        "path (auto is neon-dot under `-cpu max`; neon and scalar forced with "
        "`CLIMBQ_NATIVE_ISA`). Correctness only: times under emulation mean nothing.\n\n"
        + markdown_table(
            (
                "model",
                "form",
                "kernels",
                "isa",
                "images",
                "code elements",
                "code mismatches",
                "top-1 mismatches",
                "max logit diff",
                "exact",
            ),
            rows,
        )
        + "\n\nThe device command (per model) is recorded in the JSON (`device_command`); "
        "the host exported the models with `climbq export RUN --target tflite --ops FORM`.\n\n"
        + provenance_markdown(header)
    )
    payload = {**header, "qemu": qemu_text.strip(), "qemu_cpu": args.cpu, "results": results}
    write_results(args.out, NAME, payload, markdown)
    print(markdown)
    if not all(r["ok"] for res in results for r in res["device"]["records"]):
        raise SystemExit("arm64 check: mismatches (see above)")


if __name__ == "__main__":
    main()
