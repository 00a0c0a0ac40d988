"""Pieces the ML job kinds share: model references, params built from pipeline configs, hooks.

No torch here: params models must import cheaply for `sched submit`.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from pipeline.errors import InputError

from .context import JobContext

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
DEFAULT_TRAIN = "data/reviews_train.csv"
DEFAULT_TEST = "data/reviews_test.csv"
# What a spare runner imports ahead of a training job (`Kind.preload`): none of it starts CUDA.
TRAINING_MODULES = ("torch", "transformers", "pipeline.training", "pipeline.models")
# What decides a training job's GPU memory besides its kind and model (`gpu_memory: auto`).
MEMORY_PARAMS = ("batch_size", "max_length", "precision")


class FromJob(BaseModel):
    """`{from: job-name}`: use what another job produced (its `model` artifact, by default)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from", min_length=1)  # the producing job's name
    artifact: str | None = None  # which artifact to use; default depends on the field


ModelRef = str | FromJob


def params_from_config(name: str, config_cls: type, job_fields: dict[str, Any], *,
                       skip: tuple[str, ...] = ("model",)) -> type[BaseModel]:
    """A pydantic params model: the job's own fields plus every field of a pipeline config.

    The pipeline config stays the single source of truth for training settings; the config's
    own `validate()` runs at submit time, so a bad value is reported before anything runs.
    """
    hints = typing.get_type_hints(config_cls)
    fields: dict[str, Any] = {
        f.name: (hints[f.name], f.default if f.default is not dataclasses.MISSING else f.default_factory())
        for f in dataclasses.fields(config_cls) if f.name not in skip
    }
    fields.update(job_fields)
    config_names = tuple(f.name for f in dataclasses.fields(config_cls) if f.name not in skip)

    def _check_config(self):
        training_config(self, config_cls, config_names)
        return self

    model = create_model(name, __config__=ConfigDict(extra="forbid"),
                         __validators__={"_check_config": model_validator(mode="after")(_check_config)},
                         **fields)
    model.config_names = config_names
    return model


def training_config(params: BaseModel, config_cls: type, names: tuple[str, ...], **overrides):
    """The pipeline config for these params (validated; raises ValueError naming the field)."""
    values = {n: getattr(params, n) for n in names}
    values.update(overrides)
    if "model" in {f.name for f in dataclasses.fields(config_cls)} and "model" not in values:
        values["model"] = "tiny"
    return config_cls.from_dict(values)


def artifact_of(ctx: JobContext, ref: FromJob, default: str) -> str:
    """The path of an artifact of another (succeeded) job, with a clear error if it is missing."""
    record = ctx.job(ref.from_)
    name = ref.artifact or default
    if record.status != "succeeded":
        raise ValueError(f"job '{ref.from_}' has status {record.status}; its '{name}' is not ready")
    if name not in record.artifacts:
        known = ", ".join(sorted(record.artifacts)) or "none"
        raise ValueError(f"job '{ref.from_}' has no artifact '{name}' (it has: {known})")
    return record.artifacts[name]


def resolve_model(ctx: JobContext, model: ModelRef, texts: list[str] | None) -> str:
    """A hub name, a local folder, "tiny" (built in this job's folder) or another job's model (a
    from_pretrained folder its kind registers as a model, checked right before it is used)."""
    from pipeline.models import resolve_model_source

    if isinstance(model, FromJob):
        record = ctx.job(model.from_)
        if record.status != "succeeded":
            raise ValueError(f"job '{model.from_}' has status {record.status}; its "
                             f"'{model.artifact or 'model'}' is not ready")
        return model_artifact(ctx, record, model.artifact, ("hf",)).checked_path()
    return resolve_model_source(model, str(ctx.output_dir), texts)


# ---- models other jobs registered ----------------------------------------------------------------


class ModelRefused(InputError):
    """A `{from: job}` model that is not one: an artifact the job's kind does not register as a
    model (an echo's file, a baseline's logits), or a registered model that no longer lies in the
    job's run folder. Nothing is loaded; retrying cannot fix it."""


def registered_model(job: str, kind_name: str, artifact: str | None, formats: tuple[str, ...],
                     have: Collection[str] | None = None, what: str = "params.model") -> tuple[str, str]:
    """(artifact name, format) of the model `{from: job, artifact: ...}` names, checked against what
    the job's kind registers as models (`Kind.models`) and the formats this field loads. At submit
    `have` is None (the job may not have run); at run time it is the artifacts the job recorded.
    ModelRefused otherwise, one line naming the field, the file, the job and why."""
    from .registry import MODEL_FORMATS, known_kind, model_kinds

    kind = known_kind(kind_name)
    if kind is None:
        raise ModelRefused(f"{what}: job '{job}' is a {kind_name} job, a kind unknown here, so none of "
                           "its files is loaded as a model")
    wanted = " or ".join(MODEL_FORMATS[f] for f in formats)
    if not kind.models:
        file = f"artifact '{artifact}' of job '{job}' is not a model" if artifact else f"job '{job}' has no model"
        raise ModelRefused(f"{what}: {file}: {kind_name} jobs register none, and only a registered model is "
                           f"loaded (models come from {', '.join(model_kinds(formats))} jobs)")
    if artifact is None:
        usable = [n for n, f in kind.models.items() if f in formats]
        artifact = next((n for n in usable if have is None or n in have), usable[0] if usable else None)
        if artifact is None:
            name, fmt = next(iter(kind.models.items()))
            raise ModelRefused(f"{what}: the model of job '{job}' ('{name}', {kind_name}) is "
                               f"{MODEL_FORMATS[fmt]}, not {wanted}")
    elif artifact not in kind.models:
        registered = ", ".join(f"'{n}'" for n in kind.models)
        raise ModelRefused(f"{what}: artifact '{artifact}' of job '{job}' is not a model: {kind_name} jobs "
                           f"register only {registered} as one, and only a registered model is loaded")
    fmt = kind.models[artifact]
    if fmt not in formats:
        raise ModelRefused(f"{what}: artifact '{artifact}' of job '{job}' ({kind_name}) is {MODEL_FORMATS[fmt]}, "
                           f"not {wanted}")
    if have is not None and artifact not in have:
        raise ModelRefused(f"{what}: job '{job}' has no artifact '{artifact}' "
                           f"(it has: {', '.join(sorted(have)) or 'none'})")
    return artifact, fmt


@dataclasses.dataclass(frozen=True)
class ModelArtifact:
    """A model another job registered: where it lies and how it loads (`registry.MODEL_FORMATS`)."""

    job: str
    name: str  # the artifact's registered name
    format: str
    path: str  # the path the job registered
    folders: tuple[str, ...]  # run folders it must resolve into (a tune group's trials: its jobs')

    def checked_path(self) -> str:
        """The registered path, checked again right before it is loaded: with links followed it lies
        in the job's run folder (a link swapped in since, pointing out of it, is refused), it is a
        folder whose entries stay inside too for `hf`, a regular file otherwise. The resolved path."""
        roots = [os.path.realpath(folder) for folder in self.folders]
        real = os.path.realpath(self.path)
        self._inside(real, self.path, roots)
        if self.format == "hf":
            if not os.path.isdir(real):
                raise ModelRefused(f"model '{self.name}' of job '{self.job}' ({self.path}) is not a folder")
            with os.scandir(real) as entries:
                for entry in entries:
                    self._inside(os.path.realpath(entry.path), entry.path, roots)
        elif not os.path.isfile(real):
            raise ModelRefused(f"model '{self.name}' of job '{self.job}' ({self.path}) is not a regular file")
        return real

    def _inside(self, real: str, shown: str, roots: list[str]) -> None:
        if not any(os.path.commonpath([real, root]) == root for root in roots):
            raise ModelRefused(f"model '{self.name}' of job '{self.job}': {shown} resolves to {real}, outside "
                               "the job's run folder; it is not loaded")


def model_artifact(ctx: JobContext, record, artifact: str | None, formats: tuple[str, ...],
                   what: str = "params.model") -> ModelArtifact:
    """The model a (succeeded) job's record registered under `artifact` (None: its kind's first
    model of these formats), checked as `registered_model` does; load it via `checked_path()`."""
    name, fmt = registered_model(record.name, record.kind, artifact, formats, have=record.artifacts, what=what)
    return ModelArtifact(record.name, name, fmt, record.artifacts[name], _run_folders(ctx, record, what))


def _run_folders(ctx: JobContext, record, what: str) -> tuple[str, ...]:
    """The job's run folder; for one job of a `workers: k` group (NAME#i), its group's too: a tune's
    best trial may have trained in another job of its study."""
    folders = [record.output_dir] if record.output_dir else []
    group, sep, _ = record.name.rpartition("#")
    if sep:
        for name in ctx.jobs_where(kind=record.kind):
            if name != record.name and name.rpartition("#")[0] == group:
                other = ctx.job(name).output_dir
                if other:
                    folders.append(other)
    if not folders:
        raise ModelRefused(f"{what}: job '{record.name}' has no run folder, so its model cannot be checked")
    return tuple(folders)


def data_path(path: str) -> str:
    """A data file as given; a relative path missing here falls back to the project's data/ folder,
    so the shipped sample works from any working folder."""
    candidate = Path(path)
    if candidate.exists() or candidate.is_absolute():
        return str(candidate)
    shipped = DATA_DIR / Path(path).name if Path(path).parts[:1] == ("data",) else None
    return str(shipped) if shipped is not None and shipped.exists() else str(candidate)


def hooks_for(ctx: JobContext):
    """Training hooks that report to the queue through the job context."""
    from pipeline.hooks import Hooks

    def on_log(key: str, value: float, step: int | None, split: str | None) -> None:
        ctx.log_metric(key, value, step=step, split=split)

    return Hooks(on_log=on_log, on_progress=lambda done, total, msg: ctx.progress(done, total, msg),
                 should_stop=ctx.should_stop)


# ---- experiment tracking (`report_to`) -------------------------------------------------------------


def check_trackers(pre, report_to, what: str = "params.report_to") -> None:
    """Submit-time check (a kind's preflight): every tracker `report_to` names is installed here.
    Looked up, never imported: importing mlflow or wandb alone takes seconds."""
    from pipeline.tracking import missing_trackers

    for name in missing_trackers(report_to):
        pre.problems.append(f"{what}: {name} is not installed; pip install 'sched[tracking]' (or pip install {name})")


def tracking_run(ctx: JobContext, kind: str, params: BaseModel | dict, *, trial: int | None = None,
                 folder: str | None = None):
    """Who this job's training run is to its trackers (`pipeline.tracking.TrackingRun`), or None
    when its params report to none.

    Named after the job (a tune trial: `<job>-trial-<n>`, writing TensorBoard events in
    `tensorboard/<folder>`); its campaign is the job's first tag (queue.yaml's `defaults: tags:`),
    else its `workers: k` group. TensorBoard writes in the job's run folder (or, when
    $TENSORBOARD_LOGGING_DIR is set, in a folder named like the run folder under it); MLflow uses
    $MLFLOW_TRACKING_URI, else a SQLite store `mlflow.db` beside a SQLite queue database (else in the
    runs folder); W&B writes its files in the run folder, to project $WANDB_PROJECT or "sched"."""
    from pipeline.tracking import TrackingRun

    values = params if isinstance(params, dict) else params.model_dump(mode="json", by_alias=True)
    if not values.get("report_to"):
        return None
    tags = _own_tags(ctx)
    labels = {"sched.job_id": str(ctx.job_id), "sched.job": ctx.name, "sched.kind": kind}
    if ctx.group:
        labels["sched.group"] = ctx.group
    if trial is not None:
        labels["sched.trial"] = str(trial)
    tb_root = os.environ.get("TENSORBOARD_LOGGING_DIR")
    tensorboard = Path(tb_root) / ctx.output_dir.name if tb_root else ctx.output_dir / "tensorboard"
    if folder:
        tensorboard = tensorboard / folder
    mlflow_uri = os.environ.get("MLFLOW_TRACKING_URI")
    artifacts = None
    if not mlflow_uri:
        store = _mlflow_folder(ctx)
        mlflow_uri, artifacts = f"sqlite:///{store / 'mlflow.db'}", (store / "mlartifacts").as_uri()
    return TrackingRun(
        name=ctx.name if trial is None else f"{ctx.name}-trial-{trial}",
        campaign=tags[0] if tags else ctx.group, tags=tuple(tags), labels=labels, params=values,
        tensorboard_dir=str(tensorboard), mlflow_uri=mlflow_uri, mlflow_artifacts=artifacts,
        mlflow_experiment=os.environ.get("MLFLOW_EXPERIMENT_NAME") or None,
        wandb_project=os.environ.get("WANDB_PROJECT") or None, wandb_dir=str(ctx.output_dir), job_type=kind)


def _own_tags(ctx: JobContext) -> list[str]:
    try:
        return [str(tag) for tag in (ctx.job(ctx.name).tags or [])]
    except Exception:  # noqa: BLE001 - tags only label the tracker's run: it goes on without them
        return []


def _mlflow_folder(ctx: JobContext) -> Path:
    """Where the local MLflow store goes: beside a SQLite queue database (one store per campaign
    database), else in the runs folder. (The scheduler's own `store.location.sqlite_file` reads
    the URL the same way; jobs may not import it.)"""
    url = ctx.db_url or ""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            path = url[len(prefix):].split("?", 1)[0]
            if path not in ("", ":memory:"):
                return Path(path).expanduser().resolve().parent
    return ctx.output_dir.resolve().parent
