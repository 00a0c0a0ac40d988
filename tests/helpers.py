"""Helpers shared by the test modules: driving a worker step by step, small real data sets."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from scheduler.jobqueue import JobSpec

DATA = Path(__file__).resolve().parents[1] / "data"


def step_until(loop, done, timeout: float = 240.0) -> None:
    """Drive single worker steps until `done()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        loop.run_once()
        if done():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll `predicate()` until it holds; fail with `what` after `timeout` seconds (a deadline for
    what normally takes far less, never a sleep that a slow machine could outrun)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def submit(queue, name: str, kind: str, **fields) -> int:
    """Submit one job; `fields` are JobSpec fields (params=..., priority=...). A failed attempt is
    retried at once unless `retry_delay_s` says otherwise (the queue's default waits 30 s)."""
    params = fields.pop("params", {})
    fields.setdefault("retry_delay_s", 0.0)
    return queue.submit([JobSpec(name=name, kind=kind, params=params, **fields)])[0]


def review_sample(folder: Path, per_label: int, name: str = "train.csv") -> Path:
    """`per_label` real reviews of each class from the shipped sample, shuffled, as a CSV."""
    frame = pd.read_csv(DATA / "reviews_train.csv").groupby("label").head(per_label).sample(frac=1, random_state=0)
    path = folder / name
    frame.to_csv(path, index=False)
    return path


LABEL_WORDS = ("최악이다", "별로다", "괜찮다", "최고다")


def keyed_review_sample(folder: Path, per_label: int, name: str = "train.csv") -> Path:
    """Real reviews with a word for their class appended: a tiny model learns them within an epoch,
    so tests that compare a learning run with a stuck one do not depend on a lucky start."""
    path = review_sample(folder, per_label, name)
    frame = pd.read_csv(path)
    frame["review"] = frame["review"].astype(str) + " " + frame["label"].map(lambda label: LABEL_WORDS[label])
    frame.to_csv(path, index=False)
    return path


def sample_test_csv(folder: Path, rows: int = 60) -> Path:
    """The first `rows` reviews of the shipped test file, as a CSV."""
    path = folder / "test.csv"
    pd.read_csv(DATA / "reviews_test.csv").head(rows).to_csv(path, index=False)
    return path


def run_campaign(queue_text: str, folder: Path) -> str:
    """Submit a queue file's text with `sched submit` and drain it with one CPU worker; the URL."""
    from click.testing import CliRunner

    from scheduler.cli import cli

    url = f"sqlite:///{folder / 'experiments.db'}"
    queue_file = folder / "campaign.yaml"
    queue_file.write_text(queue_text)
    runner = CliRunner()
    for args in (["submit", str(queue_file)],
                 ["worker", "--gpus", "none", "--until-empty", "--runs", str(folder / "runs")]):
        result = runner.invoke(cli, ["--db", url, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return url
