"""`sched study NAME`: an Optuna study kept in the queue's database (thin: parse, read, render).

optuna is imported inside the command (about a second); torch never is.
"""

from __future__ import annotations

import json
import math

import click

from ..errors import NotFound, SchedError
from .app import complete_job, console


@click.command()
@click.argument("name", shell_complete=complete_job)
@click.option("--top", "-n", default=5, show_default=True, type=click.IntRange(0),
              help="Show the N best trials.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def study(ctx: click.Context, name: str, top: int, as_json: bool) -> None:
    """Show a tuning study: best trial, trials by state, parameter importances.

    NAME is a study name, or the name or id of a job that works on one (a tune job's study: its `study`
    param, else its `workers: k` group, else its own name). For charts, run optuna-dashboard on
    the same URL.

    \b
    Example:
      sched study tune-roberta
      sched study tune-roberta#2 --top 10 --json | jq '.best'
      optuna-dashboard sqlite:///experiments.db
    """
    from ..store.engine import make_engine

    engine = make_engine(ctx.find_root().obj["db"])  # normalises the URL (psycopg 3 for postgresql://)
    try:
        summary = study_summary(engine, name, top)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(summary, indent=1, ensure_ascii=False, default=str))
    else:
        console.print(study_view(summary))


def _study_name(engine, name: str, names: list[str]) -> str:
    """NAME itself when a study has it, else the study of the job called NAME (its kind's rule)."""
    from sqlalchemy import inspect

    from ..kinds import study_of
    from ..store import queries as q
    from ..store.schema import jobs

    if name in names:
        return name
    if inspect(engine).has_table(jobs.name):
        with engine.connect() as conn:
            by_id = q.job_name(conn, int(name)) if name.isdigit() else None
            row = q.job_identity(conn, by_id or name)
        if row is not None:
            candidate = study_of(row.kind, row.params, row.name, row.group_name)
            if candidate in names:
                return candidate
    known = ", ".join(sorted(names)) or "none"
    raise NotFound(f"no study named '{name}' and no tune job with a study by that name (studies: {known})")


def study_summary(engine, name: str, top: int = 5) -> dict:
    """Everything `sched study` shows, as plain data."""
    import optuna

    from ..store.studies import close_storage, optuna_tables_present, read_storage

    if not optuna_tables_present(engine):
        raise NotFound("no Optuna study in this database yet (no tune job has run)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = read_storage(engine.url.render_as_string(hide_password=False))
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        loaded = optuna.load_study(study_name=_study_name(engine, name, names), storage=storage)
        if len(loaded.directions) > 1:
            raise SchedError(f"study '{loaded.study_name}' has several objectives; use optuna-dashboard")
        trials = loaded.get_trials(deepcopy=False)
        counts: dict[str, int] = {}
        for trial in trials:
            counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
        maximize = loaded.direction == optuna.study.StudyDirection.MAXIMIZE
        done.sort(key=lambda t: t.value, reverse=maximize)
        importances, note = _importances(loaded, len(done))
        return {
            "study": loaded.study_name,
            "direction": loaded.direction.name.lower(),
            "counts": counts,
            "n_trials": len(trials),
            "best": _trial_dict(done[0]) if done else None,
            "top": [_trial_dict(t) for t in done[:top]],
            "importances": {k: float(v) for k, v in importances.items()} if importances else None,
            "importance_note": note,
            "user_attrs": dict(loaded.user_attrs),
        }
    finally:
        close_storage(storage)


def _importances(loaded, n_complete: int) -> tuple[dict | None, str | None]:
    """(importances, None), or (None, why not): too few trials, where Optuna would warn and return
    meaningless equal shares (PED-ANOVA, its default evaluator, warns instead of raising)."""
    import warnings

    import optuna

    if n_complete < 2:
        return None, f"parameter importances not available yet: {n_complete} complete trial(s), need 2 or more"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            importances = optuna.importance.get_param_importances(loaded)
    except (ValueError, RuntimeError) as exc:
        return None, f"parameter importances not available: {str(exc).splitlines()[0]}"
    too_few = [str(w.message) for w in caught if "too small" in str(w.message) or "will be equal" in str(w.message)]
    if too_few:
        return None, f"parameter importances not available yet: {too_few[0]}"
    if not importances:
        return None, "parameter importances not available: the trials have no parameters"
    return importances, None


def _trial_dict(trial) -> dict:
    return {"number": trial.number, "value": trial.value, "params": dict(trial.params),
            "epochs": max(trial.intermediate_values, default=None),
            "job": trial.user_attrs.get("sched_job"),
            "duration_s": trial.duration.total_seconds() if trial.duration else None}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def study_view(summary: dict):
    from rich.console import Group
    from rich.text import Text

    from ..render import Table

    parts = []
    counts = ", ".join(f"{state} {n}" for state, n in sorted(summary["counts"].items())) or "no trials"
    parts.append(Text(f"study {summary['study']} ({summary['direction']}): {counts}"))
    best = summary["best"]
    if best is None:
        parts.append(Text("best: none yet (no complete trial)"))
    else:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in best["params"].items())
        parts.append(Text(f"best: trial {best['number']} value {_fmt(best['value'])} ({shown})"))
    if summary["top"]:
        table = Table(title=f"Top {len(summary['top'])} trials", title_justify="left")
        params = list(dict.fromkeys(k for t in summary["top"] for k in t["params"]))
        for column in ("trial", "value", *params, "epochs", "job"):
            table.add_column(column, justify="right" if column not in ("job",) else "left")
        for t in summary["top"]:
            table.add_row(str(t["number"]), _fmt(t["value"]), *(_fmt(t["params"].get(p, "")) for p in params),
                          _fmt(t["epochs"] if t["epochs"] is not None else ""), t["job"] or "")
        parts.append(table)
    if summary["importances"]:
        table = Table(title="Parameter importances", title_justify="left")
        table.add_column("param")
        table.add_column("importance", justify="right")
        for param, value in summary["importances"].items():
            table.add_row(param, f"{value:.3f}")
        parts.append(table)
    elif summary["importance_note"]:
        parts.append(Text(summary["importance_note"], style="dim"))
    return Group(*parts)
