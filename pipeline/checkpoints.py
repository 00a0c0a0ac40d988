"""Checkpoint folders of a training run (no torch: cheap to import)."""

from __future__ import annotations


def drop_incomplete_checkpoints(run_dir: str) -> list[str]:
    """Remove checkpoint folders that a killed process left half-written; returns what it removed.

    The Trainer writes a checkpoint in place and `trainer_state.json` last, so a folder without it
    is unfinished; resuming from it would fail. ``run_dir`` is a ``finetune`` output_dir (its
    checkpoints are in ``checkpoints/``, see pipeline/training.py).
    """
    import os
    import re
    import shutil

    ckpt_root = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(ckpt_root):
        return []
    removed = []
    for name in os.listdir(ckpt_root):
        path = os.path.join(ckpt_root, name)
        if re.fullmatch(r"checkpoint-\d+", name) and os.path.isdir(path) \
                and not os.path.exists(os.path.join(path, "trainer_state.json")):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
