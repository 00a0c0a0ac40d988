"""Member weights for each weighting, and the out-of-fold validation scores of a weighting."""

from __future__ import annotations

from .params import METRIC_OF, Params


def member_weights(params: Params, scores, val_logits, labels):
    """The weights `params.weighting` picks from these member scores (or logits) and labels."""
    from pipeline import ensemble as E
    from pipeline.health import majority_share

    n = len(val_logits)
    if params.weighting in ("accuracy", "f1"):
        return E.normalized(scores)
    if params.weighting == "sharpened":
        return E.sharpened(scores, params.temperature)
    if params.weighting == "above_majority":
        return E.above_majority(scores, majority_share(labels))
    if params.weighting == "uniform":
        return E.uniform(n)
    return E.fit_weights(params.optimizer, val_logits, labels, params.vote, **fit_options(params))


def fit_options(params: Params) -> dict:
    if params.optimizer == "greedy":
        return {"rounds": params.greedy_rounds, "metric": params.greedy_metric}
    return {}


def _scores_on(metric: str | None, stack, labels):
    """Each member's `metric` measured on these rows from its logits (what it would have logged)."""
    import numpy as np

    from pipeline.metrics import accuracy, macro_f1

    if metric is None:
        return None
    if metric == "val_f1":
        return np.array([macro_f1(labels, x.argmax(-1), x.shape[-1]) for x in stack])
    return np.array([accuracy(labels, x.argmax(-1)) for x in stack])


def out_of_fold_probs(params: Params, val_logits, labels):
    """Every validation row scored by weights chosen from the other folds only."""
    import numpy as np

    from pipeline import ensemble as E

    stack = np.stack(val_logits)
    metric = METRIC_OF[params.weighting]

    def fit(rows):
        return member_weights(params, _scores_on(metric, stack[:, rows], labels[rows]), stack[:, rows], labels[rows])

    return E.out_of_fold(fit, stack, labels, params.vote, folds=min(params.cv_folds, len(labels)))


def score_probs(probs, labels) -> dict[str, float]:
    from pipeline import ensemble as E
    from pipeline.metrics import accuracy, macro_f1

    preds = probs.argmax(-1)
    return {"accuracy": accuracy(labels, preds), "f1": macro_f1(labels, preds, probs.shape[1]),
            "log_loss": E.log_loss(probs, labels)}
