"""Job kinds: each module holds a typed params model and `run(params, ctx)`.

Params models import without torch, so the queue can validate a job at submit time in a process
that never loads the ML stack; `run()` imports `pipeline` when the job actually runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

# kind name -> module under jobs/ (each module names its params model `Params` and has `run`)
KIND_MODULES = {
    "shell": "jobs.shell",
    "echo": "jobs.diagnostic",
    "sleep": "jobs.diagnostic",
    "fail": "jobs.diagnostic",
    "crash": "jobs.diagnostic",
    "tapt": "jobs.tapt",
    "finetune": "jobs.finetune",
    "predict": "jobs.predict",
    "augment": "jobs.augment",
    "tune": "jobs.tune",
    "ensemble": "jobs.ensemble",
}


class UnknownKind(ValueError):
    pass


class ParamsError(ValueError):
    """Params that do not fit a kind's model; `errors` is a list of (field path, message)."""

    def __init__(self, kind: str, errors: list[tuple[str, str]]):
        self.kind = kind
        self.errors = errors
        super().__init__("; ".join(f"params.{path}: {msg}" if path else msg for path, msg in errors))


@dataclass(frozen=True)
class JobKind:
    name: str
    params_model: type[BaseModel]
    run: Callable[[BaseModel, Any], Any]

    def parse(self, params: dict | None) -> BaseModel:
        try:
            return self.params_model.model_validate(params or {})
        except ValidationError as exc:
            raise ParamsError(self.name, [
                (".".join(str(p) for p in err["loc"]), _short(err)) for err in exc.errors()
            ]) from None


def _short(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    return err["msg"]


def get_kind(name: str) -> JobKind:
    module_name = KIND_MODULES.get(name)
    if module_name is None:
        raise UnknownKind(f"unknown job kind '{name}'; known kinds: {', '.join(sorted(KIND_MODULES))}")
    module = importlib.import_module(module_name)
    params = getattr(module, "PARAMS", {}).get(name) or getattr(module, "Params")
    run = getattr(module, "RUNNERS", {}).get(name) or getattr(module, "run")
    return JobKind(name, params, run)


def kind_names() -> list[str]:
    return sorted(KIND_MODULES)
