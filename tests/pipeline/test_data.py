"""Loading and validating the review CSVs, and the deterministic validation split."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.data import DataError, load_labeled_csv, load_texts, normalize_text, stratified_split


def write(tmp_path, content: str | bytes, name: str = "reviews.csv"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_loads_text_and_int_labels_normalized(tmp_path):
    # "한" written as decomposed jamo (NFD) must come back composed (NFC); whitespace collapsed.
    decomposed = "\u1112\u1161\u11ab"
    path = write(tmp_path, f"review,label,rating\n  좋다   정말 ,3,10\n{decomposed}  번,0,1\n")
    df = load_labeled_csv(path)
    assert list(df.columns) == ["text", "label"]
    assert df["text"].tolist() == ["좋다 정말", "한 번"]
    assert df["label"].tolist() == [3, 0]
    assert df["label"].dtype.kind == "i"


def test_missing_file_names_it(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        load_labeled_csv(tmp_path / "nope.csv")


def test_empty_file(tmp_path):
    with pytest.raises(DataError, match=r"reviews\.csv: file is empty"):
        load_labeled_csv(write(tmp_path, ""))


def test_header_only_file(tmp_path):
    with pytest.raises(DataError, match="no data rows"):
        load_labeled_csv(write(tmp_path, "review,label\n"))


def test_missing_column_lists_available(tmp_path):
    path = write(tmp_path, "text,stars\n좋다,3\n")
    with pytest.raises(DataError) as err:
        load_labeled_csv(path)
    message = str(err.value)
    assert str(path) in message and "missing column 'review'" in message
    assert "'text', 'stars'" in message


def test_nan_and_blank_text_give_row_numbers(tmp_path):
    path = write(tmp_path, "review,label\n좋다,3\n,0\n   ,1\n별로,0\n")
    with pytest.raises(DataError, match=r"column 'review' is empty or missing in 2 row\(s\): data row 2, 3"):
        load_labeled_csv(path)


def test_label_out_of_range_names_value_and_row(tmp_path):
    path = write(tmp_path, "review,label\n좋다,3\n별로,7\n")
    with pytest.raises(DataError, match=r"label 7 in column 'label' is outside 0\.\.3 at data row 2"):
        load_labeled_csv(path)


def test_negative_label_rejected(tmp_path):
    with pytest.raises(DataError, match=r"label -1 .* at data row 1"):
        load_labeled_csv(write(tmp_path, "review,label\n좋다,-1\n"))


@pytest.mark.parametrize("bad", ["2.5", "positive", ""])
def test_non_integer_label_names_value_and_row(tmp_path, bad):
    path = write(tmp_path, f"review,label\n좋다,3\n별로,0\n음,{bad}\n")
    with pytest.raises(DataError, match=rf"found '{bad}' at data row 3"):
        load_labeled_csv(path)


def test_non_utf8_file(tmp_path):
    path = write(tmp_path, "review,label\n좋은 영화,3\n".encode("cp949"))
    with pytest.raises(DataError, match=r"reviews\.csv: not valid UTF-8"):
        load_labeled_csv(path)


def test_utf8_bom_is_accepted(tmp_path):
    path = write(tmp_path, "\ufeffreview,label\n좋다,3\n".encode("utf-8"))
    assert load_labeled_csv(path)["text"].tolist() == ["좋다"]


def test_custom_columns_and_num_labels(tmp_path):
    path = write(tmp_path, "body,y\n좋다,1\n별로,0\n")
    df = load_labeled_csv(path, text_column="body", label_column="y", num_labels=2)
    assert df["label"].tolist() == [1, 0]
    with pytest.raises(DataError, match="outside 0..1"):
        load_labeled_csv(write(tmp_path, "body,y\n좋다,2\n", "b.csv"), "body", "y", num_labels=2)


def test_load_texts_ignores_labels(tmp_path):
    path = write(tmp_path, "review\n 좋다 \n별로\n")
    assert load_texts(path) == ["좋다", "별로"]


def test_normalize_text():
    assert normalize_text("a\t\tb \n c ") == "a b c"


def _frame(n_per_label=50):
    rows = [(f"review {label}-{i}", label) for label in range(4) for i in range(n_per_label)]
    return pd.DataFrame(rows, columns=["text", "label"])


def test_split_is_stratified_and_disjoint():
    split = stratified_split(_frame(), val_fraction=0.2, seed=1)
    assert split.val["label"].value_counts().to_dict() == {0: 10, 1: 10, 2: 10, 3: 10}
    assert len(split.train) == 160
    assert not set(split.train["text"]) & set(split.val["text"])


def test_split_deterministic_regardless_of_row_order():
    df = _frame()
    a = stratified_split(df, 0.2, seed=1)
    b = stratified_split(df.sample(frac=1.0, random_state=3), 0.2, seed=1)
    assert set(a.val["text"]) == set(b.val["text"])
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16


def test_split_fingerprint_changes_with_seed_and_fraction():
    df = _frame()
    base = stratified_split(df, 0.2, seed=1).fingerprint
    assert stratified_split(df, 0.2, seed=2).fingerprint != base
    assert stratified_split(df, 0.1, seed=1).fingerprint != base


def test_split_rejects_bad_fraction():
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(_frame(), val_fraction=1.0)


def test_demo_data_loads_balanced(reviews):
    assert len(reviews) == 12000
    assert reviews["label"].value_counts().to_dict() == {0: 3000, 1: 3000, 2: 3000, 3: 3000}


# ---- the parsed-CSV cache (pipeline/csvcache.py) -------------------------------------------------

def settled(tmp_path, content: str, name: str = "cached.csv", age_s: float = 60.0):
    """A CSV last modified `age_s` ago: old enough for the cache (younger files are never cached)."""
    import os
    import time

    path = write(tmp_path, content, name)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def no_csv_reads(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the CSV was parsed again")

    monkeypatch.setattr(pd, "read_csv", refuse)


def test_a_csv_read_before_comes_from_the_cache_unchanged(tmp_path, monkeypatch):
    path = settled(tmp_path, "review,label\n  좋다   정말 ,3\n별로,0\nNA,1\n")
    first = load_labeled_csv(path)
    no_csv_reads(monkeypatch)
    again = load_labeled_csv(path)
    pd.testing.assert_frame_equal(again, first)
    assert again["text"].tolist() == ["좋다 정말", "별로", "NA"]


def test_a_changed_csv_is_read_again(tmp_path):
    path = settled(tmp_path, "review,label\n좋다,3\n")
    assert load_labeled_csv(path)["label"].tolist() == [3]
    path.write_text("review,label\n좋다,2\n", encoding="utf-8")  # same size: only the time differs
    assert load_labeled_csv(path)["label"].tolist() == [2]  # modified just now: not cached, read
    settled(tmp_path, "review,label\n좋다,1\n", age_s=30.0)
    assert load_labeled_csv(path)["label"].tolist() == [1]  # another modification time: another entry


def test_the_cache_keys_on_columns_and_label_count(tmp_path):
    path = settled(tmp_path, "review,label,other\n좋다,3,1\n")
    assert load_labeled_csv(path)["label"].tolist() == [3]
    assert load_labeled_csv(path, label_column="other")["label"].tolist() == [1]
    with pytest.raises(DataError, match="outside 0..1"):
        load_labeled_csv(path, num_labels=2)


def test_a_rejected_csv_is_never_cached(tmp_path):
    path = settled(tmp_path, "review,label\n좋다,7\n")
    for _ in range(2):
        with pytest.raises(DataError, match="label 7"):
            load_labeled_csv(path)


def test_checks_pass_a_csv_the_loader_accepted_without_reading_it(tmp_path, monkeypatch):
    from pipeline.data import check_labeled_csv, check_text_csv

    labeled = settled(tmp_path, "review,label\n좋다,3\n별로,0\n")
    texts = settled(tmp_path, "review\n좋다\n", name="texts.csv")
    load_labeled_csv(labeled)
    cached_texts = load_texts(texts)
    no_csv_reads(monkeypatch)
    assert check_labeled_csv(labeled) == 2
    assert check_text_csv(texts) == 1
    assert load_texts(texts) == cached_texts == ["좋다"]


def test_a_fresh_csv_is_not_cached(tmp_path, monkeypatch):
    path = write(tmp_path, "review,label\n좋다,3\n")  # modified just now
    load_labeled_csv(path)
    calls = []
    real = pd.read_csv
    monkeypatch.setattr(pd, "read_csv", lambda *a, **k: calls.append(1) or real(*a, **k))
    load_labeled_csv(path)
    assert calls
