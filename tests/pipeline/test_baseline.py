"""The TF-IDF + logistic regression baseline on real reviews: learns, saves what a member needs, predicts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.baseline import BaselineConfig, predict_baseline, train_baseline
from pipeline.metrics import accuracy


def test_the_baseline_learns_and_saves_logits_like_a_finetune(small_split, test_reviews, tmp_path):
    val = small_split.val.assign(id=range(100, 100 + len(small_split.val)))
    result = train_baseline(BaselineConfig(), small_split.train, val, test_reviews[["text"]], tmp_path)
    majority = small_split.val["label"].value_counts(normalize=True).max()
    assert result.val_accuracy > majority + 0.1, (result.val_accuracy, majority)
    assert result.val_fingerprint == small_split.fingerprint and result.features > 1000
    assert result.cpu_seconds > 0 and result.train_seconds > 0
    val_logits = np.load(result.val_logits_path)
    np.testing.assert_allclose(np.exp(val_logits).sum(axis=1), 1.0, atol=1e-6)  # log-probabilities
    assert accuracy(small_split.val["label"], val_logits.argmax(-1)) == pytest.approx(result.val_accuracy)
    rows = pd.read_csv(result.val_predictions_path)
    assert list(rows.columns) == ["id", "text", "label", "pred", "pred_name", "prob_0", "prob_1", "prob_2", "prob_3"]
    assert rows["id"].tolist() == val["id"].tolist()
    test_rows = pd.read_csv(result.test_predictions_path)
    assert "label" not in test_rows and len(test_rows) == len(test_reviews)
    # the saved model gives the same logits on new rows
    np.testing.assert_allclose(predict_baseline(result.model_path, test_reviews["text"]),
                               np.load(result.test_logits_path), atol=1e-9)
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["config"]["analyzer"] == "char_wb" and saved["val_accuracy"] == result.val_accuracy


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="BaselineConfig: need 1 <= ngram_min <= ngram_max"):
        BaselineConfig(ngram_min=3, ngram_max=2).validate()
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['c'\]"):
        BaselineConfig.from_dict({"c": 1.0})
