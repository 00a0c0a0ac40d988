"""Which jobs are members, their validation logits aligned row by row, and which learned nothing."""

from __future__ import annotations

import logging
from pathlib import Path

from ..context import JobContext
from .params import DEFAULT_MEMBER_KINDS, EnsembleError, Params

log = logging.getLogger("jobs.ensemble")


def select_members(params: Params, ctx: JobContext) -> list[str]:
    """Member names in a stable order: `members` as given, then tagged jobs oldest first."""
    if not params.members and not params.member_tags:
        found = {n: ctx.job(n) for kind in DEFAULT_MEMBER_KINDS
                 for n in ctx.jobs_where(kind=kind, status="succeeded") if n != ctx.name}
        names = sorted((n for n, r in found.items() if _holds_out(r)), key=lambda n: found[n].id)
        if not names:
            raise EnsembleError(f"no members: no succeeded {' or '.join(DEFAULT_MEMBER_KINDS)} job with "
                                "validation logits (name them in `members`, or select them with `member_tags`)")
        return names
    names = list(params.members)
    for tag in params.member_tags:
        for name in ctx.jobs_where(tag=tag):
            if name == ctx.name or name in names:
                continue
            record = ctx.job(name)
            if record.kind != "ensemble" and _holds_out(record):
                names.append(name)
    if not names:
        raise EnsembleError(f"no members: no job carries the tag(s) {', '.join(params.member_tags)}")
    return names


def _holds_out(record) -> bool:
    """False for a full-data retrain: it kept no validation rows, so it has nothing to be weighed on."""
    return not (record.params or {}).get("full_data", False)


def _check_member(name: str, record) -> None:
    if record.status != "succeeded":
        raise EnsembleError(f"member '{name}' has status {record.status}, not succeeded "
                            "(list it in this job's `after` so the ensemble waits for it)")
    if "val_logits" not in record.artifacts:
        known = ", ".join(sorted(record.artifacts)) or "none"
        why = " (a full_data retrain holds out no validation rows)" if not _holds_out(record) else ""
        raise EnsembleError(f"member '{name}' saved no val_logits{why}; its artifacts: {known}")


def _fingerprint(record, val_rows) -> str | None:
    from pipeline.data import rows_fingerprint

    path = record.artifacts.get("val_split")
    if path and Path(path).exists():
        return Path(path).read_text().strip()
    return rows_fingerprint(val_rows) if val_rows is not None else None


def _val_rows(record):
    """The member's validation rows (id if saved, text, label) in the order of its val logits."""
    from pipeline.predictions import read_predictions

    path = record.artifacts.get("val_predictions")
    if not path or not Path(path).exists():
        return None
    frame = read_predictions(path)
    if not {"text", "label"} <= set(frame.columns):
        return None
    return frame[[c for c in ("id", "text", "label") if c in frame.columns]]


def split_fingerprint(record) -> str:
    """The fingerprint of the validation rows this member was scored on (all members share it)."""
    return _fingerprint(record, _val_rows(record))


def _check_same_split(names: list[str], fingerprints: list[str | None]) -> None:
    if None in fingerprints:
        unknown = [n for n, f in zip(names, fingerprints) if f is None]
        raise EnsembleError(f"member(s) {', '.join(unknown)} saved neither val_split nor val_predictions: "
                            "cannot check they were scored on the same validation rows")
    if len(set(fingerprints)) > 1:
        groups: dict[str, list[str]] = {}
        for name, fp in zip(names, fingerprints):
            groups.setdefault(fp, []).append(name)
        shown = "; ".join(f"split {fp}: {', '.join(ns)}" for fp, ns in groups.items())
        raise EnsembleError(f"members were scored on different validation splits ({shown}); give them the "
                            "same train file, val_fraction, split_seed and max_train_rows")


def load_members(names: list[str], records: list):
    """(validation rows of reference, labels, each member's val logits aligned to those rows)."""
    import numpy as np

    from pipeline import ensemble as E

    for name, record in zip(names, records):
        _check_member(name, record)
    val_rows = [_val_rows(r) for r in records]
    _check_same_split(names, [_fingerprint(r, rows) for r, rows in zip(records, val_rows)])
    ref_name, reference = next(((n, rows) for n, rows in zip(names, val_rows) if rows is not None), (None, None))
    if reference is None:
        raise EnsembleError(f"no member saved val_predictions with labels ({', '.join(names)}): "
                            "nothing to score the ensemble on")
    labels = reference["label"].to_numpy(np.int64)
    val_logits = []
    for name, record, rows in zip(names, records, val_rows):
        logits = np.load(record.artifacts["val_logits"], allow_pickle=False)  # another job's file: never unpickle
        if len(logits) != len(labels):
            raise EnsembleError(f"member '{name}' has {len(logits)} val logits, not {len(labels)}")
        if rows is not None:
            try:
                logits = E.align_rows(reference["text"].tolist(), rows["text"].tolist(), logits)
            except ValueError:
                raise EnsembleError(f"member '{name}' lists other validation rows than '{ref_name}' "
                                    "in its val_predictions") from None
        val_logits.append(logits)
    if len({x.shape for x in val_logits}) > 1:
        raise EnsembleError("members' val logits differ in shape: "
                            + ", ".join(f"{n}: {x.shape}" for n, x in zip(names, val_logits)))
    return reference, labels, val_logits


def leave_out_dead(params: Params, names, records, val_logits, labels, ctx: JobContext) -> dict[str, str]:
    """{member: why} for the members that learned nothing (one class, or at/below the majority)."""
    from pipeline.data import LABEL_NAMES
    from pipeline.health import dead_reason

    if not params.leave_out_dead:
        return {}
    dead = {}
    for name, record, logits in zip(names, records, val_logits):
        reason = dead_reason(labels, logits.argmax(-1), collapse_share=params.collapse_share,
                             min_gain=params.min_gain_over_majority, names=LABEL_NAMES)
        if reason is not None:
            dead[name] = reason
            log.warning("ensemble: member '%s' left out: its validation %s", name, reason)
            ctx.log_metric("left_out", 1.0, step=record.id)
    if len(dead) == len(names):
        raise EnsembleError("every member learned nothing on the validation rows: "
                            + "; ".join(f"{n}: {why}" for n, why in dead.items()))
    return dead


def member_scores(names, records, metric: str | None, ctx: JobContext):
    """(scores or None per member, indices that lacked the metric); warns for each one missing."""
    import numpy as np

    from pipeline.ensemble import impute_missing

    if metric is None:
        return None, []
    raw = [r.metrics.get(metric) for r in records]
    scores, missing = impute_missing(raw)
    for i in missing:
        fallback = "the mean of the others" if len(missing) < len(names) else "uniform weights"
        log.warning("ensemble: member '%s' logged no %s; it gets %s (%.4f)", names[i], metric, fallback,
                    scores[i])
        ctx.log_metric("missing_metric", 1.0, step=i)
    return np.asarray(scores), missing
