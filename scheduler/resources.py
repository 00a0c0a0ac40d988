"""What a job asks of GPUs and how sizes and slots are written: the vocabulary the queue, the
store and the worker share (`gpu_memory` sizes, `auto` shares, memory keys, slot names, a claim
pass's Request). Imports nothing of the execution package (scheduler/execute/): the store and the
queue stand below it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from .errors import SchedError

DEFAULT_HEADROOM_MIB = 2048  # left free on every GPU: allocator slack, the driver


# Each CUDA process holds this much outside torch's allocator (its context and kernels, 0.3-0.6 GiB
# measured): a shared job's `gpu_memory` includes it, so its allocator is capped at the share less
# this, and an `auto` share is the recorded allocator peak plus this.
DEFAULT_CONTEXT_MIB = 512


AUTO_FACTOR = 1.1  # `gpu_memory: auto` asks for the recorded peak times this, plus AUTO_MARGIN_MIB


AUTO_MARGIN_MIB = 768


_UNITS = {"": 1, "m": 1, "mb": 1, "mib": 1, "g": 1024, "gb": 1024, "gib": 1024, "t": 1024 ** 2, "tib": 1024 ** 2}


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_memory(value: str | int | float | None) -> int | str | None:
    """`20GiB`, `20G`, `512MiB`, a number of MiB, or `auto` -> MiB (int), "auto", or None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise SchedError(f"gpu_memory: give a size like 20GiB or auto, not {value}")
    if isinstance(value, (int, float)):
        mib = int(value)
    else:
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        match = _SIZE.match(text)
        if not match or match.group(2) not in _UNITS:
            raise SchedError(f"gpu_memory: '{value}' is not a size (use e.g. 20GiB, 512MiB or auto)")
        mib = int(float(match.group(1)) * _UNITS[match.group(2)])
    if mib < 64:
        raise SchedError(f"gpu_memory: {value} is too small for a GPU job (at least 64MiB)")
    return mib


def fmt_mib(mib: float | None) -> str:
    if mib is None:
        return "-"
    return f"{mib / 1024:.1f}GiB" if mib >= 1024 else f"{int(mib)}MiB"


def auto_need(peak_mib: float, context_mib: int = 0) -> int:
    """What `gpu_memory: auto` asks for after a recorded peak of torch's allocator (plus the CUDA
    context each process holds outside it)."""
    return int(peak_mib * AUTO_FACTOR + AUTO_MARGIN_MIB) + context_mib


def memory_key(kind, params: dict) -> str | None:
    """Jobs alike in what decides their GPU memory share one key (`gpu_memory: auto`); None for a
    kind that names no memory params."""
    if not kind.memory_params:
        return None
    shown = params
    if kind.display.params_of and isinstance(params.get(kind.display.params_of), dict):
        shown = params[kind.display.params_of]
    model_param = kind.display.model_param or "model"
    picked = {name: shown.get(name) for name in (model_param, *kind.memory_params)}
    text = json.dumps([kind.name, picked], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def slot_name(gpus: tuple[int, ...]) -> str:
    """The slot a job ran on, as stored: `gpu1`, `gpu0+1`, `gpu0-3+6` (runs of GPUs shortened)."""
    runs: list[list[int]] = []
    for index in sorted(gpus):
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    parts = [f"{r[0]}-{r[-1]}" if len(r) > 2 else "+".join(map(str, r)) for r in runs]
    return "gpu" + "+".join(parts)


def slot_gpus(slot: str) -> list[str]:
    """The per-GPU slot names of a stored slot: `gpu0+1` -> [gpu0, gpu1]; `cpu0` -> [cpu0]."""
    if not slot.startswith("gpu") or not slot[3:]:
        return [slot]
    names = []
    for part in slot[3:].split("+"):
        low, _, high = part.partition("-")
        try:
            names.extend(f"gpu{i}" for i in range(int(low), int(high or low) + 1))
        except ValueError:
            return [slot]
    return names


@dataclass(frozen=True)
class Request:
    """A runnable GPU job as the pass sees it."""

    job_id: int
    name: str
    priority: int
    gpus: int
    share_mib: int | None = None  # None: whole GPUs
    preemptible: bool = False


def share_for(gpu_memory_mib: int | None, auto: bool, exclusive: bool, peak_mib: float | None,
              context_mib: int = DEFAULT_CONTEXT_MIB) -> int | None:
    """The MiB a 1-GPU job declares for sharing (its whole footprint, CUDA context included), or
    None for a whole GPU."""
    if exclusive:
        return None
    if auto:
        return auto_need(peak_mib, context_mib) if peak_mib else None  # no history yet: a whole GPU
    return gpu_memory_mib


def gpu_request_text(gpus: int, gpu_memory_mib: int | None, auto: bool) -> str:
    """`1 GPU`, `2 GPUs`, `1 GPU, shared (20.0GiB)`, `1 GPU, shared (auto)`."""
    text = f"{gpus} GPU" + ("s" if gpus != 1 else "")
    if gpus == 1 and auto:
        return text + ", shared (auto)"
    if gpus == 1 and gpu_memory_mib:
        return text + f", shared ({fmt_mib(gpu_memory_mib)})"
    return text
