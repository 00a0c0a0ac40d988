"""The callables a caller (a queue job) passes into training, and the exception a stop request raises.

No torch import here: a job module can build its hooks without paying for torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class StopRequested(Exception):
    """Training stopped because ``Hooks.should_stop()`` returned True; a checkpoint was saved first.

    Running the same call again with the same ``output_dir`` resumes from ``checkpoint``.
    """

    def __init__(self, checkpoint: str | None):
        super().__init__(f"stop requested; resumable checkpoint saved at {checkpoint}")
        self.checkpoint = checkpoint


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None


def _never() -> bool:
    return False


@dataclass
class Hooks:
    """Optional callables; each default does nothing, so training code calls them unconditionally.

    - ``on_log(key, value, step, split)``: a metric. split is "train" or "val". Keys: "loss", "accuracy",
      "f1" (fine-tuning), "mlm_loss", "perplexity" (TAPT), "lr", "samples_per_second",
      "oom_batch_size" (after an out-of-memory retry).
    - ``on_progress(done, total, message)``: optimizer steps done out of total, after every step.
    - ``should_stop() -> bool``: polled after every optimizer step (keep it cheap: read a flag). When it
      returns True a checkpoint is saved and ``StopRequested`` is raised.
    - ``fault(event, state)``: fault injection for tests. Events: "train_begin", "step_begin",
      "step_end", "epoch_end" (after that epoch's checkpoint is on disk), "train_end". ``state`` is a
      dict with epoch, global_step, max_steps, batch_size, grad_accum, checkpoint. Raise from it to
      simulate a crash (or ``torch.cuda.OutOfMemoryError`` to simulate OOM).
    """

    on_log: Callable[[str, float, int, str], None] = _ignore
    on_progress: Callable[[int, int, str], None] = _ignore
    should_stop: Callable[[], bool] = _never
    fault: Callable[[str, dict], None] = _ignore


NULL_HOOKS = Hooks()
