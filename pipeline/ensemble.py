"""Ensemble maths on saved logits: member weights, soft voting, fitted weights. Plain numpy.

Every function takes members as a list of ``[n_rows, n_classes]`` logit arrays in the same row order
and returns plain arrays, so the `ensemble` job, a notebook and the tests share one implementation.

Weights always lie on the simplex (non-negative, sum 1): an ensemble is an average of its members,
whichever way the weights were chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .metrics import softmax

VOTES = ("probs", "logits")
OPTIMIZERS = ("logloss", "greedy")
GREEDY_METRICS = ("logloss", "accuracy")
# Clip probabilities before the log: a member that is sure and wrong must not give an infinite loss.
_EPS = 1e-12


def normalized(scores: Sequence[float]) -> np.ndarray:
    """Scores scaled to sum 1 (what a practitioner does by hand with validation accuracies).

    All-zero (or negative-sum) scores give uniform weights rather than a division by zero.
    """
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, None)
    total = s.sum()
    return s / total if total > 0 else np.full(len(s), 1.0 / len(s))


def uniform(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)


def sharpened(scores: Sequence[float], temperature: float) -> np.ndarray:
    """softmax(scores / temperature): T large -> uniform, T -> 0 -> all weight on the best member.

    Accuracies of a campaign differ by a point or two, so useful temperatures are around 0.005-0.05.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return softmax(np.asarray(scores, dtype=np.float64) / temperature)


def impute_missing(scores: Sequence[float | None]) -> tuple[np.ndarray, list[int]]:
    """Fill members whose score is missing with the mean score of the others.

    Returns (filled scores, indices that were missing). If no member has a score, every member gets
    the same score (1.0), so any score-based weighting falls back to uniform weights.
    """
    missing = [i for i, s in enumerate(scores) if s is None or not np.isfinite(s)]
    known = [float(s) for i, s in enumerate(scores) if i not in missing]
    fill = float(np.mean(known)) if known else 1.0
    return np.array([fill if i in missing else float(s) for i, s in enumerate(scores)]), missing


def combine(logits: Sequence[np.ndarray], weights: Sequence[float], vote: str = "probs") -> np.ndarray:
    """The ensemble's class probabilities ``[n_rows, n_classes]``.

    ``probs``: weighted mean of each member's softmax (soft voting). ``logits``: softmax of the
    weighted mean of the raw logits (a geometric mean of the probabilities: one confident member
    counts for more).
    """
    if vote not in VOTES:
        raise ValueError(f"vote must be one of {VOTES}, got {vote!r}")
    stack = _stack(logits)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (stack.shape[0],):
        raise ValueError(f"{len(w)} weights for {stack.shape[0]} members")
    if vote == "probs":
        return np.einsum("m,mnc->nc", w, softmax(stack))
    return softmax(np.einsum("m,mnc->nc", w, stack))


def as_logits(probs: np.ndarray) -> np.ndarray:
    """Log-probabilities: logits whose softmax is ``probs``, so an ensemble can be a member itself."""
    return np.log(np.clip(probs, _EPS, None))


def log_loss(probs: np.ndarray, labels) -> float:
    """Mean negative log-likelihood of the true labels."""
    labels = np.asarray(labels, dtype=np.int64)
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], _EPS, None)).mean())


def fit_logloss(logits: Sequence[np.ndarray], labels, vote: str = "probs", *, steps: int = 1000,
                lr: float = 0.3, tol: float = 1e-10) -> np.ndarray:
    """Weights minimising validation log loss over the simplex.

    Weights are softmax(theta), optimised by Adam with the analytic gradient: no scipy on workers.
    For ``probs`` voting the loss is convex in the weights, so this finds the optimum; for
    ``logits`` it is convex too (cross-entropy of a linear map of the weights).
    """
    stack = _stack(logits)
    labels = np.asarray(labels, dtype=np.int64)
    n_members, n_rows, _ = stack.shape
    rows = np.arange(n_rows)
    probs = softmax(stack)
    true_probs = probs[:, rows, labels]  # [m, n]: each member's probability of the true class
    onehot = np.zeros(stack.shape[1:])
    onehot[rows, labels] = 1.0

    def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        if vote == "probs":
            q = np.clip(w @ true_probs, _EPS, None)
            return float(-np.log(q).mean()), -(true_probs / q).mean(axis=1)
        p = softmax(np.einsum("m,mnc->nc", w, stack))
        loss = float(-np.log(np.clip(p[rows, labels], _EPS, None)).mean())
        return loss, np.einsum("nc,mnc->m", p - onehot, stack) / n_rows

    theta = np.zeros(n_members)
    m1, m2 = np.zeros(n_members), np.zeros(n_members)
    best_loss, best_w, previous = np.inf, uniform(n_members), np.inf
    for t in range(1, steps + 1):
        w = softmax(theta)
        loss, grad_w = loss_and_grad(w)
        if loss < best_loss:
            best_loss, best_w = loss, w
        if abs(previous - loss) < tol:
            break
        previous = loss
        grad = w * (grad_w - w @ grad_w)  # chain rule through the softmax
        m1 = 0.9 * m1 + 0.1 * grad
        m2 = 0.999 * m2 + 0.001 * grad ** 2
        theta -= lr * (m1 / (1 - 0.9 ** t)) / (np.sqrt(m2 / (1 - 0.999 ** t)) + 1e-12)
    # The optimum often lies on a face of the simplex (a useless member gets 0), which softmax
    # weights only approach: a single member is kept when it alone scores better.
    candidates = [best_w, *np.eye(n_members)]
    return min(candidates, key=lambda w: loss_and_grad(w)[0])


def fit_greedy(logits: Sequence[np.ndarray], labels, vote: str = "probs", *, rounds: int = 50,
               metric: str = "logloss") -> np.ndarray:
    """Greedy ensemble selection with replacement (Caruana et al., 2004).

    Starts from the best single member, then each round adds (again, possibly) the member that
    improves the bag's validation score most; the weights are the counts of the best bag seen.
    `metric` "logloss" scores by log loss; "accuracy" by accuracy (log loss breaks ties), so the
    result is never below the best member's validation accuracy.
    """
    if metric not in GREEDY_METRICS:
        raise ValueError(f"metric must be one of {GREEDY_METRICS}, got {metric!r}")
    stack = _stack(logits)
    labels = np.asarray(labels, dtype=np.int64)
    n_members = stack.shape[0]
    counts = np.zeros(n_members)
    best_counts, best_loss = None, None
    for _ in range(max(1, rounds)):
        trials = []
        for m in range(n_members):
            trial = counts.copy()
            trial[m] += 1
            trials.append(_greedy_score(combine(stack, trial / trial.sum(), vote), labels, metric))
        pick = min(range(n_members), key=lambda m: trials[m])  # ties: the earlier member
        counts[pick] += 1
        if best_counts is None or _improves(trials[pick], best_loss):
            best_loss, best_counts = trials[pick], counts.copy()
    return best_counts / best_counts.sum()


def _greedy_score(probs: np.ndarray, labels: np.ndarray, metric: str) -> tuple[float, ...]:
    """Lower is better, compared as a tuple."""
    loss = log_loss(probs, labels)
    if metric == "accuracy":
        return (-float((probs.argmax(-1) == labels).mean()), loss)
    return (loss,)


def _improves(score: tuple[float, ...], best: tuple[float, ...]) -> bool:
    return score[0] < best[0] - 1e-12 or (abs(score[0] - best[0]) <= 1e-12 and score[1:] < best[1:])


def fit_weights(optimizer: str, logits: Sequence[np.ndarray], labels, vote: str = "probs",
                **options) -> np.ndarray:
    if optimizer == "logloss":
        return fit_logloss(logits, labels, vote, **options)
    if optimizer == "greedy":
        return fit_greedy(logits, labels, vote, **options)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")


def above_majority(scores: Sequence[float], majority: float) -> np.ndarray:
    """Weights in proportion to each member's accuracy above the majority class's share.

    Members at 0.40-0.48 on a 4-class task get nearly uniform `normalized` weights (0.40 vs 0.48 is a
    1.2x ratio); measured from the 0.25 floor a model gets for free, the same members weigh 0.15 vs
    0.23 (1.5x). A member at or below the floor gets 0; if all are, weights are uniform.
    """
    return normalized(np.asarray(scores, dtype=np.float64) - majority)


def out_of_fold(fit: Callable[[np.ndarray], np.ndarray], logits: Sequence[np.ndarray], labels,
                vote: str = "probs", folds: int = 5, seed: int = 0) -> np.ndarray:
    """Each row's ensemble probabilities from weights fitted on the other folds, ``[n_rows, n_classes]``.

    ``fit(rows)`` returns the weights a strategy picks from those validation rows alone. Weights
    fitted on the rows they are scored on look better than they are; scoring every row with weights
    that never saw it is the honest validation number to compare with a single model's.
    """
    stack = _stack(logits)
    labels = np.asarray(labels, dtype=np.int64)
    if not 2 <= folds <= len(labels):
        raise ValueError(f"folds must be in 2..{len(labels)} (the rows), got {folds}")
    order = np.random.default_rng(seed).permutation(len(labels))
    out = np.zeros(stack.shape[1:])
    for held in np.array_split(order, folds):
        fit_rows = np.setdiff1d(order, held)
        out[held] = combine(stack[:, held], fit(fit_rows), vote)
    return out


def cross_validated_accuracy(optimizer: str, logits: Sequence[np.ndarray], labels, vote: str = "probs",
                             folds: int = 5, seed: int = 0, **options) -> float:
    """Accuracy of weights fitted by `optimizer`, each row scored by weights fitted without it."""
    stack = _stack(logits)
    labels = np.asarray(labels, dtype=np.int64)
    probs = out_of_fold(lambda rows: fit_weights(optimizer, stack[:, rows], labels[rows], vote, **options),
                        stack, labels, vote, folds, seed)
    return float((probs.argmax(-1) == labels).mean())


def align_rows(reference: Sequence[str], texts: Sequence[str], values: np.ndarray) -> np.ndarray:
    """Reorder ``values`` (rows in ``texts`` order) into ``reference`` order, matching by text.

    Members scored on the same validation rows may still list them in another order; the model saw
    only the text, so equal texts have equal logits and duplicates can be matched in any order.
    Raises ValueError if the two row sets differ.
    """
    if list(reference) == list(texts):
        return values
    positions: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        positions.setdefault(text, []).append(i)
    try:
        index = [positions[text].pop() for text in reference]
    except (KeyError, IndexError):
        raise ValueError("the two row sets differ") from None
    if len(index) != len(texts):
        raise ValueError("the two row sets differ")
    return values[index]


def _stack(logits: Sequence[np.ndarray]) -> np.ndarray:
    if isinstance(logits, np.ndarray) and logits.ndim == 3:
        return logits.astype(np.float64, copy=False)
    shapes = {np.shape(x) for x in logits}
    if len(shapes) != 1:
        raise ValueError(f"members' logits differ in shape: {sorted(shapes)}")
    return np.stack([np.asarray(x, dtype=np.float64) for x in logits])
