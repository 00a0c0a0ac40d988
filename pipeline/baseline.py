"""A classical baseline: TF-IDF character n-grams + logistic regression (scikit-learn), on the CPU.

Character n-grams suit Korean reviews: words carry particles and endings, and slang and typos break
word-level vocabularies, while syllable n-grams still match. It trains in seconds on 10k rows and is
the bar a transformer has to clear. Its outputs have the fine-tune's shapes (val/test logits, the
project's predictions files), so it can be an ensemble member.

Logits are log-probabilities (softmax of them gives the model's probabilities back).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass

import joblib
import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from .config import BaselineConfig
from .data import rows_fingerprint
from .metrics import accuracy, macro_f1
from .predictions import write_predictions

MODEL_FILE = "model.joblib"
# Clip before the log: a probability of exactly 0 would give -inf logits.
_EPS = 1e-12


@dataclass
class BaselineResult:
    model_path: str
    val_accuracy: float | None
    val_f1: float | None
    val_fingerprint: str | None
    val_logits_path: str | None
    test_logits_path: str | None
    val_predictions_path: str | None
    test_predictions_path: str | None
    features: int  # n-grams in the vocabulary
    train_seconds: float  # wall-clock
    cpu_seconds: float  # this process's CPU time (what the baseline costs; it needs no GPU)


def build(cfg: BaselineConfig) -> Pipeline:
    vectorizer = TfidfVectorizer(analyzer=cfg.analyzer, ngram_range=(cfg.ngram_min, cfg.ngram_max),
                                 min_df=cfg.min_df, max_features=cfg.max_features, sublinear_tf=cfg.sublinear_tf,
                                 dtype=np.float32)
    return Pipeline([("tfidf", vectorizer), ("logreg", LogisticRegression(C=cfg.C, max_iter=cfg.max_iter))])


def log_probs(model: Pipeline, texts, num_labels: int) -> np.ndarray:
    """[n_texts, num_labels] log-probabilities; a class absent from training gets probability ~0."""
    probs = np.zeros((len(texts), num_labels))
    probs[:, model.classes_] = model.predict_proba(list(texts))
    return np.log(np.clip(probs, _EPS, None))


def save(model: Pipeline, num_labels: int, path: str) -> None:
    joblib.dump({"pipeline": model, "num_labels": num_labels}, path)


def predict_baseline(path: str, texts) -> np.ndarray:
    """Log-probabilities of a saved baseline. joblib unpickles: load only files this project wrote
    (a baseline job's `model` artifact), never one from elsewhere."""
    saved = joblib.load(path)
    return log_probs(saved["pipeline"], texts, saved["num_labels"])


def train_baseline(cfg: BaselineConfig, train_df: pd.DataFrame, val_df: pd.DataFrame | None,
                   test_df: pd.DataFrame | None, output_dir: str | os.PathLike) -> BaselineResult:
    """Fit on `train_df` (text, label), score `val_df`, write logits and predictions like a fine-tune."""
    cfg.validate()
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    wall, cpu = time.perf_counter(), time.process_time()
    model = build(cfg).fit(train_df["text"].tolist(), train_df["label"].to_numpy())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    model_path = os.path.join(output_dir, MODEL_FILE)
    save(model, cfg.num_labels, model_path)
    paths = dict.fromkeys(("val_logits", "val_predictions", "test_logits", "test_predictions"))
    val_acc = val_f1 = None
    for split, frame in (("val", val_df), ("test", test_df)):
        if frame is None or not len(frame):
            continue
        logits = log_probs(model, frame["text"], cfg.num_labels)
        paths[f"{split}_logits"] = os.path.join(output_dir, f"{split}_logits.npy")
        np.save(paths[f"{split}_logits"], logits)
        labels = frame["label"] if "label" in frame else None
        paths[f"{split}_predictions"] = write_predictions(
            os.path.join(output_dir, f"{split}_predictions.csv"), np.exp(logits),
            ids=frame["id"] if "id" in frame else None, texts=frame["text"], labels=labels)
        if split == "val":
            val_acc = accuracy(labels, logits.argmax(-1))
            val_f1 = macro_f1(labels, logits.argmax(-1), cfg.num_labels)
    result = BaselineResult(
        model_path=model_path, val_accuracy=val_acc, val_f1=val_f1,
        val_fingerprint=rows_fingerprint(val_df) if val_df is not None else None,
        val_logits_path=paths["val_logits"], test_logits_path=paths["test_logits"],
        val_predictions_path=paths["val_predictions"], test_predictions_path=paths["test_predictions"],
        features=len(model.named_steps["tfidf"].vocabulary_), train_seconds=wall, cpu_seconds=cpu)
    with open(os.path.join(output_dir, "result.json"), "w", encoding="utf-8") as f:
        json.dump({**dataclasses.asdict(result), "config": cfg.to_dict()}, f, indent=1)
    return result
