"""What the scheduler shows of each job kind, read from the kinds themselves (`jobs.registry`).

`results`, `views`, the report and `sched study` ask here instead of naming kinds or metrics: the
leaderboard's columns are the union of what the kinds declare, a job's headline score is its
kind's first score, the report draws the curves a kind declares in its colour, and a kind that
works on an Optuna study says how its study is named. A kind added to `jobs/` (or through
$SCHED_KINDS) appears everywhere without a change here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from jobs.registry import Column, Curve, Kind, KindConflict, all_kinds, known_kind

FIXED_FRONT = ("job", "id", "kind", "model", "status")
FIXED_BACK = ("left_out_by", "tags")


@dataclass(frozen=True)
class LeaderboardLayout:
    """The leaderboard's columns: the union over every kind, in the kinds' name order."""

    model_kinds: tuple[str, ...]  # kinds whose every job is a row
    scores: dict[str, str]  # column -> metric key
    details: dict[str, Column]  # column -> metric (and a param to fall back on)
    params: dict[str, str]  # param -> short label
    param_prefixes: tuple[str, ...] = ()  # kinds' `param_metrics`: params shown from metrics
    left_out_keys: tuple[str, ...] = ()  # kinds' `left_out` metrics: which jobs another left out

    @property
    def columns(self) -> tuple[str, ...]:
        return (*FIXED_FRONT, *self.scores, *self.details, "duration_s", *self.params, *FIXED_BACK)

    @property
    def metric_keys(self) -> set[str]:
        return {*self.scores.values(), *(c.metric for c in self.details.values()),
                *(prefix + param for prefix in self.param_prefixes for param in self.params)}

    @property
    def default_sort(self) -> str:
        return next(iter(self.scores), "id")


def _merge(target: dict, items: dict, kind: Kind, what: str) -> None:
    for column, value in items.items():
        if column in target and target[column] != value:
            raise KindConflict(f"kind '{kind.name}' defines leaderboard {what} '{column}' as {value!r}, "
                               f"another kind as {target[column]!r}; use another column name")
        target.setdefault(column, value)


def _layout(kinds: list[Kind]) -> LeaderboardLayout:
    scores: dict[str, str] = {}
    details: dict[str, Column] = {}
    params: dict[str, str] = {}
    for kind in kinds:
        _merge(scores, kind.display.scores, kind, "score")
        _merge(details, kind.display.details, kind, "column")
        _merge(params, kind.display.params, kind, "param")
    return LeaderboardLayout(tuple(k.name for k in kinds if k.display.model), scores, details, params,
                             _unique(k.display.param_metrics for k in kinds),
                             _unique(k.display.left_out for k in kinds))


def _unique(values: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def leaderboard_layout() -> LeaderboardLayout:
    return _cached_layout(_kinds_key())


@lru_cache(maxsize=8)
def _cached_layout(_key) -> LeaderboardLayout:
    return _layout(all_kinds())


def _kinds_key():
    import os

    from jobs.registry import PLUGIN_ENV

    return os.environ.get(PLUGIN_ENV, "")


def kind_display(name: str):
    """The kind's Display, or None for a kind unknown here."""
    kind = known_kind(name)
    return None if kind is None else kind.display


def headline_metrics(kinds: Iterable[str]) -> dict[str, str]:
    """{kind: the metric that sums up its jobs}: the kind's first score, else the leaderboard's first."""
    out = {}
    for name in kinds:
        kind = known_kind(name)
        # The leaderboard's layout imports every kind: only asked for when a kind has no score.
        metric = (kind.headline if kind is not None else None) or _first_leaderboard_score()
        if metric:
            out[name] = metric
    return out


def _first_leaderboard_score() -> str | None:
    return next(iter(leaderboard_layout().scores.values()), None)


def curve_kinds() -> dict[str, tuple[Curve, ...]]:
    """{kind: the curves the report draws per job} for kinds that declare curves."""
    return {k.name: k.display.curves for k in all_kinds() if k.display.curves}


def kind_colour(name: str) -> str | None:
    display = kind_display(name)
    return None if display is None else display.colour


def study_of(kind: str, params: dict | None, name: str, group: str | None) -> str | None:
    """The Optuna study a job works on (None for kinds without one)."""
    display = kind_display(kind)
    if display is None or display.study is None:
        return None
    return display.study(params or {}, name, group)


def study_kinds() -> list[str]:
    return [k.name for k in all_kinds() if k.display.study is not None]
