"""Ensemble maths on synthetic logits: weights, soft voting, fitted weights (fast, numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import ensemble as E
from pipeline.metrics import accuracy, softmax


def synthetic(n=600, classes=4, noise=(0.5, 4.0, 4.0), seed=0):
    """Labels and one logit array per member: the true class gets +3, plus Gaussian noise of scale `noise`."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    members = []
    for scale in noise:
        logits = rng.normal(0, scale, (n, classes))
        logits[np.arange(n), labels] += 3.0
        members.append(logits)
    return members, labels


@pytest.mark.parametrize("optimizer", ["logloss", "greedy"])
@pytest.mark.parametrize("vote", ["probs", "logits"])
def test_optimized_weights_beat_uniform_when_one_member_is_good(optimizer, vote):
    members, labels = synthetic()
    fitted = E.fit_weights(optimizer, members, labels, vote)
    assert fitted.sum() == pytest.approx(1.0) and (fitted >= 0).all()
    assert fitted.argmax() == 0 and fitted[0] > 0.5  # the good member carries the ensemble
    uniform = E.combine(members, E.uniform(3), vote)
    optimized = E.combine(members, fitted, vote)
    assert E.log_loss(optimized, labels) < E.log_loss(uniform, labels)
    assert accuracy(labels, optimized.argmax(-1)) > accuracy(labels, uniform.argmax(-1))
    # and it holds on rows the weights were not fitted on
    cv = E.cross_validated_accuracy(optimizer, members, labels, vote, folds=3)
    assert cv > accuracy(labels, uniform.argmax(-1))


def test_logloss_fit_finds_the_optimum_of_a_convex_problem():
    members, labels = synthetic(noise=(1.0, 2.0))
    fitted = E.fit_logloss(members, labels)
    best = E.log_loss(E.combine(members, fitted), labels)
    for a in np.linspace(0, 1, 101):  # brute force over the 1-d simplex
        assert best <= E.log_loss(E.combine(members, [a, 1 - a]), labels) + 1e-6


def test_accuracy_weights_are_the_normalised_accuracies():
    accs = [0.80, 0.84, 0.76]
    np.testing.assert_allclose(E.normalized(accs), np.array(accs) / sum(accs))
    np.testing.assert_allclose(E.normalized([0, 0]), [0.5, 0.5])


def test_soft_voting_probs_versus_logits():
    # Member a is very sure of class 0; members b and c mildly prefer class 1.
    a = np.array([[8.0, 0.0]])
    b = c = np.array([[0.0, 0.5]])
    probs_vote = E.combine([a, b, c], E.uniform(3), "probs")
    logits_vote = E.combine([a, b, c], E.uniform(3), "logits")
    np.testing.assert_allclose(probs_vote, (softmax(a) + softmax(b) + softmax(c)) / 3)
    np.testing.assert_allclose(logits_vote, softmax((a + b + c) / 3))
    assert probs_vote.sum() == pytest.approx(1.0)
    assert probs_vote.argmax() == 0 and logits_vote.argmax() == 0
    # averaging probabilities caps one member's say at its weight; averaging logits does not
    assert probs_vote[0, 0] < logits_vote[0, 0]
    # mean probabilities vote 1 when two of three members are confidently for it
    b2 = c2 = np.array([[0.0, 4.0]])
    assert E.combine([a, b2, c2], E.uniform(3), "probs").argmax() == 1


def test_sharpened_weights_approach_the_best_member_as_temperature_falls():
    accs = [0.80, 0.83, 0.81]
    hot = E.sharpened(accs, 10.0)
    np.testing.assert_allclose(hot, E.uniform(3), atol=1e-3)
    previous = 0.0
    for t in (0.1, 0.03, 0.01, 0.003, 0.001):
        w = E.sharpened(accs, t)
        assert w.sum() == pytest.approx(1.0) and w.argmax() == 1 and w[1] >= previous
        previous = w[1]
    assert previous > 0.999
    members, labels = synthetic(noise=(4.0, 0.5, 4.0))
    np.testing.assert_allclose(E.combine(members, E.sharpened(accs, 1e-4)), softmax(members[1]), atol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        E.sharpened(accs, 0)


def test_missing_scores_get_the_mean_of_the_others_or_uniform():
    filled, missing = E.impute_missing([0.8, None, 0.6])
    assert missing == [1] and filled[1] == pytest.approx(0.7)
    filled, missing = E.impute_missing([None, None])
    assert missing == [0, 1]
    np.testing.assert_allclose(E.normalized(filled), [0.5, 0.5])


def test_align_rows_reorders_by_text_and_refuses_other_rows():
    values = np.arange(6).reshape(3, 2)
    np.testing.assert_array_equal(E.align_rows(["b", "c", "a"], ["a", "b", "c"], values),
                                  values[[1, 2, 0]])
    with pytest.raises(ValueError, match="differ"):
        E.align_rows(["a", "b", "x"], ["a", "b", "c"], values)


def test_as_logits_round_trips_probabilities():
    members, labels = synthetic()
    probs = E.combine(members, [0.5, 0.25, 0.25])
    np.testing.assert_allclose(softmax(E.as_logits(probs)), probs, atol=1e-9)
    assert E.log_loss(probs, labels) > 0


@pytest.mark.parametrize("seed", range(5))
def test_greedy_on_accuracy_never_ends_below_the_best_member(seed):
    # Members of similar strength, where a log-loss fit can lose accuracy to the best member.
    members, labels = synthetic(n=300, noise=(2.5, 2.6, 2.8), seed=seed)
    best_member = max(accuracy(labels, m.argmax(-1)) for m in members)
    weights = E.fit_greedy(members, labels, rounds=30, metric="accuracy")
    assert accuracy(labels, E.combine(members, weights).argmax(-1)) >= best_member


def test_greedy_rejects_an_unknown_metric():
    members, labels = synthetic(n=50)
    with pytest.raises(ValueError, match="metric must be one of"):
        E.fit_greedy(members, labels, metric="f1")
