"""Slots: one per GPU plus CPU slots, and the environment a job gets on its GPUs or CPU slot.

Reading GPUs uses NVML (nvidia-ml-py, scheduler/nvml.py), never torch: the worker parent must not
start CUDA.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ..errors import SchedError
from ..resources import DEFAULT_CONTEXT_MIB
from .nvml import SESSION, VISIBLE, Device

log = logging.getLogger("sched.worker")


@dataclass(frozen=True)
class Slot:
    name: str  # "gpu0", "cpu0"
    gpu: int | None  # the physical GPU index (PCI bus order, NVML's), None for a CPU slot
    threads: int | None = None  # CPU threads a job on this slot may use (None: the library default)
    visible: str | None = None  # the GPU's name in a job's CUDA_VISIBLE_DEVICES (None: its index)

    @property
    def gpus(self) -> int:
        return 0 if self.gpu is None else 1

    @property
    def device_name(self) -> str:
        return self.visible if self.visible is not None else str(self.gpu)

    def child_env(self, job_gpus: int) -> dict[str, str]:
        """Environment for a job on this slot: it sees only its own GPU, or none if it asked none."""
        visible = self.device_name if (self.gpu is not None and job_gpus > 0) else ""
        threads = {}
        if self.threads and "OMP_NUM_THREADS" not in os.environ:
            # CPU slots share the cores: without a cap every job starts a thread per core, and
            # oversubscribed BLAS threads slow tiny models down by an order of magnitude.
            threads = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        return {
            **threads,
            **_device_order(),
            VISIBLE: visible,
            "SCHED_DEVICE": "cuda" if visible else "cpu",
            "SCHED_SLOT": self.name,
        }


def _device_order() -> dict[str, str]:
    # PCI bus order makes index N the same GPU that nvidia-smi and NVML call N. An order the worker
    # inherited (with its allocation's CUDA_VISIBLE_DEVICES) is the one those names were given in.
    return {"CUDA_DEVICE_ORDER": os.environ.get("CUDA_DEVICE_ORDER", "PCI_BUS_ID")}


def placement_env(gpus: tuple[int, ...], share_mib: int | None, names: dict[int, str] | None = None,
                  context_mib: int = DEFAULT_CONTEXT_MIB) -> dict[str, str]:
    """Environment of a GPU job placed on `gpus` (scheduler/execute/placement.py): it sees those GPUs only (by
    `names`: the allocation's names for them, else their indices); a data-parallel kind starts one
    process per GPU (SCHED_PROCESSES); a shared job knows its share and the context allowance in
    it (the runner caps torch's allocator to the share less the allowance)."""
    from ..resources import slot_name

    names = names or {}
    env = {**_device_order(), VISIBLE: ",".join(names.get(i, str(i)) for i in gpus),
           "SCHED_DEVICE": "cuda", "SCHED_SLOT": slot_name(gpus), "SCHED_PROCESSES": str(len(gpus))}
    if share_mib is not None:
        env["SCHED_GPU_SHARE_MIB"] = str(share_mib)
        env["SCHED_GPU_CONTEXT_MIB"] = str(context_mib)
    return env


def cpu_slot_list(count: int) -> list[Slot]:
    threads = max(1, (os.cpu_count() or 1) // count)
    return [Slot(f"cpu{i}", None, threads) for i in range(count)]


def parse_slots(spec: str, cpu_slots: int = 1, gpu_count: tuple[int, str] | None = None) -> list[Slot]:
    """`--gpus` value -> slots: one per GPU (`0,1`: those; `auto`: every GPU this worker may use;
    `none`: none), then `cpu_slots` CPU slots for jobs that ask no GPU.

    The GPUs this worker may use: those NVML sees, or only those named by an inherited
    CUDA_VISIBLE_DEVICES (scheduler/execute/nvml.py). `gpu_count` (that many, numbered from 0, and
    why none when 0) gives them instead of asking NVML."""
    spec = spec.strip().lower()
    if cpu_slots < 1:
        raise SchedError("--cpu-slots must be at least 1")
    if spec == "none":
        return cpu_slot_list(cpu_slots)
    inherited = os.environ.get(VISIBLE)
    from_nvml = gpu_count is None
    usable, why = SESSION.devices(inherited) if from_nvml else \
        ([Device(i, str(i)) for i in range(gpu_count[0])], gpu_count[1])
    if spec == "auto":
        if not usable:
            log.warning("--gpus auto: no GPU found (%s); running %d CPU slot(s): jobs that need a GPU wait",
                        why, cpu_slots)
        chosen = usable
    else:
        chosen = _listed(spec, usable, why, inherited if from_nvml else None)
    if from_nvml:
        SESSION.mig_note(chosen)
    return [_gpu_slot(d) for d in chosen] + cpu_slot_list(cpu_slots)


def _gpu_slot(device: Device) -> Slot:
    return Slot(f"gpu{device.index}", device.index, visible=None if device.visible == str(device.index)
                else device.visible)


def _listed(spec: str, usable: list[Device], why: str, inherited: str | None) -> list[Device]:
    """The GPUs `--gpus 0,1` names, each one this worker may use."""
    try:
        wanted = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise SchedError(f"--gpus takes a list like 0,1, or auto, or none; got '{spec}'") from None
    if not wanted or len(set(wanted)) != len(wanted) or min(wanted) < 0:
        raise SchedError(f"--gpus: list each GPU index once, e.g. 0,1; got '{spec}'")
    by_index = {d.index: d for d in usable}
    missing = [i for i in wanted if i not in by_index]
    if missing and inherited is not None and usable:
        raise SchedError(f"--gpus {spec}: GPU {missing[0]} is not in this allocation ({VISIBLE}={inherited} "
                         f"gives {', '.join(f'gpu{d.index}' for d in usable)})")
    if missing:
        count = len(usable)
        sees = f"NVML sees {count} GPU(s): {', '.join(str(d.index) for d in usable)}" if count else why
        raise SchedError(f"--gpus {spec}: no GPU {max(missing)} on this machine ({sees})")
    return [by_index[i] for i in wanted]


def nvml_inventory(indices: list[int]):
    """Memory of these GPUs now (scheduler.execute.placement.Gpu: total and free MiB; None where unknown; a
    GPU NVML cannot read is lost: no job is placed on it)."""
    from .placement import Gpu

    readings = {r["gpu"]: r for r in (gpu_readings(indices) or [])}
    gpus = []
    for index in indices:
        reading = readings.get(index)
        if reading is None:
            gpus.append(Gpu(index, None))
        elif "lost" in reading:
            gpus.append(Gpu(index, None, lost=reading["lost"]))
        else:
            gpus.append(Gpu(index, reading["mem_total"], reading["mem_total"] - reading["mem_used"]))
    return gpus


def gpu_readings(indices: list[int]) -> list[dict] | None:
    """Per GPU: utilisation (%, None where not supported) and memory (MiB), or why it is lost;
    None where NVML is absent. One NVML session per process (scheduler/nvml.py)."""
    return SESSION.readings(indices)
