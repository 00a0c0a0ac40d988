"""Fine-tuning, task-adaptive pretraining (TAPT) and prediction on top of the HF Trainer.

What this adds to a plain Trainer script:
- focal loss + label smoothing through ``compute_loss_func``; per-epoch val loss/accuracy/macro-F1;
  early stopping with the best model restored; SWA over the last K epochs;
- a checkpoint every epoch, and automatic resume from it when the same call is run again;
- out-of-memory recovery that halves the per-device batch and doubles gradient accumulation;
- ``Hooks`` for metrics, progress, stop requests and fault injection (the queue's window in);
- a tokenization cache, dynamic padding and length-grouped batches (speed);
- data-parallel runs: launched by torchrun (one process per GPU), the Trainer runs DDP; rank 0
  alone writes the shared files (run state, final model, logits, predictions, result.json) and
  the others return None (``pipeline.distributed``). The batch size is per process, so the
  global batch is processes x batch_size and an epoch takes 1/processes of the steps.

Layout of ``output_dir``::

    checkpoints/checkpoint-<step>/   Trainer checkpoints (resume points)
    run_state.json                   config + current batch/accumulation (survives OOM retries)
    model/                           final model + tokenizer (from_pretrained-loadable)
    val_logits.npy, test_logits.npy, val_predictions.csv, test_predictions.csv
    result.json                      the FinetuneResult / TaptResult as JSON
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from pipeline import startup
from pipeline.batching import EncodedDataset, MLMPadCollator, PadCollator
from pipeline.cache import TokenCache, tokenizer_fingerprint
from pipeline.callbacks import HealthCallback, HooksCallback, SWACallback
from pipeline.checkpoints import drop_incomplete_checkpoints
from pipeline.config import NOT_TRAINING, FinetuneConfig, TaptConfig
from pipeline.data import rows_fingerprint
from pipeline.distributed import is_main, main_first, rank, world_size
from pipeline.health import majority_share
from pipeline.hooks import NULL_HOOKS, Hooks, StopRequested
from pipeline.losses import make_compute_loss_func
from pipeline.metrics import accuracy, compute_metrics, macro_f1, softmax
from pipeline.models import (
    classifier_model,
    load_classifier,
    load_mlm,
    load_tokenizer,
    resolve_model_source,
)
from pipeline.oom import is_out_of_memory
from pipeline.predictions import write_predictions
from pipeline.tokenizers import add_special_tokens
from pipeline.tracking import TrackingRun, TrackingSession

log = logging.getLogger(__name__)

__all__ = [
    "FinetuneConfig", "FinetuneResult", "Hooks", "StopRequested", "TaptConfig", "TaptResult", "TrackingRun",
    "finetune", "inference_settings", "predict", "predict_logits", "tapt",
]

CHECKPOINTS = "checkpoints"
RUN_STATE = "run_state.json"
INFERENCE = "inference.json"  # in a fine-tune's model folder: how to read texts for it (max_length)
DEFAULT_MAX_LENGTH = 128  # for a classifier saved without inference.json
CLASSIFY_NAMES = {"loss": "loss", "accuracy": "accuracy", "f1": "f1"}
MLM_NAMES = {"loss": "mlm_loss"}


@dataclass
class FinetuneResult:
    output_dir: str
    model_dir: str
    val_accuracy: float | None  # of the final model (the best, or the SWA average); None with full_data
    val_f1: float | None
    best_epoch: int | None  # epoch with the best val metric during training
    epochs_run: int  # epochs completed in total, across resumes
    start_epoch: int  # 0, or the epoch a resumed run continued from
    global_step: int
    resumed_from: str | None
    batch_size: int  # per device, after any OOM halving
    grad_accum: int
    oom_retries: int
    val_fingerprint: str | None  # which rows were used for validation (see data.stratified_split)
    val_logits_path: str | None
    test_logits_path: str | None
    val_predictions_path: str | None
    test_predictions_path: str | None
    train_seconds: float
    train_samples_per_second: float


@dataclass
class TaptResult:
    output_dir: str
    model_dir: str
    initial_mlm_loss: float | None  # on held-out texts before this call trained (None if resumed past it)
    final_mlm_loss: float
    final_perplexity: float
    epochs_run: int
    start_epoch: int
    global_step: int
    resumed_from: str | None
    batch_size: int
    grad_accum: int
    oom_retries: int
    train_seconds: float
    train_samples_per_second: float


# ---------------------------------------------------------------- devices and arguments

def resolve_precision(precision: str) -> tuple[bool, bool]:
    """(fp16, bf16) for the Trainer. "auto": bf16 where the GPU computes it natively (Ampere and
    newer), else fp16 (with the Trainer's grad scaler) on GPU, none on CPU.

    `is_bf16_supported()` alone also says yes where bf16 is only emulated (Turing: T4, RTX 20xx),
    which trains several times slower than fp16 there."""
    if precision == "auto":
        if not torch.cuda.is_available():
            return False, False
        return (False, True) if torch.cuda.is_bf16_supported(including_emulation=False) else (True, False)
    return precision == "fp16", precision == "bf16"


def set_matmul_precision(precision: str) -> None:
    """fp32 matmuls and convolutions in TF32 on Ampere and newer when a run asks for fp32.

    Said here rather than left to defaults, which differ between torch's matmul (off) and cuDNN
    (on) and between versions: TF32 keeps fp32's range with a 10-bit mantissa, several times faster,
    and the loss curves of fine-tuning match fp32's. Mixed-precision runs are not affected."""
    if precision != "fp32" or not torch.cuda.is_available():
        return
    ampere = torch.cuda.get_device_capability()[0] >= 8
    torch.backends.cuda.matmul.allow_tf32 = ampere
    torch.backends.cudnn.allow_tf32 = ampere


def _training_args(cfg, ckpt_dir: str, batch: int, accum: int, evaluate: bool, run_name: str | None = None,
                   **extra) -> TrainingArguments:
    """Arguments every run shares: epoch checkpoints, the run's trackers (`report_to`, none by
    default; `pipeline.tracking` names and groups their runs), no progress bars, CPU fallback."""
    fp16, bf16 = resolve_precision(cfg.precision)
    cuda = torch.cuda.is_available()
    set_matmul_precision(cfg.precision)
    logging_args = ({"logging_strategy": "steps", "logging_steps": cfg.logging_steps}
                    if cfg.logging_steps > 0 else {"logging_strategy": "epoch"})
    return TrainingArguments(
        output_dir=ckpt_dir,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=cfg.eval_batch_size or 2 * batch,
        gradient_accumulation_steps=accum,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of total steps in transformers 5
        lr_scheduler_type=cfg.scheduler_type,
        seed=cfg.seed,
        fp16=fp16,
        bf16=bf16,
        eval_strategy="epoch" if evaluate else "no",
        save_strategy="epoch",
        save_total_limit=cfg.save_total_limit,
        report_to=list(cfg.report_to),
        run_name=run_name,
        use_cpu=not cuda,
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
        # Several processes on CPUs talk over gloo (accelerate would take MPI where torch has it).
        ddp_backend="gloo" if world_size() > 1 and not cuda else None,
        # Keep our extra feature keys (offsets for whole-word masking); our collators build the batch.
        remove_unused_columns=False,
        # Lets a resumed run restore the early-stopping patience counter.
        restore_callback_states_from_checkpoint=True,
        **logging_args,
        **extra,
    )


# ---------------------------------------------------------------- run state and OOM retries

def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(path: str, payload: dict) -> None:
    from .util import atomic_write

    atomic_write(path, json.dumps(payload, indent=2, ensure_ascii=False))


def _start_run_state(output_dir: str, cfg) -> dict:
    """Load the run state of an interrupted run (same config) or start a fresh one.

    The batch size and accumulation live here, not in the config, so a run that halved its batch
    after an OOM resumes with the halved batch. In a data-parallel run rank 0 writes it first
    (the others wait, then read it): the process count is part of it, since a checkpoint's step
    count means another number of epochs with another count.
    """
    with main_first():
        path = os.path.join(output_dir, RUN_STATE)
        state = _read_json(path)
        has_checkpoint = _last_checkpoint(output_dir) is not None
        # A setting the saved config lacks was added by a later version: the run began without it.
        changed = [] if state is None else sorted(k for k, v in cfg.to_dict().items() if k not in NOT_TRAINING
                                                  and k in state["config"] and state["config"][k] != v)
        if state is not None and state.get("processes", 1) != world_size():
            changed.append("processes")
        if state is not None and has_checkpoint and changed:
            raise ValueError(
                f"{output_dir} holds checkpoints of a run with a different config (changed: {changed}); "
                "use a fresh output_dir or delete the old one"
            )
        if state is None or not has_checkpoint:
            state = {"config": cfg.to_dict(), "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,
                     "oom_retries": 0, "processes": world_size()}
            if is_main():
                _write_json(path, state)
    return state


def _last_checkpoint(output_dir: str) -> str | None:
    # A kill mid-save leaves one unusable. Rank 0 alone removes them (before the others look, see
    # _start_run_state): another rank must never delete a checkpoint rank 0 is still writing.
    for path in drop_incomplete_checkpoints(output_dir) if is_main() else ():
        log.warning("removed the unfinished checkpoint %s", path)
    ckpt_dir = os.path.join(output_dir, CHECKPOINTS)
    return get_last_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _train_with_oom_retry(build: Callable[[int, int], tuple[Trainer, HooksCallback]], output_dir: str,
                          run_state: dict, hooks: Hooks):
    """Build and run a Trainer; on CUDA OOM halve the batch, double accumulation, resume, repeat.

    The effective batch (batch x accumulation) stays the same, so the schedule and results do not
    depend on the GPU's memory. Returns (trainer, hooks_callback, resumed_from).
    """
    while True:
        batch, accum = run_state["batch_size"], run_state["grad_accum"]
        trainer, hooks_cb = build(batch, accum)
        resume = _last_checkpoint(output_dir)
        try:
            trainer.train(resume_from_checkpoint=resume)
            return trainer, hooks_cb, resume
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            # Not only the allocator's OutOfMemoryError: cuBLAS, cuDNN and raw CUDA calls word it otherwise.
            if not is_out_of_memory(exc):
                raise
            if os.environ.get("SCHED_GPU_SHARE_MIB"):
                raise  # a shared GPU: its neighbours took the memory; the worker gives it a whole GPU
            if world_size() > 1:
                # One rank halving its batch alone would leave the others waiting in a gradient exchange.
                raise RuntimeError(
                    f"out of GPU memory at per-device batch size {batch} in a data-parallel run "
                    f"({world_size()} processes cannot retry with a smaller batch); lower batch_size"
                ) from exc
            if batch <= 1:
                raise RuntimeError(
                    f"out of GPU memory even at per-device batch size 1 (grad_accum {accum}); "
                    "use a smaller model or max_length"
                ) from exc
            step = trainer.state.global_step
        # Freed outside the except block: its traceback pins the failed step's tensors until it ends.
        del trainer, hooks_cb
        _free_memory()
        run_state.update(batch_size=batch // 2, grad_accum=accum * 2, oom_retries=run_state["oom_retries"] + 1)
        _write_json(os.path.join(output_dir, RUN_STATE), run_state)
        log.warning("out of memory at batch %d: retrying with batch %d x accumulation %d (from %s)",
                    batch, batch // 2, accum * 2, _last_checkpoint(output_dir) or "the start")
        hooks.on_log("oom_batch_size", float(batch // 2), step, "train")


def _tracking_session(cfg, tracking: TrackingRun | None, output_dir: str) -> TrackingSession:
    """The trackers' runs of this call (none without `report_to`); a call that resumes from a
    checkpoint continues the runs the interrupted one opened."""
    return TrackingSession(cfg.report_to, tracking, output_dir, main=is_main(),
                           resume=_last_checkpoint(output_dir) is not None)


# ---------------------------------------------------------------- prediction

def _autocast(device: torch.device, precision: str):
    """Prediction in the precision the run trained in: an fp32 model is scored in fp32."""
    fp16, bf16 = resolve_precision(precision) if device.type == "cuda" else (False, False)
    if not (fp16 or bf16):
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if bf16 else torch.float16)


@torch.no_grad()
def predict_logits(model, input_ids: Sequence[np.ndarray], pad_id: int, batch_size: int = 64,
                   device: str | torch.device | None = None, precision: str = "auto") -> np.ndarray:
    """Logits in input order; rows are batched by length (little padding) and then put back in order.
    `precision`: the run's (fp32 scores without autocast; auto, bf16, fp16 as in training)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    set_matmul_precision(precision)
    model.to(device).eval()
    collate = PadCollator(pad_id)
    order = np.argsort([len(r) for r in input_ids], kind="stable")
    out = np.zeros((len(input_ids), model.config.num_labels), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = collate([{"input_ids": input_ids[i]} for i in idx])
        with _autocast(device, precision):
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        out[idx] = logits.float().cpu().numpy()
    return out


def inference_settings(model_path: str) -> dict:
    """How a fine-tune read its texts ({"max_length": ...}), saved beside its model; {} for other models."""
    return _read_json(os.path.join(model_path, INFERENCE)) or {}


def predict(model_path: str, texts: Sequence[str], batch_size: int = 64, max_length: int | None = None,
            device: str | None = None, cache_dir: str | None = None, precision: str | None = None) -> np.ndarray:
    """Logits [n_texts, num_labels] of a saved classifier (e.g. ``FinetuneResult.model_dir``).

    ``max_length`` None: the length the model was fine-tuned with (its `inference.json`), else 128.
    ``precision`` None: the precision it was fine-tuned in (its `inference.json`), else "auto".
    The tokenizer is the one saved with the model (special tokens included).
    """
    model, tokenizer = load_classifier(model_path, num_labels=None)
    settings = inference_settings(model_path)
    max_length = max_length or settings.get("max_length") or DEFAULT_MAX_LENGTH
    enc = TokenCache(cache_dir).encode(tokenizer, list(texts), max_length)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return predict_logits(model, enc.input_ids, tokenizer.pad_token_id, batch_size, device,
                          precision or settings.get("precision") or "auto")


def _write_predictions(path: str, df: pd.DataFrame, logits: np.ndarray) -> None:
    """The project's predictions file (`pipeline.predictions`): ids from the frame's `id` column if any."""
    write_predictions(path, softmax(logits), ids=df["id"] if "id" in df else None, texts=df["text"],
                      labels=df["label"] if "label" in df else None)


# ---------------------------------------------------------------- fine-tuning

def _best_epoch(log_history: list[dict], metric: str) -> int | None:
    """The epoch whose evaluation scored best on ``metric`` (lowest for loss)."""
    evals = [h for h in log_history if f"eval_{metric}" in h]
    if not evals:
        return None
    pick = min if metric == "loss" else max
    best = pick(evals, key=lambda h: h[f"eval_{metric}"])
    return int(round(best["epoch"]))


def _speed(trainer: Trainer) -> tuple[float, float]:
    """(seconds, samples/s) of the last train() call, from the Trainer's own summary log."""
    summary = next((h for h in reversed(trainer.state.log_history) if "train_runtime" in h), {})
    return float(summary.get("train_runtime", 0.0)), float(summary.get("train_samples_per_second", 0.0))


def _save_final(trainer: Trainer, tokenizer, model_dir: str) -> None:
    trainer.save_model(model_dir)  # every rank calls it; the Trainer writes from rank 0 only
    if is_main():
        tokenizer.save_pretrained(model_dir)


def _encode(cache: TokenCache, tokenizer, frames: list[pd.DataFrame | None], max_length: int) -> list:
    """Token ids of each frame's texts (None for None); rank 0 fills the cache, the others read it."""
    fingerprint = tokenizer_fingerprint(tokenizer)  # once for every frame: it serialises the tokenizer
    with main_first():
        return [None if df is None else cache.encode(tokenizer, df["text"].tolist(), max_length,
                                                     fingerprint=fingerprint)
                for df in frames]


def finetune(cfg: FinetuneConfig, train_df: pd.DataFrame, val_df: pd.DataFrame | None,
             test_df: pd.DataFrame | None, output_dir: str | os.PathLike,
             hooks: Hooks | None = None, tracking: TrackingRun | None = None) -> FinetuneResult | None:
    """Fine-tune ``cfg.model`` on ``train_df`` (columns text, label), evaluating on ``val_df`` per epoch.

    Re-running with the same ``output_dir`` and config resumes from the last checkpoint. With
    ``cfg.full_data`` the model trains on train+val for ``cfg.epochs`` without evaluation.
    Test logits are written whenever ``test_df`` is given (its labels are optional).
    ``cfg.report_to`` names experiment trackers; ``tracking`` says who the run is to them.
    In a data-parallel run only rank 0 scores the final model and returns the result; the other
    ranks return None once training is over.
    """
    cfg.validate()
    hooks = hooks or NULL_HOOKS
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    if cfg.full_data and val_df is not None:
        train_df, val_df = pd.concat([train_df, val_df], ignore_index=True), None
    evaluate = val_df is not None and len(val_df) > 0
    source = resolve_model_source(cfg.model, output_dir, train_df["text"].tolist())
    run_state = _start_run_state(output_dir, cfg)
    session = _tracking_session(cfg, tracking, output_dir)
    startup.mark("run state and checkpoints")

    tokenizer = load_tokenizer(source)
    if cfg.special_tokens:
        # Before encoding, so the cache key (which hashes the tokenizer) sees the new tokens.
        add_special_tokens(tokenizer, None, cfg.special_tokens)
    startup.mark("tokenizer loaded")
    cache = TokenCache(cfg.cache_dir)
    train_enc, val_enc = _encode(cache, tokenizer, [train_df, val_df if evaluate else None], cfg.max_length)
    startup.mark("texts encoded")
    train_ds = EncodedDataset(train_enc.input_ids, train_df["label"].to_numpy())
    val_ds = EncodedDataset(val_enc.input_ids, val_df["label"].to_numpy()) if evaluate else None
    fp16, bf16 = resolve_precision(cfg.precision)
    collator = PadCollator(tokenizer.pad_token_id, pad_to_multiple_of=8 if (fp16 or bf16) else None)
    health = HealthCallback(cfg.nan_check_steps, cfg.not_learning_epoch if evaluate else 0, classify=True,
                            min_steps=cfg.not_learning_min_steps,
                            collapse_share=cfg.collapse_share, min_gain=cfg.min_gain_over_majority,
                            majority=majority_share(val_df["label"]) if evaluate else 0.0)

    def build(batch: int, accum: int) -> tuple[Trainer, HooksCallback]:
        set_seed(cfg.seed)  # the classifier head's init, identical on every (re)try
        startup.mark("data set, collator, health check")
        model = classifier_model(source, cfg.num_labels)  # the tokenizer is loaded above
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))  # room for the added special tokens
        startup.mark("model loaded")
        hooks_cb = HooksCallback(hooks, CLASSIFY_NAMES, batch, accum)
        # SWA first: its on_save must write the average before HooksCallback may raise there.
        callbacks = []
        if cfg.swa_epochs:
            callbacks.append(SWACallback(cfg.swa_epochs, cfg.epochs, resume_from=_last_checkpoint(output_dir)))
        if evaluate and cfg.early_stopping_patience:
            callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience))
        callbacks += [hooks_cb, health]  # health last: the epoch's metrics are logged before it fails
        args = _training_args(
            cfg, os.path.join(output_dir, CHECKPOINTS), batch, accum, evaluate,
            train_sampling_strategy="group_by_length" if cfg.length_grouping else "random",
            # With SWA the average replaces the final weights, so reloading the best would be wasted.
            load_best_model_at_end=evaluate and not cfg.swa_epochs,
            metric_for_best_model=cfg.metric_for_best if evaluate else None,
            greater_is_better=cfg.metric_for_best != "loss" if evaluate else None,
            run_name=session.run.name,
        )
        trainer = Trainer(
            model=model, args=args, data_collator=collator, train_dataset=train_ds, eval_dataset=val_ds,
            processing_class=tokenizer, callbacks=callbacks,
            compute_loss_func=make_compute_loss_func(cfg.focal_gamma, cfg.focal_alpha, cfg.label_smoothing,
                                                     cfg.class_weights),
            compute_metrics=compute_metrics if evaluate else None,
        )
        startup.mark("Trainer built")
        return trainer, hooks_cb

    with session:
        trainer, hooks_cb, resumed_from = _train_with_oom_retry(build, output_dir, run_state, hooks)
    model_dir = os.path.join(output_dir, "model")
    _save_final(trainer, tokenizer, model_dir)
    if not is_main():
        return None
    _write_json(os.path.join(model_dir, INFERENCE), {"max_length": cfg.max_length, "num_labels": cfg.num_labels,
                                                     "precision": cfg.precision})
    result = _finish_finetune(cfg, trainer, hooks_cb, tokenizer, cache, output_dir, model_dir, val_df,
                              val_enc, test_df, run_state, resumed_from)
    _write_json(os.path.join(output_dir, "result.json"), dataclasses.asdict(result))
    return result


def _finish_finetune(cfg, trainer, hooks_cb, tokenizer, cache, output_dir, model_dir, val_df, val_enc,
                     test_df, run_state, resumed_from) -> FinetuneResult:
    """Score the final model on val/test with our own ordered loop, and write logits and predictions."""
    model, pad_id = trainer.model, tokenizer.pad_token_id
    batch = cfg.eval_batch_size or 2 * run_state["batch_size"]
    paths = {"val_logits": None, "val_predictions": None, "test_logits": None, "test_predictions": None}
    val_acc = val_f1 = None
    if val_enc is not None:
        logits = predict_logits(model, val_enc.input_ids, pad_id, batch, precision=cfg.precision)
        val_acc = accuracy(val_df["label"], logits.argmax(-1))
        val_f1 = macro_f1(val_df["label"], logits.argmax(-1), cfg.num_labels)
        paths["val_logits"], paths["val_predictions"] = _save_logits(output_dir, "val", val_df, logits)
    if test_df is not None and len(test_df):
        test_enc = cache.encode(tokenizer, test_df["text"].tolist(), cfg.max_length)
        logits = predict_logits(model, test_enc.input_ids, pad_id, batch, precision=cfg.precision)
        paths["test_logits"], paths["test_predictions"] = _save_logits(output_dir, "test", test_df, logits)
    seconds, speed = _speed(trainer)
    state = trainer.state
    return FinetuneResult(
        output_dir=output_dir, model_dir=model_dir, val_accuracy=val_acc, val_f1=val_f1,
        best_epoch=_best_epoch(state.log_history, cfg.metric_for_best),
        epochs_run=int(round(state.epoch or 0)), start_epoch=hooks_cb.start_epoch, global_step=state.global_step,
        resumed_from=resumed_from, batch_size=run_state["batch_size"], grad_accum=run_state["grad_accum"],
        oom_retries=run_state["oom_retries"],
        val_fingerprint=rows_fingerprint(val_df) if val_df is not None else None,
        val_logits_path=paths["val_logits"], test_logits_path=paths["test_logits"],
        val_predictions_path=paths["val_predictions"], test_predictions_path=paths["test_predictions"],
        train_seconds=seconds, train_samples_per_second=speed,
    )


def _save_logits(output_dir: str, split: str, df: pd.DataFrame, logits: np.ndarray) -> tuple[str, str]:
    logits_path = os.path.join(output_dir, f"{split}_logits.npy")
    preds_path = os.path.join(output_dir, f"{split}_predictions.csv")
    np.save(logits_path, logits)
    _write_predictions(preds_path, df, logits)
    return logits_path, preds_path


# ---------------------------------------------------------------- TAPT

def _holdout(n: int, fraction: float, max_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, eval_idx): a deterministic held-out slice to measure MLM loss on."""
    n_eval = min(max(1, int(round(n * fraction))), max_rows, n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_eval:]), np.sort(perm[:n_eval])


def tapt(cfg: TaptConfig, texts: Sequence[str], output_dir: str | os.PathLike,
         hooks: Hooks | None = None, tracking: TrackingRun | None = None) -> TaptResult | None:
    """Continue masked-LM pretraining of ``cfg.model`` on the task's texts.

    Logs held-out MLM loss and perplexity per epoch (and once before training), resumes like
    ``finetune``, and saves model + tokenizer to ``output_dir/model``, loadable by ``load_classifier``.
    Returns None on the ranks other than 0 of a data-parallel run (rank 0 writes and returns).
    """
    cfg.validate()
    hooks = hooks or NULL_HOOKS
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    texts = list(texts)
    if len(texts) < 2:
        raise ValueError("tapt needs at least 2 texts (one is held out to measure the MLM loss)")
    source = resolve_model_source(cfg.model, output_dir, texts)
    run_state = _start_run_state(output_dir, cfg)
    session = _tracking_session(cfg, tracking, output_dir)

    tokenizer = load_tokenizer(source)
    with main_first():  # rank 0 fills the token cache, the others read it
        enc = TokenCache(cfg.cache_dir).encode(tokenizer, texts, cfg.max_length, with_offsets=cfg.whole_word_mask)
    train_idx, eval_idx = _holdout(len(texts), cfg.eval_fraction, cfg.eval_max_rows, cfg.seed)

    def subset(idx):
        offsets = [enc.offsets[i] for i in idx] if enc.offsets is not None else None
        return EncodedDataset([enc.input_ids[i] for i in idx], offsets=offsets)

    fp16, bf16 = resolve_precision(cfg.precision)
    # Each rank its own masking stream: with one seed every rank would mask the same positions.
    collator = MLMPadCollator(tokenizer, cfg.mlm_probability, cfg.whole_word_mask, seed=cfg.seed + rank(),
                              pad_to_multiple_of=8 if (fp16 or bf16) else None)

    def build(batch: int, accum: int) -> tuple[Trainer, HooksCallback]:
        set_seed(cfg.seed)
        model, _ = load_mlm(source)
        hooks_cb = HooksCallback(hooks, MLM_NAMES, batch, accum, perplexity=True)
        health = HealthCallback(cfg.nan_check_steps, cfg.not_learning_epoch, classify=False,
                                min_steps=cfg.not_learning_min_steps)
        args = _training_args(cfg, os.path.join(output_dir, CHECKPOINTS), batch, accum, evaluate=True,
                              run_name=session.run.name, eval_on_start=True,
                              train_sampling_strategy="group_by_length")
        trainer = Trainer(model=model, args=args, data_collator=collator, train_dataset=subset(train_idx),
                          eval_dataset=subset(eval_idx), processing_class=tokenizer, callbacks=[hooks_cb, health])
        return trainer, hooks_cb

    with session:
        trainer, hooks_cb, resumed_from = _train_with_oom_retry(build, output_dir, run_state, hooks)
    model_dir = os.path.join(output_dir, "model")
    _save_final(trainer, tokenizer, model_dir)
    if not is_main():
        return None
    result = _tapt_result(trainer, hooks_cb, output_dir, model_dir, run_state, resumed_from)
    _write_json(os.path.join(output_dir, "result.json"), dataclasses.asdict(result))
    return result


def _tapt_result(trainer, hooks_cb, output_dir, model_dir, run_state, resumed_from) -> TaptResult:
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    initial = next((h["eval_loss"] for h in evals if h.get("epoch", 0) == 0), None)
    final = evals[-1]["eval_loss"]
    seconds, speed = _speed(trainer)
    return TaptResult(
        output_dir=output_dir, model_dir=model_dir, initial_mlm_loss=initial, final_mlm_loss=final,
        final_perplexity=math.exp(min(final, 50.0)), epochs_run=int(round(trainer.state.epoch or 0)),
        start_epoch=hooks_cb.start_epoch, global_step=trainer.state.global_step, resumed_from=resumed_from,
        batch_size=run_state["batch_size"], grad_accum=run_state["grad_accum"],
        oom_retries=run_state["oom_retries"], train_seconds=seconds, train_samples_per_second=speed,
    )
