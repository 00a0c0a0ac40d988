"""queue.yaml -> validated job specs. Every error names the file, the job and the field.

    vars:     {train: data/reviews_train.csv}          # usable as {train} in any string below
    defaults: {priority: 0, gpu_memory: auto, max_attempts: 2, timeout: 2h, tags: [demo],
               params: {finetune: {epochs: 3}}}        # default params per job kind
    jobs:
      - name: "finetune-{model}"
        kind: finetune
        matrix: {model: [klue/bert-base, klue/roberta-base]}
        priority: 50
        after: ["tapt-{model}"]
        params: {model: "{model}", train: "{train}"}

Nothing is submitted unless the whole file is valid.
"""

from __future__ import annotations

import itertools
import os
from datetime import date, datetime, timedelta, timezone
import re
import reprlib
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from jobs import ParamsError, UnknownKind, get_kind
from jobs.registry import multi_gpu_kinds
from pipeline.util import parse_duration

from .errors import PlanError, SchedError
from .fmt import short, visible
from .resources import parse_memory
from .jobqueue import JobSpec
from .limits import (
    MAX_ATTEMPTS,
    MAX_FILE_BYTES,
    MAX_GPUS,
    MAX_GPU_MEMORY_MIB,
    MAX_JOBS_PER_FILE,
    MAX_NUMBER_CHARS,
    MAX_PARAMS_BYTES,
    PRIORITY_MAX,
    PRIORITY_MIN,
    check_document,
    check_name,
    check_retry_delay,
    check_spec,
    check_timeout,
)

_VAR = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    priority: int | None = Field(default=None, ge=PRIORITY_MIN, le=PRIORITY_MAX)  # higher runs first
    # GPUs it needs (k > 1: all on one worker, at once); unset: its kind's default (ML kinds 1, others 0)
    gpus: int | None = Field(default=None, ge=0, le=MAX_GPUS)
    # A 1-GPU job that may share its GPU: its size ("20GiB") or "auto" (the peak its like reached)
    gpu_memory: str | int | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=MAX_ATTEMPTS)  # tries before it fails for good
    timeout: float | str | None = None  # seconds or "30m", "2h"; the job is killed after it
    # Wait before a retry: seconds or "30s", "5m" (default 30 s), doubled for each further retry
    retry_delay: float | str | None = None
    # Not started before this time: "2026-12-01 03:00" (UTC unless it has an offset), or "2h" from now
    not_before: datetime | str | None = None
    tags: list[str] | None = None  # labels for filtering results and picking ensemble members
    preemptible: bool | None = None  # may yield its slot to a higher-priority job (backfill)
    # A program (argv, no shell) the worker runs when the job ends for good / fails for good, with
    # SCHED_JOB_NAME, SCHED_JOB_STATUS, SCHED_JOB_MESSAGE and SCHED_METRIC_<KEY> in its environment.
    on_finish: list[str] | None = Field(default=None, min_length=1)
    on_failure: list[str] | None = Field(default=None, min_length=1)

    @field_validator("gpu_memory")
    @classmethod
    def _check_gpu_memory(cls, value):
        try:
            mib = parse_memory(value)
        except SchedError as exc:
            raise ValueError(str(exc).removeprefix("gpu_memory: ")) from None
        except (OverflowError, ValueError):  # int() of an infinite or NaN size (`.inf`, 1e400)
            raise ValueError(f"'{short(value)}' is not a size (use e.g. 20GiB, 512MiB or auto)") from None
        if isinstance(mib, int) and mib > MAX_GPU_MEMORY_MIB:
            raise ValueError(f"{short(value)} is more than a GPU holds (at most {MAX_GPU_MEMORY_MIB:,} MiB)")
        return value

    @field_validator("retry_delay")
    @classmethod
    def _check_retry_delay(cls, value):
        return _checked_duration(value, check_retry_delay, "retry_delay")

    @field_validator("not_before")
    @classmethod
    def _check_not_before(cls, value):
        parse_not_before(value)  # raises ValueError naming what is wrong
        return value

    @field_validator("timeout")
    @classmethod
    def _check_timeout(cls, value):
        return _checked_duration(value, check_timeout, "timeout")

    @field_validator("expected", check_fields=False)
    @classmethod
    def _check_expected(cls, value):
        return _checked_duration(value, check_timeout, "expected")


class Defaults(_Common):
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)  # kind -> default params


class JobEntry(_Common):
    name: str = Field(min_length=1, max_length=200)  # unique in the queue; may use {vars}
    deliverable: bool = False  # must be done by the campaign's `deadline:` (with everything upstream)
    expected: float | str | None = None  # how long it should take (30m, 2h): until like jobs have run
    kind: str  # a registered job kind (sched kinds lists them)
    after: list[str] | str = Field(default_factory=list)  # jobs that must succeed first
    params: dict[str, Any] = Field(default_factory=dict)  # checked by the kind's params model
    matrix: dict[str, list[Any]] | None = None  # one job per combination of these values
    workers: int = Field(default=1, ge=1, le=64)  # k > 1: k jobs NAME#1..NAME#k sharing a group


class QueueFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The campaign's name (default: the file's name without .yaml) and its deadline: an ISO time with
    # its zone, or a duration (48h) from the first submit; `deadline_policy: warn` only reports.
    campaign: str | None = Field(default=None, min_length=1, max_length=200)
    deadline: Any = None  # checked by deadline.campaign.parse_deadline (a bare number is seconds)
    deadline_policy: Literal["act", "warn"] = "act"
    deadline_margin: float = Field(default=0.1, ge=0, lt=1)  # share of the time left kept spare
    vars: dict[str, Any] = Field(default_factory=dict)
    defaults: Defaults = Field(default_factory=Defaults)
    jobs: list[JobEntry] = Field(min_length=1)


BUILTIN_DEFAULTS = dict(priority=0, gpus=None, gpu_memory=None, max_attempts=1, timeout=None, tags=[], preemptible=False,
                        on_finish=None, on_failure=None, retry_delay=None, not_before=None)


def parse_not_before(value: Any, now: datetime | None = None) -> datetime | None:
    """A `not_before:` as naive UTC (the database's clock): a time (YAML timestamp or ISO text,
    UTC unless it carries an offset), or a duration from now ("2h", "30m"). Raises ValueError."""
    if value is None:
        return None
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, date):
        when = datetime(value.year, value.month, value.day)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time (write e.g. \"2026-12-01 03:00\" or \"2h\" from now)")
    else:
        text = str(value).strip()
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            try:
                seconds = parse_duration(text)
            except ValueError:
                raise ValueError(f"'{short(text)}' is not a time (write e.g. \"2026-12-01 03:00\", UTC, "
                                 "or \"2h\" from now)") from None
            return (now or datetime.now(timezone.utc).replace(tzinfo=None)) + timedelta(seconds=seconds)
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key written twice in one mapping is an error (plain YAML keeps
    the last one silently, so a typo'd duplicate would drop a setting)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults` may be overridden by the mapping's own keys
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark, f"key {key!r} is written twice",
                        key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        # Python refuses to turn more than 4,300 digits into an int (a ValueError deep in YAML),
        # and base-60 (`1:2:3`) or hex ones can grow past what can be printed or stored: no job
        # needs a number this long, so it is an error at its line.
        text = self.construct_scalar(node)
        if len(text) > MAX_NUMBER_CHARS:
            raise yaml.constructor.ConstructorError(
                None, None, f"a whole number of {len(text):,} characters; at most {MAX_NUMBER_CHARS:,}",
                node.start_mark)
        return super().construct_yaml_int(node)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)


def parse_yaml(text: str, where: str) -> Any:
    """YAML text -> Python values (safe: no Python objects), duplicate keys refused; PlanError."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PlanError(f"{where}: invalid YAML{at}: {visible(getattr(exc, 'problem', None) or exc)}") from None
    except RecursionError:
        raise PlanError(f"{where}: values nest too deep") from None


def load_plan(path: str | Path, extra_vars: dict[str, Any] | None = None) -> list[JobSpec]:
    """Read, expand and validate a queue file. Raises PlanError naming what is wrong."""
    path = Path(path)
    where = str(path)
    try:
        text = _read_queue_file(path, where).decode("utf-8")
    except FileNotFoundError:
        raise PlanError(f"{where}: no such file") from None
    except UnicodeDecodeError:
        raise PlanError(f"{where}: not UTF-8 text") from None
    specs = build_plan(parse_yaml(text, where), where, extra_vars)
    for spec in specs:
        spec.source = str(path.resolve())
    return specs


def _read_queue_file(path: Path, where: str) -> bytes:
    """The file's bytes, at most MAX_FILE_BYTES. Only a regular file: /dev/zero, /dev/urandom or
    a FIFO report size 0 and never end (a FIFO's open would even wait for a writer). The read
    stops one byte past the limit, so a file that grows while read cannot run on either."""
    _check_regular(os.stat(path).st_mode, where)  # before opening: a FIFO's open blocks
    # O_NONBLOCK: should the path become a FIFO after the stat, opening it still returns at once
    # (and fstat below refuses it); it changes nothing for a regular file.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        _check_regular(os.fstat(fd).st_mode, where)
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise PlanError(f"{where}: more than {MAX_FILE_BYTES:,} bytes; a queue file may have at most "
                        f"{MAX_FILE_BYTES:,}")
    return data


def _check_regular(mode: int, where: str) -> None:
    if stat.S_ISDIR(mode):
        raise PlanError(f"{where}: a folder, not a queue file")
    if not stat.S_ISREG(mode):
        what = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "not a regular file")
        raise PlanError(f"{where}: {what}, not a queue file (give a regular file)")


def build_plan(raw: Any, where: str = "<queue>", extra_vars: dict[str, Any] | None = None) -> list[JobSpec]:
    try:
        return _build_plan(raw, where, extra_vars)
    except RecursionError:
        raise PlanError(f"{where}: values nest too deep") from None


def _build_plan(raw: Any, where: str, extra_vars: dict[str, Any] | None) -> list[JobSpec]:
    if not isinstance(raw, dict):
        raise PlanError(f"{where}: expected a mapping with a 'jobs:' list at the top")
    check_document(raw, where)
    check_document(extra_vars or {}, f"{where} (--var)")
    try:
        queue_file = QueueFile.model_validate(raw)
    except ValidationError as exc:
        raise PlanError(f"{where}: {_describe_validation(exc, raw)}") from None
    _check_job_count(queue_file, where)
    _check_default_kinds(queue_file, where)
    variables = _resolve_vars({**queue_file.vars, **(extra_vars or {})}, where)
    expanded, by_template = [], {}  # template or group name -> [(job name, its matrix values)]
    for index, entry in enumerate(queue_file.jobs):
        for spec, combo in _expand(entry, index, queue_file.defaults, variables, where):
            by_template.setdefault(entry.name, []).append((spec.name, combo))
            if spec.group_name:
                by_template.setdefault(spec.group_name, []).append((spec.name, combo))
            expanded.append((index, entry, spec))
    _resolve_after(expanded, by_template, where)
    specs = [s for _, _, s in expanded]
    _attach_campaign(queue_file, specs, where)
    for index, _, spec in expanded:
        check_spec(spec, f"{where}: job '{visible(spec.name)}' (jobs[{index}])")
    _check_unique(specs, where)
    _check_acyclic(specs, where)
    return specs


def _attach_campaign(queue_file: QueueFile, specs: list[JobSpec], where: str) -> None:
    """Every job names its campaign; with a `deadline:`, the campaign's settings ride along."""
    from .deadline.campaign import CampaignSpec, parse_deadline

    name = queue_file.campaign or (Path(where).stem if not where.startswith("<") else None)
    if name is not None:
        name = check_name(name, f"{where}: campaign")
    spec = None if name is None else CampaignSpec(name, policy=queue_file.deadline_policy,
                                                  margin=queue_file.deadline_margin)
    if queue_file.deadline is not None:
        try:
            at, after = parse_deadline(queue_file.deadline)
        except ValueError as exc:
            raise PlanError(f"{where}: deadline: {exc}") from None
        if not any(s.deliverable for s in specs):
            raise PlanError(f"{where}: deadline: no job has `deliverable: true`; mark what must be done by then")
        if name is None:
            raise PlanError(f"{where}: deadline: give the campaign a name (`campaign:`)")
        spec = CampaignSpec(name, str(queue_file.deadline), at, after, queue_file.deadline_policy,
                            queue_file.deadline_margin)
    for job in specs:
        job.campaign, job.campaign_spec = name, spec


def _check_job_count(queue_file: QueueFile, where: str) -> None:
    """Matrix combinations times `workers`, counted before any job is built."""
    total = 0
    for index, entry in enumerate(queue_file.jobs):
        count = entry.workers
        for values in (entry.matrix or {}).values():
            count *= max(len(values), 1)
        total += count
        if total > MAX_JOBS_PER_FILE:
            raise PlanError(f"{where}: job '{visible(entry.name)}' (jobs[{index}]) brings the file to more than "
                            f"{MAX_JOBS_PER_FILE:,} jobs (matrix combinations x workers); split the file")


def _check_default_kinds(queue_file: QueueFile, where: str) -> None:
    """`defaults.params` for a kind that does not exist (`finetun:`) would be ignored silently."""
    for kind in queue_file.defaults.params:
        try:
            get_kind(kind)
        except UnknownKind as exc:
            raise PlanError(f"{where}: defaults.params.{visible(kind)}: {exc}") from None


def _describe_validation(exc: ValidationError, raw: dict) -> str:
    messages = []
    for err in exc.errors():
        loc = list(err["loc"])
        label = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and loc[0] == "jobs" and isinstance(loc[1], int):
            job = raw.get("jobs", [])[loc[1]]
            name = job.get("name") if isinstance(job, dict) else None
            field = ".".join(str(p) for p in loc[2:]) or "(the entry)"
            label = (f"job '{visible(name)}' (jobs[{loc[1]}]), field {field}" if name
                     else f"jobs[{loc[1]}], field {field}")
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        messages.append(f"{visible(label)}: {msg}")
    return "; ".join(messages)


def _expand(entry: JobEntry, index: int, defaults: Defaults, variables: dict,
            where: str) -> list[tuple[JobSpec, dict]]:
    """The entry's jobs, each with the matrix values it was made from."""
    matrix = entry.matrix or {}
    for key, values in matrix.items():
        if not values:
            raise PlanError(f"{where}: job '{entry.name}' (jobs[{index}]), field matrix.{key}: empty list")
    # Matrix values may use vars too (`model: ["{base}-large"]`); filled once, not per combination.
    matrix = {key: _fill(values, variables, f"{where}: job '{visible(entry.name)}' (jobs[{index}]), "
                                            f"field matrix.{key}") for key, values in matrix.items()}
    combos = [dict(zip(matrix, values)) for values in itertools.product(*matrix.values())] or [{}]
    specs = [(_make_spec(entry, index, defaults, {**variables, **combo}, where), combo) for combo in combos]
    if entry.workers == 1:
        return specs
    return [(_worker_copy(spec, i, entry.workers), combo) for spec, combo in specs
            for i in range(1, entry.workers + 1)]


def _worker_copy(spec: JobSpec, number: int, workers: int) -> JobSpec:
    """Copy `number` of a `workers: k` entry: NAME#number, in group NAME (one shared study)."""
    import dataclasses

    return dataclasses.replace(spec, name=f"{spec.name}#{number}", group_name=spec.name,
                               params=dict(spec.params), after=list(spec.after), tags=list(spec.tags))


def _make_spec(entry: JobEntry, index: int, defaults: Defaults, variables: dict, where: str) -> JobSpec:
    label = f"{where}: job '{visible(entry.name)}' (jobs[{index}])"
    name = check_name(_fill(entry.name, variables, f"{label}, field name"), f"{label}, field name")
    label = f"{where}: job '{visible(name)}' (jobs[{index}])"
    merged = {k: getattr(entry, k) if getattr(entry, k) is not None else
              (getattr(defaults, k) if getattr(defaults, k) is not None else v)
              for k, v in BUILTIN_DEFAULTS.items()}
    params = _with_defaults(entry.kind, entry.params, defaults.params)
    params = _fill(params, variables, f"{label}, field params")
    # Variables are shared, not copied: one used many times over (through others) could make
    # params too large to walk; counted as copies, stopping at the limit.
    check_document(params, f"{label}, field params")
    try:
        get_kind(entry.kind).parse(params)
    except UnknownKind as exc:
        raise PlanError(f"{label}, field kind: {exc}") from None
    except ParamsError as exc:
        raise PlanError(f"{label}: {_params_message(entry.kind, exc)}") from None
    gpus, memory = _gpu_request(entry, merged, label)
    return JobSpec(
        name=name, kind=entry.kind, params=params, priority=merged["priority"], gpus=gpus,
        gpu_memory_mib=memory if isinstance(memory, int) else None, gpu_memory_auto=memory == "auto",
        max_attempts=merged["max_attempts"], timeout_s=parse_duration(merged["timeout"]),
        retry_delay_s=parse_duration(merged["retry_delay"]), not_before=parse_not_before(merged["not_before"]),
        tags=_fill(list(merged["tags"]), variables, f"{label}, field tags"), preemptible=merged["preemptible"],
        hooks=_hooks(merged, variables, label), deliverable=entry.deliverable,
        expected_s=parse_duration(entry.expected),
        # `after` is resolved once every job's name is known; keep the raw strings and variables.
        after=[(a, variables) for a in ([entry.after] if isinstance(entry.after, str) else entry.after)],
    )


def _params_message(kind: str, exc: ParamsError) -> str:
    """The kind's complaint, a mistyped key naming the closest known one ("did you mean lr?")."""
    from .paramdocs import suggest_keys

    errors = suggest_keys(get_kind(kind).params_model, exc.errors, kind)
    return "; ".join(f"params.{path}: {msg}" if path else msg for path, msg in errors)


def _gpu_request(entry: JobEntry, merged: dict, label: str) -> tuple[int, int | str | None]:
    """(GPUs, memory share) of a job: its own, else `defaults:`, else its kind's GPUs. A share
    from `defaults:` applies to 1-GPU jobs only; on the job itself it must fit its GPUs."""
    kind = get_kind(entry.kind)
    gpus = kind.gpus if merged["gpus"] is None else merged["gpus"]
    if gpus > 1 and not kind.multi_gpu:
        raise PlanError(f"{label}, field gpus: kind {entry.kind} uses one GPU at most; got {gpus} "
                        f"(kinds that use several: {', '.join(multi_gpu_kinds())})")
    memory = parse_memory(merged["gpu_memory"])
    if memory is not None and gpus != 1:
        if entry.gpu_memory is not None:
            raise PlanError(f"{label}, field gpu_memory: only a 1-GPU job shares its GPU; this job has "
                            f"gpus: {gpus}")
        memory = None
    return gpus, memory


def _with_defaults(kind_name: str, params: dict, defaults: dict[str, dict]) -> dict:
    """The job's params over `defaults.params.<kind>`, or as the kind merges them (a tune also
    passes the fine-tune defaults to its trials)."""
    try:
        kind = get_kind(kind_name)
    except UnknownKind:
        return params  # reported as the kind's error by the caller
    if kind.with_defaults is not None:
        return kind.with_defaults(params, defaults)
    return {**defaults.get(kind_name, {}), **params}


def _hooks(merged: dict, variables: dict, label: str) -> dict | None:
    hooks = {key: _fill(list(merged[key]), variables, f"{label}, field {key}")
             for key in ("on_finish", "on_failure") if merged[key]}
    check_document(hooks, f"{label}, field on_finish/on_failure")
    return hooks or None


def _resolve_vars(raw: dict, where: str) -> dict:
    """The variables with every `{var}` in their values filled (`{a: "{b}-x", b: y}`), in any
    order; a variable that uses itself, directly or through others, is an error naming the cycle."""
    variables = _Vars(raw, where)
    return {name: variables[name] for name in raw}


class _Vars(Mapping):
    """Variables filled on first use from the others (what `_fill` looks `{name}` up in)."""

    def __init__(self, raw: dict, where: str):
        self._raw, self._where = raw, where
        self._done: dict[str, Any] = {}
        self._filling: list[str] = []  # the chain being filled, to name a cycle

    def __getitem__(self, name: str) -> Any:
        if name not in self._done:
            if name in self._filling:
                chain = [*self._filling[self._filling.index(name):], name]
                raise PlanError(f"{self._where}: vars: variables use each other in a cycle: "
                                + " -> ".join(f"{{{visible(n)}}}" for n in chain))
            self._filling.append(name)
            self._done[name] = _fill(self._raw[name], self, f"{self._where}: vars.{visible(name)}")
            self._filling.pop()
        return self._done[name]

    def __contains__(self, name: object) -> bool:
        return name in self._raw

    def __iter__(self):
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def _fill(value: Any, variables: dict, label: str) -> Any:
    """Replace {var} in every string of `value`; a string that is exactly "{var}" takes the value
    itself (so a number stays a number). `{{` and `}}` are literal braces."""
    if isinstance(value, dict):
        return {k: _fill(v, variables, f"{label}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, variables, f"{label}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    whole = _VAR.fullmatch(value)
    if whole and whole.group(1):
        return _lookup(whole.group(1), variables, label)

    written = 0

    def replace(match: re.Match) -> str:
        nonlocal written
        if match.group(0) in ("{{", "}}"):
            return match.group(0)[0]
        found = _lookup(match.group(1), variables, label)
        if isinstance(found, (dict, list)):
            check_document(found, label)  # a shared value may stand for many copies: bound str()'s walk
        text = str(found)
        # "{a}{a}{a}..." with a long `a` (or vars doubling each other) could grow without bound;
        # nothing that long can be stored (params are at most MAX_PARAMS_BYTES as JSON).
        written += len(text)
        if written > MAX_PARAMS_BYTES:
            raise PlanError(f"{label}: longer than {MAX_PARAMS_BYTES:,} characters once its variables are filled")
        return text

    return _VAR.sub(replace, value)


def _lookup(name: str, variables: dict, label: str) -> Any:
    if name not in variables:
        known = ", ".join(sorted(variables)) or "none"
        raise PlanError(f"{label}: unknown variable {{{name}}} (known: {known})")
    return variables[name]


def _resolve_after(expanded: list, by_template: dict[str, list[tuple[str, dict]]], where: str) -> None:
    names = {spec.name for _, _, spec in expanded}
    for index, entry, spec in expanded:
        resolved: list[str] = []
        for raw_name, variables in spec.after:
            label = f"{where}: job '{spec.name}' (jobs[{index}]), field after"
            try:
                filled = _fill(raw_name, variables, label)
            except PlanError:
                if raw_name not in by_template:
                    raise
                # A matrix job's name with variables this job does not have: every expansion that
                # agrees with the variables it does have (`ens-{seed}` waits for `ft-{model}-{seed}`
                # of its own seed, for every model).
                resolved.extend(name for name, combo in by_template[raw_name]
                                if all(variables.get(k, v) == v for k, v in combo.items()))
                continue
            if not isinstance(filled, str):
                raise PlanError(f"{label}: '{raw_name}' resolves to {reprlib.repr(filled)}; after takes job names "
                                "(write each name, or a list of them)")
            # The name of a `workers: k` entry (or of a matrix entry without variables): all its jobs.
            resolved.extend([n for n, _ in by_template[filled]] if filled not in names and filled in by_template
                            else [filled])
        if spec.name in resolved:
            raise PlanError(f"{where}: job '{spec.name}' (jobs[{index}]), field after: a job cannot wait for itself")
        spec.after = list(dict.fromkeys(resolved))


def _check_unique(specs: list[JobSpec], where: str) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise PlanError(f"{where}: duplicate job name '{spec.name}' (after matrix expansion)")
        seen.add(spec.name)


def _check_acyclic(specs: list[JobSpec], where: str) -> None:
    graph = {s.name: [a for a in s.after] for s in specs}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in graph.get(name, []):
            if dep not in graph:
                continue  # a job already in the queue; it cannot wait for a new one
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [name, dep]
                raise PlanError(f"{where}: dependency cycle: {' -> '.join(cycle)}")
            if state.get(dep) is None:
                visit(dep, path + [dep])
        state[name] = 2

    for name in graph:
        if state.get(name) is None:
            visit(name, [name])


def _checked_duration(value, check, field: str):
    """`value` when it is a duration `check` accepts; else the ValueError pydantic reports on `field`."""
    try:
        check(parse_duration(value), field)
    except PlanError as exc:
        raise ValueError(str(exc).removeprefix(f"{field}: ")) from None
    return value
