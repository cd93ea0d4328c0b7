"""``check``: run a target's artifact and the trained torch model on a whole test set and
compare them as a record (the same shape for every target).

What is compared, and why:

- The integer program reads the image quantized to its input step (``InputQuant``); the torch
  model is run on *that same* input, dequantized, in float64. Both then compute the same
  function: float64 rounding (~1e-16 relative) can only move a code at a tie, so
  ``code_agreement`` and ``top1_agreement`` measure the lowering itself.
- float32 is not used for the comparison because a low-bit network amplifies rounding: one
  code moved by a float32 rounding near a threshold changes its value by a whole step, which
  moves codes in the next layer, and so on (measured: on 4-bit ResNet-20 float32 vs float64
  evaluation of the *same* torch model already disagree on ~0.4% of top-1 predictions). The
  as-trained float32 evaluation on the raw input is reported beside it (``torch_fp32_top1``,
  ``torch_fp32_top1_agreement``), so the end-to-end effect is visible, not assumed away.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from climbq_deploy import _make_callable
from climbq_deploy.bench import check_images
from climbq_deploy.data.dataset import load_dataset
from climbq_deploy.errors import ConfigError, DataError, TargetUnavailableError
from climbq_deploy.export import TrainedRun, load_run, lower_run, run_config
from climbq_deploy.ir.graph import Graph, InputQuant, ThresholdAct
from climbq_deploy.kernels import ReferenceModel, ops
from climbq_deploy.quant.layers import ActQuant
from climbq_deploy.targets import DEFAULT_TARGET, Target, get_target, refuse_unlowerable


@dataclass
class _Tally:
    layers: list[str]
    total: dict[str, int] = field(default_factory=dict)
    equal: dict[str, int] = field(default_factory=dict)
    n: int = 0
    top1_equal: int = 0
    ref_correct: int = 0
    torch_correct: int = 0
    fp32_correct: int = 0
    fp32_equal: int = 0
    max_logit_diff: float = 0.0
    oracle_equal: bool = True
    oracle_logit_diff: float = 0.0

    def record(self) -> dict[str, Any]:
        total = sum(self.total.values())
        divergent = [name for name in self.layers if self.equal[name] != self.total[name]]
        return {
            "n_images": self.n,
            "top1_agreement": self.top1_equal / self.n,
            "code_agreement": sum(self.equal.values()) / total if total else 1.0,
            "max_abs_logit_diff": self.max_logit_diff,
            "ref_top1": 100.0 * self.ref_correct / self.n,
            "torch_top1": 100.0 * self.torch_correct / self.n,
            "first_divergent_layer": divergent[0] if divergent else None,
            "torch_fp32_top1": 100.0 * self.fp32_correct / self.n,
            "torch_fp32_top1_agreement": self.fp32_equal / self.n,
            "layers": [
                {
                    "layer": name,
                    "codes": self.total[name],
                    "mismatches": self.total[name] - self.equal[name],
                }
                for name in self.layers
            ],
        }


class _TorchCodes:
    """Forward hooks collecting every activation quantizer's ``X_int = round(x_hat / step)``
    (NHWC, int64) by module name."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        self.codes: dict[str, np.ndarray] = {}
        modules = dict(model.named_modules())
        missing = [n for n in names if not isinstance(modules.get(n), ActQuant)]
        if missing:
            raise ConfigError(f"the artifact's layers {missing[:3]} are not quantizers of the run")
        self.handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str) -> Any:
        def hook(module: ActQuant, _: Any, out: torch.Tensor) -> None:
            step = module.quantizer.grid().step
            self.codes[name] = torch.round(out / step).permute(0, 2, 3, 1).numpy()

        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _batches(images: np.ndarray, labels: np.ndarray, size: int) -> Iterator[tuple[Any, Any]]:
    for i in range(0, len(images), size):
        yield images[i : i + size], labels[i : i + size]


def _normalised(images: np.ndarray, run: TrainedRun) -> torch.Tensor:
    """The training pipeline's float32 input: ``(p / 255 - mean) / std``, NCHW."""
    x = images.astype(np.float32) / 255.0
    x = (x - np.asarray(run.mean, np.float32)) / np.asarray(run.std, np.float32)
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def check_run(
    run_dir: str | Path,
    target: str | Target = DEFAULT_TARGET,
    artifact: str | Path | None = None,
    data: str | Path | None = None,
    batch_size: int = 100,
    limit: int | None = None,
    head: str = "float",
    progress: bool = True,
    kernels: str | None = None,
) -> dict[str, Any]:
    """Compare ``target``'s artifact of run ``run_dir`` with the torch model on the test set.

    ``target``: a target (``get_target("tflite", kernels="ref")``) or a registered name;
    ``kernels``: with a name, the target's first option (the kernels or runtime that run it,
    :func:`~climbq_deploy.targets.get_target`'s positional value).
    ``artifact``: the file to check, as it is (it must read images of ``data``'s size). None:
    the run is exported afresh (with ``head`` and the target's export options) into a
    temporary folder that is removed afterwards; nothing is written into the run folder and
    the record's ``artifact`` is None. A run the target cannot lower exactly (its declared
    :attr:`~climbq_deploy.targets.base.TargetBase.lowers`) is refused before any work.
    ``limit`` checks ``limit`` evenly spaced test images (indices
    ``round(linspace(0, N - 1, limit))``; test splits are stored class by class, so the first
    images would all be one class); the record says how many.
    """
    if not isinstance(target, str) and kernels is not None:
        raise ConfigError(f"kernels={kernels!r} with a target object: set it in its options")
    client = get_target(target, kernels) if isinstance(target, str) else target
    reason = client.unavailable()
    if reason:
        raise TargetUnavailableError(f"target {client.name!r} cannot run here: {reason}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    if artifact is None:
        refuse_unlowerable(client, run_config(run_dir), head)
    run = load_run(run_dir, data)
    began = time.perf_counter()
    if artifact is not None:
        record = _compare(
            run, client, Path(artifact), str(artifact), data, batch_size, limit, progress
        )
    else:
        with tempfile.TemporaryDirectory(prefix="climbq-check-") as scratch:
            graph = lower_run(run, head=head, input_bits=client.input_bits)
            fresh = client.export(graph, Path(scratch) / f"model{client.suffix}")
            label = f"a fresh export of {run_dir}"
            record = _compare(run, client, fresh, label, data, batch_size, limit, progress)
    record.update(
        artifact=None if artifact is None else str(artifact),
        run=str(run_dir),
        head=head,
        seconds=time.perf_counter() - began,
    )
    return record


def _compare(
    run: TrainedRun,
    client: Target,
    artifact: Path,
    label: str,
    data: str | Path | None,
    batch_size: int,
    limit: int | None,
    progress: bool = True,
) -> dict[str, Any]:
    """The record of ``client``'s artifact at ``artifact`` (``label`` in messages) against the
    torch model of ``run`` on the test split of ``data`` (default: the run's dataset)."""
    runner = client.load(artifact)
    graph: Graph = runner.graph
    oracle = None if client.reference else ReferenceModel(graph)
    step = next(n for n in graph.nodes if isinstance(n, InputQuant))
    layers = [n.source for n in graph.nodes if isinstance(n, ThresholdAct)]
    acts = {n.output: n.source for n in graph.nodes if isinstance(n, ThresholdAct)}
    data_dir = data if data is not None else run.config.data
    dataset = load_dataset(data_dir)
    check_images(dataset, graph, data_dir, label)
    images, labels = dataset.test_images, dataset.test_labels
    if limit is not None:
        chosen = np.unique(np.round(np.linspace(0, len(images) - 1, limit)).astype(np.int64))
        images, labels = images[chosen], labels[chosen]
    exact = _float64_copy(run)
    hooks = _TorchCodes(exact, layers)
    tally = _Tally(layers, dict.fromkeys(layers, 0), dict.fromkeys(layers, 0))
    bar = tqdm(
        total=len(images), desc=f"check {client.name}", unit="img", disable=not progress or None
    )
    try:
        for batch, y in _batches(images, labels, batch_size):
            out = runner.run(batch, with_codes=True)
            quantized = ops.input_quant(batch, step.mean, step.std, step.step)
            x64 = torch.from_numpy(quantized.astype(np.float64) * step.step).permute(0, 3, 1, 2)
            with torch.no_grad():
                torch_logits = exact(x64.contiguous()).numpy()
                fp32_logits = run.model(_normalised(batch, run)).numpy()
            for name in layers:
                ref, ours = out.codes[name], out.expected(name, hooks.codes[name])
                tally.total[name] += ref.size
                tally.equal[name] += int(np.count_nonzero(ref == ours))
            if oracle is not None:  # the target against the NumPy reference of its program
                values = oracle.run(batch, keep=set(acts))
                tally.oracle_equal &= all(
                    np.array_equal(out.expected(source, values[tensor]), out.codes[source])
                    for tensor, source in acts.items()
                )
                tally.oracle_equal &= bool(
                    np.array_equal(values[graph.output].argmax(1), out.logits.argmax(1))
                )
                diff = float(np.abs(values[graph.output] - out.logits).max())
                tally.oracle_logit_diff = max(tally.oracle_logit_diff, diff)
            ref_pred, torch_pred = out.logits.argmax(1), torch_logits.argmax(1)
            tally.n += len(y)
            tally.top1_equal += int(np.count_nonzero(ref_pred == torch_pred))
            tally.ref_correct += int(np.count_nonzero(ref_pred == y))
            tally.torch_correct += int(np.count_nonzero(torch_pred == y))
            tally.fp32_correct += int(np.count_nonzero(fp32_logits.argmax(1) == y))
            tally.fp32_equal += int(np.count_nonzero(fp32_logits.argmax(1) == ref_pred))
            diff = float(np.abs(out.logits - torch_logits).max())
            tally.max_logit_diff = max(tally.max_logit_diff, diff)
            bar.update(len(y))
    finally:
        hooks.close()
        bar.close()
    record = tally.record()
    if oracle is not None:
        record.update(
            exact_match=tally.oracle_equal,
            reference_max_abs_logit_diff=tally.oracle_logit_diff,
            kernels=client.engine,
        )
    record.update(target=client.name, artifact_bytes=artifact.stat().st_size, input_step=step.step)
    if client.exact and not tally.oracle_equal:
        raise DataError(
            f"target {client.name!r} ({record['kernels']}) differs from the NumPy reference "
            f"of its program on {label} (codes or top-1) although it should be "
            f"exact; top-1 agreement with torch {record['top1_agreement']}, max logit "
            f"diff to the reference {tally.oracle_logit_diff:.3g}"
        )
    return record


def _float64_copy(run: TrainedRun) -> torch.nn.Module:
    import copy

    return copy.deepcopy(run.model).double().eval()


_make_callable(__name__)  # climbq_deploy.check(...) is climbq_deploy.api.check (see the package)
