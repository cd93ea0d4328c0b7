"""Images/s of the NumPy integer reference against torch fp32 eager, same model, same process.

Model: ResNet-20, 4-bit ClimbQ+ (``--run RUN`` for a trained run; by default an untrained
model with trained-looking random BatchNorm statistics: the speed does not depend on the
values). Both sides run batches of ``--batch`` (256) uint8 CIFAR-size images:

- reference: :class:`climbq_deploy.kernels.ReferenceModel` ``predict`` (input quantization
  included);
- torch: the same 4-bit model's float32 eager forward (``torch.no_grad``, eval,
  channels_last), on the normalised float input (normalisation included), and the
  full-precision ResNet-20 of the same shape (what "torch fp32 eager" means for deployment).

Timings alternate between the sides, ``--repeats`` times; medians are compared.

Usage::

    .venv/bin/python -m bench.reference_speed [--run RUN] [--batch 256] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench._common import (
    DEFAULT_OUT,
    markdown_table,
    provenance_markdown,
    run_header,
    summarize,
    warn_if_busy,
    write_results,
)
from climbq_deploy.ir.capture import capture
from climbq_deploy.ir.passes import lower
from climbq_deploy.kernels import ReferenceModel
from climbq_deploy.models import build_model
from climbq_deploy.models.common import QuantSpec

NAME = "reference_speed"
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _random_batchnorm(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 4 + 0.5)


def _models(run: str | None) -> tuple[torch.nn.Module, torch.nn.Module, ReferenceModel, str]:
    fp32 = build_model("resnet20", 10, QuantSpec("fp32", 32, 32)).eval()
    if run:
        from climbq_deploy.export import load_run, lower_run

        trained = load_run(run)
        return trained.model, fp32, ReferenceModel(lower_run(trained)), f"trained run {run}"
    torch.manual_seed(0)
    model = build_model("resnet20", 10, QuantSpec("climbq+", 4, 4))
    _random_batchnorm(model)
    model.eval()
    return model, fp32, ReferenceModel(lower(capture(model, MEAN, STD))), "untrained, random BN"


def _torch_forward(model: torch.nn.Module) -> Callable[[np.ndarray], Any]:
    model = model.to(memory_format=torch.channels_last)
    mean, std = np.asarray(MEAN, np.float32), np.asarray(STD, np.float32)

    def forward(images: np.ndarray) -> Any:
        x = torch.from_numpy((images.astype(np.float32) / 255 - mean) / std).permute(0, 3, 1, 2)
        with torch.no_grad():
            return model(x.contiguous(memory_format=torch.channels_last)).numpy()

    return forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=None)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    quantized, fp32, reference, source = _models(args.run)
    images = np.random.default_rng(0).integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8)
    sides: dict[str, Callable[[np.ndarray], Any]] = {
        "numpy reference (int, 4-bit)": reference.predict,
        "torch fp32 eager (4-bit ClimbQ+ model)": _torch_forward(quantized),
        "torch fp32 eager (full-precision ResNet-20)": _torch_forward(fp32),
    }
    for forward in sides.values():  # warm-up
        forward(images)
    load = warn_if_busy()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, forward in sides.items():
            began = time.perf_counter()
            forward(images)
            times[name].append(time.perf_counter() - began)
    header = run_header(load)
    ref_name = "numpy reference (int, 4-bit)"
    results = {}
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        results[name] = {
            "seconds_per_batch": summarize(values),
            "images_per_second": args.batch / median,
        }
        relative = median / statistics.median(times[ref_name])
        rows.append(
            (name, f"{1000 * median:.0f}", f"{args.batch / median:.0f}", f"{relative:.2f}x")
        )
    ratios = {
        name: (args.batch / statistics.median(times[ref_name])) / results[name]["images_per_second"]
        for name in sides
        if name != ref_name
    }
    payload = {
        **header,
        "batch": args.batch,
        "repeats": args.repeats,
        "model": source,
        "results": results,
        "reference_over_torch_images_per_second": ratios,
        "goal": ">= 0.5x torch fp32 eager",
    }
    markdown = (
        f"# NumPy integer reference vs torch fp32 eager: ResNet-20, batch {args.batch}\n\n"
        f"Model: 4-bit ClimbQ+ ResNet-20 ({source}); medians of {args.repeats} alternating "
        "runs, same process.\n\n"
        + markdown_table(("side", "ms / batch", "images/s", "time vs reference"), rows)
        + "\n\nReference images/s over torch images/s: "
        + ", ".join(f"{v:.2f}x vs {k}" for k, v in ratios.items())
        + " (goal >= 0.5x).\n\n"
        + provenance_markdown(header)
    )
    write_results(args.out, NAME, payload, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
