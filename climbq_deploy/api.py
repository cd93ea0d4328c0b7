"""The Python API: a few thin functions over the toolkit, the same ones the ``climbq`` commands
call.

    import climbq_deploy as cq

    qmodel = cq.quantize(my_float_cnn, method="climbq+", wbits=4, abits=4)
    run = cq.train("data/syn", "runs/mine", model="my_cnn.py:make", method="climbq+",
                   wbits=4, abits=4, epochs=2)
    path = cq.export(run, target="numpy")          # run/model.climbq
    record = cq.check(run, target="numpy")         # the artifact against the torch model
    timing = cq.bench(path, repeats=50)
    trained = cq.load_run(run)                     # the torch model, config and metrics
    logits = cq.ReferenceModel.load(path).predict(images)  # the NumPy oracle, uint8 NHWC in

``train``, ``export``, ``check`` and ``bench`` are also the names of modules of this package
(the training loop, the exporter, ...); ``climbq_deploy.export`` is that module, made callable:
calling it calls the function here. Nothing here imports torch until a function needs it, so
``bench`` and ``ReferenceModel`` work on a device with the torch-free install.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from climbq_deploy.errors import ConfigError


def train(
    data: str | Path,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **options: Any,
) -> Path:
    """Train a model on dataset folder ``data`` into run folder ``out``; return ``out``.

    ``options`` are the fields of :class:`climbq_deploy.train.config.TrainConfig`, the same as
    ``climbq train``'s flags: ``arch`` (a built-in model) or ``model``
    (``"path/to/file.py:factory"`` or ``"package.module:factory"``: a user's float CNN, made by
    the factory and quantized with :func:`climbq_deploy.quantize`), ``method``, ``wbits``,
    ``abits``, ``loss``, ``loss_options``, ``epochs``, ``batch_size``, ``lr``, ``schedule``,
    ``init``, ``distill``, ``teacher``, ``device``, ... (the paper's recipe by default).
    ``resume`` continues the run ``out`` holds; ``overwrite`` replaces it (refused otherwise).
    The run's metrics are in ``out/metrics.json``; :func:`load_run` reads it all back.
    """
    from climbq_deploy.train.config import TrainConfig
    from climbq_deploy.train.loop import train as train_run

    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"data"}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(
            f"unknown training option(s) {', '.join(unknown)}; expected some of "
            f"{', '.join(sorted(fields))}"
        )
    config = TrainConfig(str(data), **options)
    train_run(config, out, resume=resume, progress=progress, overwrite=overwrite)
    return Path(out)


def export(
    run_or_model: Any,
    target: Any = "numpy",
    out: str | Path | None = None,
    *,
    head: str = "float",
    data: str | Path | None = None,
    golden: int = 256,
    **options: Any,
) -> Path:
    """Lower a trained run to ``target``'s integer artifact; return the artifact's path.

    ``run_or_model``: a run folder, :func:`load_run`'s record, or a quantized model in memory
    (then ``out`` and ``data``, the dataset folder it reads images of, are required).
    ``target``: a registered target's name (``numpy``, ``tflite``, ``tensorrt``, ...) with
    ``options`` its options (``kernels="ref"``, ``ops="fused"``), or a target object.
    ``out`` defaults to ``RUN/model<suffix>``; ``head``: ``float``, ``int8`` or ``int4``.
    ``golden``: test images of the golden file written beside it (``<artifact>.golden.npz``,
    for :func:`verify` on the device; 0: none).
    """
    from climbq_deploy.export import export_artifact

    exported = export_artifact(
        run_or_model, target, out, head=head, data=data, golden=golden, **options
    )
    return exported.path


def check(
    run: str | Path,
    target: Any = "numpy",
    *,
    artifact: str | Path | None = None,
    data: str | Path | None = None,
    batch_size: int = 100,
    limit: int | None = None,
    head: str = "float",
    progress: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Compare ``target``'s artifact of run folder ``run`` with the torch model on the test
    set; return the record (top-1 and code agreement, max logit difference, first divergent
    layer, ...). Without ``artifact`` the run is exported afresh into a temporary file.
    ``options``: the target's options, as for :func:`export`."""
    from climbq_deploy.check import check_run
    from climbq_deploy.targets import get_target

    if not isinstance(target, str) and options:
        raise ConfigError(f"options {sorted(options)} with a target object: set them in it")
    client = get_target(target, **options) if isinstance(target, str) else target
    return check_run(
        run,
        target=client,
        artifact=artifact,
        data=data,
        batch_size=batch_size,
        limit=limit,
        head=head,
        progress=progress,
    )


def bench(
    artifact: str | Path,
    *,
    threads: int = 1,
    batch: int = 1,
    warmup: int = 10,
    repeats: int = 100,
    data: str | Path | None = None,
    target: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Time an exported artifact: p50/p90/p99 latency and images/s over ``repeats`` invokes of
    ``batch`` images after ``warmup``; with ``data`` also top-1 on its test split. ``target``
    defaults to the one the file's suffix names; ``options`` are its options. Imports no
    torch."""
    from climbq_deploy.bench import bench_artifact

    return bench_artifact(
        artifact, threads, None, batch, warmup, repeats, data, target=target, options=options
    )


def verify(
    model: str | Path,
    golden: str | Path | None = None,
    *,
    min_agreement: float = 1.0,
    threads: int | None = None,
    batch_size: int = 32,
    raise_on_failure: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Run an exported model with its runtime on the images of its golden file (default
    ``<model>.golden.npz``, written by :func:`export`) and compare codes and top-1 with the
    NumPy reference's; return the record (``exact_match``, ``first_divergent_layer``,
    ``top1_agreement``, ...). Raises :class:`climbq_deploy.verify.VerificationError` (with
    ``.record``) when it differs, unless top-1 agreement reaches ``min_agreement`` < 1 or
    ``raise_on_failure`` is False. ``options``: the target's run options. Imports no torch."""
    from climbq_deploy.verify import verify_model

    return verify_model(
        model,
        golden,
        min_agreement=min_agreement,
        threads=threads,
        batch_size=batch_size,
        options=options,
        raise_on_failure=raise_on_failure,
    )


__all__ = ["bench", "check", "export", "train", "verify"]
