"""Shared fixtures for the pipeline tests: real reviews from data/, one tiny model per session.

Tiny models (2 layers, hidden 64, WordPiece vocab up to 8000 trained on the reviews) are built from a
config and saved to a folder, so every test loads them through ``from_pretrained(folder)``: the
code path a hub model takes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing here may reach the network; set before transformers is imported by any test module.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no load reports in test output

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="session", autouse=True)
def token_cache_dir(tmp_path_factory):
    """Keep the tokenization cache out of ~/.cache for the whole session."""
    path = tmp_path_factory.mktemp("token_cache")
    old = os.environ.get("SCHED_CACHE_DIR")
    os.environ["SCHED_CACHE_DIR"] = str(path)
    yield str(path)
    if old is None:
        os.environ.pop("SCHED_CACHE_DIR", None)
    else:
        os.environ["SCHED_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def reviews():
    """All 12,000 demo training reviews (columns text, label)."""
    from pipeline.data import load_labeled_csv

    return load_labeled_csv(DATA / "reviews_train.csv")


@pytest.fixture(scope="session")
def test_reviews():
    """400 held-out reviews (100 per label) from the demo test file."""
    from pipeline.data import load_labeled_csv

    df = load_labeled_csv(DATA / "reviews_test.csv")
    return df.groupby("label", group_keys=False).head(100).reset_index(drop=True)


@pytest.fixture(scope="session")
def small_split(reviews):
    """1,000 reviews split 800 train / 200 validation (stratified, fixed seed)."""
    from pipeline.data import stratified_split

    return stratified_split(reviews.iloc[:1000], val_fraction=0.2, seed=0)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, reviews) -> str:
    """A saved random-init tiny BERT (MLM head) + tokenizer trained on 3,000 reviews."""
    from pipeline.models import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny"), reviews["text"].iloc[:3000].tolist())


@pytest.fixture
def tiny_cfg(tiny_model):
    """Fast fine-tuning settings for the tiny model; tests override what they exercise.

    The not-learning check is off: these runs test mechanics (resume, SWA, OOM) on a few hundred rows,
    where a tiny model need not learn; the tests of learning and of the check turn it on.
    """
    from pipeline.config import FinetuneConfig

    def make(**overrides):
        values = dict(model=tiny_model, epochs=2, lr=2e-3, batch_size=32, warmup_ratio=0.1, seed=0,
                      max_length=64, save_total_limit=None, not_learning_epoch=0)
        values.update(overrides)
        return FinetuneConfig(**values)

    return make
