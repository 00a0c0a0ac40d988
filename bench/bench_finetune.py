"""Fine-tune throughput: our `pipeline.training.finetune` against a plain HF Trainer set up as a competent user would.

    python bench/bench_finetune.py [--rows 4000] [--epochs 2] [--batch 32] [--max-length 128]
                                   [--rounds 3] [--model tiny] [--quick]

Contenders, all on the same model (the tiny preset by default, or any hub name / path), the same
rows, epochs, batch size, eval batch size, learning rate, warm-up, weight decay, scheduler, seed and
precision (bf16 where the GPU has it, fp16 on other GPUs, fp32 on CPU), each evaluating and
checkpointing once per epoch and reloading the best checkpoint at the end:
- ours: `finetune()` with focal loss (gamma 2, as the demo campaign) and its hooks; it builds
  length-grouped batches (`train_sampling_strategy="group_by_length"`) with its padding collator.
- plain: `Trainer` with the built-in cross-entropy, `train_sampling_strategy="group_by_length"`,
  and the same tokenized inputs and collator as ours (the token ids from our tokenization
  cache, `PadCollator`): the difference is only what `finetune()` adds around the Trainer.
- plain, tutorial data path: `Trainer` with `group_by_length`, inputs from `tokenizer(...,
  truncation=True)` and `DataCollatorWithPadding` (shown for reference: the collator's share).

Throughput is training samples (rows x epochs) per second of `trainer.train()`, from the Trainer's
own `train_runtime` for every contender. Each contender first runs once on a small slice (a warm-up,
not counted); then `--rounds` rounds, the order rotated each round. Figures: best (max) and median
samples/s; the ratios use medians.

Then the tokenization cache: all training reviews tokenized cold (miss) and warm (hit).
Prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import header, ratio, rotated, silenced, summary, table  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=4000, help="training rows (plus 10%% held out for eval)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup-rows", type=int, default=512, help="rows of the uncounted warm-up run")
    p.add_argument("--no-tutorial", action="store_true", help="skip the tutorial-data-path plain Trainer")
    p.add_argument("--model", default="tiny", help='"tiny" (built locally) or a hub name / local path')
    p.add_argument("--workdir", default=None, help="scratch folder (default: temporary)")
    p.add_argument("--quick", action="store_true", help="800 rows, 1 epoch, 2 rounds (a smoke run)")
    args = p.parse_args()
    if args.quick:  # smaller defaults; options given on the command line still win
        p.set_defaults(rows=800, epochs=1, rounds=2, warmup_rows=200)
        args = p.parse_args()
    return args


class Setup:
    """What every contender shares: the model, the tokenizer, the rows and their token ids."""

    def __init__(self, args, workdir: str):
        from pipeline.cache import TokenCache
        from pipeline.data import load_labeled_csv, stratified_split
        from pipeline.models import load_tokenizer, resolve_model_source

        self.args, self.workdir = args, workdir
        self.reviews = load_labeled_csv(DATA / "reviews_train.csv")
        self.split = stratified_split(self.reviews.iloc[: int(args.rows / 0.9)], val_fraction=0.1, seed=0)
        self.model_path = resolve_model_source(args.model, workdir, self.reviews["text"].tolist())
        self.tokenizer = load_tokenizer(self.model_path)
        self.cache_dir = os.path.join(workdir, "cache")
        self.cache = TokenCache(self.cache_dir)

    def common_args(self, out_dir: str, epochs: int) -> dict:
        """TrainingArguments every Trainer here gets, as our finetune() sets them (see _training_args)."""
        import torch

        from pipeline.config import FinetuneConfig
        from pipeline.training import resolve_precision

        defaults = FinetuneConfig()
        fp16, bf16 = resolve_precision(defaults.precision)
        cuda = torch.cuda.is_available()
        a = self.args
        return dict(output_dir=out_dir, num_train_epochs=epochs, per_device_train_batch_size=a.batch,
                    per_device_eval_batch_size=2 * a.batch, learning_rate=a.lr, warmup_steps=0.1,
                    weight_decay=defaults.weight_decay, lr_scheduler_type=defaults.scheduler_type, seed=0,
                    fp16=fp16, bf16=bf16, eval_strategy="epoch", save_strategy="epoch",
                    save_total_limit=defaults.save_total_limit, load_best_model_at_end=True,
                    metric_for_best_model="accuracy", report_to=[], disable_tqdm=True, use_cpu=not cuda,
                    dataloader_num_workers=0, dataloader_pin_memory=cuda, logging_strategy="epoch",
                    train_sampling_strategy="group_by_length")


def run_ours(s: Setup, train, val, epochs: int, out_dir: str) -> float:
    from pipeline.config import FinetuneConfig
    from pipeline.training import finetune

    a = s.args
    cfg = FinetuneConfig(model=s.model_path, epochs=epochs, batch_size=a.batch, lr=a.lr, max_length=a.max_length,
                         warmup_ratio=0.1, seed=0, focal_gamma=2.0, metric_for_best="accuracy",
                         cache_dir=s.cache_dir)
    result = finetune(cfg, train, val, None, out_dir)
    return len(train) * epochs / result.train_seconds


def run_plain(s: Setup, train, val, epochs: int, out_dir: str) -> float:
    """Plain Trainer, built-in loss, the same token ids and collator as ours."""
    from transformers import Trainer, TrainingArguments, set_seed

    from pipeline.batching import EncodedDataset, PadCollator
    from pipeline.metrics import compute_metrics
    from pipeline.models import load_classifier
    from pipeline.training import resolve_precision

    set_seed(0)
    model, _ = load_classifier(s.model_path, 4)
    tr = s.cache.encode(s.tokenizer, train["text"].tolist(), s.args.max_length)
    va = s.cache.encode(s.tokenizer, val["text"].tolist(), s.args.max_length)
    fp16, bf16 = resolve_precision("auto")
    args = TrainingArguments(**s.common_args(out_dir, epochs), remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=EncodedDataset(tr.input_ids, train["label"].to_numpy()),
                      eval_dataset=EncodedDataset(va.input_ids, val["label"].to_numpy()),
                      data_collator=PadCollator(s.tokenizer.pad_token_id, 8 if (fp16 or bf16) else None),
                      processing_class=s.tokenizer, compute_metrics=compute_metrics)
    out = trainer.train()
    return len(train) * epochs / out.metrics["train_runtime"]


def run_tutorial(s: Setup, train, val, epochs: int, out_dir: str) -> float:
    """Plain Trainer, the tutorial data path: tokenizer(...) lists and DataCollatorWithPadding."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from pipeline.metrics import compute_metrics
    from pipeline.models import load_classifier
    from pipeline.training import resolve_precision

    set_seed(0)
    model, _ = load_classifier(s.model_path, 4)
    fp16, bf16 = resolve_precision("auto")

    def encode(df):
        enc = s.tokenizer(df["text"].tolist(), truncation=True, max_length=s.args.max_length)
        return [{"input_ids": ids, "attention_mask": mask, "labels": int(y)}
                for ids, mask, y in zip(enc["input_ids"], enc["attention_mask"], df["label"], strict=True)]

    args = TrainingArguments(**s.common_args(out_dir, epochs))
    trainer = Trainer(model=model, args=args, train_dataset=encode(train), eval_dataset=encode(val),
                      data_collator=DataCollatorWithPadding(s.tokenizer,
                                                            pad_to_multiple_of=8 if (fp16 or bf16) else None),
                      processing_class=s.tokenizer,
                      compute_metrics=compute_metrics)
    out = trainer.train()
    return len(train) * epochs / out.metrics["train_runtime"]


def bench_cache(s: Setup) -> tuple[float, float]:
    from pipeline.cache import TokenCache

    cache_dir = os.path.join(s.workdir, "cache-bench")
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache = TokenCache(cache_dir)
    texts = s.reviews["text"].tolist()
    t0 = time.perf_counter()
    cache.encode(s.tokenizer, texts, s.args.max_length)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    cache.encode(s.tokenizer, texts, s.args.max_length)
    warm = time.perf_counter() - t0
    assert (cache.stats.misses, cache.stats.hits) == (1, 1)
    return cold, warm


def quiet(fn, *args):
    """Run a contender with the Trainer's prints and progress bars kept out of the figures."""
    with silenced():
        return fn(*args)


def main() -> int:
    args = parse_args()
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    header("fine-tune throughput: ours vs a plain Trainer (group_by_length, same inputs and collator)")
    tmp = tempfile.TemporaryDirectory(prefix="sched-bench-finetune-") if args.workdir is None else None
    workdir = args.workdir or tmp.name
    os.makedirs(workdir, exist_ok=True)
    try:
        s = quiet(Setup, args, workdir)
        train, val = s.split.train, s.split.val
        device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
        print(f"model {args.model}; device {device}; {len(train)} train rows, {len(val)} val rows, {args.epochs} "
              f"epochs, batch {args.batch}, max_length {args.max_length}, lr {args.lr}")
        contenders = [("ours: finetune()", run_ours), ("plain Trainer, same inputs + collator", run_plain)]
        if not args.no_tutorial:
            contenders.append(("plain Trainer, tokenizer() + DataCollatorWithPadding", run_tutorial))
        n_warm = min(args.warmup_rows, len(train))
        for _, fn in contenders:
            out_dir = os.path.join(workdir, "warmup")
            shutil.rmtree(out_dir, ignore_errors=True)
            quiet(fn, s, train.iloc[:n_warm], val, 1, out_dir)
        print(f"warm-up: each contender ran once on {n_warm} rows, 1 epoch (not counted)")
        speeds: dict[str, list[float]] = {name: [] for name, _ in contenders}
        for r in range(args.rounds):
            for name, fn in rotated(contenders, r):
                out_dir = os.path.join(workdir, f"run-{r}")
                shutil.rmtree(out_dir, ignore_errors=True)
                gc.collect()
                speeds[name].append(quiet(fn, s, train, val, args.epochs, out_dir))
                print(f"  round {r + 1}: {name}: {speeds[name][-1]:.1f} samples/s", flush=True)
        plain_med = summary(speeds[contenders[1][0]])["median"]
        rows = [[name, f"{max(v):.1f}", f"{summary(v)['median']:.1f}", ratio(summary(v)["median"], plain_med)]
                for name, v in speeds.items()]
        print(f"\ntraining samples/s over {args.rounds} rounds, order rotated")
        print(table(rows, ["contender", "best", "median", "vs plain (same inputs)"]))
        ours_med = summary(speeds[contenders[0][0]])["median"]
        print(f"ratio ours/plain (medians): {ratio(ours_med, plain_med)}; goal >= 1.0x")
        cold, warm = bench_cache(s)
        print(f"tokenization of {len(s.reviews):,} rows: cold (miss) {cold * 1000:.0f} ms, warm (hit) "
              f"{warm * 1000:.0f} ms ({cold / max(warm, 1e-9):.1f}x)")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
