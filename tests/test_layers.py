"""The import rules of docs/architecture.md, checked: pipeline imports nothing of ours, jobs never
import the scheduler (so never the CLI), the CLI and the worker parent never import torch, `sched
--help` imports neither SQLAlchemy nor the store, no import cycles, and the scheduler never names a
kind or a metric (it asks the kinds).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules(package: str) -> dict[str, Path]:
    """{dotted module name: file} of a package of ours."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path, *, top_level_only: bool = False) -> set[str]:
    """Absolute names of the modules `module` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _ours(name: str) -> bool:
    return name.split(".")[0] in {"scheduler", "jobs", "pipeline"}


@pytest.mark.parametrize("package, forbidden", [("pipeline", ("scheduler", "jobs")), ("jobs", ("scheduler",))])
def test_imports_run_one_way(package, forbidden):
    offenders = {module: sorted(n for n in _imports(module, path) if n.split(".")[0] in forbidden)
                 for module, path in _modules(package).items()}
    assert {m: names for m, names in offenders.items() if names} == {}


def test_no_import_cycles_at_module_level():
    graph = {}
    known = {**_modules("scheduler"), **_modules("jobs"), **_modules("pipeline")}
    for module, path in known.items():
        imported = _imports(module, path, top_level_only=True)
        graph[module] = {name for name in imported if name in known and name != module}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1 and not _package_of(nxt, node):
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def _package_of(package: str, module: str) -> bool:
    # A package's __init__ importing its own submodules (and them importing siblings) is not a cycle.
    return module.startswith(package + ".")


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"import sys\n{code}\nprint('@@', ' '.join(sorted(sys.modules)))"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.rpartition("@@")[2].split())


def test_sched_help_imports_neither_sqlalchemy_nor_the_store():
    loaded = _loaded_after("from scheduler.cli import cli\ntry:\n    cli(['--help'])\nexcept SystemExit:\n    pass")
    assert not {m for m in loaded if m.split(".")[0] in {"sqlalchemy", "rich", "pydantic", "torch", "yaml"}}
    assert not {m for m in loaded if m.startswith(("scheduler.store", "scheduler.jobqueue", "jobs"))}


def test_the_cli_and_the_worker_parent_never_import_torch():
    code = ("import scheduler.execute.worker, scheduler.execute.runner, scheduler.report, scheduler.results, scheduler.views\n"
            "from scheduler.cli.app import SchedGroup, cli\n"
            "for name in SchedGroup().list_commands(None): cli.get_command(None, name)\n"
            "import jobs\njobs.all_kinds()\n")
    loaded = _loaded_after(code)
    # scikit-learn (the baseline kind) took a second of every `sched status` before it was kept out
    assert not {m for m in loaded if m.split(".")[0] in {"torch", "transformers", "sklearn"}}


SCHEDULER_MAY_NAME = {"demo"}  # the demo submits the demo campaign (scheduler/demo.yaml) by design


def test_the_scheduler_names_no_kind_and_no_metric():
    from jobs.registry import all_kinds

    kinds = all_kinds()
    words = {k.name for k in kinds}
    for kind in kinds:
        shown = kind.display
        words |= {*shown.scores, *shown.scores.values(), *shown.details, *shown.params}
        words |= {c.metric for c in shown.details.values()} | {c.key for c in shown.curves}
        words |= {name for name in (shown.left_out, shown.params_of, shown.param_metrics) if name}
    # Words the scheduler uses in its own sense: "shell" (no shell is involved), the curves' x axis
    # in "epochs" (and a trial's reported epochs), a curve's axis kind "loss".
    words -= {"shell", "epochs", "loss"}
    offenders = []
    for module, path in _modules("scheduler").items():
        if module.split(".")[-1] in SCHEDULER_MAY_NAME:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if node.value in words:
                    offenders.append(f"{module}:{node.lineno} {node.value!r}")
    assert offenders == []


def test_the_store_and_the_queue_never_import_the_execution_package():
    """The queue and the store know GPU sizes and slot names (scheduler/resources.py) but nothing of
    how jobs are run or placed: scheduler/execute/ stands above them."""
    low = {m: p for m, p in _modules("scheduler").items()
           if m.startswith("scheduler.store") or m in ("scheduler.jobqueue", "scheduler.resources", "scheduler.records")}
    offenders = {m: sorted(n for n in _imports(m, p) if n.startswith("scheduler.execute")) for m, p in low.items()}
    assert {m: names for m, names in offenders.items() if names} == {}
    assert "scheduler.store.busy" in low and "scheduler.jobqueue" in low  # the rule reads the modules it names


# What `sched status` on a SQLite file never imports: SQLAlchemy alone took as long as the rest of the
# command (store/sqlite_reads.py reads the file with sqlite3), and the others cost more still.
HEAVY_FOR_STATUS = {"sqlalchemy", "alembic", "optuna", "apscheduler", "torch", "transformers", "sklearn", "pandas",
                    "psycopg", "yaml"}


def _status_loads(url: str, *args: str) -> set[str]:
    return _loaded_after(f"from scheduler.cli import cli\ntry:\n    cli(['--db', {url!r}, 'status', *{args!r}])\n"
                         "except SystemExit as exc:\n    assert not exc.code, exc.code")


def test_sched_status_on_a_sqlite_file_imports_no_heavy_library(tmp_path):
    from scheduler.jobqueue import JobQueue, JobSpec

    url = f"sqlite:///{tmp_path / 'experiments.db'}"
    queue = JobQueue(url)
    for args in ((), ("--json",)):
        loaded = _status_loads(url, *args)
        assert not {m.split(".")[0] for m in loaded} & (HEAVY_FOR_STATUS | {"pydantic"}), args
        assert not {m for m in loaded if m.startswith(("scheduler.store.queries", "scheduler.jobqueue", "jobs"))}
    # Jobs in the queue, a worker, a failure: still no kind is imported (no success has a score to show).
    worker = queue.register_worker("h", 1, ["cpu0"])
    queue.submit([JobSpec("a", "echo"), JobSpec("b", "echo"), JobSpec("c", "echo", after=["a"])])
    queue.fail(queue.claim(worker, "cpu0", 0).id, worker, message="boom")
    queue.claim(worker, "cpu0", 0)
    assert not {m.split(".")[0] for m in _status_loads(url)} & (HEAVY_FOR_STATUS | {"pydantic", "jobs"})
    # A success's score needs its kind (and so pydantic), never the rest.
    queue.succeed(queue.resolve("b"), worker)
    queue.dispose()
    assert not {m.split(".")[0] for m in _status_loads(url)} & HEAVY_FOR_STATUS
