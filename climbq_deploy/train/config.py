"""Typed, validated training configuration with the paper's recipe (§7) as the default."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from climbq_deploy.errors import ConfigError
from climbq_deploy.losses import LOSS_NAMES, make_loss
from climbq_deploy.models import ARCHS, USER_ARCH, ModelSource
from climbq_deploy.models.common import QuantSpec
from climbq_deploy.runfolder import absolute_path, locate_run_path, run_path_candidates

SCHEDULES = ("constant", "cosine")
# The short recipe used by tests and benches on SynDigits-LT (the paper's, compressed to a few
# minutes of CPU): full-precision pretraining, then quantization-aware training from it.
SHORT_FP32_PRETRAINING: dict[str, Any] = {
    "epochs": 4,
    "batch_size": 32,
    "lr": 0.05,
    "schedule": "cosine",
    "loss": "la",
}
SHORT_QAT: dict[str, Any] = {"epochs": 2, "batch_size": 32, "lr": 0.01}
PRECISIONS = ("fp32", "bf16")
DEVICES = ("cpu", "cuda", "auto")  # auto: cuda when torch sees one, else cpu
PATH_FIELDS = ("data", "init", "teacher")  # the folders a run names


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the paper's QAT recipe: SGD momentum 0.9, lr 0.04,
    weight decay 1e-4, batch 128, eval batch 100, 50 epochs (§7)."""

    data: str
    arch: str | None = None  # a built-in model (None: resnet20); "custom" for ``model``
    method: str = "fp32"
    wbits: int = 32
    abits: int = 32
    loss: str | None = None  # None: homovar for climbq+, ce otherwise
    loss_options: dict[str, Any] = field(default_factory=dict)  # make_loss keyword arguments
    act_scaling: str = "faithful"
    faithful_mbv2: bool = False
    epochs: int = 50
    batch_size: int = 128
    eval_batch_size: int = 100
    eval_every: int = 1  # test-set pass every N epochs (and always after the last)
    lr: float = 0.04
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "constant"
    warmup_epochs: int = 0
    seed: int = 0
    init: str | None = None
    init_bn_gamma: float | None = None  # after --init: every BatchNorm |gamma| set to this
    distill: float = 0.0  # weight w of distillation from the teacher: (1-w) task + w KD
    distill_temperature: float = 4.0
    teacher: str | None = None  # run folder of the distillation teacher; None: the --init run
    precision: str = "fp32"  # bf16: autocast convs/linear to bfloat16; quantizers stay fp32
    val_fraction: float = 0.0  # per-class share of train held out for best-epoch selection
    device: str = "cpu"  # where to train; not part of a run's identity (resume may switch)
    model: str | None = None  # a user's model: FILE.py:FACTORY (absolute) or module:FACTORY
    model_sha256: str | None = None  # its source file's sha256 when training began

    def __post_init__(self) -> None:
        self._check_model()
        QuantSpec(self.method, self.wbits, self.abits, self.act_scaling)
        if self.method not in ("fp32", "ptq") and 32 in (self.wbits, self.abits):
            raise ConfigError(
                f"method {self.method!r} with wbits {self.wbits} and abits {self.abits} leaves "
                "the weights or the activations in float, which no target lowers to an integer "
                "program; quantize both (e.g. --wbits 4 --abits 4) or use --method fp32"
            )
        if self.loss is not None and self.loss not in LOSS_NAMES:
            raise ConfigError(f"unknown loss {self.loss!r}; expected one of {LOSS_NAMES}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {DEVICES}, got {self.device!r}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        make_loss(self.loss_name, [2, 1], **self.loss_options)  # unknown/invalid options
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError("lr must be > 0, weight_decay >= 0, momentum in [0, 1)")
        if self.init_bn_gamma is not None:
            if self.init is None:
                raise ConfigError("init_bn_gamma rescales the BatchNorms of --init; give --init")
            if not 0 < self.init_bn_gamma < float("inf"):
                raise ConfigError(
                    f"init_bn_gamma must be a finite number > 0, got {self.init_bn_gamma}"
                )
        if not 0 <= self.distill <= 1:
            raise ConfigError(f"distill must be in [0, 1], got {self.distill}")
        if self.distill > 0 and self.init is None and self.teacher is None:
            raise ConfigError("distill learns from a teacher run; give --teacher or --init")
        if self.teacher is not None and self.distill == 0:
            raise ConfigError("teacher is the distillation teacher; give --distill W > 0 too")
        if not 0 < self.distill_temperature < float("inf"):
            raise ConfigError(
                f"distill_temperature must be a finite number > 0, got {self.distill_temperature}"
            )
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"warmup_epochs must be in 0..epochs-1, got {self.warmup_epochs}")

    def _check_model(self) -> None:
        """``arch`` or ``model``, not both; ``arch`` becomes ``resnet20`` when neither is
        given and ``custom`` with a model, whose file path is made absolute."""
        if self.model is None:
            if self.arch is None:
                object.__setattr__(self, "arch", "resnet20")
            if self.arch == USER_ARCH:
                raise ConfigError(
                    f"arch {USER_ARCH!r} is a user model; give model=FILE.py:FACTORY instead"
                )
            if self.arch not in ARCHS:
                raise ConfigError(f"unknown arch {self.arch!r}; expected one of {', '.join(ARCHS)}")
            if self.model_sha256 is not None:
                raise ConfigError("model_sha256 belongs to a user model; give model too")
            return
        if self.arch not in (None, USER_ARCH):
            raise ConfigError(
                f"give a built-in arch or a user model, not both (arch {self.arch!r}, model "
                f"{self.model!r})"
            )
        if self.faithful_mbv2:
            raise ConfigError("faithful_mbv2 applies to the built-in mobilenetv2 only")
        object.__setattr__(self, "arch", USER_ARCH)
        object.__setattr__(self, "model", str(ModelSource.parse(self.model)))

    def pinned(self) -> TrainConfig:
        """This configuration with ``model_sha256`` set to the user model's source file as it
        is now (a built-in arch, or a module without a file: unchanged). ConfigError when
        ``model_sha256`` is already set and the file no longer has it."""
        if self.model is None:
            return self
        now = ModelSource.parse(self.model).sha256()
        if self.model_sha256 is not None and now != self.model_sha256:
            raise ConfigError(
                f"model file of {self.model} changed since its run began (sha256 "
                f"{self.model_sha256[:12]}... -> {str(now)[:12]}...); restore it, or train a "
                "new run"
            )
        return replace(self, model_sha256=now)

    def absolute(self) -> TrainConfig:
        """This configuration with the folders it names (:data:`PATH_FIELDS`) absolute, as a
        run stores them: its folder then works from any working directory."""
        named = {name: getattr(self, name) for name in PATH_FIELDS}
        return replace(
            self, **{name: absolute_path(path) for name, path in named.items() if path is not None}
        )

    def located(self, folder: str | Path, data: str | Path | None = None) -> TrainConfig:
        """This configuration as run ``folder`` stored it, with the folders it names found
        from the working directory (:func:`~climbq_deploy.runfolder.locate_run_path`): the
        dataset ``data`` given instead, or the stored one, which must exist (DataError naming
        what was tried otherwise); ``init`` and ``teacher`` where they still exist (only
        training from them reads them; kept as stored otherwise)."""
        if data is not None:
            dataset = absolute_path(data)
        else:
            hint = "give the dataset folder with --data (data= in Python)"
            dataset = str(locate_run_path(folder, "data", self.data, hint))
        runs = {}
        for name in ("init", "teacher"):
            stored = getattr(self, name)
            if stored is not None:
                found = [p for p in run_path_candidates(folder, stored) if p.is_dir()]
                runs[name] = str(found[0]) if found else stored
        return replace(self, data=dataset, **runs)

    @property
    def loss_name(self) -> str:
        return self.loss or ("homovar" if self.method == "climbq+" else "ce")

    @property
    def quant_spec(self) -> QuantSpec:
        return QuantSpec(self.method, self.wbits, self.abits, self.act_scaling)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
