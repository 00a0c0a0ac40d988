"""Focal loss against cross-entropy, the Trainer loss adapter, and the numpy metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.losses import focal_loss, make_compute_loss_func
from pipeline.metrics import accuracy, compute_metrics, macro_f1, softmax


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(64, 4, generator=gen) * 3, torch.randint(0, 4, (64,), generator=gen)


def test_focal_gamma0_equals_cross_entropy(batch):
    logits, labels = batch
    assert torch.equal(focal_loss(logits, labels, gamma=0.0), F.cross_entropy(logits, labels))


def test_focal_gamma0_smoothing_equals_cross_entropy_smoothing(batch):
    logits, labels = batch
    ours = focal_loss(logits, labels, gamma=0.0, label_smoothing=0.1)
    torch.testing.assert_close(ours, F.cross_entropy(logits, labels, label_smoothing=0.1))


def test_focal_gamma0_class_weights_equal_weighted_cross_entropy(batch):
    logits, labels = batch
    weights = [1.0, 2.0, 0.5, 3.0]
    ours = focal_loss(logits, labels, gamma=0.0, class_weights=weights)
    torch.testing.assert_close(ours, F.cross_entropy(logits, labels, weight=torch.tensor(weights)))


def test_focal_downweights_easy_examples():
    logits = torch.tensor([[8.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])  # easy (confident, right), hard
    labels = torch.tensor([0, 0])
    ce = focal_loss(logits, labels, gamma=0.0, reduction="none")
    focal = focal_loss(logits, labels, gamma=2.0, reduction="none")
    assert (focal < ce).all()
    # The easy row loses far more of its weight than the hard one: (1-p)^2 with p near 1 vs 0.25.
    assert focal[0] / ce[0] < 1e-4 < 0.5 < focal[1] / ce[1]


def test_focal_alpha_weights_classes(batch):
    logits, labels = batch
    per_row = focal_loss(logits, labels, gamma=2.0, reduction="none")
    alpha = torch.tensor([0.1, 0.2, 0.3, 0.4])
    weighted = focal_loss(logits, labels, gamma=2.0, alpha=alpha, reduction="none")
    torch.testing.assert_close(weighted, per_row * alpha[labels])


def test_focal_ignores_minus_100_labels(batch):
    logits, labels = batch
    masked = labels.clone()
    masked[:10] = -100
    torch.testing.assert_close(focal_loss(logits, masked, gamma=0.0), F.cross_entropy(logits[10:], labels[10:]))


def test_compute_loss_func_scales_for_gradient_accumulation(batch):
    """Two half-batches with num_items_in_batch must add up to the loss of the whole batch."""
    logits, labels = batch
    loss_fn = make_compute_loss_func(gamma=2.0, label_smoothing=0.1)
    whole = loss_fn({"logits": logits}, labels)
    halves = sum(loss_fn({"logits": logits[i:i + 32]}, labels[i:i + 32], num_items_in_batch=torch.tensor(64))
                 for i in (0, 32))
    torch.testing.assert_close(halves, whole)


def test_compute_loss_func_applies_smoothing(batch):
    logits, labels = batch
    plain = make_compute_loss_func()({"logits": logits}, labels)
    smoothed = make_compute_loss_func(label_smoothing=0.2)({"logits": logits}, labels)
    torch.testing.assert_close(plain, F.cross_entropy(logits, labels))
    torch.testing.assert_close(smoothed, F.cross_entropy(logits, labels, label_smoothing=0.2))


def test_accuracy_and_macro_f1_by_hand():
    labels = [0, 0, 1, 1, 2, 3]
    preds = [0, 1, 1, 1, 2, 2]
    assert accuracy(labels, preds) == pytest.approx(4 / 6)
    # per class F1: 0 -> 2/3, 1 -> 0.8, 2 -> 2/3, 3 -> 0
    assert macro_f1(labels, preds, num_labels=4) == pytest.approx((2 / 3 + 0.8 + 2 / 3 + 0) / 4)


def test_macro_f1_perfect_and_skips_absent_classes():
    assert macro_f1([0, 1, 1], [0, 1, 1], num_labels=4) == 1.0


def test_softmax_rows_sum_to_one_and_are_stable():
    probs = softmax(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]]))
    np.testing.assert_allclose(probs, [[0.5, 0.5], [0.25, 0.75]])


def test_compute_metrics_from_eval_prediction():
    from transformers import EvalPrediction

    logits = np.array([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 2.0]])
    metrics = compute_metrics(EvalPrediction(predictions=logits, label_ids=np.array([0, 1, 2])))
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert 0 < metrics["f1"] < 1


def test_focal_general_path_continuous_with_cross_entropy(batch):
    """A vanishing gamma takes the general (focal) code path and must land on torch's CE."""
    logits, labels = batch
    weights = torch.tensor([1.0, 2.0, 0.5, 3.0])
    ours = focal_loss(logits, labels, gamma=1e-9, class_weights=weights, label_smoothing=0.1)
    torch.testing.assert_close(ours, F.cross_entropy(logits, labels, weight=weights, label_smoothing=0.1))
