"""TrainerCallbacks that connect the HF Trainer to our Hooks, and stochastic weight averaging (SWA)."""

from __future__ import annotations

import logging
import math
import os

import torch
from torch.optim.swa_utils import AveragedModel
from transformers import TrainerCallback

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
        self.hooks.fault("train_begin", self._state(args, state))

    def on_step_begin(self, args, state, control, **kwargs):
        self.hooks.fault("step_begin", self._state(args, state))

    def on_step_end(self, args, state, control, **kwargs):
        # "steps · epoch 1.4/3": `sched status` shows it after done/total.
        self.hooks.on_progress(state.global_step, state.max_steps,
                               f"steps · epoch {state.epoch:.1f}/{state.num_train_epochs:g}")
        self.hooks.fault("step_end", self._state(args, state))
        if self.hooks.should_stop():
            # Ask the Trainer to checkpoint at this step; on_save raises once the files are on disk.
            self.stop_requested = True
            control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):
        ckpt = checkpoint_dir(args, state)
        if self.stop_requested:
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
        self.average = AveragedModel(model, device=torch.device("cpu"))
        saved = os.path.join(self.resume_from, SWA_STATE) if self.resume_from else None
        if saved and os.path.exists(saved):
            self.average.load_state_dict(torch.load(saved, map_location="cpu", weights_only=True))

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        # Runs before the Trainer evaluates and checkpoints this epoch, so the checkpoint includes it.
        if round(state.epoch) >= self.first_epoch:
            self.average.update_parameters(model)

    def on_save(self, args, state, control, **kwargs):
        if self.average is not None and int(self.average.n_averaged) > 0:
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
