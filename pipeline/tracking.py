"""Experiment tracking: a training run's TensorBoard, MLflow and W&B runs, on HF's own integrations.

`report_to` goes to the Trainer as it is, so its integrations (`TensorBoardCallback`,
`MLflowCallback`, `WandbCallback`) log what they always log: every train and eval entry, the
`TrainingArguments` and the model config. What they cannot know comes from `TrackingRun`, opened
here around the whole training call (`TrackingSession`):

- who the run is: its name (the job's), its campaign (W&B group, MLflow experiment), the job's tags
  and id, and the job's own params (`job.*`: MLflow params, W&B config, a TensorBoard text);
- where each tracker writes (`<output_dir>/tensorboard`, a given MLflow URI, W&B files in a folder);
- one run per training call: the Trainer built again after an out-of-memory error, or a call run
  again that resumes from its checkpoint (a later attempt of the job), logs into the same MLflow and
  W&B run (their ids are kept in `tracking.json` beside the checkpoints). A fresh start is a new run.

HF's integrations reuse a run that is already active (MLflow's fluent run, `wandb.run`) and leave it
open, so this module starts them and ends them with the call's outcome (finished, failed, or stopped:
MLflow KILLED, W&B preempting). Trackers are imported only when a run asks for them. In a
data-parallel run rank 0 alone opens the runs, as the integrations log from rank 0 only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import TRACKERS

log = logging.getLogger(__name__)

__all__ = ["TRACKERS", "TRACKING_FILE", "TrackingRun", "TrackingSession", "missing_trackers"]

TRACKING_FILE = "tracking.json"  # in the run's output_dir: the MLflow and W&B run ids to resume
DEFAULT_PROJECT = "sched"  # W&B project, and MLflow experiment, when nothing else names one
TB_ENV = "TENSORBOARD_LOGGING_DIR"  # where HF's TensorBoardCallback writes (read when a Trainer is built)
PARAM_VALUE_MAX = 250  # characters of a param value MLflow stores everywhere (older servers' limit)


def missing_trackers(report_to) -> list[str]:
    """The trackers of `report_to` whose package is not installed here (looked up, never imported)."""
    import importlib.util

    return [name for name in report_to if importlib.util.find_spec(name) is None]


@dataclass(frozen=True)
class TrackingRun:
    """Who a training run is to the trackers, and where they write. The job layer fills it in
    (`jobs.common.tracking_run`); every field has a default, so the pipeline runs without it."""

    name: str  # the run's name: the job's (a tune trial: the job's plus the trial number)
    campaign: str | None = None  # groups runs: W&B group; MLflow experiment unless one is given
    tags: tuple[str, ...] = ()  # the job's tags (W&B tags; MLflow tag `sched.tags`)
    labels: Mapping[str, str] = field(default_factory=dict)  # key/value tags: sched.job_id, sched.kind ...
    params: Mapping[str, Any] = field(default_factory=dict)  # the job's own params, logged as job.<name>
    tensorboard_dir: str | None = None  # None: <output_dir>/tensorboard
    mlflow_uri: str | None = None  # None: mlflow's own default ($MLFLOW_TRACKING_URI, else its local store)
    mlflow_experiment: str | None = None  # None: the campaign, else DEFAULT_PROJECT
    mlflow_artifacts: str | None = None  # artifact location of an experiment created here (None: mlflow's)
    wandb_project: str | None = None  # None: DEFAULT_PROJECT
    wandb_dir: str | None = None  # W&B writes <wandb_dir>/wandb/; None: output_dir
    job_type: str | None = None  # W&B job type: the job's kind


class TrackingSession:
    """The trackers' runs for one training call: `with TrackingSession(report_to, run, output_dir,
    resume=...)` around building and training the Trainer(s). With no tracker, or on a rank other
    than 0, it does nothing."""

    def __init__(self, report_to, run: TrackingRun | None, output_dir: str, *, resume: bool = False,
                 main: bool = True):
        self.report_to = tuple(report_to or ()) if main else ()
        self.run = run or TrackingRun(name=os.path.basename(os.path.normpath(output_dir)))
        self.output_dir = output_dir
        self.resume = resume
        self.ids: dict[str, str] = {}
        self._mlflow = None  # the mlflow module once a run is open
        self._wandb_run = None
        self._env: dict[str, str | None] = {}

    @property
    def tensorboard_dir(self) -> str:
        return self.run.tensorboard_dir or os.path.join(self.output_dir, "tensorboard")

    # ---- the context

    def __enter__(self) -> TrackingSession:
        if not self.report_to:
            return self
        missing = missing_trackers(self.report_to)
        if missing:
            raise ImportError(f"report_to: {', '.join(missing)} not installed; pip install 'sched[tracking]'")
        previous = self._saved_ids() if self.resume else {}
        try:
            if "tensorboard" in self.report_to:
                self._start_tensorboard()
            if "mlflow" in self.report_to:
                self._start_mlflow(previous.get("mlflow"))
            if "wandb" in self.report_to:
                self._start_wandb(previous.get("wandb"))
        except BaseException:
            self._close(failed=True, stopped=False)
            raise
        if self.ids:
            from .util import atomic_write

            atomic_write(os.path.join(self.output_dir, TRACKING_FILE), json.dumps(self.ids, indent=2))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        from .hooks import StopRequested

        stopped = exc_type is not None and issubclass(exc_type, (StopRequested, KeyboardInterrupt))
        self._close(failed=exc_type is not None and not stopped, stopped=stopped)

    # ---- TensorBoard

    def _start_tensorboard(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = self.tensorboard_dir
        os.makedirs(folder, exist_ok=True)
        # HF's TensorBoardCallback reads this when the Trainer is built (inside this session).
        self._env[TB_ENV] = os.environ.get(TB_ENV)
        os.environ[TB_ENV] = folder
        if not self.resume:
            with contextlib.closing(SummaryWriter(log_dir=folder)) as writer:
                writer.add_text("sched/job", self._description(), 0)

    def _description(self) -> str:
        """The run as Markdown for TensorBoard's text tab: name, campaign, tags, labels, params."""
        lines = [f"**{self.run.name}**", ""]
        if self.run.campaign:
            lines.append(f"- campaign: {self.run.campaign}")
        if self.run.tags:
            lines.append(f"- tags: {', '.join(self.run.tags)}")
        lines += [f"- {key}: {value}" for key, value in self.run.labels.items()]
        if self.run.params:
            params = json.dumps(dict(self.run.params), indent=2, sort_keys=True, default=str)
            lines += ["", "    " + params.replace("\n", "\n    ")]  # a code block in Markdown
        return "\n".join(lines)

    # ---- MLflow

    def _start_mlflow(self, run_id: str | None) -> None:
        import mlflow

        if self.run.mlflow_uri:
            mlflow.set_tracking_uri(self.run.mlflow_uri)
        if mlflow.active_run() is not None:  # left open by a run that died without its exit (same process)
            mlflow.end_run("KILLED")
        with _store_lock(mlflow.get_tracking_uri()):
            experiment = self._experiment(mlflow)
        if run_id is not None:
            try:
                active = mlflow.start_run(run_id=run_id)
            except mlflow.exceptions.MlflowException as exc:  # deleted, or another store now
                log.warning("mlflow: run %s cannot be resumed (%s); starting a new one", run_id, exc)
                run_id = None
        if run_id is None:
            tags = {"sched.tags": ",".join(self.run.tags), **self.run.labels}
            if self.run.campaign:
                tags["sched.campaign"] = self.run.campaign
            active = mlflow.start_run(experiment_id=experiment, run_name=self.run.name, tags=tags)
            params = {f"job.{k}": _param_text(v) for k, v in self.run.params.items()}
            keys = list(params)
            for start in range(0, len(keys), 100):  # MLflow takes at most 100 params per call
                mlflow.log_params({k: params[k] for k in keys[start:start + 100]})
        self._mlflow = mlflow
        self.ids["mlflow"] = active.info.run_id

    def _experiment(self, mlflow) -> str:
        """The experiment's id, created when new (two jobs may create it at once: one wins)."""
        name = self.run.mlflow_experiment or self.run.campaign or DEFAULT_PROJECT
        client = mlflow.MlflowClient()
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=self.run.mlflow_artifacts)
        except mlflow.exceptions.MlflowException:
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    # ---- W&B

    def _start_wandb(self, run_id: str | None) -> None:
        import wandb

        folder = self.run.wandb_dir or self.output_dir
        os.makedirs(folder, exist_ok=True)
        labels = {key.removeprefix("sched."): value for key, value in self.run.labels.items()}
        tags = list(self.run.tags)
        if "job_id" in labels:
            tags.append(f"job-{labels['job_id']}")  # W&B's run table filters by tags, not by config
        self._wandb_run = wandb.init(
            project=self.run.wandb_project or DEFAULT_PROJECT, name=self.run.name, group=self.run.campaign,
            job_type=self.run.job_type, tags=[tag[:64] for tag in tags], dir=folder,
            config={"job": _plain(dict(self.run.params)), "sched": labels},
            id=run_id, resume="allow" if run_id else None,
        )
        self.ids["wandb"] = self._wandb_run.id

    # ---- ending

    def _close(self, *, failed: bool, stopped: bool) -> None:
        """End what was opened; a tracker that fails to close is logged, never raised (the run's
        own outcome, or its exception, is what matters)."""
        if self._mlflow is not None:
            status = "KILLED" if stopped else "FAILED" if failed else "FINISHED"
            try:
                self._mlflow.end_run(status)
            except Exception as exc:  # noqa: BLE001
                log.warning("mlflow: could not end the run: %s", exc)
            self._mlflow = None
        if self._wandb_run is not None:
            try:
                if stopped and hasattr(self._wandb_run, "mark_preempting"):
                    self._wandb_run.mark_preempting()
                self._wandb_run.finish(exit_code=1 if (failed or stopped) else 0)
            except Exception as exc:  # noqa: BLE001
                log.warning("wandb: could not finish the run: %s", exc)
            self._wandb_run = None
        for key, value in self._env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._env.clear()

    def _saved_ids(self) -> dict[str, str]:
        path = os.path.join(self.output_dir, TRACKING_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                saved = json.load(f)
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}


@contextlib.contextmanager
def _store_lock(uri: str):
    """Held while a local SQLite MLflow store is first opened: several jobs starting at once on a
    fresh store would otherwise all create its tables."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    path = uri.removeprefix("sqlite:///")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(_plain(value), sort_keys=True, default=str)
    return text if len(text) <= PARAM_VALUE_MAX else text[:PARAM_VALUE_MAX - 3] + "..."


def _plain(value: Any) -> Any:
    """JSON-friendly: dataclasses and mappings as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
