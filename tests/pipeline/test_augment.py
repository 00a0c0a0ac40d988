"""Back-translation augmentation: the filter, tiny seq2seq models loaded by path, augment_csv, the job.

The two "translation" models are tiny random-init Marian models with a WordPiece tokenizer trained
on 200 real reviews, saved to folders and loaded through ``from_pretrained(path)`` like a hub model.
Their output is junk text; these tests check the mechanics, not translation quality.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.augment import DROP_REASONS, TranslationModelError, filter_augmented  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
_LOCAL = ROOT / "data" / "reviews_train.csv"
TRAIN_CSV = _LOCAL if _LOCAL.exists() else Path("/work/shared/data/reviews_train.csv")
# Loose bounds so the tiny models' junk (about the same length whatever the input) is not all dropped.
LOOSE = dict(min_length_ratio=0.0, max_length_ratio=100.0)


def build_tiny_translator(out_dir: Path, texts: list[str], seed: int) -> str:
    """Save a random-init tiny MarianMTModel plus a WordPiece tokenizer trained on ``texts``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"], limit_alphabet=200))
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>", model_max_length=64)
    config = MarianConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
        decoder_start_token_id=tokenizer.pad_token_id, forced_eos_token_id=eos,
        init_std=1.0,  # large random weights: outputs depend on the input, so they are mostly distinct
    )
    torch.manual_seed(seed)
    MarianMTModel(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return str(out_dir)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine spinning OpenMP threads made
    generate() 100x slower (measured: 3.3 s vs 0.02 s); restored after each test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def sample_rows() -> pd.DataFrame:
    """The first 240 rows of the demo training file, as strings (review, label, rating)."""
    return pd.read_csv(TRAIN_CSV, dtype=str, keep_default_na=False, nrows=240)


@pytest.fixture(scope="session")
def translators(tmp_path_factory, sample_rows) -> tuple[str, str]:
    texts = sample_rows["review"].iloc[:200].tolist()
    root = tmp_path_factory.mktemp("translators")
    return (build_tiny_translator(root / "ko-en", texts, seed=0),
            build_tiny_translator(root / "en-ko", texts, seed=1))


@pytest.fixture
def train_csv(tmp_path, sample_rows) -> Path:
    """40 real reviews (10 per label) with all three columns, in a CSV of their own."""
    rows = sample_rows.groupby("label", group_keys=False).head(10).reset_index(drop=True)
    path = tmp_path / "train.csv"
    rows.to_csv(path, index=False)
    return path


# ---------------------------------------------------------------- filter


def test_filter_drops_each_reason():
    originals = ["정말 재미있는 영화", "최악의 영화였다", "배우 연기가 좋았다", "음악이 정말 좋네요",
                 "시간 아까운 영화", "너무 길고 지루했다", "감동적인 이야기", "감동적인 이야기 최고"]
    augmented = ["  ", "최악의  영화였다 ", "좋다", "음악이 정말 좋네요 음악이 정말 좋네요 음악이 정말 좋네요",
                 "정말 재미있는 영화",  # another original text
                 "길고 지루한 영화", "길고 지루한 영화",  # the second repeats the first kept output
                 "감동적인 좋은 이야기"]
    labels = [3, 0, 2, 3, 0, 1, 2, 3]
    kept, dropped = filter_augmented(originals, augmented, labels)
    assert dropped == {"empty": 1, "identical": 1, "too_short": 1, "too_long": 1, "duplicate": 2}
    assert set(dropped) == set(DROP_REASONS)
    assert list(kept.columns) == ["review", "label", "source_review"]
    assert kept.index.tolist() == [5, 7]  # positions in the inputs
    assert kept["review"].tolist() == ["길고 지루한 영화", "감동적인 좋은 이야기"]
    assert kept["label"].tolist() == [1, 3]
    assert kept["source_review"].tolist() == ["너무 길고 지루했다", "감동적인 이야기 최고"]


def test_filter_normalizes_and_checks_reference_texts():
    kept, dropped = filter_augmented(["Good movie"], ["good   MOVIE"], [3])
    assert dropped["identical"] == 1 and kept.empty
    kept, dropped = filter_augmented(["좋은 영화"], ["멋진 영화"], [3], reference_texts=["멋진  영화"])
    assert dropped["duplicate"] == 1 and kept.empty
    # Bounds are inclusive: ratio exactly 0.5 and 2.0 are kept.
    kept, _ = filter_augmented(["abcd", "abcd"], ["ab", "abcdefgh"], [0, 1])
    assert kept["review"].tolist() == ["ab", "abcdefgh"]


def test_filter_rejects_bad_arguments():
    with pytest.raises(ValueError, match="differ in length"):
        filter_augmented(["a", "b"], ["c"], [0, 1])
    with pytest.raises(ValueError, match="min_length_ratio"):
        filter_augmented(["a"], ["b"], [0], min_length_ratio=2.0, max_length_ratio=1.0)


# ---------------------------------------------------------------- back_translate


def test_back_translate_loads_by_path_and_keeps_order(translators, sample_rows):
    from pipeline.augment import back_translate

    texts = sample_rows["review"].iloc[:12].tolist()
    calls = []
    out = back_translate(texts, *translators, batch_size=5, max_length=24,
                         on_progress=lambda done, total, msg: calls.append((done, total, msg)))
    assert len(out) == len(texts) and all(isinstance(t, str) for t in out)
    assert any(out)  # random weights, but not all empty
    # 3 batches each way, reported after every batch, ending at 2 * len(texts).
    assert [c[0] for c in calls] == [5, 10, 12, 17, 22, 24]
    assert {c[1] for c in calls} == {24} and calls[0][2].startswith("forward") and calls[-1][2].startswith("backward")
    # Deterministic, and each output belongs to its input whatever the input order.
    again = back_translate(texts[::-1], *translators, batch_size=len(texts), max_length=24)
    first = back_translate(texts, *translators, batch_size=len(texts), max_length=24)
    assert again[::-1] == first
    assert back_translate([], *translators) == []


def test_back_translate_stops_between_batches(translators, sample_rows):
    from pipeline.augment import back_translate
    from pipeline.hooks import StopRequested

    polls = []

    def should_stop():
        polls.append(1)
        return len(polls) > 2  # let two batches run, stop before the third

    calls = []
    with pytest.raises(StopRequested):
        back_translate(sample_rows["review"].iloc[:12].tolist(), *translators, batch_size=4, max_length=16,
                       on_progress=lambda *a: calls.append(a), should_stop=should_stop)
    assert [c[0] for c in calls] == [4, 8]


def test_unknown_model_path_names_the_model(translators, tmp_path):
    from pipeline.augment import back_translate

    missing = str(tmp_path / "no-such-model")
    calls = []
    # The backward model is checked before the forward translation runs.
    with pytest.raises(TranslationModelError, match="backward.*no-such-model") as info:
        back_translate(["좋은 영화"], translators[0], missing, on_progress=lambda *a: calls.append(a))
    assert isinstance(info.value, ValueError) and calls == []
    with pytest.raises(TranslationModelError, match="'no/such-model'"):
        back_translate(["좋은 영화"], "no/such-model", translators[1])


def test_encoder_only_model_is_rejected(tmp_path):
    from transformers import BertConfig

    from pipeline.augment import check_translation_model

    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config.save_pretrained(tmp_path)
    with pytest.raises(TranslationModelError, match="not a sequence-to-sequence.*'bert'"):
        check_translation_model(str(tmp_path))


# ---------------------------------------------------------------- augment_csv


def test_augment_csv_writes_training_columns(translators, train_csv, tmp_path):
    from pipeline.augment import augment_csv
    from pipeline.data import load_labeled_csv

    out = tmp_path / "out" / "augmented.csv"
    stats = augment_csv(train_csv, out, *translators, batch_size=16, max_length=24, **LOOSE)
    source = pd.read_csv(train_csv, dtype=str, keep_default_na=False)
    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(written.columns) == list(source.columns) == ["review", "label", "rating"]
    assert stats["candidates"] == 40 and stats["holdout_rows"] == 0
    assert stats["augmented_rows"] == len(written) > 0
    assert stats["augmented_rows"] + sum(stats[f"dropped_{r}"] for r in DROP_REASONS) == 40
    assert stats["kept_fraction"] == pytest.approx(len(written) / 40)
    assert set(written["label"]) <= {"0", "1", "2", "3"}
    assert not set(written["review"]) & set(source["review"])
    assert not written["review"].duplicated().any()
    loaded = load_labeled_csv(out)  # what a fine-tune's extra_train does with it
    assert len(loaded) == len(written)
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]


def test_augment_csv_fraction_holdout_and_source_column(translators, train_csv, tmp_path):
    from pipeline.augment import augment_csv
    from pipeline.data import load_labeled_csv, stratified_split

    out = tmp_path / "augmented.csv"
    stats = augment_csv(train_csv, out, *translators, fraction=0.5, seed=3, max_length=24,
                        val_fraction=0.2, split_seed=7, source_column="source_review", **LOOSE)
    # 8 per label left after validation (2 per label), half of each label drawn.
    assert stats["holdout_rows"] == 8 and stats["candidates"] == 16
    source = pd.read_csv(train_csv, dtype=str, keep_default_na=False)
    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(written.columns) == ["review", "label", "rating", "source_review"]
    val = set(stratified_split(load_labeled_csv(train_csv), 0.2, 7).val["text"])
    assert not set(written["source_review"]) & val  # no paraphrase of a validation review
    by_text = source.set_index("review")
    for _, row in written.iterrows():  # label and the other columns come from the source row
        assert (row["label"], row["rating"]) == tuple(by_text.loc[row["source_review"], ["label", "rating"]])


def test_augment_csv_reports_bad_training_file(translators, tmp_path):
    from pipeline.augment import augment_csv
    from pipeline.data import DataError

    bad = tmp_path / "bad.csv"
    bad.write_text("review,label\n좋다,7\n", encoding="utf-8")
    with pytest.raises(DataError, match="outside 0..3"):
        augment_csv(bad, tmp_path / "out.csv", *translators)


# ---------------------------------------------------------------- the job


def _ctx(tmp_path, **kwargs):
    from jobs.context import JobContext, MemoryReporter

    return JobContext(job_id=1, name="augment-bt", output_dir=tmp_path / "run", device="cpu",
                      reporter=MemoryReporter(), **kwargs)


def test_augment_job_records_artifact_and_metrics(translators, train_csv, tmp_path):
    from jobs.augment import Params, run

    ctx = _ctx(tmp_path)
    params = Params(train=str(train_csv), forward_model=translators[0], backward_model=translators[1],
                    max_length=24, batch_size=8, **LOOSE)
    run(params, ctx)
    reporter = ctx.reporter
    path = Path(reporter.artifacts["augmented_csv"])
    assert path == (ctx.output_dir / "augmented.csv").resolve() and path.exists()
    metrics = {m["key"]: m["value"] for m in reporter.metrics}
    assert {"augmented_rows", "kept_fraction", "candidates"} <= set(metrics)
    assert {f"dropped_{r}" for r in DROP_REASONS} <= set(metrics)
    assert metrics["augmented_rows"] == len(pd.read_csv(path)) > 0
    assert metrics["candidates"] == 36  # default val_fraction 0.1 holds out 1 row per label
    assert reporter.progress_updates[-1][:2] == (72, 72)


def test_augment_job_preempted_between_batches(translators, train_csv, tmp_path):
    from jobs.augment import Params, run
    from jobs.context import Preempted

    ctx = _ctx(tmp_path, stop_requested=lambda: True)
    params = Params(train=str(train_csv), forward_model=translators[0], backward_model=translators[1],
                    max_length=16)
    with pytest.raises(Preempted):
        run(params, ctx)
    assert ctx.reporter.artifacts == {} and not (ctx.output_dir / "augmented.csv").exists()


def test_params_reject_unknown_keys_and_bad_values():
    from pydantic import ValidationError

    from jobs import ParamsError, get_kind
    from jobs.augment import Params

    kind = get_kind("augment")
    assert kind.params_model is Params
    with pytest.raises(ParamsError, match="params.beams: unknown key"):
        kind.parse({"forward_model": "a", "backward_model": "b", "beams": 4})
    with pytest.raises(ValidationError):
        Params(forward_model="a", backward_model="b", fraction=0)
    with pytest.raises(ValidationError, match="below min_length_ratio"):
        Params(forward_model="a", backward_model="b", min_length_ratio=1.5, max_length_ratio=1.0)
    with pytest.raises(ValidationError):
        Params(forward_model="a")  # backward_model is required
    assert Params(forward_model="a", backward_model="b").val_fraction == 0.1


def test_params_import_without_torch():
    code = ("import sys, jobs.augment; jobs.augment.Params(forward_model='a', backward_model='b'); "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
