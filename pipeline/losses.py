"""Focal loss with per-class alpha, class weights and label smoothing, for ``Trainer(compute_loss_func=...)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _as_tensor(values: Sequence[float] | torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    if values is None:
        return None
    return torch.as_tensor(values, dtype=like.dtype, device=like.device)


def focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma: float = 2.0,
    alpha: Sequence[float] | torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    class_weights: Sequence[float] | torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> torch.Tensor:
    """Focal loss ``-alpha_y * w_y * (1 - p_y)^gamma * CE_smoothed``, mean over non-ignored rows.

    With gamma=0 and no alpha/weights/smoothing this is exactly ``F.cross_entropy``.
    The focal factor uses the model's probability of the true class, so smoothing only changes the
    target distribution, not how hard an example counts.
    ``alpha`` and ``class_weights`` multiply (alpha is the focal-loss paper's per-class balance;
    class_weights the usual CE weights); with weights the mean is weighted, as in ``F.cross_entropy``.
    """
    logits = logits.float()  # fp16 log-softmax loses precision; the loss is cheap in fp32
    keep = labels != ignore_index
    logits, labels = logits[keep], labels[keep]
    log_p = F.log_softmax(logits, dim=-1)
    log_p_true = log_p.gather(1, labels.unsqueeze(1)).squeeze(1)
    # Label-smoothed CE: (1 - eps) * NLL(true) + eps * mean over classes of NLL.
    ce = -log_p_true if label_smoothing == 0 else -(1 - label_smoothing) * log_p_true - label_smoothing * log_p.mean(-1)
    if gamma != 0:
        ce = (1 - log_p_true.exp()).clamp(min=0).pow(gamma) * ce
    weight = torch.ones_like(ce)
    for per_class in (_as_tensor(alpha, ce), _as_tensor(class_weights, ce)):
        if per_class is not None:
            weight = weight * per_class[labels]
    loss = weight * ce
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / weight.sum().clamp(min=torch.finfo(ce.dtype).tiny)


def make_compute_loss_func(
    gamma: float = 0.0,
    alpha: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
    class_weights: Sequence[float] | None = None,
):
    """A ``compute_loss_func(outputs, labels, num_items_in_batch)`` for ``transformers.Trainer``.

    Smoothing lives here because the Trainer's ``label_smoothing_factor`` only applies to its built-in
    loss. Under gradient accumulation the Trainer passes ``num_items_in_batch`` (labelled rows in the
    whole accumulated batch) and does NOT divide a custom loss by the accumulation steps itself, so the
    micro-batch mean is rescaled by its share of the rows: every row then weighs the same however the
    batch is split, which keeps the OOM batch-halving faithful to the original effective batch.
    """

    def compute_loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        loss = focal_loss(logits, labels, gamma, alpha, label_smoothing, class_weights)
        if num_items_in_batch is None:
            return loss
        rows_here = (labels != -100).sum()
        return loss * rows_here / num_items_in_batch

    return compute_loss
