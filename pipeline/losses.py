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
    """Focal loss: ``alpha_y * (1 - p_y)^gamma * CE``, where CE is ``F.cross_entropy``'s per-row loss.

    CE follows torch exactly, class weights and label smoothing included:
    ``(1 - eps) * w_y * NLL_y + eps / C * sum_c w_c * NLL_c``; the mean divides by the sum of ``w_y``
    (the row count without weights), as ``F.cross_entropy`` does. ``alpha`` is the focal-loss paper's
    per-class factor and only scales rows. The focal factor uses the model's probability of the true
    class. With gamma=0 and no alpha this IS ``F.cross_entropy`` (same call, bit-identical).
    """
    weight = _as_tensor(class_weights, logits.float())
    if gamma == 0 and alpha is None:
        return F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=label_smoothing)
    logits = logits.float()  # fp16 log-softmax loses precision; the loss is cheap in fp32
    keep = labels != ignore_index
    logits, labels = logits[keep], labels[keep]
    ce = F.cross_entropy(logits, labels, weight=weight, reduction="none", label_smoothing=label_smoothing)
    p_true = F.softmax(logits, dim=-1).gather(1, labels.unsqueeze(1)).squeeze(1)
    loss = (1 - p_true).clamp(min=0).pow(gamma) * ce
    if alpha is not None:
        loss = loss * _as_tensor(alpha, loss)[labels]
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    denominator = weight[labels].sum() if weight is not None else loss.new_tensor(float(len(labels)))
    return loss.sum() / denominator.clamp(min=torch.finfo(loss.dtype).tiny)


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
