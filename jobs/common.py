"""Pieces the ML job kinds share: model references, params built from pipeline configs, hooks.

No torch here: params models must import cheaply for `sched submit`.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

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
    """A hub name, a local folder, "tiny" (built in this job's folder) or another job's model."""
    from pipeline.models import resolve_model_source

    if isinstance(model, FromJob):
        return artifact_of(ctx, model, "model")
    return resolve_model_source(model, str(ctx.output_dir), texts)


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
