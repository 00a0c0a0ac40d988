"""Slots: one per GPU plus CPU slots, and the environment a job gets on its GPUs or CPU slot.

Reading GPUs uses NVML (nvidia-ml-py), never torch: the worker parent must not start CUDA.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .errors import SchedError

log = logging.getLogger("sched.worker")


@dataclass(frozen=True)
class Slot:
    name: str  # "gpu0", "cpu0"
    gpu: int | None  # the physical GPU index (PCI bus order), None for a CPU slot
    threads: int | None = None  # CPU threads a job on this slot may use (None: the library default)

    @property
    def gpus(self) -> int:
        return 0 if self.gpu is None else 1

    def child_env(self, job_gpus: int) -> dict[str, str]:
        """Environment for a job on this slot: it sees only its own GPU, or none if it asked none."""
        visible = str(self.gpu) if (self.gpu is not None and job_gpus > 0) else ""
        threads = {}
        if self.threads and "OMP_NUM_THREADS" not in os.environ:
            # CPU slots share the cores: without a cap every job starts a thread per core, and
            # oversubscribed BLAS threads slow tiny models down by an order of magnitude.
            threads = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        return {
            **threads,
            # PCI bus order makes index N the same GPU that nvidia-smi and NVML call N.
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": visible,
            "SCHED_DEVICE": "cuda" if visible else "cpu",
            "SCHED_SLOT": self.name,
        }


def placement_env(gpus: tuple[int, ...], share_mib: int | None) -> dict[str, str]:
    """Environment of a GPU job placed on `gpus` (scheduler/gpus.py): it sees those GPUs only;
    a data-parallel kind starts one process per GPU (SCHED_PROCESSES); a shared job knows its
    share (SCHED_GPU_SHARE_MIB: the runner caps torch's memory to it)."""
    from .gpus import slot_name

    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)),
           "SCHED_DEVICE": "cuda", "SCHED_SLOT": slot_name(gpus), "SCHED_PROCESSES": str(len(gpus))}
    if share_mib is not None:
        env["SCHED_GPU_SHARE_MIB"] = str(share_mib)
    return env


def nvml_gpu_count() -> tuple[int, str]:
    """(Number of NVIDIA GPUs NVML sees, why none when 0)."""
    try:
        import pynvml
    except ImportError:
        return 0, "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError: no driver on this machine
        return 0, f"NVML: {exc}"
    try:
        count = pynvml.nvmlDeviceGetCount()
        return count, "" if count else "NVML sees no GPU"
    finally:
        pynvml.nvmlShutdown()


def cpu_slot_list(count: int) -> list[Slot]:
    threads = max(1, (os.cpu_count() or 1) // count)
    return [Slot(f"cpu{i}", None, threads) for i in range(count)]


def parse_slots(spec: str, cpu_slots: int = 1, gpu_count: tuple[int, str] | None = None) -> list[Slot]:
    """`--gpus` value -> slots: one per GPU (`0,1`: those; `auto`: every GPU NVML sees; `none`:
    none), then `cpu_slots` CPU slots for jobs that ask no GPU. `gpu_count`: what NVML sees
    (count, why none), read when not given."""
    spec = spec.strip().lower()
    if cpu_slots < 1:
        raise SchedError("--cpu-slots must be at least 1")
    if spec == "none":
        return cpu_slot_list(cpu_slots)
    count, why = gpu_count if gpu_count is not None else nvml_gpu_count()
    if spec == "auto":
        if not count:
            log.warning("--gpus auto: no GPU found (%s); running %d CPU slot(s): jobs that need a GPU wait",
                        why, cpu_slots)
        return [Slot(f"gpu{i}", i) for i in range(count)] + cpu_slot_list(cpu_slots)
    try:
        gpus = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise SchedError(f"--gpus takes a list like 0,1, or auto, or none; got '{spec}'") from None
    if not gpus or len(set(gpus)) != len(gpus) or min(gpus) < 0:
        raise SchedError(f"--gpus: list each GPU index once, e.g. 0,1; got '{spec}'")
    if max(gpus) >= count:
        sees = f"NVML sees {count} GPU(s): {', '.join(map(str, range(count)))}" if count else why
        raise SchedError(f"--gpus {spec}: no GPU {max(gpus)} on this machine ({sees})")
    return [Slot(f"gpu{i}", i) for i in gpus] + cpu_slot_list(cpu_slots)


def nvml_inventory(indices: list[int]):
    """Memory of these GPUs now (scheduler.gpus.Gpu: total and free MiB; None where unknown)."""
    from .gpus import Gpu

    readings = {r["gpu"]: r for r in (gpu_readings(indices) or [])}
    return [Gpu(i, readings[i]["mem_total"] if i in readings else None,
                readings[i]["mem_total"] - readings[i]["mem_used"] if i in readings else None) for i in indices]


def gpu_readings(indices: list[int]) -> list[dict] | None:
    """Utilisation (%) and memory (MiB) of these GPUs from NVML; None where NVML is absent."""
    if not indices:
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no nvidia-ml-py or no driver
        return None
    try:
        readings = []
        for index in indices:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            readings.append({"gpu": index, "util": util.gpu, "mem_used": memory.used // 2**20,
                             "mem_total": memory.total // 2**20})
        return readings
    except Exception:  # a GPU fell off the bus: report nothing rather than stop the worker
        return None
    finally:
        pynvml.nvmlShutdown()
