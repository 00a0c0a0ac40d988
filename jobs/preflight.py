"""Checking a job's inputs without running it (a kind's `preflight(params, pre)`).

`sched submit` (and `--dry-run`) runs every job's preflight before anything is stored, so a
missing CSV, a missing column, a label out of range, a misspelt model or a `from:` that names no
suitable job is a one-line error at submit instead of a failure after a slot waited for it. The
runner runs it again just before the job (files may have changed since); a failure there ends the
job at once without using its remaining attempts, since retrying cannot fix an input.

A preflight reads only what it must: CSV headers and label columns (fast on 100k rows), model
folders' config files and the Hugging Face cache. It never loads a model or imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import InputError


class PreflightError(InputError):
    """A job's inputs cannot work; the message lists every problem found."""


@dataclass(frozen=True)
class OtherJob:
    """Another job as a preflight sees it: in the same batch (`status` None) or in the queue."""

    name: str
    kind: str
    params: dict
    status: str | None


@dataclass
class Preflight:
    """What a kind's preflight uses: other jobs by name, and where to report what it found."""

    lookup: Callable[[str], OtherJob | None]  # a job of that name, or None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth saying, not wrong (e.g. a model will download)

    def job(self, name: str) -> OtherJob | None:
        return self.lookup(name)

    def check(self, what: str, check: Callable[[], Any]) -> Any:
        """Run `check`; an input error becomes a problem naming `what` (e.g. "params.train")."""
        try:
            return check()
        except InputError as exc:
            self.problems.append(f"{what}: {exc}")
        except OSError as exc:
            self.problems.append(f"{what}: {exc.strerror or exc}")
        return None

    # ---- the checks kinds share ------------------------------------------------------------

    def labeled_csv(self, what: str, path: str, text_column: str, label_column: str, num_labels: int) -> None:
        from pipeline.data import check_labeled_csv

        from .common import data_path

        self.check(what, lambda: check_labeled_csv(data_path(path), text_column, label_column, num_labels))

    def text_csv(self, what: str, path: str, text_column: str) -> None:
        from pipeline.data import check_text_csv

        from .common import data_path

        self.check(what, lambda: check_text_csv(data_path(path), text_column))

    def model(self, what: str, ref, *, artifact: str = "model", formats: tuple[str, ...] = ("hf",)) -> None:
        """A model param: a folder with a config, a hub name (cached, or noted as a download), the
        tiny preset, or `{from: job}` naming a job that produces `artifact` and registers it as a
        model of one of these formats (`Kind.models`)."""
        from pipeline.sources import check_model_source

        from .common import FromJob

        if isinstance(ref, FromJob):
            before = len(self.problems)
            self.produces(what, ref.from_, ref.artifact or artifact)
            if len(self.problems) == before:
                self.registered_model(what, ref.from_, ref.artifact, formats)
            return
        source = self.check(what, lambda: check_model_source(ref))
        if source is not None and source.note:
            self.notes.append(f"{what}: {source.note}")

    def produces(self, what: str, name: str, output: str) -> None:
        """`name` is a job (in this batch or the queue) whose kind produces `output`."""
        from .registry import known_kind

        other = self.job(name)
        if other is None:
            self.problems.append(f"{what}: no job named '{name}' in this file or the queue")
            return
        kind = known_kind(other.kind)
        if kind is not None and kind.outputs and output not in kind.outputs:
            self.problems.append(f"{what}: job '{name}' is a {other.kind} job; it produces no '{output}' "
                                 f"(it produces: {', '.join(kind.outputs)})")

    def registered_model(self, what: str, name: str, artifact: str | None, formats: tuple[str, ...]) -> None:
        """`name` is a job whose kind registers `artifact` (None: any of its models) as a model of one
        of these formats: nothing else of another job is ever loaded as a model (a joblib file is
        unpickled), whatever it is called."""
        from .common import ModelRefused, registered_model

        other = self.job(name)
        if other is None:
            self.problems.append(f"{what}: no job named '{name}' in this file or the queue")
            return
        try:
            registered_model(name, other.kind, artifact, formats, what=what)
        except ModelRefused as exc:
            self.problems.append(str(exc))

    def raise_problems(self, job: str) -> None:
        if self.problems:
            raise PreflightError(f"job '{job}': " + "; ".join(self.problems))
