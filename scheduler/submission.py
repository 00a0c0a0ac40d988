"""Submitting a campaign again after editing it: which jobs are new, the same, or changed.

Each job gets a content hash: its kind, params, GPU count and group, the contents of the input
files its params name, and the hashes of the jobs it waits for (so a change upstream changes
everything downstream of it). Comparing a file's jobs with the queue by name then gives, per job:

- `new`: no job has the name: inserted;
- `reuse`: new, `--reuse`, and a succeeded job (any name) has the same hash: recorded as succeeded
  with that job's results;
- `same`: the queue's job has the same hash: nothing (it keeps its state and outputs);
- `replace`: changed, and the queue's job never started: updated in place;
- `rerun`: changed, it already ran, and `--rerun-changed`: the old job is kept as NAME@ID (results
  visible) and the new one queued;
- `changed`: changed and it already ran: the whole file is refused (say `--rerun-changed`);
- `running`: changed while it runs: the whole file is refused (wait, or cancel it).

Jobs of the same campaign that are in the queue but no longer in the file are listed as `removed`
and left alone: jobs the same file submitted, or a file of the same name elsewhere that submitted
jobs of this file's names (the checkout moved, the file was copied and edited). `sched submit`
prints this plan, and for each changed job what changed (`params.lr 2e-05 -> 3e-05`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .store.states import QUEUED, RUNNING

NEW, REUSE, SAME, REPLACE, RERUN = "new", "reuse", "same", "replace", "rerun"
CHANGED, IS_RUNNING = "changed", "running"
REFUSED = (CHANGED, IS_RUNNING)


@dataclass
class Planned:
    """What submitting one spec does."""

    spec: Any  # JobSpec
    action: str
    job_id: int | None = None  # the queue's job of that name (same, replace, changed, running, rerun)
    status: str | None = None  # its state
    twin: int | None = None  # reuse: the succeeded job whose results stand for it
    old: Any = None  # the queue's job of that name (kind, params, gpus, group_name): what changed

    @property
    def what_changed(self) -> str:
        return describe_changes(self.old, self.spec) if self.old is not None else ""

    @property
    def why(self) -> str:
        what = f"; what changed: {self.what_changed}" if self.old is not None else ""
        if self.action == CHANGED:
            return (f"changed, and job {self.job_id} of that name already ran ({self.status}); "
                    f"--rerun-changed queues the new one and keeps the old as NAME@ID{what}")
        if self.action == IS_RUNNING:
            return f"changed while job {self.job_id} of that name runs; wait for it or cancel it{what}"
        return ""


@dataclass
class SubmitPlan:
    jobs: list[Planned]
    removed: list[tuple[int, str, str]] = field(default_factory=list)  # (id, name, status) gone from the file
    preview: Any = None  # a dry run's look at the queue as it would be (JobQueue.plan's `preview`)

    @property
    def refused(self) -> list[Planned]:
        return [p for p in self.jobs if p.action in REFUSED]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.jobs:
            out[p.action] = out.get(p.action, 0) + 1
        if self.removed:
            out["removed"] = len(self.removed)
        return out


# ---- hashing -----------------------------------------------------------------------------------

_digests: dict[tuple[str, int, int], str] = {}
MAX_HASHED_FILE = 1 << 30  # larger inputs are identified by size and modification time


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes (remembered per path, size and modification time)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        if stat.st_size > MAX_HASHED_FILE:
            _digests[key] = f"size:{stat.st_size}:mtime:{stat.st_mtime_ns}"
        else:
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            _digests[key] = digest.hexdigest()
    return _digests[key]


def input_digests(params: Any, seen: dict[str, str | None] | None = None) -> dict[str, str]:
    """{path: digest} of every existing file a string in `params` names (the data a job reads).
    `seen` carries what strings were found to be across one batch: a matrix of a thousand jobs
    names the same few files and words a thousand times, and each look is two stat() calls."""
    found: dict[str, str] = {}
    seen = {} if seen is None else seen
    todo = [params]
    while todo:
        value = todo.pop()
        if isinstance(value, dict):
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)
        elif isinstance(value, str) and 0 < len(value) < 4096 and "\0" not in value:
            if value not in seen:
                seen[value] = _digest_if_file(value)
            if seen[value] is not None:
                found[value] = seen[value]
    return found


def _digest_if_file(value: str) -> str | None:
    from jobs.common import data_path

    path = Path(data_path(value))
    try:
        return file_digest(path) if path.is_file() else None
    except OSError:  # unreadable, a name too long for the file system, ...
        return None


def spec_hash(spec, dependency_hashes: list[str], seen: dict[str, str | None] | None = None) -> str:
    content = {"kind": spec.kind, "params": spec.params, "gpus": spec.gpus, "group": spec.group_name,
               "inputs": input_digests(spec.params, seen), "after": sorted(dependency_hashes)}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def hash_batch(specs: list, stored: dict[str, str]) -> dict[str, str]:
    """{name: hash} for a batch, dependencies first; `stored` has the queue's jobs' hashes by name
    (a job from before hashes existed stands for itself: `name:<name>`)."""
    by_name = {s.name: s for s in specs}
    hashes: dict[str, str] = {}
    seen: dict[str, str | None] = {}  # strings of params already looked up as files, this batch

    def visit(spec) -> str:
        if spec.name not in hashes:
            deps = [visit(by_name[d]) if d in by_name else stored.get(d) or f"name:{d}" for d in spec.after]
            hashes[spec.name] = spec_hash(spec, deps, seen)
        return hashes[spec.name]

    for spec in specs:
        visit(spec)  # the plan already refused cycles
    return hashes


# ---- the plan ----------------------------------------------------------------------------------


def plan_submission(specs: list, hashes: dict[str, str], existing: dict[str, Any], twins: dict[str, int],
                    *, rerun_changed: bool, reuse: bool) -> list[Planned]:
    """The action for each spec. `existing`: the queue's rows by name (id, status, attempts,
    spec_hash); `twins`: hash -> a succeeded job with it (for `reuse`)."""
    planned = []
    for spec in specs:
        row = existing.get(spec.name)
        if row is None:
            twin = twins.get(hashes[spec.name]) if reuse else None
            planned.append(Planned(spec, REUSE if twin else NEW, twin=twin))
        elif row.spec_hash == hashes[spec.name]:
            planned.append(Planned(spec, SAME, row.id, row.status))
        elif row.status == RUNNING:
            planned.append(Planned(spec, IS_RUNNING, row.id, row.status, old=row))
        elif row.status == QUEUED and row.attempts == 0:
            planned.append(Planned(spec, REPLACE, row.id, row.status, old=row))
        else:
            planned.append(Planned(spec, RERUN if rerun_changed else CHANGED, row.id, row.status, old=row))
    return planned


MAX_CHANGES_SHOWN = 8


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    """Nested params as {dotted.key: value} (lists are values: `texts` changed as a whole)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _shown(value: Any) -> str:
    from .fmt import clip

    if isinstance(value, float):
        return f"{value:g}"
    return clip(json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else value, 60)


_ABSENT = object()


def describe_changes(old: Any, spec: Any) -> str:
    """What differs between the queue's job `old` and the resubmitted `spec`, one line:
    `params.lr 2e-05 -> 3e-05, params.swa_epochs (unset) -> 2, gpus 1 -> 2`. When kind, params,
    GPUs and group are the same, what changed is its input files' contents or an upstream job."""
    changes = []
    if old.kind != spec.kind:
        changes.append(f"kind {old.kind} -> {spec.kind}")
    before, after = _flat(old.params or {}, "params"), _flat(spec.params or {}, "params")
    for key in [*before, *(k for k in after if k not in before)]:
        was, now = before.get(key, _ABSENT), after.get(key, _ABSENT)
        if was is _ABSENT or now is _ABSENT or json.dumps(was, sort_keys=True, default=str) != \
                json.dumps(now, sort_keys=True, default=str):
            changes.append(f"{key} {'(unset)' if was is _ABSENT else _shown(was)} -> "
                           f"{'(unset)' if now is _ABSENT else _shown(now)}")
    if old.gpus != spec.gpus:
        changes.append(f"gpus {old.gpus} -> {spec.gpus}")
    if (old.group_name or None) != (spec.group_name or None):
        changes.append(f"group {old.group_name} -> {spec.group_name}")
    if not changes:
        return "same params; an input file's contents or a job it waits for changed"
    more = len(changes) - MAX_CHANGES_SHOWN
    return ", ".join(changes[:MAX_CHANGES_SHOWN]) + (f" and {more} more" if more > 0 else "")


def archived_name(name: str, job_id: int) -> str:
    """The name a rerun job's previous version keeps (names are unique; 200 characters at most)."""
    suffix = f"@{job_id}"
    return name[: 200 - len(suffix)] + suffix


def source_of(path: str | os.PathLike | None) -> str | None:
    return None if path is None else str(Path(path).resolve())



# ---- preflight ---------------------------------------------------------------------------------


def preflight(queue, specs: list) -> list[str]:
    """Run every job's preflight (jobs/preflight.py) against this batch and the queue; raises
    PlanError listing every problem, returns the notes (e.g. models that will download)."""
    from jobs import get_kind
    from jobs.preflight import OtherJob, Preflight

    from .errors import PlanError
    from .fmt import visible
    from .store import queries as q

    batch = {spec.name: OtherJob(spec.name, spec.kind, spec.params, None) for spec in specs}
    found: dict[str, OtherJob | None] = {}

    def lookup(name: str) -> OtherJob | None:
        if name in batch:
            return batch[name]
        if name not in found:
            with queue.read() as conn:
                row = q.job_identity(conn, name)
            found[name] = None if row is None else OtherJob(row.name, row.kind, row.params or {}, row.status)
        return found[name]

    problems, notes = [], []
    for spec in specs:
        pre = Preflight(lookup)
        kind = get_kind(spec.kind)
        kind.check(kind.parse(spec.params), pre)
        problems += [f"job '{visible(spec.name)}', {p}" for p in pre.problems]
        notes += [f"job '{visible(spec.name)}', {n}" for n in pre.notes]
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise PlanError(f"{len(problems)} problem(s) in the jobs' inputs, nothing was submitted: {shown}")
    return list(dict.fromkeys(notes))
