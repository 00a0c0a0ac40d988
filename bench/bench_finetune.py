"""Benchmark: our ``pipeline.training.finetune`` against a plain hand-written HF Trainer script.

    python bench/bench_finetune.py [--rows 4000] [--epochs 2] [--batch 32] [--max-length 128]
                                   [--repeats 2] [--model tiny] [--workdir /tmp/sched-bench]

Both sides train the same model (the tiny preset by default, or any hub name/path) on the same
rows, with the same epochs, batch size, max_length, learning rate and seed, evaluating and
checkpointing once per epoch. The plain side is the usual tutorial recipe: tokenize with
truncation, ``DataCollatorWithPadding``, random batches, the Trainer's built-in loss.
Ours adds focal loss, hooks and SWA-ready callbacks, and gets its speed from length-grouped batches
and a numpy padding collator. Throughput is training samples (rows x epochs) per second of
``trainer.train()``, taken from the Trainer's own ``train_runtime``; each side runs ``--repeats``
times alternately and the best run counts (the machine may be shared).

Then the tokenization cache: time to tokenize all train rows cold (cache miss, writes the entry)
and warm (cache hit), in a fresh cache directory.

Prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[1] / "data"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=4000, help="training rows (plus 10%% held out for eval)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--model", default="tiny", help='"tiny" (built locally) or a hub name / local path')
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sched-bench"))
    return p.parse_args()


def run_plain(model_path: str, train, val, args, out_dir: str) -> float:
    """The plain recipe; returns training samples/s."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=4)

    def encode(df):
        enc = tokenizer(df["text"].tolist(), truncation=True, max_length=args.max_length)
        return [{"input_ids": ids, "attention_mask": mask, "labels": int(y)}
                for ids, mask, y in zip(enc["input_ids"], enc["attention_mask"], df["label"])]

    def metrics(pred):
        return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}

    training_args = TrainingArguments(
        output_dir=out_dir, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch,
        per_device_eval_batch_size=2 * args.batch, learning_rate=args.lr, warmup_steps=0.1, seed=0,
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
        metric_for_best_model="accuracy", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(), logging_strategy="epoch",
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=encode(train), eval_dataset=encode(val),
                      data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                      compute_metrics=metrics)
    out = trainer.train()
    return len(train) * args.epochs / out.metrics["train_runtime"]


def run_ours(model_path: str, train, val, args, out_dir: str) -> float:
    from pipeline.config import FinetuneConfig
    from pipeline.training import finetune

    cfg = FinetuneConfig(model=model_path, epochs=args.epochs, batch_size=args.batch, lr=args.lr,
                         max_length=args.max_length, warmup_ratio=0.1, seed=0, focal_gamma=2.0,
                         metric_for_best="accuracy", cache_dir=os.path.join(args.workdir, "cache"))
    result = finetune(cfg, train, val, None, out_dir)
    return len(train) * args.epochs / result.train_seconds


def bench_cache(model_path: str, texts: list[str], max_length: int, workdir: str) -> tuple[float, float]:
    from transformers import AutoTokenizer

    from pipeline.cache import TokenCache

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    cache_dir = os.path.join(workdir, "cache-bench")
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache = TokenCache(cache_dir)
    t0 = time.perf_counter()
    cache.encode(tokenizer, texts, max_length)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    cache.encode(tokenizer, texts, max_length)
    warm = time.perf_counter() - t0
    assert (cache.stats.misses, cache.stats.hits) == (1, 1)
    return cold, warm


def main() -> None:
    args = parse_args()
    import torch
    from transformers.utils import logging as hf_logging

    from pipeline.data import load_labeled_csv, stratified_split
    from pipeline.models import resolve_model_source

    hf_logging.disable_progress_bar()
    os.makedirs(args.workdir, exist_ok=True)
    reviews = load_labeled_csv(DATA / "reviews_train.csv")
    split = stratified_split(reviews.iloc[: int(args.rows / 0.9)], val_fraction=0.1, seed=0)
    model_path = resolve_model_source(args.model, args.workdir, reviews["text"].tolist())
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"model {args.model} -> {model_path}; device {device}")
    print(f"{len(split.train)} train rows, {len(split.val)} val rows, {args.epochs} epochs, batch {args.batch}, "
          f"max_length {args.max_length}")

    best = {"plain": 0.0, "ours": 0.0}
    for rep in range(args.repeats):
        for name, fn in (("plain", run_plain), ("ours", run_ours)):
            out_dir = os.path.join(args.workdir, f"{name}-{rep}")
            shutil.rmtree(out_dir, ignore_errors=True)
            with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its logs; keep the figures readable
                speed = fn(model_path, split.train, split.val, args, out_dir)
            print(f"  run {rep + 1} {name:5s}: {speed:8.1f} samples/s")
            best[name] = max(best[name], speed)

    print(f"training throughput (best of {args.repeats}): plain {best['plain']:.1f} samples/s, "
          f"ours {best['ours']:.1f} samples/s, ratio ours/plain {best['ours'] / best['plain']:.2f}")

    cold, warm = bench_cache(model_path, reviews["text"].tolist(), args.max_length, args.workdir)
    print(f"tokenization of {len(reviews)} rows: cold (miss) {cold * 1000:.0f} ms, warm (hit) {warm * 1000:.0f} ms, "
          f"saving {cold - warm:.2f} s ({cold / max(warm, 1e-9):.1f}x)")


if __name__ == "__main__":
    main()
