"""Back-translation data augmentation: translate reviews to a pivot language and back, keep paraphrases.

    from pipeline.augment import augment_csv
    stats = augment_csv("data/reviews_train.csv", "runs/aug/augmented.csv",
                        "Helsinki-NLP/opus-mt-ko-en", "<an English->Korean seq2seq model>")

Models are any ``AutoModelForSeq2SeqLM`` + ``AutoTokenizer`` pair given by hub name or local folder
(Marian/opus-mt, BART, T5 style; multilingual models that need a target-language token, e.g. NLLB or
M2M100, are not supported). Decoding is greedy or beam search, so a run is deterministic.

This module imports torch and transformers only inside the functions that translate, so importing
it (and ``filter_augmented``) stays cheap. It never imports ``scheduler`` or ``jobs``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from pipeline.data import load_labeled_csv, normalize_text, stratified_split
from pipeline.hooks import StopRequested
from pipeline.util import atomic_output

# Why an augmented row was dropped, in the order the checks run (a row counts under the first that applies).
DROP_REASONS = ("empty", "identical", "too_short", "too_long", "duplicate")


class TranslationModelError(ValueError):
    """A translation model or its tokenizer cannot be loaded, or is not a seq2seq model; names the model."""


class FilterResult(NamedTuple):
    """What ``filter_augmented`` kept, and how many rows each drop reason removed."""

    # columns review, label, source_review; the index is each row's position in the inputs
    kept: pd.DataFrame
    # reason (one of DROP_REASONS) -> number of rows dropped for it
    dropped: dict[str, int]


def _key(text: str) -> str:
    """The identity used for the identical/duplicate checks: normalized and case-folded."""
    return normalize_text(text).casefold()


def filter_augmented(
    originals: Sequence[str],
    augmented: Sequence[str],
    labels: Sequence[int],
    *,
    min_length_ratio: float = 0.5,
    max_length_ratio: float = 2.0,
    reference_texts: Iterable[str] | None = None,
) -> FilterResult:
    """Keep the augmented texts that are usable new training rows.

    Row i pairs ``augmented[i]`` with its source ``originals[i]`` and label ``labels[i]``. A row is
    dropped, for the first reason that applies, when its text is:

    - ``empty``: empty after normalization (NFC, whitespace collapsed);
    - ``identical``: equal to its own source (normalized, case-insensitive);
    - ``too_short`` / ``too_long``: its length in characters over its source's is below
      ``min_length_ratio`` or above ``max_length_ratio`` (bounds inclusive);
    - ``duplicate``: equal to any original text (``originals`` plus ``reference_texts``, e.g. the
      whole training file) or to an earlier kept augmented text.

    Returns ``FilterResult(kept, dropped)``: ``kept`` has columns ``review`` (normalized augmented
    text), ``label``, ``source_review``, indexed by input position; ``dropped`` counts every reason.
    """
    if not len(originals) == len(augmented) == len(labels):
        raise ValueError(f"originals, augmented and labels differ in length: "
                         f"{len(originals)}, {len(augmented)}, {len(labels)}")
    if min_length_ratio < 0 or max_length_ratio < min_length_ratio:
        raise ValueError(f"need 0 <= min_length_ratio <= max_length_ratio, got "
                         f"{min_length_ratio} and {max_length_ratio}")
    seen = {_key(t) for t in originals}
    if reference_texts is not None:
        seen.update(_key(t) for t in reference_texts)
    dropped = dict.fromkeys(DROP_REASONS, 0)
    kept_rows, kept_index = [], []
    for i, (source, text, label) in enumerate(zip(originals, augmented, labels)):
        source, text = normalize_text(source or ""), normalize_text(text or "")
        ratio = len(text) / len(source) if source else float("inf")
        if not text:
            reason = "empty"
        elif text.casefold() == source.casefold():
            reason = "identical"
        elif ratio < min_length_ratio:
            reason = "too_short"
        elif ratio > max_length_ratio:
            reason = "too_long"
        elif text.casefold() in seen:
            reason = "duplicate"
        else:
            seen.add(text.casefold())
            kept_rows.append((text, int(label), source))
            kept_index.append(i)
            continue
        dropped[reason] += 1
    kept = pd.DataFrame(kept_rows, columns=["review", "label", "source_review"], index=kept_index)
    kept["label"] = kept["label"].astype(np.int64)
    return FilterResult(kept, dropped)


def _load_translator(name_or_path: str, role: str, device: str):
    """(model in eval mode on ``device``, tokenizer); any lookup failure becomes TranslationModelError."""
    from transformers import AutoModelForSeq2SeqLM

    tokenizer = _load_tokenizer(name_or_path, role)
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise _model_error(name_or_path, role, exc) from None
    return model.to(device).eval(), tokenizer


def _load_tokenizer(name_or_path: str, role: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise _model_error(name_or_path, role, exc) from None


def _model_error(name_or_path: str, role: str, exc: Exception) -> TranslationModelError:
    # OSError: not a local folder and not on the hub (or offline); ValueError (HFValidationError is
    # one): not even a valid hub id, or a folder without a usable config. Keep the cause's first line.
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return TranslationModelError(
        f"cannot load {role} translation model {name_or_path!r}: not a local model folder, and not "
        f"available from the Hugging Face hub (offline or unknown name). Cause: {reason}")


def check_translation_model(name_or_path: str, role: str = "forward") -> None:
    """Fail fast (TranslationModelError) unless the config and tokenizer load and it is encoder-decoder."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise _model_error(name_or_path, role, exc) from None
    if not getattr(config, "is_encoder_decoder", False):
        raise TranslationModelError(
            f"{role} translation model {name_or_path!r} is not a sequence-to-sequence (encoder-decoder) "
            f"model: its config has model_type {getattr(config, 'model_type', None)!r}")
    _load_tokenizer(name_or_path, role)


def _translate(texts, model, tokenizer, *, batch_size, max_length, num_beams, device, step):
    """Translate ``texts`` in batches (longest first, to waste little padding); results in input order.

    ``step(n, message)`` is called before each batch with the batch size; it may raise to stop.
    """
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    out: list[str] = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        step(len(idx))
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length)
        # Models with token_type_ids in their tokenizer output do not take them in generate().
        enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            generated = model.generate(**enc, max_new_tokens=max_length, num_beams=num_beams, do_sample=False)
        decoded = tokenizer.batch_decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=True)
        for i, text in zip(idx, decoded):
            out[i] = normalize_text(text)
    return out


def back_translate(
    texts: Sequence[str],
    forward_model: str,
    backward_model: str,
    *,
    batch_size: int = 16,
    max_length: int = 128,
    num_beams: int = 1,
    device: str = "cpu",
    on_progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[str]:
    """Translate ``texts`` with ``forward_model`` (e.g. Korean->English), then back with ``backward_model``.

    Models are hub names or local folders. ``max_length`` caps both the input tokens (longer inputs
    are truncated) and the generated tokens per direction. Returns one normalized text per input
    (possibly empty), in input order.

    ``on_progress(done, total, message)`` is called after every batch, counting texts over both
    directions (total = 2 * len(texts)). ``should_stop()`` is polled before every batch; when it
    returns True, ``pipeline.hooks.StopRequested`` is raised (nothing is saved: a rerun starts over).
    Raises TranslationModelError naming the model when one cannot be loaded; both are checked before
    any translation runs.
    """
    if batch_size < 1 or max_length < 1 or num_beams < 1:
        raise ValueError(f"batch_size, max_length and num_beams must be >= 1, got "
                         f"{batch_size}, {max_length}, {num_beams}")
    texts = [normalize_text(t) for t in texts]
    check_translation_model(forward_model, "forward")
    check_translation_model(backward_model, "backward")
    if not texts:
        return []
    total, done = 2 * len(texts), 0
    progress = on_progress or (lambda *_: None)
    stop = should_stop or (lambda: False)

    def run_direction(name: str, role: str, inputs: list[str]) -> list[str]:
        nonlocal done
        model, tokenizer = _load_translator(name, role, device)
        pending = 0

        def step(n: int) -> None:
            nonlocal done, pending
            # Report the batch that just finished before starting the next one.
            if pending:
                done += pending
                progress(done, total, f"{role} translation")
            if stop():
                raise StopRequested(None)
            pending = n

        try:
            result = _translate(inputs, model, tokenizer, batch_size=batch_size, max_length=max_length,
                                num_beams=num_beams, device=device, step=step)
        finally:
            del model
            _free_device_memory(device)
        done += pending
        progress(done, total, f"{role} translation")
        return result

    pivot = run_direction(forward_model, "forward", texts)
    return run_direction(backward_model, "backward", pivot)


def _free_device_memory(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _sample_positions(labels: pd.Series, candidates: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``fraction`` of the candidate rows within each label (at least one per label), in file order."""
    if fraction >= 1.0:
        return np.sort(candidates)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    cand_labels = labels.to_numpy()[candidates]
    for label in np.unique(cand_labels):
        group = candidates[cand_labels == label]
        n = max(1, int(round(len(group) * fraction)))
        chosen.extend(rng.permutation(group)[:n].tolist())
    return np.sort(np.asarray(chosen, dtype=np.int64))


def augment_csv(
    train_csv: str | os.PathLike,
    out_csv: str | os.PathLike,
    forward_model: str,
    backward_model: str,
    *,
    fraction: float = 1.0,
    seed: int = 0,
    text_column: str = "review",
    label_column: str = "label",
    num_labels: int = 4,
    batch_size: int = 16,
    max_length: int = 128,
    num_beams: int = 1,
    device: str = "cpu",
    min_length_ratio: float = 0.5,
    max_length_ratio: float = 2.0,
    val_fraction: float | None = None,
    split_seed: int = 42,
    source_column: str | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Back-translate a labelled CSV and write the kept paraphrases as a CSV with the same columns.

    The training CSV is validated with ``pipeline.data.load_labeled_csv`` (DataError naming the file
    and row). ``fraction`` of its rows (within each label, drawn with ``seed``) are back-translated
    and filtered by ``filter_augmented`` (duplicates are checked against every text of the file).
    Each kept row copies its source row's other columns (e.g. ``rating``), with the text column
    replaced by the paraphrase; the label is the source's. With ``source_column``, a column of that
    name holding the source review is added.

    ``val_fraction``/``split_seed``: leave out the rows that ``stratified_split`` with these values
    puts in validation, so no paraphrase of a validation review reaches training (use the values the
    fine-tune will split with). None augments every row.

    The CSV is written whole or not at all (temporary file, then rename). Returns stats: rows,
    holdout_rows, candidates, augmented_rows, kept_fraction, dropped_<reason> for each reason,
    seconds, out_csv.
    """
    started = time.monotonic()
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    frame = load_labeled_csv(train_csv, text_column, label_column, num_labels)
    # Same reading settings as load_labeled_csv; the file already passed its validation, so the rows
    # line up one to one with `frame`.
    raw = pd.read_csv(train_csv, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    if len(raw) != len(frame):
        raise ValueError(f"{os.fspath(train_csv)}: rows changed while reading ({len(frame)} then {len(raw)})")
    if source_column is not None and source_column in raw.columns:
        raise ValueError(f"source_column {source_column!r} is already a column of {os.fspath(train_csv)}")

    candidates = np.arange(len(frame))
    holdout = 0
    if val_fraction is not None:
        val_texts = set(stratified_split(frame, val_fraction, split_seed).val["text"])
        is_val = frame["text"].isin(val_texts).to_numpy()
        candidates, holdout = candidates[~is_val], int(is_val.sum())
    positions = _sample_positions(frame["label"], candidates, fraction, seed)

    sources = frame["text"].to_numpy()[positions].tolist()
    labels = frame["label"].to_numpy()[positions].tolist()
    outputs = back_translate(sources, forward_model, backward_model, batch_size=batch_size,
                             max_length=max_length, num_beams=num_beams, device=device,
                             on_progress=on_progress, should_stop=should_stop)
    kept, dropped = filter_augmented(sources, outputs, labels, min_length_ratio=min_length_ratio,
                                     max_length_ratio=max_length_ratio, reference_texts=frame["text"])

    rows = raw.iloc[positions[np.asarray(kept.index, dtype=np.int64)]].reset_index(drop=True)
    rows[text_column] = kept["review"].to_numpy()
    rows[label_column] = kept["label"].astype(str).to_numpy()
    if source_column is not None:
        rows[source_column] = kept["source_review"].to_numpy()
    out_csv = os.fspath(out_csv)
    with atomic_output(out_csv) as tmp:
        rows.to_csv(tmp, index=False)

    stats = {
        "rows": len(frame),
        "holdout_rows": holdout,
        "candidates": len(positions),
        "augmented_rows": len(rows),
        "kept_fraction": len(rows) / len(positions) if len(positions) else 0.0,
        **{f"dropped_{reason}": count for reason, count in dropped.items()},
        "seconds": time.monotonic() - started,
        "out_csv": out_csv,
    }
    return stats
