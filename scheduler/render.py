"""Rich rendering of snapshots and plans. Pure functions from dicts to renderables.

Everything from the database or a queue file (names, messages, hosts, params, paths) is data, not
markup: cells go through `plain` (a `Text`, so `[/]` or `[red]` in a name is shown as typed) with
control characters made visible (`fmt.visible`), so no name can crash `sched status`, disguise
itself, or drive the terminal.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table as _RichTable
from rich.text import Text

from .fmt import duration, number, score, visible
from .limits import rank_text
from .resources import fmt_mib, gpu_request_text
from .tables import NEVER_DROP, Column, cut_left, cut_middle, fit

if TYPE_CHECKING:  # `sched status` renders without importing the queue (SQLAlchemy)
    from .jobqueue import JobSpec


def plain(value, style: str = "") -> Text:
    """A value shown as it is: never read as markup, control characters made visible."""
    return Text(visible("" if value is None else value), style=style)


class Table(_RichTable):
    """A rich Table whose text cells and titles are plain text (see the module's docstring)."""

    def __init__(self, *args, title=None, caption=None, **kwargs):
        super().__init__(*args, title=None if title is None else plain(title),
                         caption=None if caption is None else plain(caption), **kwargs)

    def add_row(self, *cells, **kwargs):
        super().add_row(*(plain(c) if isinstance(c, str) else c for c in cells), **kwargs)

STATE_STYLE = {
    "queued": "cyan", "running": "bold yellow", "succeeded": "green", "failed": "bold red",
    "killed": "red", "lost": "magenta", "upstream_failed": "dim red", "cancelled": "dim",
}


def _state(status: str) -> Text:
    return plain(status, style=STATE_STYLE.get(status, ""))


def _board_state(row: dict) -> Text:
    """A leaderboard row's status, marked when an ensemble left the model out (it learned nothing)."""
    text = _state(row["status"])
    if row.get("left_out_by"):
        text.append_text(plain(" (left out of " + ", ".join(row["left_out_by"]) + ")", style="yellow"))
    return text


def progress_text(p: dict | None) -> str:
    """`120/400 steps · epoch 1.2/3`: done/total with at most one decimal, then the job's words."""
    if not p:
        return ""
    message = p.get("message") or ""
    if not p.get("total"):
        return message
    done = p["done"]
    shown = f"{done:.0f}" if float(done).is_integer() or p["total"] >= 100 else f"{done:.1f}"
    return f"{shown}/{p['total']:g}" + (f" {message}" if message else "")


def _progress(job: dict) -> str:
    """Progress with a short bar of eighths in front when the total is known: `▉▉▉▌    120/400 steps`."""
    text = progress_text(job.get("progress"))
    p = job.get("progress")
    if not p or not p.get("total"):
        return text
    share = min(max(p["done"] / p["total"], 0.0), 1.0)
    eighths = round(share * 8 * 8)
    bar = "█" * (eighths // 8) + ("" if eighths % 8 == 0 else " ▏▎▍▌▋▊▉"[eighths % 8])
    return f"{bar:<8} {text}"


def metric_text(metric: dict | None) -> str:
    if not metric:
        return ""
    return f"{metric['key']} {metric['value']:.3g}" + (f" @{metric['step']}" if metric.get("step") is not None else "")


def status_view(snap: dict, *, width: int = 120, height: int | None = None) -> Group:
    """`sched status`: counts, workers, running jobs, failures, the queue and recent endings.

    With `height` (`--watch`) the view fits the terminal (see `_fit_height`): the head of the
    queue always shows, with how many more wait, and what must go goes in a fixed order."""
    head = _head_lines(snap)
    if height is None:
        return Group(*head, *_sections(snap, width, _Shown.of(snap)))
    return Group(*_fit_height(snap, head, width, height))


class _Shown:
    """How much of each section a status view shows (rows; `None`: all of them)."""

    def __init__(self, running: int, failures: int, queue: int, recent: int, workers_table: bool = True):
        self.running, self.failures, self.queue, self.recent = running, failures, queue, recent
        self.workers_table = workers_table
        self.workers = True  # False: not even the one-line summary
        self.queue_line = False  # the queue as one line (a terminal too short for its table)

    @classmethod
    def of(cls, snap: dict) -> _Shown:
        return cls(len(snap["running"]), len(snap["failures"]), len(snap["queue"]), len(snap["recent"]))


def _head_lines(snap: dict) -> list[Text]:
    counts = Text("  ".join(f"{state} {n}" for state, n in snap["counts"].items() if n) or "no jobs")
    head = [Text.assemble(("Jobs: ", "bold"), counts, ("   ", ""), _busy_text(snap["busy"]))]
    if snap.get("expired"):
        head.append(Text(f"{len(snap['expired'])} running job(s) with an expired lease: their worker may be "
                         "gone; any worker's reaper queues them again", style="bold magenta"))
    if snap.get("eta"):
        head.append(Text(snap["eta"]))
    for outlook in snap.get("deadlines") or []:
        style = "bold red" if outlook["misses"] else ("green" if outlook["deliverables_left"] == 0 else "bold")
        head.append(Text("Campaign " + outlook["line"], style=style))
    if snap["drained"]:
        head.append(Text("Queue is drained: workers take no new job (sched resume)", style="bold yellow"))
    head.extend(_reservation_line(w) for w in snap["workers"] if w.get("reservation"))
    head.extend(Text(f"worker {w['id']} does not claim: {visible(w['problem'])}", style="bold red")
                for w in snap["workers"] if w.get("problem"))
    return head


def _sections(snap: dict, width: int, shown: _Shown) -> list:
    """The tables under the head lines, each cut to what `shown` says (titles say what was left out)."""
    parts = []
    if not shown.workers:
        pass
    elif not snap["workers"]:
        parts.append(Text("Workers: none running (start one: sched worker)", style="yellow"))
    elif shown.workers_table:
        parts.append(_workers_table(snap["workers"], width))
    else:
        parts.append(_workers_line(snap["workers"]))
    if snap["running"] and shown.running:
        parts.append(_running_table(snap["running"][:shown.running], width, total=len(snap["running"])))
    if snap["failures"] and shown.failures:
        parts.append(_failures_table(snap["failures"][:shown.failures], width, total=len(snap["failures"])))
    if snap["queue"] and shown.queue_line:
        parts.append(_queue_line(snap["queue"][0], snap["counts"].get("queued", 0)))
    elif snap["queue"] and shown.queue:
        parts.append(_queue_table(snap["queue"][:shown.queue], snap["counts"].get("queued", 0), width))
    if snap["recent"] and shown.recent:
        parts.append(_recent_table(snap["recent"][:shown.recent], width))
    return parts


MIN_QUEUE_ROWS = 3  # the head of the queue a --watch view keeps while anything else can give way


def _fit_height(snap: dict, head: list[Text], width: int, height: int) -> list:
    """The status view in at most `height` lines (when it can be done at all). Heights are measured
    as rich lays the parts out at `width` (a head line may wrap), and space goes, in this order, to:
    the head lines, the workers, running jobs and failures, the head of the queue (three jobs, or
    fewer when fewer wait), then more of the queue, then recent endings. When even that is too tall
    the workers table becomes one line, failures and running jobs keep one row each, the queue one
    job, the head lines stop wrapping; on a very short terminal running jobs and failures (counted
    in the first line) go, then the workers' line and all head lines but the first, and last the
    queue is one line. A cut table's title says how many rows it left out; the queue always says
    how many more wait."""
    from rich.console import Console

    measure = Console(width=width, height=max(height, 1), file=_NullFile(), force_terminal=False,
                      color_system=None, legacy_windows=False)

    def lines(parts: list) -> int:
        return sum(len(measure.render_lines(part, measure.options, pad=False)) for part in parts)

    full = _Shown.of(snap)
    min_queue = min(MIN_QUEUE_ROWS, full.queue)
    shown = _Shown(full.running, full.failures, min_queue, 0)
    fixed = lines(head)

    def total() -> int:
        return fixed + lines(_sections(snap, width, shown))

    def unwrapped(texts: list[Text]) -> list[Text]:
        return [Text(t.plain, style=t.style, spans=t.spans, no_wrap=True, overflow="ellipsis") for t in texts]

    # Give way step by step until the essentials fit.
    steps = [lambda: setattr(shown, "workers_table", False),
             lambda: setattr(shown, "failures", min(1, full.failures)),
             lambda: setattr(shown, "running", min(1, full.running)),
             lambda: setattr(shown, "queue", min(1, full.queue)),
             lambda: head.__setitem__(slice(None), unwrapped(head)),
             lambda: setattr(shown, "running", 0),
             lambda: setattr(shown, "failures", 0),
             lambda: setattr(shown, "workers", False),
             lambda: head.__delitem__(slice(1, None)),
             lambda: setattr(shown, "queue_line", True)]
    head = list(head)
    for step in steps:
        if total() <= height:
            break
        step()
        fixed = lines(head)
    # Then fill what is left: more of the queue first, then recent endings.
    for section, most in (("queue", full.queue), ("recent", full.recent)):
        while getattr(shown, section) < most:
            setattr(shown, section, getattr(shown, section) + 1)
            if total() > height:
                setattr(shown, section, getattr(shown, section) - 1)
                break
    return [*head, *_sections(snap, width, shown)]


class _NullFile:
    """Where the measuring console writes (nothing)."""

    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass


def _queue_line(first: dict, total: int) -> Text:
    """The queue in one line: its next job and how many more wait."""
    more = f"; {total - 1} more wait" if total > 1 else ""
    return Text.assemble(("Queue: ", "bold"), f"next #{first['id']} {visible(first['name'])} "
                         f"({visible(first.get('why') or '')}){more}", no_wrap=True, overflow="ellipsis")


def _workers_line(workers: list[dict]) -> Text:
    """The workers in one line (a --watch view short of room): `Workers: #1 gpu-a 2/2 busy, ...`."""
    parts = []
    for w in workers:
        busy = sum(1 for slot in w["slot_use"] if slot["job"])
        problem = " (does not claim)" if w.get("problem") else ""
        parts.append(f"#{w['id']} {visible(w['host'])} {busy}/{len(w['slot_use'])} busy{problem}")
    return Text.assemble(("Workers: ", "bold"), ", ".join(parts), no_wrap=True, overflow="ellipsis")


def _busy_text(busy: dict) -> Text:
    if not busy["slots"]:
        return Text("")
    label = "GPU busy" if busy["kind"] == "gpu" else "slots busy"
    share = ", ".join(f"{busy[w] * 100:.0f}% {w.replace('_', ' ')}" for w in ("last_hour", "last_day")
                      if busy.get(w) is not None)
    return Text(f"{label}: {share} ({busy['slots']} slot{'s' if busy['slots'] != 1 else ''})", style="bold")


def _reservation_line(worker: dict) -> Text:
    held = worker["reservation"]
    gpus = ", ".join(f"gpu{i}" for i in held["gpus"])
    return Text(f"worker {worker['id']}: reserving {gpus} for job {visible(held['name'])} #{held['job_id']} "
                f"({rank_text(held['priority'])}, needs {held['needs']} GPU(s)): lower-priority jobs do not "
                "start there", style="yellow")


def _slot_jobs(slot: dict):
    """Who is on a slot: `a` on a whole GPU, `a (12.0GiB), b (8.0GiB)` sharing one, or idle."""
    jobs = slot.get("jobs") or []
    if not jobs:
        if slot.get("reserved_for"):
            return Text(f"idle, reserved for {visible(slot['reserved_for'])}", style="yellow")
        return Text("idle", style="dim")
    return ", ".join(j["name"] + (f" ({fmt_mib(j['placed_mib'])})" if j.get("placed_mib") else "") for j in jobs)


def _gpu_use(slot: dict):
    """NVML's reading of a GPU slot: `87% · 30.2/80 GiB`, or why it takes no job."""
    from .views import gpu_blocked

    stats = slot["gpu_stats"]
    if not stats:
        return ""
    if "lost" in stats:
        return Text(f"lost ({visible(stats['lost'])})", style="bold red")
    blocked = gpu_blocked(slot["slot"], stats) if not slot.get("jobs") else None
    if blocked is not None:
        return Text(visible(blocked.removeprefix(slot["slot"]).lstrip(": ")), style="bold yellow")
    if "mem_used" not in stats:
        return Text(visible(f"CUDA unusable ({stats['fault']})"), style="bold yellow") if stats.get("fault") else ""
    util = "-" if stats.get("util") is None else f"{stats['util']}%"
    return f"{util} · {stats['mem_used'] / 1024:.1f}/{stats['mem_total'] / 1024:.0f} GiB"


def _workers_table(workers: list[dict], width: int):
    columns = [Column("worker", NEVER_DROP), Column("host", 60, text=True), Column("slot", NEVER_DROP),
               Column("job", name=True), Column("GPU use", 40), Column("heartbeat", 30, justify="right")]
    rows = []
    for w in workers:
        for i, slot in enumerate(w["slot_use"]):
            gpu = _gpu_use(slot)
            first = i == 0
            rows.append([f"{w['id']} ({w['state']})" if first else "", w["host"] if first else "", slot["slot"],
                         _slot_jobs(slot), gpu,
                         f"{duration(w['heartbeat_age_s'])} ago" if first else ""])
    return fit(columns, rows, width, title="Workers")


def _running_table(jobs: list[dict], width: int, total: int | None = None):
    # At 80 columns: id, name, kind, try, progress and ETA (names compacted before those go).
    columns = [Column("id", NEVER_DROP, justify="right"), Column("name", name=True), Column("kind", 73),
               Column("slot", 45), Column("try", 72), Column("elapsed", 50, justify="right"),
               Column("progress", 80, text=True), Column("ETA", 75, justify="right"), Column("latest metric", 40)]
    rows = []
    for j in jobs:
        if j.get("lease_expired_s") is not None:
            eta = Text(f"lost? lease expired {duration(j['lease_expired_s'])} ago", style="bold magenta")
        else:
            eta = duration(j.get("eta_s"))
        rows.append([str(j["id"]), j["name"], j["kind"], j["slot"] or "", f"{j['attempts']}/{j['max_attempts']}",
                     duration(j["elapsed_s"]), _progress(j),
                     eta, metric_text(j.get("latest_metric"))])
    more = f" (first {len(jobs)} of {total})" if total and total > len(jobs) else ""
    return fit(columns, rows, width, title=f"Running{more}")


def _queue_table(jobs: list[dict], total: int, width: int):
    shown = f" (first {len(jobs)} of {total}; {total - len(jobs)} more wait)" if total > len(jobs) else ""
    columns = [Column("id", NEVER_DROP, justify="right"), Column("name", name=True), Column("kind", 40),
               Column("prio", 50, justify="right"), Column("gpus", 20, justify="right"),
               Column("waits for", 90, text=True)]
    rows = []
    for j in jobs:
        why = j.get("why") or ""
        if j.get("failure_kind"):
            why += f" (was {j['failure_kind']}: {(j['message'] or '').splitlines()[0] if j['message'] else ''})"
        rows.append([str(j["id"]), j["name"], j["kind"], str(j["priority"]), _gpus_cell(j), why])
    return fit(columns, rows, width, title=f"Queue, in claim order{shown}")


def _recent_table(jobs: list[dict], width: int):
    columns = [Column("id", NEVER_DROP, justify="right"), Column("name", name=True), Column("kind", 30),
               Column("status", 90), Column("duration", 60, justify="right"), Column("score", 70)]
    rows = []
    for j in jobs:
        shown = j.get("score")
        rows.append([str(j["id"]), j["name"], j["kind"], _state(j["status"]), duration(j["elapsed_s"]),
                     "" if shown is None else f"{shown['key']} {score(shown['value'])}"])
    return fit(columns, rows, width, title="Recently finished")


def _failures_table(jobs: list[dict], width: int, total: int | None = None):
    columns = [Column("id", NEVER_DROP, justify="right"), Column("name", name=True), Column("status", 90),
               Column("reason", 80, text=True)]
    rows = [[str(j["id"]), j["name"], _state(j["status"]),
             (j["message"] or "").splitlines()[0] if j["message"] else ""] for j in jobs]
    more = f" (latest {len(jobs)} of {total})" if total and total > len(jobs) else ""
    return fit(columns, rows, width, title=f"Failures{more}")


def jobs_table(jobs: list[dict], *, width: int = 120):
    """`sched ls`: one row per job."""
    columns = [Column("id", NEVER_DROP, justify="right"), Column("name", name=True), Column("kind", 50),
               Column("status", 90), Column("prio", 30, justify="right"), Column("try", 20),
               Column("started", 40), Column("time", 60, justify="right"), Column("tags", 25, text=True),
               Column("message", 70, text=True)]
    rows = [[str(j["id"]), j["name"], j["kind"], _state(j["status"]), str(j["priority"]),
             f"{j['attempts']}/{j['max_attempts']}", (j["started_at"] or "").replace("T", " "),
             duration(j["elapsed_s"]), ",".join(j["tags"]),
             (j["message"] or "").splitlines()[0] if j["message"] else ""] for j in jobs]
    return fit(columns, rows, width, title=f"Jobs ({len(jobs)})")


ACTION_STYLE = {"new": "green", "same": "dim", "replace": "yellow", "rerun": "yellow", "reuse": "cyan",
                "changed": "bold red", "running": "bold red"}


def plan_table(specs: list[JobSpec], title: str = "Plan", *, width: int = 120, plan=None,
               limit: int | None = None):
    """The expanded plan; with a SubmitPlan, what submitting does to each job (new, same, changed,
    ...). One line per job at any width: long names lose their middle (`tapt-…/roberta-base`),
    low-value columns go first; params are shown only when the terminal is wide enough for them.
    With `limit`, a longer plan keeps every job whose action is worth a look (replace, rerun,
    changed, ...) and the first others, in file order, and says how many it left out: a matrix of
    a thousand jobs is a count, not a thousand lines to scroll past."""
    show_params = width >= 140
    actions = {p.spec.name: p for p in plan.jobs} if plan is not None else {}
    shown, left_out = _plan_rows_shown(specs, actions, limit)
    columns = [Column("#", 30, justify="right")]
    if actions:
        columns.append(Column("action", NEVER_DROP))
    # At 80 columns: action, name, kind and the first dependency (names cut in the middle).
    columns += [Column("name", name=True), Column("kind", 72), Column("prio", 60, justify="right"),
                Column("gpus", 55, justify="right"), Column("after", 74), Column("tries", 40, justify="right"),
                Column("timeout", 45, justify="right")]
    if show_params:
        columns.append(Column("params", 20, text=True))
    rows = []
    for i, spec in enumerate(specs, 1):
        if i - 1 not in shown:
            continue
        row = [str(i)]
        if actions:
            planned = actions[spec.name]
            label = planned.action + (f" #{planned.twin}" if planned.twin else "")
            row.append(plain(label, style=ACTION_STYLE.get(planned.action, "")))
        row += [spec.name, spec.kind, str(spec.priority), str(spec.gpus),
                _after_text(spec.after, AFTER_WIDTH if width >= 120 else AFTER_WIDTH_NARROW),
                str(spec.max_attempts), duration(spec.timeout_s)]
        if show_params:
            row.append(json.dumps(spec.params, ensure_ascii=False))
        rows.append(row)
    if plan is not None and plan.removed:
        for job_id, name, status in plan.removed:
            rows.append(["", plain("removed", style="magenta"), name, "", "", "", f"#{job_id} {status}", "", "",
                         *([""] if show_params else [])])
    caption = _left_out_caption(left_out) if left_out else None
    return fit(columns, rows, width, title=f"{title} ({len(specs)} jobs)", caption=caption)


def _plan_rows_shown(specs: list[JobSpec], actions: dict, limit: int | None) -> tuple[set[int], Counter]:
    """Indexes of the plan rows to show under `limit`, and the actions of those left out."""
    if limit is None or len(specs) <= limit:
        return set(range(len(specs))), Counter()
    routine = ("new", "same")
    notable = {i for i, s in enumerate(specs) if s.name in actions and actions[s.name].action not in routine}
    rest = [i for i in range(len(specs)) if i not in notable]
    shown = notable | set(rest[:max(0, limit - len(notable))])
    left_out = Counter(actions[specs[i].name].action if actions else "job" for i in rest if i not in shown)
    return shown, left_out


def _left_out_caption(left_out: Counter) -> str:
    """`… 940 more jobs not listed (940 new); --all lists every job`."""
    what = ", ".join(f"{n} {action}" for action, n in left_out.most_common() if action != "job")
    return (f"… {sum(left_out.values())} more jobs not listed" + (f" ({what})" if what else "")
            + "; --all lists every job")


AFTER_WIDTH, AFTER_WIDTH_NARROW = 28, 18  # cells of the first dependency's name in a plan (its middle cut)


def _after_text(after: list[str], room: int) -> str:
    """The first dependency, its middle cut to `room` cells, and how many more: `tapt-…roberta-base +4`."""
    if not after:
        return ""
    return cut_middle(after[0], room) + (f" +{len(after) - 1}" if len(after) > 1 else "")


def plan_changes(plan) -> list[Text]:
    """What changed in each job a resubmitted campaign replaces or runs again:
    `replace 'ft-x' (#12): params.lr 2e-05 -> 3e-05, gpus 1 -> 2` (refused jobs say it in their
    refusal)."""
    return [plain(f"{p.action} '{p.spec.name}' (#{p.old.id}): {p.what_changed}", style=ACTION_STYLE.get(p.action, ""))
            for p in plan.jobs if p.old is not None and p.action in ("replace", "rerun")]


def cron_table(crons: list[dict], *, width: int = 120):
    """`sched cron list`: one line per schedule; a long queue file path keeps its end
    (`…/campaigns/nightly.yaml`), a long name loses its middle."""
    columns = [Column("name", name=True), Column("cron", NEVER_DROP - 1), Column("file", 80),
               Column("next run (UTC)", 75), Column("last fire", 40), Column("last result", 60, text=True)]
    room = max(20, width // 4)  # at 80 columns: name, cron, file and next run on one line

    def when(value: str | None) -> str:
        return "" if not value else value.replace("T", " ")[:16]

    rows = [[c["name"], c["expression"], cut_left(str(c["file"] or ""), room), when(c["next_run"]),
             when(c["last_fire"]), c["last_result"] or ""] for c in crons]
    return fit(columns, rows, width, title="Scheduled submissions (UTC)")


def diff_table(diff: dict, *, width: int = 120, show_same: bool = True):
    """`sched diff A B`: one row per setting, param, metric and artifact; what differs first (bold),
    then what the two share (dim)."""
    a, b = diff["a"], diff["b"]
    columns = [Column("", NEVER_DROP), Column("field", NEVER_DROP - 1, text=True),
               Column(f"#{a['id']} {a['name']}"[:60], 90, text=True), Column(f"#{b['id']} {b['name']}"[:60], 90, text=True)]
    rows = []
    for r in diff["rows"]:
        if r["same"] and not show_same:
            continue
        style = "" if r["same"] else "bold"
        mark = Text("=" if r["same"] else "≠", style="dim" if r["same"] else "bold yellow")
        field = r["field"] if r["section"] in ("job", "params") else f"{r['section']}.{r['field']}"
        rows.append([mark, plain(field, style=style), _diff_cell(r, "a", style), _diff_cell(r, "b", style)])
    same = len(diff["rows"]) - diff["differ"]
    title = f"{diff['differ']} difference(s), {same} the same" + ("" if show_same or not same else " (--all shows them)")
    return fit(columns, rows, width, title=title)


def _diff_cell(row: dict, side: str, style: str) -> Text:
    if row[f"missing_{side}"]:
        return plain("(none)", style="dim")
    value = row[side]
    if value is None:
        text = ""
    elif row["field"] == "time":
        text = duration(value)
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, str):
        text = value.splitlines()[0] if value else ""
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
    return plain(text, style=style)


def _gpus_cell(job: dict) -> str:
    """`1`, `2`, `1 (auto)`, `1 (20.0GiB)`, `1 (whole)` after an out-of-memory beside other jobs."""
    if job["gpus"] != 1:
        return str(job["gpus"])
    if job.get("exclusive"):
        return "1 (whole)"
    memory = job.get("gpu_memory")
    return "1" if memory is None else f"1 ({memory if memory == 'auto' else fmt_mib(memory)})"


def plan_summary(plan) -> Text:
    counts = plan.counts()
    order = ("new", "reuse", "replace", "rerun", "same", "changed", "running", "removed")
    parts = [f"{counts[a]} {a}" for a in order if counts.get(a)]
    return plain(", ".join(parts) or "nothing to do")


def _gpu_rows(detail: dict) -> list[tuple[str, str]]:
    """`sched show`: the GPU memory a job asked for, was given and reached."""
    rows = []
    if detail.get("gpus"):
        asked = gpu_request_text(detail["gpus"], detail["gpu_memory"] if detail["gpu_memory"] != "auto" else None,
                                 detail["gpu_memory"] == "auto")
        if detail.get("exclusive"):
            asked += "; a whole GPU now (ran out of memory on a shared one)"
        if detail.get("placed_mib"):
            asked += f"; placed with {fmt_mib(detail['placed_mib'])}"
        rows.append(("gpu_memory", asked))
    if detail.get("gpu_peak_mib"):
        rows.append(("gpu_peak", f"{fmt_mib(detail['gpu_peak_mib'])} (torch max_memory_reserved)"))
    return rows


def json_text(value) -> Text:
    """`value` as indented JSON: the layout's own newlines stay newlines; control and format
    characters inside values are made visible (JSON already escapes those below U+0020)."""
    dumped = json.dumps(value, ensure_ascii=False, indent=1)
    return Text("\n".join(visible(line) for line in dumped.split("\n")))


def _deadline_rows(detail: dict) -> list[tuple[str, str]]:
    """Its campaign, deliverable mark, `expected:`, the forecast's estimate and the policy's decisions."""
    rows = []
    if detail.get("campaign"):
        rows.append(("campaign", detail["campaign"] + (" (deliverable)" if detail.get("deliverable") else "")))
    if detail.get("expected_s") is not None:
        rows.append(("expected", duration(detail["expected_s"])))
    if detail.get("estimate_s") is not None:
        rows.append(("estimate", f"{duration(detail['estimate_s'])} (from {detail.get('estimate_source')})"))
    if detail.get("urgent"):
        rows.append(("urgent", "yes: on a deliverable's path while the deadline policy acts"))
    if detail.get("held"):
        rows.append(("held", detail["held"]))
    if detail.get("finish_by"):
        rows.append(("finish_by", f"{detail['finish_by']} UTC (starts no trial that would end later)"))
    if detail.get("deadline_note") and not detail.get("held"):
        rows.append(("deadline", detail["deadline_note"]))
    return rows


def job_view(detail: dict, *, width: int = 120) -> Group:
    info = Table.grid(padding=(0, 2))
    for key in ("id", "name", "kind", "status", "priority", "gpus", "tags", "attempts", "max_attempts",
                "not_before", "failure_kind", "message", "created_at", "started_at", "finished_at", "exit_code",
                "slot", "output_dir", "log_path"):
        value = detail.get(key)
        if value not in (None, [], ""):
            if key in ("output_dir", "log_path"):
                value = cut_left(str(value), max(20, width - 16))
            info.add_row(Text(key, style="bold"), _state(value) if key == "status" else plain(value))
    for label, text in _gpu_rows(detail):
        info.add_row(Text(label, style="bold"), plain(text))
    for label, text in _deadline_rows(detail):
        info.add_row(Text(label, style="bold"), plain(text))
    if detail["after"]:
        after = ", ".join(f"{d['name']} ({d['status']})" for d in detail["after"])
        info.add_row(Text("after", style="bold"), plain(after))
    info.add_row(Text("params", style="bold"), json_text(detail["params"]))
    parts = [info]
    if detail["metrics"]:
        table = Table(title="Metrics", title_justify="left")
        for col in ("key", "value", "step", "split"):
            table.add_column(col)
        for m in detail["metrics"][-40:]:
            table.add_row(m["key"], f"{m['value']:.6g}", "" if m["step"] is None else str(m["step"]), m["split"] or "")
        parts.append(table)
    if detail["artifacts"]:
        table = Table(title="Artifacts", title_justify="left")
        table.add_column("name", no_wrap=True)
        table.add_column("path", no_wrap=True)
        longest = max(len(name) for name in detail["artifacts"])
        for name, path in detail["artifacts"].items():
            table.add_row(name, cut_left(path, max(20, width - longest - 7)))
        parts.append(table)
    return Group(*parts)


def results_table(rows: list[dict], sort: str | None, *, width: int = 120):
    """The leaderboard at a glance: the first two scores, the first detail column, the key params
    that differ between rows (the differences explain the ranking; the shared ones go in the
    caption). Too narrow a terminal loses params, time, model and kind before anything wraps.
    --json and --csv have every column."""
    from .kinds import leaderboard_layout
    from .results import headline_column, param_summary, shown_scores

    layout = leaderboard_layout()
    scores = shown_scores(rows)
    details = [c for c in layout.details if any(r[c] is not None for r in rows)][:1]
    params = param_summary(rows)
    caption = params.caption()
    columns = [Column("#", 45, justify="right"), Column("job", name=True), Column("kind", 35),
               Column("model", 40, text=True),
               *(Column(c.replace("_", " "), NEVER_DROP - 1 - i, justify="right") for i, c in enumerate(scores)),
               *(Column(c.replace("_", " "), 55, justify="right") for c in details),
               Column("time", 30, justify="right"), Column("params", 20, text=True), Column("status", 80)]
    table_rows = [[str(i), r["job"], r["kind"], r["model"] or "", *(score(r[c]) for c in scores),
                   *(number(r[c]) for c in details), duration(r["duration_s"]), params.row(r), _board_state(r)]
                  for i, r in enumerate(rows, 1)]
    if not rows:
        kinds = " or ".join(layout.model_kinds) or "model"
        table_rows.append(["", Text(f"no models yet (submit {kinds} jobs)", style="dim"),
                           *[""] * (len(columns) - 2)])
    return fit(columns, table_rows, width, title=f"Results ({len(rows)} jobs, by {sort or headline_column(rows)})",
               caption=f"same for every job that has it: {caption}" if caption else None)


def forecast_table(rows: list[dict], now, *, width: int = 120):
    """`sched forecast`: each job's expected start and end, the estimate's source, its path mark."""
    from datetime import timedelta

    def at(seconds: float | None) -> str:
        if seconds is None:
            return "never"
        return "now" if abs(seconds) < 30 else (now + timedelta(seconds=seconds)).strftime("%a %H:%M")

    columns = [Column("id", NEVER_DROP, "right"), Column("name", name=True), Column("status", 40),
               Column("start", NEVER_DROP), Column("end", NEVER_DROP), Column("estimate", 60, "right"),
               Column("from", 50), Column("path", 70), Column("note", 10, text=True)]
    body = []
    for r in rows:
        mark = "deliverable" if r["deliverable"] else ("on path" if r["on_path"] else "")
        note = r["cannot_run"] or r["held"] or r["note"] or ""
        body.append([str(r["id"]), r["name"], _state(r["status"]),
                     "running" if r["status"] == "running" else at(r["start_s"]), at(r["end_s"]), duration(r["estimate_s"]) if r["estimate_s"] is not None else "?",
                     r["source"] or "", Text(mark, style="bold") if r["deliverable"] else mark, note])
    return fit(columns, body, width, title=f"Forecast from {now.strftime('%a %H:%M')} UTC",
               caption=None if rows else "no unfinished job")


def estimate_error_table(rows: list[dict], *, width: int = 120):
    """`sched forecast --errors`: estimated against actual durations, and their mean error."""
    columns = [Column("id", NEVER_DROP, "right"), Column("name", name=True), Column("kind", 40),
               Column("estimate", NEVER_DROP, "right"), Column("actual", NEVER_DROP, "right"),
               Column("error", NEVER_DROP, "right"), Column("from", 50)]
    body = [[str(r["id"]), r["name"], r["kind"], duration(r["estimate_s"]), duration(r["actual_s"]),
             "" if r["error"] is None else f"{r['error'] * 100:+.0f}%", r["source"] or ""] for r in rows]
    errors = [abs(r["error"]) for r in rows if r["error"] is not None]
    caption = (f"mean absolute error {sum(errors) / len(errors) * 100:.0f}% over {len(errors)} job(s)"
               if errors else "no finished job with an estimate yet (estimates are kept for campaigns with a deadline)")
    return fit(columns, body, width, title="Estimates against durations", caption=caption)
