"""The device half of ``bench/arm64_check.py``: run exported ``.tflite`` models with LiteRT on
this machine (meant for aarch64, e.g. under qemu-user) and compare every code tensor and the
logits with the NumPy reference computed elsewhere.

Torch-free on purpose: it imports NumPy, LiteRT and only ``climbq_deploy.targets.tflite`` and
``climbq_deploy.kernels`` (neither pulls torch), never ``bench._common`` (which imports torch
and Pillow). Run as a file, not as ``-m bench...`` (``bench/__init__`` is harmless, but the
device needs no checkout layout beyond ``climbq_deploy`` on ``sys.path``).

Usage (the host script writes the npz and the models)::

    python bench/arm64_device.py --reference ref.npz --out result.json \
        --model builtin=model-builtin.tflite --model climbq=model-climbq.tflite

Per (form, kernels, isa) it records the images, the code elements compared, the mismatching
ones (per layer where any), the top-1 mismatches and the largest logit difference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

# (form, LiteRT kernels, fused kernel ISA forced via CLIMBQ_NATIVE_ISA or None)
BUILTIN_CONFIGS = [("builtin", k, None) for k in ("xnnpack", "optimized", "ref")]
FUSED_CONFIGS = [("climbq", "xnnpack", isa) for isa in (None, "neon", "scalar")]


def compare(
    form: str,
    path: Path,
    kernels: str,
    isa: str | None,
    reference: dict[str, np.ndarray],
    limit: int | None,
) -> dict[str, Any]:
    """One configuration against the reference arrays (``images``, ``logits``, ``code:*``)."""
    from climbq_deploy.kernels import native
    from climbq_deploy.targets.tflite import TfliteRunner

    if isa is None:
        os.environ.pop("CLIMBQ_NATIVE_ISA", None)
    else:
        os.environ["CLIMBQ_NATIVE_ISA"] = isa  # read by the kernel when a layer is packed
    images = reference["images"][:limit]
    record: dict[str, Any] = {"form": form, "model": path.name, "kernels": kernels}
    if form == "climbq":
        record["isa_requested"] = isa or "auto"
        record["isa"] = native.isa() if native.available() is None else None
    began = time.perf_counter()
    try:
        runner = TfliteRunner(path, kernels)
        record["fused_runner"] = runner.fused
        out = runner.run(images, with_codes=True)
    except Exception as error:  # recorded, not fatal: the other forms still run
        record.update(error=f"{type(error).__name__}: {error}", ok=False)
        traceback.print_exc()
        return record
    per_layer: dict[str, int] = {}
    elements = mismatches = 0
    for key in sorted(k for k in reference if k.startswith("code:")):
        source = key[len("code:") :]
        expected = reference[key][:limit].astype(np.int64)
        got = out.codes.get(source)
        expected = out.expected(source, expected)
        if got is None or got.shape != expected.shape:
            per_layer[source] = expected.size
            mismatches += expected.size
        else:
            bad = int(np.count_nonzero(got != expected))
            if bad:
                per_layer[source] = bad
            mismatches += bad
        elements += expected.size
    logits = reference["logits"][:limit]
    record.update(
        images=len(images),
        layers=sum(1 for k in reference if k.startswith("code:")),
        code_elements=elements,
        code_mismatches=mismatches,
        code_mismatches_per_layer=per_layer,
        top1_mismatches=int(np.count_nonzero(out.logits.argmax(1) != logits.argmax(1))),
        max_abs_logit_diff=float(np.abs(out.logits - logits).max()),
        seconds_under_emulation=round(time.perf_counter() - began, 1),
    )
    record["ok"] = mismatches == 0 and record["top1_mismatches"] == 0
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="npz from the host")
    parser.add_argument("--model", action="append", default=[], help="FORM=PATH (repeatable)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ref-images", type=int, default=None, help="images for kernels=ref")
    parser.add_argument("--skip", nargs="*", default=[], help="FORM/KERNELS[/ISA] to skip")
    args = parser.parse_args()
    with np.load(args.reference) as data:
        reference = {k: data[k] for k in data.files}
    models = dict(item.split("=", 1) for item in args.model)
    from climbq_deploy.kernels import native
    from climbq_deploy.targets.tflite import custom_op

    header: dict[str, Any] = {
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "litert": metadata.version("ai-edge-litert"),
        "torch_imported": "torch" in sys.modules,
        "native_kernel": native.available() or "loaded",
        "native_isa_auto": native.isa() if native.available() is None else None,
        "qemu_cpu": os.environ.get("CLIMBQ_QEMU_CPU"),
    }
    if "climbq" in models:
        header["fused_support"] = custom_op.support() or "ok"
    records = []
    for form, kernels, isa in [*BUILTIN_CONFIGS, *FUSED_CONFIGS]:
        name = "/".join(x for x in (form, kernels, isa) if x)
        if form not in models or name in args.skip:
            continue
        limit = args.ref_images if kernels == "ref" else None
        record = compare(form, Path(models[form]), kernels, isa, reference, limit)
        print(json.dumps(record), flush=True)
        records.append(record)
    header["torch_imported"] = "torch" in sys.modules
    args.out.write_text(json.dumps({**header, "records": records}, indent=2) + "\n")


if __name__ == "__main__":
    main()
