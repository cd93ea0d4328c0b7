"""``climbq verify MODEL GOLDEN``: the reference-vs-device check, run on the device itself.

The device has the runtime and numpy, not torch or the dataset; the golden file written by
``climbq export`` beside the model (:mod:`climbq_deploy.golden`) carries a few hundred test
images, their labels and what the NumPy reference of the model's own program computes on
them. ``verify`` runs the model on those images with the runtime and compares:

- **codes**, per quantized layer and image, where the runtime exposes the layer's output
  (LiteRT and ONNX Runtime do): the blake2b hash of the device's codes against the golden
  hash (of ``max(code, 0)`` for layers whose ReLU the target fused). ``first_divergent_layer``
  is the first layer, in program order, with any image whose codes differ;
- **top-1** of the device's logits against the reference's (``top1_agreement``) and against
  the golden labels (``top1``; the reference's is ``reference_top1``); ``max_abs_logit_diff``
  against the reference's float64 logits.

``exact_match`` holds when every compared layer's codes and every top-1 are equal. The check
passes when it is exact, or, with ``min_agreement`` below 1, when ``top1_agreement`` reaches
it (a runtime that is not exact by design can still be gated on its agreement). A failed
check raises :class:`VerificationError` (exit code 1) after the record is made, so the CLI
prints the record and exits non-zero: a CI can gate on it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from climbq_deploy import _make_callable
from climbq_deploy.errors import ArtifactError, ClimbQError, ConfigError, TargetUnavailableError
from climbq_deploy.golden import code_hashes, file_sha256, golden_path, read_golden


class VerificationError(ClimbQError):
    """The device's outputs differ from the golden reference (more than ``min_agreement``
    allows); ``record`` is the full comparison."""

    exit_code = 1

    def __init__(self, message: str, record: dict[str, Any]) -> None:
        super().__init__(message)
        self.record = record


def verify_model(
    model: str | Path,
    golden: str | Path | None = None,
    *,
    min_agreement: float = 1.0,
    threads: int | None = None,
    batch_size: int = 32,
    target: str | None = None,
    options: Mapping[str, Any] | None = None,
    raise_on_failure: bool = True,
) -> dict[str, Any]:
    """Compare ``model`` (any exported artifact: ``.tflite``, ``.onnx``, ``.climbq``) run by
    its runtime with ``golden`` (default ``<model>.golden.npz``); return the record.

    ``target``/``options``: the target and its run options (default: the target of the file's
    suffix, with its default options); ``threads``: the runtime's thread count where it takes
    one. Raises :class:`VerificationError` (with the record) when the check does not pass and
    ``raise_on_failure``; ArtifactError for a golden file that is not one or does not belong
    to this model's program; TargetUnavailableError when the runtime is missing here.
    """
    from climbq_deploy.ir.graph import ThresholdAct
    from climbq_deploy.targets import get_target, known_suffixes, target_for_path

    if not 0.0 <= min_agreement <= 1.0:
        raise ConfigError(f"--min-agreement must lie in [0, 1], got {min_agreement}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    path = Path(model)
    if not path.is_file():
        raise ArtifactError(f"no model file at {path}")
    golden = golden_path(path) if golden is None else Path(golden)
    gold = read_golden(golden)
    if target is None:
        found = target_for_path(path)
        if found is None:
            raise ConfigError(
                f"{path}: unknown model kind {path.suffix!r}; expected one of "
                f"{', '.join(known_suffixes())}"
            )
        target = found.name
    client = get_target(target, **dict(options or {}))
    reason = client.unavailable()
    if reason:
        raise TargetUnavailableError(f"target {client.name!r} cannot run here: {reason}")
    began = time.perf_counter()
    runner = client.load(path, threads=threads)
    graph = runner.graph
    expected_shape = tuple(graph.tensors[graph.input].shape)
    if tuple(gold.images.shape[1:]) != expected_shape:
        raise ArtifactError(
            f"{golden}: images are {'x'.join(map(str, gold.images.shape[1:]))} but {path} "
            f"reads {'x'.join(map(str, expected_shape))}; the golden file is for another model"
        )
    layers = [n.source for n in graph.nodes if isinstance(n, ThresholdAct)]
    if layers != gold.layers:
        raise ArtifactError(
            f"{golden}: written for a program with layers {gold.layers[:3]}... ({len(gold.layers)}"
            f"), but {path} has {layers[:3]}... ({len(layers)}); the golden file is for another "
            "model"
        )
    row = {name: i for i, name in enumerate(layers)}
    differing = dict.fromkeys(layers, 0)
    compared: set[str] = set()
    device_logits = []
    for i in range(0, len(gold.images), batch_size):
        out = runner.run(gold.images[i : i + batch_size], with_codes=True)
        device_logits.append(np.asarray(out.logits, np.float64))
        for name, codes in out.codes.items():
            if name not in row:
                continue
            compared.add(name)
            hashes = gold.rectified_hashes if name in out.rectified else gold.code_hashes
            want = hashes[row[name], i : i + batch_size]
            differing[name] += int(np.count_nonzero(code_hashes(codes) != want))
    logits = np.concatenate(device_logits)
    if logits.shape != gold.logits.shape:
        raise ArtifactError(
            f"{path} gives logits {logits.shape}, the golden file {gold.logits.shape}"
        )
    predicted, reference = logits.argmax(1), gold.logits.argmax(1)
    agreement = float(np.mean(predicted == reference))
    divergent = [name for name in layers if differing[name]]
    exact = not divergent and agreement == 1.0
    passed = exact or (min_agreement < 1.0 and agreement >= min_agreement)
    record: dict[str, Any] = {
        "model": str(path),
        "golden": str(golden),
        "target": client.name,
        "kernels": client.engine,
        "n_images": len(gold.images),
        "exact_match": exact,
        "passed": passed,
        "min_agreement": min_agreement,
        "first_divergent_layer": divergent[0] if divergent else None,
        "layers_compared": len(compared),
        "layers_total": len(layers),
        "layers_differing": len(divergent),
        "top1_agreement": agreement,
        "top1": float(100.0 * np.mean(predicted == gold.labels)),
        "reference_top1": float(100.0 * np.mean(reference == gold.labels)),
        "max_abs_logit_diff": float(np.abs(logits - gold.logits).max(initial=0.0)),
        "model_matches_export": file_sha256(path) == gold.meta.get("model_sha256"),
        "layers": [
            {"layer": name, "images_differing": differing[name]}
            for name in layers
            if name in compared
        ],
        "seconds": time.perf_counter() - began,
    }
    if not passed and raise_on_failure:
        raise VerificationError(failure_summary(record), record)
    return record


def failure_summary(record: Mapping[str, Any]) -> str:
    """One line saying how ``record``'s device outputs differ from the golden reference."""
    parts = []
    if record["first_divergent_layer"] is not None:
        first = next(
            layer for layer in record["layers"] if layer["layer"] == record["first_divergent_layer"]
        )
        parts.append(
            f"first divergent layer {record['first_divergent_layer']!r} (codes differ on "
            f"{first['images_differing']} of {record['n_images']} images; "
            f"{record['layers_differing']} of {record['layers_compared']} layers differ)"
        )
    wrong = round((1.0 - record["top1_agreement"]) * record["n_images"])
    parts.append(
        f"top-1 differs from the reference on {wrong} of {record['n_images']} images "
        f"(agreement {record['top1_agreement']:.4f}, required {record['min_agreement']})"
    )
    if not record["model_matches_export"]:
        parts.append("the model file is not the one the golden file was written for")
    return f"{record['model']} does not match {record['golden']}: " + "; ".join(parts)


__all__ = ["VerificationError", "failure_summary", "verify_model"]

_make_callable(__name__)  # climbq_deploy.verify(...) is climbq_deploy.api.verify (see the package)
