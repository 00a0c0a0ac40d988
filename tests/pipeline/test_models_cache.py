"""Model loading (tiny preset, unknown names), special tokens, and the tokenization cache."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline.cache import TokenCache, cache_key


def test_unknown_model_name_raises_model_not_found():
    from pipeline.models import ModelNotFoundError, load_classifier

    with pytest.raises(ModelNotFoundError, match=r"'no/such-model'"):
        load_classifier("no/such-model", num_labels=4)


def test_missing_local_folder_raises_model_not_found(tmp_path):
    from pipeline.models import ModelNotFoundError, load_mlm

    missing = str(tmp_path / "not-there")
    with pytest.raises(ModelNotFoundError, match="not-there"):
        load_mlm(missing)


def test_tiny_loads_through_from_pretrained(tiny_model):
    from transformers import AutoTokenizer

    from pipeline.models import load_classifier

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ids = tokenizer("정말 재미있는 영화")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.unk_token_id not in ids
    model, tok = load_classifier(tiny_model, num_labels=4)
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.num_labels == 4 and model.config.hidden_size == 64
    assert model.config.id2label[3] == "strong positive"
    assert tok.model_max_length == 128


def test_resolve_model_source_builds_once_and_passes_names_through(tmp_path, reviews):
    from pipeline.models import resolve_model_source

    texts = reviews["text"].iloc[:300].tolist()
    first = resolve_model_source("tiny", tmp_path, texts)
    mtime = os.path.getmtime(os.path.join(first, "model.safetensors"))
    assert resolve_model_source("tiny", tmp_path) == first  # reused: no texts needed the second time
    assert os.path.getmtime(os.path.join(first, "model.safetensors")) == mtime
    assert resolve_model_source("klue/roberta-base", tmp_path) == "klue/roberta-base"


def test_add_special_tokens_resizes_embeddings(tiny_model):
    from pipeline.models import load_classifier
    from pipeline.tokenizers import add_special_tokens

    model, tokenizer = load_classifier(tiny_model)
    before = model.get_input_embeddings().weight.shape[0]
    assert add_special_tokens(tokenizer, model, ["[MOVIE]", "[ACTOR]"]) == 2
    assert model.get_input_embeddings().weight.shape[0] == before + 2 == len(tokenizer)
    ids = tokenizer("[MOVIE] 최고")["input_ids"]
    assert tokenizer.convert_tokens_to_ids("[MOVIE]") in ids


def test_token_cache_miss_then_hit(tiny_model, reviews, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = reviews["text"].iloc[:500].tolist()
    cache = TokenCache(str(tmp_path))
    cold = cache.encode(tokenizer, texts, max_length=32)
    warm = cache.encode(tokenizer, texts, max_length=32)
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)
    assert not cold.cache_hit and warm.cache_hit
    assert all(np.array_equal(a, b) for a, b in zip(cold.input_ids, warm.input_ids))
    assert max(len(x) for x in warm.input_ids) == 32
    # A new process (fresh tokenizer object and cache object) hits the same entry.
    again = TokenCache(str(tmp_path))
    again.encode(AutoTokenizer.from_pretrained(tiny_model), texts, max_length=32)
    assert again.stats.hits == 1


def test_token_cache_key_covers_texts_and_length(tiny_model, reviews):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = reviews["text"].iloc[:50].tolist()
    key = cache_key(tokenizer, texts, 32)
    assert cache_key(tokenizer, texts, 64) != key
    assert cache_key(tokenizer, texts[:-1] + [texts[-1] + "!"], 32) != key
    tokenizer(texts[:2], truncation=True, max_length=8)  # mutates backend truncation state
    assert cache_key(tokenizer, texts, 32) == key


def test_a_fingerprint_given_once_hits_the_same_entry_with_identical_ids(tiny_model, reviews, tmp_path):
    from transformers import AutoTokenizer

    from pipeline.cache import tokenizer_fingerprint

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = reviews["text"].iloc[:200].tolist()
    fingerprint = tokenizer_fingerprint(tokenizer)
    assert cache_key(tokenizer, texts, 32, fingerprint=fingerprint) == cache_key(tokenizer, texts, 32)
    cache = TokenCache(str(tmp_path))
    cold = cache.encode(tokenizer, texts, max_length=32)
    warm = cache.encode(tokenizer, texts, max_length=32, fingerprint=fingerprint)
    assert warm.cache_hit and warm.key == cold.key
    assert all(np.array_equal(a, b) for a, b in zip(cold.input_ids, warm.input_ids))


def test_classifier_model_is_load_classifiers_model(tiny_model):
    import torch

    from pipeline.models import classifier_model, load_classifier

    torch.manual_seed(0)
    alone = classifier_model(tiny_model, num_labels=4)
    torch.manual_seed(0)
    paired, _ = load_classifier(tiny_model, num_labels=4)
    assert alone.config.id2label == paired.config.id2label
    assert all(torch.equal(a, b) for a, b in zip(alone.state_dict().values(), paired.state_dict().values()))


def test_token_cache_dir_from_env(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SCHED_CACHE_DIR", str(tmp_path / "from-env"))
    assert TokenCache().cache_dir == str(tmp_path / "from-env")
    assert TokenCache(str(tmp_path / "arg")).cache_dir == str(tmp_path / "arg")


def test_importing_pipeline_does_not_import_torch():
    code = ("import sys, pipeline, pipeline.data, pipeline.config, pipeline.hooks, pipeline.metrics, "
            "pipeline.cache; bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))))
