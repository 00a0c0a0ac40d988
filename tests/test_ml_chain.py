"""The ML job kinds through the real queue: tapt -> finetune -> full-data retrain -> predict.

Tiny models on a few hundred real reviews of the shipped sample; every job runs in its own child
process exactly as on a GPU host.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from scheduler.cli import cli
from scheduler.jobqueue import JobQueue
from scheduler.records import Records
from tests.helpers import run_campaign

DATA = Path(__file__).resolve().parents[1] / "data"

CHAIN = """
vars: {train: "%(train)s", test: "%(test)s"}
defaults:
  gpus: 0  # the CPU: TAPT and fine-tune would ask for a GPU by default
  max_attempts: 1
  params:
    tapt: {texts: ["{train}", "{test}"], epochs: 1, batch_size: 32, max_length: 48, lr: 1e-3, precision: fp32}
    finetune: {train: "{train}", test: "{test}", epochs: 2, batch_size: 32, max_length: 48, lr: 2e-3,
               precision: fp32, focal_gamma: 1.0, label_smoothing: 0.05,
               not_learning_epoch: 0}  # 320 rows, 2 epochs: learning is not what this chain tests
jobs:
  - {name: tapt, kind: tapt, priority: 30}
  - {name: ft, kind: finetune, priority: 20, after: [tapt], params: {model: {from: tapt}}}
  - {name: retrain, kind: finetune, priority: 10, after: [ft],
     params: {model: {from: tapt}, full_data: true, epochs_from: ft}}
  - {name: predict, kind: predict, after: [retrain], params: {model: {from: retrain}, csv: "{test}"}}
"""


@pytest.mark.slow
def test_tapt_finetune_retrain_predict_through_the_queue(small_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCHED_CACHE_DIR", str(tmp_path / "token-cache"))
    url = run_campaign(CHAIN % {"train": small_data[0], "test": small_data[1]}, tmp_path)
    runner = CliRunner()
    status = json.loads(runner.invoke(cli, ["--db", url, "status", "--json"]).output)
    assert {j["name"]: j["status"] for j in status["jobs"]} == dict.fromkeys(
        ["tapt", "ft", "retrain", "predict"], "succeeded"), status

    records = Records(JobQueue(url))
    tapt, ft, retrain, predict = (records.job(n) for n in ("tapt", "ft", "retrain", "predict"))
    assert tapt.metrics["final_mlm_loss"] > 0 and "mlm_loss" in {m["key"] for m in tapt.history}
    assert 0 <= ft.metrics["val_accuracy"] <= 1 and 0 <= ft.metrics["val_f1"] <= 1
    val_epochs = [m for m in ft.history if m["key"] == "accuracy" and m["split"] == "val"]
    assert len(val_epochs) == 2  # one evaluation per epoch
    assert np.load(ft.artifacts["val_logits"]).shape[1] == 4
    assert np.load(ft.artifacts["test_logits"]).shape == (60, 4)
    assert retrain.metrics["epochs_run"] == ft.metrics["best_epoch"]  # epochs_from
    assert "val_accuracy" not in retrain.metrics  # full data: nothing held out
    assert np.load(retrain.artifacts["test_logits"]).shape == (60, 4)
    # predict reads the retrain's model with the max_length it trained with: its own test logits again
    np.testing.assert_allclose(np.load(predict.artifacts["test_logits"]), np.load(retrain.artifacts["test_logits"]),
                               atol=1e-4)
    rows = pd.read_csv(predict.artifacts["test_predictions"])
    assert len(rows) == 60 and rows["id"].tolist() == list(range(60))
    assert 0 <= predict.metrics["test_accuracy"] <= 1  # the test CSV has labels
