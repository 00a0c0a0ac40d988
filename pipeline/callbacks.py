"""TrainerCallbacks that connect the HF Trainer to our Hooks, stop runs that cannot lead anywhere, and
stochastic weight averaging (SWA)."""

from __future__ import annotations

import copy
import logging
import math
import os

import torch
from torch.optim.swa_utils import AveragedModel
from transformers import TrainerCallback

from pipeline import startup
from pipeline.distributed import any_rank, barrier
from pipeline.health import Diverged, NotLearning, check_loss, dead_reason_of
from pipeline.hooks import Hooks, StopRequested

log = logging.getLogger(__name__)

SWA_STATE = "swa_state.pt"


def checkpoint_dir(args, state) -> str:
    """Where the Trainer just wrote (or will write) the checkpoint for the current global step."""
    return os.path.join(args.output_dir, f"checkpoint-{state.global_step}")


def _at_epoch_boundary(state) -> bool:
    return state.epoch is not None and abs(state.epoch - round(state.epoch)) < 1e-6


class HooksCallback(TrainerCallback):
    """Forwards Trainer events to ``Hooks``: metrics, progress, stop requests, fault injection.

    ``names`` maps Trainer metric keys to the keys we report (classification vs MLM differ).
    """

    def __init__(self, hooks: Hooks, names: dict[str, str], batch_size: int, grad_accum: int,
                 perplexity: bool = False):
        self.hooks = hooks
        self.names = names
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.perplexity = perplexity  # also report exp(eval loss), for MLM
        self.stop_requested = False
        self.start_epoch = 0  # where this train() call began: > 0 when it resumed a checkpoint
        self.start_step = 0

    def _state(self, args, state, checkpoint: str | None = None) -> dict:
        return {"epoch": state.epoch or 0.0, "global_step": state.global_step, "max_steps": state.max_steps,
                "batch_size": self.batch_size, "grad_accum": self.grad_accum, "checkpoint": checkpoint}

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_epoch, self.start_step = int(state.epoch or 0), state.global_step
        startup.mark("train() set-up")
        self.hooks.fault("train_begin", self._state(args, state))

    def on_step_begin(self, args, state, control, **kwargs):
        self.hooks.fault("step_begin", self._state(args, state))

    def on_step_end(self, args, state, control, **kwargs):
        startup.first_step()  # a start-up profile (SCHED_PROFILE_STARTUP) ends here
        # "steps · epoch 1.4/3": `sched status` shows it after done/total.
        self.hooks.on_progress(state.global_step, state.max_steps,
                               f"steps · epoch {state.epoch:.1f}/{state.num_train_epochs:g}")
        self.hooks.fault("step_end", self._state(args, state))
        # In a data-parallel run every rank stops at the step where any rank saw the request.
        if any_rank(self.hooks.should_stop()):
            # Ask the Trainer to checkpoint at this step; on_save raises once the files are on disk.
            self.stop_requested = True
            control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):
        ckpt = checkpoint_dir(args, state)
        if self.stop_requested:
            # Every rank waits for rank 0's files: a rank that left first would make torchrun
            # stop the others, rank 0 perhaps halfway through writing the checkpoint.
            barrier()
            raise StopRequested(ckpt)
        if _at_epoch_boundary(state):
            self.hooks.fault("epoch_end", self._state(args, state, ckpt))

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, value in (logs or {}).items():
            if key in ("loss", "learning_rate", "train_samples_per_second"):
                name = {"learning_rate": "lr", "train_samples_per_second": "samples_per_second"}.get(
                    key, self.names.get("loss", "loss"))
                self.hooks.on_log(name, float(value), state.global_step, "train")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        for key, value in (metrics or {}).items():
            name = self.names.get(key.removeprefix("eval_"))
            if name is not None:
                self.hooks.on_log(name, float(value), state.global_step, "val")
        if self.perplexity and "eval_loss" in (metrics or {}):
            ppl = math.exp(min(metrics["eval_loss"], 50.0))  # cap: exp overflows long before 50 matters
            self.hooks.on_log("perplexity", ppl, state.global_step, "val")

    def on_train_end(self, args, state, control, **kwargs):
        self.hooks.fault("train_end", self._state(args, state))


class HealthCallback(TrainerCallback):
    """Fails a run early, with the reason, when it diverged or is not learning (`pipeline.health`).

    Diverged: the weights hold NaN or infinity (checked every `check_steps` optimizer steps: one
    CPU-GPU sync then, none per step), or a logged training or validation loss is NaN or infinite. A
    single NaN loss is not enough: with fp16 the gradient scaler skips such a step and training goes
    on, which is why the Trainer's `logging_nan_inf_filter` stays on.

    Not learning: from epoch `not_learning_epoch` on (and optimizer step `min_steps`), no evaluation
    so far looked alive. A classifier
    is dead when its validation predictions are one class or score at or below the majority class
    (`classify`); a masked LM when its held-out loss is not below the loss it had before training
    (the Trainer's evaluation at epoch 0). The verdict reads the Trainer's log history, which a
    resumed run restores from its checkpoint. The exception propagates out of `Trainer.train`
    before that epoch's checkpoint is written.
    """

    def __init__(self, check_steps: int, not_learning_epoch: int, *, classify: bool, min_steps: int = 0,
                 collapse_share: float = 1.0, min_gain: float = 0.0, majority: float = 0.0):
        self.check_steps = check_steps
        self.not_learning_epoch = not_learning_epoch
        self.min_steps = min_steps
        self.classify = classify
        self.collapse_share, self.min_gain, self.majority = collapse_share, min_gain, majority

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.check_steps and model is not None and state.global_step % self.check_steps == 0:
            if not _all_finite(model):
                raise Diverged(f"weights became NaN or infinite by step {state.global_step} (the training "
                               "loss diverged); try a lower lr")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            check_loss(float(logs["loss"]), state.global_step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = metrics or {}
        if "eval_loss" in metrics:
            check_loss(float(metrics["eval_loss"]), state.global_step, "validation loss")
        epoch = int(round(state.epoch or 0))
        if not self.not_learning_epoch or epoch < self.not_learning_epoch or state.global_step < self.min_steps:
            return
        # Every evaluation after training began, this one included (the Trainer logs before this call).
        evals = [h for h in state.log_history if "eval_loss" in h and h.get("epoch", 0) > 0]
        reasons = [self._reason(h, state) for h in evals] or [self._reason(metrics, state)]
        if all(reasons):  # none looked alive: the kept (best) model is dead too
            raise NotLearning(f"{reasons[-1]} after epoch {epoch} (lr {args.learning_rate:g}); try another lr "
                              "(docs/job-kinds.md lists learning rates that learn)")

    def _reason(self, metrics: dict, state) -> str | None:
        if not self.classify:
            return self._mlm_reason(state, metrics)
        if "eval_top_share" not in metrics or "eval_accuracy" not in metrics:
            return None
        reason = dead_reason_of(metrics["eval_top_share"], metrics["eval_accuracy"], self.majority,
                                collapse_share=self.collapse_share, min_gain=self.min_gain)
        return None if reason is None else f"validation {reason}"

    @staticmethod
    def _mlm_reason(state, metrics: dict) -> str | None:
        before = next((h["eval_loss"] for h in state.log_history
                       if "eval_loss" in h and h.get("epoch", 0) == 0), None)
        loss = metrics.get("eval_loss")
        if before is None or loss is None or loss < before:
            return None
        return f"held-out MLM loss {loss:.4f} is not below its {before:.4f} before training"


def _all_finite(model) -> bool:
    with torch.no_grad():
        return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of `model` whose parameters and buffers are copied straight to the CPU: the
    model's own tensors are never duplicated on their device. Tied weights stay tied (one copy
    per tensor)."""
    memo: dict[int, object] = {}
    for param in model.parameters():
        memo[id(param)] = torch.nn.Parameter(param.detach().to("cpu", copy=True), requires_grad=param.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = buffer.detach().to("cpu", copy=True)
    return copy.deepcopy(model, memo)


class SWACallback(TrainerCallback):
    """Stochastic weight averaging over the last ``swa_epochs`` epochs.

    The running average lives on the CPU (no extra GPU memory), is updated at the end of each epoch
    in the window, is saved into each checkpoint (so a resumed run keeps it) and, at train end, is
    copied into the model: the final model IS the SWA model. BERT-style models use LayerNorm, not
    BatchNorm, so no ``update_bn`` pass is needed.
    """

    def __init__(self, swa_epochs: int, total_epochs: int, resume_from: str | None = None):
        self.first_epoch = total_epochs - swa_epochs + 1  # 1-based epoch that starts the window
        self.resume_from = resume_from
        self.average: AveragedModel | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # From a CPU copy: AveragedModel deep-copies the model where it is, which on a GPU would
        # briefly double the model's memory there (and the peak `gpu_memory: auto` records).
        self.average = AveragedModel(cpu_copy(model), device=torch.device("cpu"))
        saved = os.path.join(self.resume_from, SWA_STATE) if self.resume_from else None
        if saved and os.path.exists(saved):
            self.average.load_state_dict(torch.load(saved, map_location="cpu", weights_only=True))

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        # Runs before the Trainer evaluates and checkpoints this epoch, so the checkpoint includes it.
        if round(state.epoch) >= self.first_epoch:
            self.average.update_parameters(model)

    def on_save(self, args, state, control, **kwargs):
        # The process that writes the checkpoint writes the average (rank 0 of a data-parallel run).
        if args.should_save and self.average is not None and int(self.average.n_averaged) > 0:
            torch.save(self.average.state_dict(), os.path.join(checkpoint_dir(args, state), SWA_STATE))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        n = int(self.average.n_averaged) if self.average is not None else 0
        if n == 0:
            log.warning("SWA: training ended before the averaging window (epoch %d); model left as is",
                        self.first_epoch)
            return
        with torch.no_grad():
            for p, p_avg in zip(model.parameters(), self.average.module.parameters()):
                p.copy_(p_avg.to(p.device, p.dtype))
        log.info("SWA: final weights are the average of %d epoch(s)", n)
