"""Training on real reviews with tiny models: TAPT, fine-tuning, resume, stop, SWA, OOM recovery."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402

from pipeline.config import TaptConfig  # noqa: E402
from pipeline.hooks import Hooks, StopRequested  # noqa: E402
from pipeline.metrics import accuracy  # noqa: E402
from pipeline.training import finetune, predict, tapt  # noqa: E402


class Recorder:
    """Hooks that remember every call."""

    def __init__(self):
        self.logs, self.progress = [], []

    def hooks(self, **extra) -> Hooks:
        return Hooks(on_log=lambda *a: self.logs.append(a), on_progress=lambda *a: self.progress.append(a),
                     **extra)

    def values(self, key, split):
        return [v for k, v, _, s in self.logs if k == key and s == split]


def weights(model_dir) -> dict:
    return load_file(os.path.join(model_dir, "model.safetensors"))


@pytest.fixture(scope="module")
def tapt_run(tiny_model, reviews, tmp_path_factory):
    rec = Recorder()
    cfg = TaptConfig(model=tiny_model, epochs=2, lr=1e-3, batch_size=32, max_length=64, seed=0,
                     eval_fraction=0.1, whole_word_mask=True)
    result = tapt(cfg, reviews["text"].iloc[3000:3600].tolist(), tmp_path_factory.mktemp("tapt"), rec.hooks())
    return result, rec


def test_tapt_lowers_mlm_loss(tapt_run):
    result, rec = tapt_run
    assert result.initial_mlm_loss is not None
    assert result.final_mlm_loss < result.initial_mlm_loss - 0.3
    val_losses = rec.values("mlm_loss", "val")
    assert len(val_losses) == 3  # before training + one per epoch
    assert rec.values("perplexity", "val")[-1] == pytest.approx(np.exp(val_losses[-1]))
    assert rec.values("mlm_loss", "train")


def test_finetune_starts_from_tapt_checkpoint(tapt_run, tiny_model, small_split, tiny_cfg, tmp_path):
    from pipeline.models import load_classifier

    result, _ = tapt_run
    encoder, _ = load_classifier(result.model_dir)
    tapt_emb = weights(result.model_dir)["bert.embeddings.word_embeddings.weight"]
    base_emb = weights(tiny_model)["bert.embeddings.word_embeddings.weight"]
    assert not torch.equal(tapt_emb, base_emb)  # TAPT changed the encoder
    assert torch.equal(encoder.bert.embeddings.word_embeddings.weight, tapt_emb)  # ...and it is what loads

    ft = finetune(tiny_cfg(model=result.model_dir, epochs=1), small_split.train.iloc[:200],
                  small_split.val, None, tmp_path)
    assert ft.epochs_run == 1 and ft.val_accuracy is not None
    tuned = weights(ft.model_dir)["bert.embeddings.word_embeddings.weight"]
    assert (tuned - tapt_emb).abs().max() < (tuned - base_emb).abs().max()


CLASS_WORDS = ("최악이다", "별로다", "괜찮다", "최고다")


def keyed(df):
    """The reviews with a word for their class appended: a signal the tiny model learns from any start.
    On the plain reviews 800 rows gave 0.28-0.41 test accuracy across tokenizer builds (0.25 is
    chance), too close to the bar for a test of whether training works at all."""
    return df.assign(text=df["text"] + " " + df["label"].map(lambda label: CLASS_WORDS[label]))


def test_finetune_beats_majority_baseline(small_split, test_reviews, tiny_cfg, tmp_path):
    from pipeline.data import rows_fingerprint

    rec = Recorder()
    # The not-learning check runs as it does by default: a run that learns passes it.
    cfg = tiny_cfg(epochs=8, lr=2e-3, not_learning_epoch=2)
    train, val, test_reviews = keyed(small_split.train), keyed(small_split.val), keyed(test_reviews)
    result = finetune(cfg, train, val, test_reviews, tmp_path, rec.hooks())
    test_logits = np.load(result.test_logits_path)
    majority = test_reviews["label"].value_counts(normalize=True).max()
    test_acc = accuracy(test_reviews["label"], test_logits.argmax(-1))
    assert test_acc > majority + 0.4, (test_acc, majority)  # 0.97 here: the class word is learned
    # Per-epoch validation metrics reached the hooks; progress counted every step.
    assert len(rec.values("accuracy", "val")) == len(rec.values("f1", "val")) == 8
    assert len(rec.values("loss", "val")) == 8 and len(rec.values("loss", "train")) == 8
    assert rec.progress[-1][0] == rec.progress[-1][1] == result.global_step
    # Files: final model loads and predicts the saved test logits; predictions CSV is readable.
    np.testing.assert_allclose(predict(result.model_dir, test_reviews["text"].tolist(), max_length=64),
                               test_logits, atol=1e-4)
    assert len(np.load(result.val_logits_path)) == len(val)
    assert result.val_fingerprint == rows_fingerprint(val)
    saved = json.loads(open(os.path.join(tmp_path, "result.json")).read())
    assert saved["val_accuracy"] == result.val_accuracy and 1 <= result.best_epoch <= 8


def crash_after_epoch_1(event, state):
    """A fault hook: the run dies once its first epoch's checkpoint is on disk."""
    if event == "epoch_end" and state["epoch"] >= 1:
        raise RuntimeError("simulated crash")


def test_interrupted_finetune_resumes_without_repeating_epochs(small_split, tiny_cfg, tmp_path):
    data = small_split.train.iloc[:320]  # 10 steps per epoch at batch 32

    cfg = tiny_cfg(epochs=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(cfg, data, small_split.val, None, tmp_path, Hooks(fault=crash_after_epoch_1))
    assert os.path.isdir(tmp_path / "checkpoints" / "checkpoint-10")

    rec = Recorder()
    result = finetune(cfg, data, small_split.val, None, tmp_path, rec.hooks())
    assert result.resumed_from.endswith("checkpoint-10")
    assert result.start_epoch == 1 and result.epochs_run == 3 and result.global_step == 30
    assert rec.progress[0][0] == 11  # the first step run is the first of epoch 2
    assert len(rec.values("accuracy", "val")) == 2  # epochs 2 and 3 only
    assert os.path.exists(result.val_logits_path)


def test_stop_request_checkpoints_then_resumes(small_split, tiny_cfg, tmp_path):
    data = small_split.train.iloc[:320]
    steps = []

    def stop_after_3_steps():
        steps.append(1)
        return len(steps) >= 3

    cfg = tiny_cfg(epochs=1)
    with pytest.raises(StopRequested) as stopped:
        finetune(cfg, data, small_split.val, None, tmp_path, Hooks(should_stop=stop_after_3_steps))
    assert stopped.value.checkpoint.endswith("checkpoint-3") and os.path.isdir(stopped.value.checkpoint)
    result = finetune(cfg, data, small_split.val, None, tmp_path)
    assert result.resumed_from.endswith("checkpoint-3") and result.global_step == 10


def test_swa_final_weights_are_the_average_of_the_last_epochs(small_split, tiny_cfg, tmp_path):
    data = small_split.train.iloc[:320]
    result = finetune(tiny_cfg(epochs=3, swa_epochs=2), data, small_split.val, None, tmp_path)
    final = weights(result.model_dir)
    epoch2, epoch3 = (weights(tmp_path / "checkpoints" / f"checkpoint-{s}") for s in (20, 30))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(final[key], epoch3[key])  # SWA changed the final weights
    for name in final:
        torch.testing.assert_close(final[name], (epoch2[name] + epoch3[name]) / 2, rtol=1e-5, atol=1e-6)
    assert os.path.exists(tmp_path / "checkpoints" / "checkpoint-30" / "swa_state.pt")


def test_oom_halves_batch_doubles_accumulation_and_resumes(small_split, test_reviews, tiny_cfg, tmp_path):
    rec = Recorder()
    seen = []

    def oom_in_epoch_2(event, state):
        if event == "step_begin":
            seen.append((state["batch_size"], state["grad_accum"]))
            if state["batch_size"] == 16 and state["global_step"] >= 12:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by test)")

    cfg = tiny_cfg(epochs=2, batch_size=16, grad_accum=1, full_data=True)
    # full_data: trains on train+val (160 + 32 = 192 rows: 12 steps of 16 per epoch), no evaluation.
    result = finetune(cfg, small_split.train.iloc[:160], small_split.val.iloc[:32], test_reviews.iloc[:50],
                      tmp_path, rec.hooks(fault=oom_in_epoch_2))
    assert (result.batch_size, result.grad_accum, result.oom_retries) == (8, 2, 1)
    assert seen[0] == (16, 1) and seen[-1] == (8, 2)
    assert rec.values("oom_batch_size", "train") == [8.0]
    # Carried on from epoch 1's checkpoint with the same effective batch: still 12 steps per epoch.
    assert result.resumed_from.endswith("checkpoint-12") and result.global_step == 24
    assert result.val_accuracy is None and np.load(result.test_logits_path).shape == (50, 4)
    assert json.loads((tmp_path / "run_state.json").read_text())["batch_size"] == 8


def test_oom_at_batch_one_gives_clear_error(small_split, tiny_cfg, tmp_path):
    def always_oom(event, state):
        if event == "step_begin":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by test)")

    with pytest.raises(RuntimeError, match="even at per-device batch size 1"):
        finetune(tiny_cfg(epochs=1, batch_size=2), small_split.train.iloc[:8], None, None, tmp_path,
                 Hooks(fault=always_oom))


def test_early_stopping_stops_when_metric_stalls(small_split, tiny_cfg, tmp_path):
    # lr this small leaves predictions unchanged: accuracy never improves after epoch 1.
    cfg = tiny_cfg(epochs=5, lr=1e-12, early_stopping_patience=1, metric_for_best="accuracy")
    result = finetune(cfg, small_split.train.iloc[:160], small_split.val, None, tmp_path)
    assert result.epochs_run == 2 and result.best_epoch == 1


def test_swa_average_survives_a_crash_and_resume(small_split, tiny_cfg, tmp_path):
    data = small_split.train.iloc[:320]

    def crash_after_epoch_2(event, state):
        if event == "epoch_end" and state["epoch"] >= 2:
            raise RuntimeError("simulated crash")

    cfg = tiny_cfg(epochs=3, swa_epochs=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(cfg, data, small_split.val, None, tmp_path, Hooks(fault=crash_after_epoch_2))
    result = finetune(cfg, data, small_split.val, None, tmp_path)
    assert result.start_epoch == 2
    final = weights(result.model_dir)
    epoch2, epoch3 = (weights(tmp_path / "checkpoints" / f"checkpoint-{s}") for s in (20, 30))
    for name in final:
        torch.testing.assert_close(final[name], (epoch2[name] + epoch3[name]) / 2, rtol=1e-5, atol=1e-6)


def test_resume_refuses_a_different_config(small_split, tiny_cfg, tmp_path):
    def crash(event, state):
        if event == "epoch_end":
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError):
        finetune(tiny_cfg(epochs=2), small_split.train.iloc[:64], None, None, tmp_path, Hooks(fault=crash))
    with pytest.raises(ValueError, match=r"different config \(changed: \['lr'\]\)"):
        finetune(tiny_cfg(epochs=2, lr=1e-4), small_split.train.iloc[:64], None, None, tmp_path)


def test_special_tokens_are_added_and_the_embeddings_resized(small_split, tiny_cfg, tmp_path):
    from pipeline.models import load_classifier

    train = small_split.train.head(64).copy()
    train.loc[train.index[0], "text"] = "[MOVIE] 최고의 영화 [MOVIE]"
    result = finetune(tiny_cfg(epochs=1, special_tokens=["[MOVIE]"]), train, small_split.val.head(32),
                      None, tmp_path)
    model, tokenizer = load_classifier(result.model_dir, num_labels=None)
    token_id = tokenizer.convert_tokens_to_ids("[MOVIE]")
    assert token_id != tokenizer.unk_token_id
    assert tokenizer.tokenize("[MOVIE] 좋다")[0] == "[MOVIE]"  # kept whole, not split into pieces
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) > token_id


def test_resume_skips_a_checkpoint_a_kill_left_half_written(small_split, tiny_cfg, tmp_path):
    data = small_split.train.iloc[:320]

    cfg = tiny_cfg(epochs=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(cfg, data, small_split.val, None, tmp_path, Hooks(fault=crash_after_epoch_1))
    half = tmp_path / "checkpoints" / "checkpoint-15"  # as if killed while saving: no trainer_state.json
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"truncated")
    result = finetune(cfg, data, small_split.val, None, tmp_path)
    assert result.resumed_from.endswith("checkpoint-10") and result.epochs_run == 2
    assert not half.exists()


@pytest.mark.parametrize("takes_tensor_type", [True, False], ids=["create_rng(pt)", "create_rng()"])
def test_seeded_masking_works_with_either_create_rng_signature(tiny_model, takes_tensor_type, monkeypatch):
    # transformers up to 5.17 has create_rng(self); later 5.x has create_rng(self, return_tensors).
    from transformers import AutoTokenizer

    from pipeline.batching import MLMPadCollator

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = [{"input_ids": np.array(tokenizer("정말 재미있는 영화였어요 다시 보고 싶다")["input_ids"])}] * 8

    def masks():
        collator = MLMPadCollator(tokenizer, mlm_probability=0.5, seed=7)
        real = type(collator.masker).create_rng
        if takes_tensor_type:
            monkeypatch.setattr(collator.masker, "create_rng", lambda return_tensors=None: real(collator.masker, "pt"))
        else:
            monkeypatch.setattr(collator.masker, "create_rng", lambda: real(collator.masker, "pt"))
        return collator(rows)["labels"]

    first, second = masks(), masks()
    assert (first != -100).any()
    assert torch.equal(first, second)  # the seed took: the same positions are masked each time
