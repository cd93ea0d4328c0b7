"""What the report computes from a run's model rather than reads from a file: per-layer weight
quantization error (the paper's Fig. 3 view) and HomoVar class weights (Fig. 1 view).

Weight quantization error of layer ``l`` with float weights ``W`` and quantizer output
``W_hat`` (:meth:`QConv2d.quantized_weight`; ClimbQ's ``W_hat`` lies in [-1, 1], so a scale is
needed to compare it with ``W``; every quantized conv is followed by BatchNorm, which absorbs it):

    alpha_l = <W, W_hat> / ||W_hat||^2                 (least-squares scale, dimensionless)
    eps_l   = min_alpha ||W - alpha W_hat||^2 = ||W - alpha_l W_hat||^2   (weight units^2)
    e_l     = eps_l / ||W||^2 = 1 - cos^2(W, W_hat)    (relative, in [0, 1])

and over the layers ``E = sum_l eps_l / sum_l ||W_l||^2`` (relative total) beside
``sum_l eps_l`` (absolute total). All sums are in float64.

HomoVar weights: the run's model in eval mode (sigma = 2, BatchNorm running statistics, no
augmentation) gives the penultimate features of its training images (the training split less
any validation hold-out), in batches of the run's batch size in the order of its first training
epoch (``ShuffleSampler(seed)``, epoch 0); each batch gives ``w_k`` by
:func:`climbq_deploy.losses.homovar.homovar_bounds` with the run's alpha, beta and variant, and
the report shows the mean over batches (with the min and max). In eval mode an image's features
do not depend on its batch, so they are computed once per image and then grouped into batches.
The class-balanced weights are ``(1 - beta) / (1 - beta^n_k)`` normalised the same way (sum K).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from climbq_deploy.data.dataset import ImageDataset
from climbq_deploy.data.pipeline import BatchLoader, ShuffleSampler
from climbq_deploy.errors import ConfigError
from climbq_deploy.export import TrainedRun
from climbq_deploy.losses import class_balanced_weights, homovar_bounds
from climbq_deploy.quant.layers import quantized_convs
from climbq_deploy.train.validation import split_validation

WEIGHT_ERROR_METRIC = (
    "e_l = min_alpha ||W - alpha*W_hat||^2 / ||W||^2 (W: float weights, W_hat: quantizer "
    "output, alpha = <W,W_hat>/||W_hat||^2)"
)
TOTAL_ERROR_METRIC = "E = sum_l min_alpha ||W_l - alpha*W_hat_l||^2 / sum_l ||W_l||^2"


@dataclass(frozen=True)
class LayerError:
    """One quantized conv: ``weight_sq = ||W||^2``, ``error = eps_l`` (weight units^2),
    ``alpha`` the least-squares scale, ``relative = e_l``."""

    layer: str
    numel: int
    weight_sq: float
    error: float
    alpha: float

    @property
    def relative(self) -> float:
        return self.error / self.weight_sq if self.weight_sq > 0 else 0.0


@dataclass(frozen=True)
class WeightError:
    """Per-layer errors of one model, with the totals over layers."""

    layers: list[LayerError]

    @property
    def total(self) -> float:
        """``sum_l eps_l`` (weight units^2)."""
        return float(sum(layer.error for layer in self.layers))

    @property
    def total_relative(self) -> float:
        """``E = sum_l eps_l / sum_l ||W_l||^2``."""
        norm = sum(layer.weight_sq for layer in self.layers)
        return self.total / norm if norm > 0 else 0.0


def layer_error(weight: torch.Tensor, quantized: torch.Tensor, name: str) -> LayerError:
    """``eps_l`` and ``alpha_l`` of one layer (float64); ``alpha = 0`` when ``W_hat = 0``."""
    w = weight.detach().double().flatten()
    q = quantized.detach().double().flatten()
    if w.shape != q.shape:
        raise ConfigError(
            f"layer {name}: quantized weights {tuple(quantized.shape)} do not "
            f"match the weights {tuple(weight.shape)}"
        )
    q_sq = float(q @ q)
    alpha = float(w @ q) / q_sq if q_sq > 0 else 0.0
    error = float(((w - alpha * q) ** 2).sum())
    return LayerError(name, int(w.numel()), float(w @ w), error, alpha)


def weight_quant_errors(model: torch.nn.Module) -> WeightError:
    """Per-layer error of every quantized conv (:func:`quantized_convs`) with a weight
    quantizer, in definition order; an empty list for a full-precision model."""
    out = []
    with torch.no_grad():
        for name, conv in quantized_convs(model):
            if conv.weight_quantizer is None:
                continue
            out.append(layer_error(conv.weight, conv.quantized_weight(), name))
    return WeightError(out)


@dataclass(frozen=True)
class HomoVarWeights:
    """HomoVar weights of one run averaged over its training batches (see module docstring).

    ``counts`` are the ``n_k`` the loss used; ``mean``/``low``/``high`` the mean, min and max
    of ``w_k`` over ``batches`` batches; ``class_balanced`` the Cui et al. weights; ``bite`` the
    share of (batch, class) entries whose ``beta_k`` differs from ``beta`` (bounds biting).
    """

    counts: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    class_balanced: np.ndarray
    batches: int
    batch_size: int
    alpha: float
    beta: float
    variant: str
    bite: float


def penultimate_features(run: TrainedRun, images: np.ndarray, chunk: int = 256) -> torch.Tensor:
    """(N, D) penultimate features of uint8 NHWC ``images``: the model in eval mode (sigma = 2,
    BatchNorm running statistics), so each image's features do not depend on its batch and the
    images can go through in chunks of any size."""
    loader = BatchLoader(images, np.zeros(len(images), np.int64), chunk, mean=run.mean, std=run.std)
    model = run.model.eval()
    with torch.no_grad():
        return torch.cat([model(x, return_features=True)[1] for x, _ in loader.epoch(0)])


def homovar_weights(
    run: TrainedRun, dataset: ImageDataset, max_batches: int | None = None
) -> HomoVarWeights:
    """HomoVar class weights of ``run``'s model on ``dataset``'s training split.

    Args:
        run: a loaded run (:func:`climbq_deploy.export.load_run`).
        dataset: the dataset it was trained on.
        max_batches: stop after this many batches (None: the whole epoch).

    Raises:
        ConfigError: the dataset's class count differs from the model's, or a loss option is
            invalid.
    """
    config = run.config
    if dataset.num_classes != run.num_classes:
        raise ConfigError(
            f"dataset has {dataset.num_classes} classes, run {run.folder} has {run.num_classes}"
        )
    options = config.loss_options
    alpha = float(options.get("alpha", 0.05))
    beta = float(options.get("beta", 0.999))
    variant = str(options.get("variant", "faithful"))
    train_idx, _ = split_validation(dataset.train_labels, config.val_fraction, config.seed)
    images, labels = dataset.train_images[train_idx], dataset.train_labels[train_idx]
    counts = np.bincount(labels, minlength=dataset.num_classes)
    order = ShuffleSampler(len(labels), config.seed).epoch_indices(0)
    batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    batches = batches[:max_batches] if max_batches is not None else batches
    used = np.concatenate(batches)
    feats = penultimate_features(run, images[used])
    where = np.empty(len(labels), dtype=np.int64)
    where[used] = np.arange(len(used))
    y_all = torch.from_numpy(labels.astype(np.int64))
    weights, bites = [], []
    for batch in batches:
        stats = homovar_bounds(feats[where[batch]], y_all[batch], counts, alpha, beta, variant)
        weights.append(stats.weights.numpy())
        bites.append(np.abs(stats.beta_k.numpy() - beta) > 1e-12 * beta)
    stacked = np.stack(weights)
    return HomoVarWeights(
        counts=counts.astype(np.int64),
        mean=stacked.mean(axis=0),
        low=stacked.min(axis=0),
        high=stacked.max(axis=0),
        class_balanced=class_balanced_weights(counts, beta).double().numpy(),
        batches=len(weights),
        batch_size=config.batch_size,
        alpha=alpha,
        beta=beta,
        variant=variant,
        bite=float(np.mean(bites)),
    )
