"""Dead and diverged runs stop early: the verdicts (numpy), the Trainer callback, and real tiny runs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.health import Diverged, NotLearning, TrainingStalled, dead_reason, majority_share, top_class_share

torch = pytest.importorskip("torch")

from pipeline.callbacks import HealthCallback  # noqa: E402


def test_dead_reason_names_one_class_and_at_or_below_majority():
    labels = np.array([0, 0, 0, 1, 2, 3, 1, 2, 3, 0])  # majority class 0: 40%
    assert majority_share(labels) == pytest.approx(0.4)
    assert top_class_share([2] * 10) == 1.0
    one_class = dead_reason(labels, [2] * 10, collapse_share=0.95, names=["a", "b", "c", "d"])
    assert one_class == "predictions are one class (100.0% of rows 'c')"
    at_majority = dead_reason(labels, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1], collapse_share=0.95)
    assert at_majority == "accuracy 0.4000 is at or below the majority class's share 0.4000"
    assert dead_reason(labels, labels, collapse_share=0.95) is None
    assert dead_reason(labels, [0, 0, 0, 1, 2, 3, 1, 2, 0, 1], collapse_share=0.95, min_gain=0.5) is not None
    assert issubclass(NotLearning, TrainingStalled) and issubclass(TrainingStalled, ValueError)


def _state(epoch, history=(), step=40):
    return SimpleNamespace(epoch=epoch, global_step=step, log_history=list(history))


ARGS = SimpleNamespace(learning_rate=2e-3)


def test_the_callback_waits_for_the_grace_epoch_then_fails_a_classifier_that_never_learned():
    cb = HealthCallback(0, 2, classify=True, collapse_share=0.95, majority=0.25)
    dead = {"eval_loss": 1.38, "eval_accuracy": 0.25, "eval_top_share": 0.99}
    cb.on_evaluate(ARGS, _state(1.0, [{**dead, "epoch": 1.0}]), None, metrics=dead)  # epoch 1: too early
    with pytest.raises(NotLearning, match=r"validation predictions are one class \(99.0% of rows\) after "
                                          r"epoch 2 \(lr 0.002\); try another lr"):
        cb.on_evaluate(ARGS, _state(2.0, [{**dead, "epoch": 1.0}, {**dead, "epoch": 2.0}]), None, metrics=dead)
    # an epoch that looked alive keeps the run going (the best model is what it keeps)
    alive = {"eval_loss": 1.2, "eval_accuracy": 0.41, "eval_top_share": 0.4}
    cb.on_evaluate(ARGS, _state(2.0, [{**alive, "epoch": 1.0}, {**dead, "epoch": 2.0}]), None, metrics=dead)
    low = {"eval_loss": 1.3, "eval_accuracy": 0.24, "eval_top_share": 0.5}
    with pytest.raises(NotLearning, match="accuracy 0.2400 is at or below the majority class's share 0.2500"):
        cb.on_evaluate(ARGS, _state(3.0, [{**low, "epoch": 3.0}]), None, metrics=low)
    HealthCallback(0, 0, classify=True, majority=0.25).on_evaluate(ARGS, _state(5.0, [dead]), None, metrics=dead)
    # too few optimizer steps yet (40 < 100): a model from scratch may still leave its one-class start
    patient = HealthCallback(0, 2, classify=True, min_steps=100, collapse_share=0.95, majority=0.25)
    patient.on_evaluate(ARGS, _state(2.0, [{**dead, "epoch": 2.0}]), None, metrics=dead)
    with pytest.raises(NotLearning):
        patient.on_evaluate(ARGS, _state(4.0, [{**dead, "epoch": 4.0}], step=100), None, metrics=dead)


def test_the_callback_fails_a_masked_lm_whose_held_out_loss_did_not_fall():
    cb = HealthCallback(0, 1, classify=False)
    before = {"eval_loss": 7.6, "epoch": 0}
    cb.on_evaluate(ARGS, _state(1.0, [before, {"eval_loss": 6.2, "epoch": 1.0}]), None, metrics={"eval_loss": 6.2})
    with pytest.raises(NotLearning, match="held-out MLM loss 7.7000 is not below its 7.6000 before training"):
        cb.on_evaluate(ARGS, _state(1.0, [before, {"eval_loss": 7.7, "epoch": 1.0}]), None, metrics={"eval_loss": 7.7})


def test_nan_losses_and_weights_are_divergence():
    cb = HealthCallback(10, 2, classify=True)
    with pytest.raises(Diverged, match="training loss nan at step 40"):
        cb.on_log(ARGS, _state(0.5), None, logs={"loss": float("nan")})
    with pytest.raises(Diverged, match="validation loss inf at step 40"):
        cb.on_evaluate(ARGS, _state(1.0), None, metrics={"eval_loss": float("inf")})
    model = torch.nn.Linear(2, 2)
    cb.on_step_end(ARGS, _state(0.5, step=10), None, model=model)  # finite: nothing
    with torch.no_grad():
        model.bias[0] = float("nan")
    cb.on_step_end(ARGS, _state(0.5, step=11), None, model=model)  # not a check step
    with pytest.raises(Diverged, match="weights became NaN or infinite by step 20"):
        cb.on_step_end(ARGS, _state(0.5, step=20), None, model=model)


@pytest.mark.slow
def test_a_real_run_with_an_absurd_lr_stops_at_once_with_the_reason(small_split, tiny_cfg, tmp_path):
    from pipeline.training import finetune

    data = small_split.train.iloc[:160]
    with pytest.raises(Diverged, match=r"weights became NaN or infinite by step \d"):
        finetune(tiny_cfg(epochs=3, lr=1e6, nan_check_steps=1), data, small_split.val, None, tmp_path / "hot")
    assert not (tmp_path / "hot" / "model").exists()  # no final model: it never finished
    with pytest.raises(NotLearning, match=r"after epoch 2 \(lr 1e-09\)"):
        finetune(tiny_cfg(epochs=4, lr=1e-9, not_learning_epoch=2, not_learning_min_steps=0,
                          min_gain_over_majority=0.05), data,
                 small_split.val, None, tmp_path / "cold")
    assert not (tmp_path / "cold" / "checkpoints" / "checkpoint-15").exists()  # stopped before epoch 3
