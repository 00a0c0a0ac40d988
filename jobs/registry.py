"""Job kinds: each kind is one module that exports `KIND`, a `Kind` saying what it runs and how
the scheduler shows it. The scheduler never names a kind or a metric itself; it asks the registry.

Built-in kinds are the modules of this package named like the kind (`jobs/finetune.py` is kind
`finetune`, `jobs/tune/` is kind `tune`); a new kind is one file (plus its docs section). Kinds
from outside the package come from the modules listed in $SCHED_KINDS (comma-separated) and from
installed packages' `sched.kinds` entry points; each such module exports `KIND` (or `KINDS`, a
list). A name used twice is an error naming both places.

Params models import without torch, so the queue can validate a job at submit time in a process
that never loads the ML stack; `run()` imports `pipeline` when the job actually runs.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

PLUGIN_ENV = "SCHED_KINDS"
ENTRY_POINT_GROUP = "sched.kinds"
# Modules of this package that are not kinds (shared code).
SUPPORT_MODULES = frozenset({"common", "context", "gpu", "preflight", "proc", "registry", "work"})


# How a model artifact is loaded (`Kind.models`). Only an artifact that a kind registers as a model
# is ever loaded from another job, and only as its format says: a joblib file is unpickled, so one
# that an echo, a shell or any other kind wrote is never loaded.
MODEL_FORMATS = {
    "hf": "a from_pretrained folder (model and tokenizer)",
    "joblib": "a joblib file (a pickled scikit-learn pipeline)",
    "ensemble": "an ensemble recipe (its members and weights)",
}


class UnknownKind(ValueError):
    pass


class KindConflict(ValueError):
    """Two kinds with one name, or a kind module that does not export what it should."""


class ParamsError(ValueError):
    """Params that do not fit a kind's model; `errors` is a list of (field path, message)."""

    def __init__(self, kind: str, errors: list[tuple[str, str]]):
        self.kind = kind
        self.errors = errors
        super().__init__("; ".join(f"params.{path}: {msg}" if path else msg for path, msg in errors))


@dataclass(frozen=True)
class Column:
    """A leaderboard column read from a metric the job logs."""

    metric: str  # the metric key (its last value counts)
    param: str | None = None  # when the job logged nothing yet: this param's value (e.g. configured epochs)


@dataclass(frozen=True)
class Curve:
    """A series the report draws for each job of the kind: a metric logged with a step."""

    key: str
    split: str | None
    axis: Literal["score", "loss"] = "loss"  # scores share the left axis (0..1), losses the right


@dataclass(frozen=True)
class Display:
    """What the scheduler shows of a kind (`sched results`, `status`, the report, `sched study`)."""

    model: bool = False  # every job of the kind is a leaderboard row (a model), scored or not
    scores: dict[str, str] = field(default_factory=dict)  # leaderboard column -> metric key; first: headline
    details: dict[str, Column] = field(default_factory=dict)  # more leaderboard columns
    params: dict[str, str] = field(default_factory=dict)  # params worth a column -> their short label
    model_param: str | None = "model"  # the param naming the model (the leaderboard's `model` column)
    curves: tuple[Curve, ...] = ()  # training curves drawn per job in the report
    colour: str | None = None  # its bars in the report's charts
    # The Optuna study a job of this kind works on: (params, job name, group) -> study name.
    study: Callable[[dict, str, str | None], str | None] | None = None
    params_of: str | None = None  # the row's params are this entry of the job's params (a tune's `finetune`)
    # a param column P shows the metric "<param_metrics>P" when the job logged it (a tune's best trial's lr)
    param_metrics: str | None = None
    # a metric whose step is the id of a job this one left out (an ensemble's dead member): marked on the board
    left_out: str | None = None


@dataclass(frozen=True)
class Kind:
    name: str
    params_model: type[BaseModel]
    run: Callable[[BaseModel, Any], Any]
    summary: str = ""  # one line for `sched kinds`
    display: Display = field(default_factory=Display)
    # Checks the inputs without running (files, columns, labels, models, `from:` jobs): see
    # jobs/preflight.py. Called as preflight(params, pre); reports through `pre`.
    preflight: Callable[[BaseModel, Any], None] | None = None
    outputs: tuple[str, ...] = ()  # artifacts and final metrics its jobs leave for others (`from:`)
    # Its artifacts that are models, artifact name -> format (MODEL_FORMATS), in the order a bare
    # `{from: job}` looks for them. Nothing else of its jobs is ever loaded as a model by another job.
    models: dict[str, str] = field(default_factory=dict)
    # Modules a spare runner imports before a job of this kind is claimed (a warm start).
    preload: tuple[str, ...] = ()
    # Its run() leaves nothing behind in the runner process (no CUDA, no global state): the runner
    # may take the slot's next job (a queue of short jobs pays no interpreter start per job).
    reusable: bool = False
    # How queue.yaml's `defaults.params` apply to its params: (params, defaults by kind) -> params.
    # None: `defaults.params.<this kind>` under the job's own. A tune also hands the fine-tune
    # defaults to the fine-tunes it runs.
    with_defaults: Callable[[dict, dict[str, dict]], dict] | None = None
    # GPUs a job of this kind asks for when neither the job nor `defaults:` says (the ML kinds: 1).
    gpus: int = 0
    # It can use several GPUs at once (`gpus: k` > 1); anything else is refused at submit.
    multi_gpu: bool = False
    # The work a job does, for the deadline forecast's duration estimates: (params, rows_of) ->
    # units (rows x epochs; x trials for a tune), or None. rows_of(path) counts a data file's rows.
    # History of like jobs is scaled by it (jobs/work.py).
    work: Callable[[dict, Callable[[str], int | None]], float | None] | None = None
    # Its jobs can end early and cleanly at a time the scheduler sets (the job's `finish_by`): a
    # tune starts no trial that would end after it. The deadline policy cuts such jobs short.
    ends_early: bool = False
    # Its own time limit from its params: (params) -> ("after", seconds from its start) or ("at",
    # epoch seconds), or None (a tune's `until:`). The deadline forecast ends it there at the latest.
    time_limit: Callable[[dict], tuple[str, float] | None] | None = None
    # With k GPUs its runner starts k processes through torchrun, one per GPU (rank 0 records).
    data_parallel: bool = False
    # Params that decide its GPU memory (with kind and model): jobs alike in these share a recorded
    # peak for `gpu_memory: auto`. Names are looked up in the row's params (`display.params_of`).
    memory_params: tuple[str, ...] = ()

    def __post_init__(self):
        unknown = sorted(set(self.models.values()) - set(MODEL_FORMATS))
        if unknown:
            raise KindConflict(f"kind '{self.name}' declares models of unknown format(s) {', '.join(unknown)} "
                               f"(known: {', '.join(MODEL_FORMATS)})")

    def parse(self, params: dict | None) -> BaseModel:
        try:
            return self.params_model.model_validate(params or {})
        except ValidationError as exc:
            raise ParamsError(self.name, [
                (".".join(str(p) for p in err["loc"]), _message(err)) for err in exc.errors()
            ]) from None

    def check(self, params: BaseModel, pre) -> None:
        """Run the kind's preflight (if it has one) into `pre`."""
        if self.preflight is not None:
            self.preflight(params, pre)

    @property
    def torch_in_runner(self) -> bool:
        """Its run() uses torch in the runner process (it preloads torch): on a GPU slot it needs a
        working CUDA there, and the runner caps its allocator to a shared GPU's share."""
        return "torch" in self.preload

    @property
    def headline(self) -> str | None:
        """The metric that sums a job of this kind up (its first score), if any."""
        return next(iter(self.display.scores.values()), None)


def _message(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    return err["msg"].removeprefix("Value error, ")


# ---- built-in kinds ----------------------------------------------------------------------------


def builtin_names() -> list[str]:
    """The kinds in this package, found from its module names (nothing is imported)."""
    return list(_builtin_names())


@lru_cache(maxsize=1)
def _builtin_names() -> tuple[str, ...]:
    import jobs

    return tuple(sorted(m.name for m in pkgutil.iter_modules(jobs.__path__)
                        if not m.name.startswith("_") and m.name not in SUPPORT_MODULES))


_loaded: dict[str, Kind] = {}


def _builtin(name: str) -> Kind:
    if name not in _loaded:
        kind = _kind_of(importlib.import_module(f"jobs.{name}"))
        if kind.name != name:
            raise KindConflict(f"module jobs.{name} exports kind '{kind.name}'; a built-in kind's "
                               "module is named like the kind")
        _loaded[name] = kind
    return _loaded[name]


def _kind_of(module) -> Kind:
    kind = getattr(module, "KIND", None)
    if not isinstance(kind, Kind):
        raise KindConflict(f"module {module.__name__} exports no KIND (a jobs.registry.Kind)")
    return kind


# ---- kinds from elsewhere ----------------------------------------------------------------------

_plugin_cache: dict[tuple, dict[str, tuple[Kind, str]]] = {}


def _plugin_modules() -> list[tuple[str, Callable[[], Any]]]:
    """(where, loader) for every module listed in $SCHED_KINDS and every `sched.kinds` entry point."""
    found = [(name, lambda name=name: importlib.import_module(name))
             for name in (part.strip() for part in os.environ.get(PLUGIN_ENV, "").split(",")) if name]
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.append((f"entry point {ep.name} ({ep.value})", ep.load))
    return found


def _plugins() -> dict[str, tuple[Kind, str]]:
    """{kind name: (kind, where it came from)} of the kinds from elsewhere; names checked."""
    key = (os.environ.get(PLUGIN_ENV, ""),)
    if key in _plugin_cache:
        return _plugin_cache[key]
    builtins = set(builtin_names())
    kinds: dict[str, tuple[Kind, str]] = {}
    for where, load in _plugin_modules():
        loaded = load()
        exported = getattr(loaded, "KINDS", None)
        items = list(exported) if exported is not None else [loaded if isinstance(loaded, Kind) else _kind_of(loaded)]
        for kind in items:
            if kind.name in builtins:
                raise KindConflict(f"kind '{kind.name}' from {where} has the name of a built-in kind; rename it")
            if kind.name in kinds:
                raise KindConflict(f"kind '{kind.name}' is defined twice: in {kinds[kind.name][1]} and in {where}")
            kinds[kind.name] = (kind, where)
    _plugin_cache[key] = kinds
    return kinds


# ---- lookups -----------------------------------------------------------------------------------


def get_kind(name: str) -> Kind:
    if name in _builtin_names():
        return _builtin(name)
    plugin = _plugins().get(name)
    if plugin is None:
        raise UnknownKind(f"unknown job kind '{name}'; known kinds: {', '.join(kind_names())}")
    return plugin[0]


def kind_names() -> list[str]:
    return sorted([*builtin_names(), *_plugins()])


def multi_gpu_kinds() -> list[str]:
    """Kinds whose jobs may ask for several GPUs."""
    return [kind.name for kind in all_kinds() if kind.multi_gpu]


def model_kinds(formats: tuple[str, ...] = tuple(MODEL_FORMATS)) -> list[str]:
    """Kinds that register a model of one of these formats (those whose modules import here)."""
    return [name for name in kind_names()
            if (kind := known_kind(name)) is not None and set(kind.models.values()) & set(formats)]


def all_kinds() -> list[Kind]:
    """Every kind, by name."""
    return [get_kind(name) for name in kind_names()]


def known_kind(name: str) -> Kind | None:
    """The kind called `name`, or None when it is unknown here or its module fails to import
    (a job stored by another version or host still gets shown)."""
    try:
        return get_kind(name)
    except Exception:  # noqa: BLE001 - unknown, or its module fails to import here
        return None
