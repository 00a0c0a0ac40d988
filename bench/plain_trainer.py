"""A plain Hugging Face Trainer fine-tune, written as a competent user would: the peer of a sched job.

    python bench/plain_trainer.py --train train.csv --val val.csv --model DIR --out DIR --report report.json
                                  [--epochs 2] [--batch 32] [--max-length 128] [--lr 1e-3] [--warmup 0.1]
                                  [--seed 0] [--precision auto]

What it does, and nothing else: read the two CSVs (columns text, label) with pandas, tokenize them
with the model's tokenizer (`truncation=True, max_length`), load the classifier with
`AutoModelForSequenceClassification`, and train with `Trainer`: the built-in cross-entropy, dynamic
padding (`DataCollatorWithPadding`, to a multiple of 8 under mixed precision), length-grouped
batches (`train_sampling_strategy="group_by_length"`), evaluation and a checkpoint every epoch, the
best checkpoint (by accuracy) reloaded at the end; bf16 on a GPU that computes it natively, else
fp16 on a GPU, fp32 on the CPU.

It writes `--report` (JSON): wall-clock times (epoch seconds) of its own phases, from the end of
its imports to the end of its first optimizer step, and the Trainer's `train_runtime`. The bench
that starts it notes when it started the process, so imports are counted too.
"""

import time

IMPORTS_BEGIN = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

MARKS = [("imports", time.time())]


def mark(phase: str) -> None:
    MARKS.append((phase, time.time()))


class FirstStep(TrainerCallback):
    """Notes the end of the first optimizer step (the start-up figure the bench prints)."""

    def on_train_begin(self, args, state, control, **kwargs):
        mark("train() set-up")

    def on_step_end(self, args, state, control, **kwargs):
        if MARKS[-1][0] != "first training step":
            mark("first training step")


def precision_flags(choice: str) -> tuple[bool, bool]:
    """(fp16, bf16): what a user sets for this machine."""
    if choice == "auto":
        if not torch.cuda.is_available():
            return False, False
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        return not bf16, bf16
    return choice == "fp16", choice == "bf16"


def accuracy(pred) -> dict:
    return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--train", "--val", "--model", "--out", "--report"):
        p.add_argument(name, required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=float, default=0.1, help="warm-up as a share of the steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    a = p.parse_args()

    set_seed(a.seed)
    train, val = pd.read_csv(a.train), pd.read_csv(a.val)
    mark("CSV read")
    tokenizer = AutoTokenizer.from_pretrained(a.model)

    def encode(df):
        enc = tokenizer(df["text"].tolist(), truncation=True, max_length=a.max_length)
        return [{"input_ids": ids, "attention_mask": mask, "labels": int(y)}
                for ids, mask, y in zip(enc["input_ids"], enc["attention_mask"], df["label"])]

    train_ds, val_ds = encode(train), encode(val)
    mark("tokenized")
    model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=4)
    mark("model loaded")
    fp16, bf16 = precision_flags(a.precision)
    args = TrainingArguments(
        output_dir=a.out, num_train_epochs=a.epochs, per_device_train_batch_size=a.batch,
        per_device_eval_batch_size=2 * a.batch, learning_rate=a.lr, warmup_steps=a.warmup, weight_decay=0.01,
        lr_scheduler_type="linear", seed=a.seed, fp16=fp16, bf16=bf16, eval_strategy="epoch",
        save_strategy="epoch", save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="accuracy",
        logging_strategy="epoch", report_to=[], disable_tqdm=True, train_sampling_strategy="group_by_length")
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                      data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if fp16 or bf16 else None),
                      processing_class=tokenizer, compute_metrics=accuracy, callbacks=[FirstStep()])
    mark("Trainer built")
    out = trainer.train()
    metrics = trainer.evaluate()
    with open(a.report, "w", encoding="utf-8") as f:
        json.dump({"imports_begin": IMPORTS_BEGIN, "marks": MARKS, "train_runtime": out.metrics["train_runtime"],
                   "train_rows": len(train_ds), "epochs": a.epochs, "val_accuracy": metrics["eval_accuracy"],
                   "device": "cuda" if torch.cuda.is_available() else "cpu", "fp16": fp16, "bf16": bf16,
                   "threads": torch.get_num_threads(), "pid": os.getpid()}, f)


if __name__ == "__main__":
    main()
