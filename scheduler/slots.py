"""Slots: one per GPU (or CPU slots when there is none), and the environment a job gets on one.

Reading GPUs uses NVML (nvidia-ml-py), never torch: the worker parent must not start CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import SchedError


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


def nvml_gpu_count() -> int:
    """Number of NVIDIA GPUs NVML sees; 0 without a driver or without nvidia-ml-py."""
    try:
        import pynvml
    except ImportError:
        return 0
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError: no driver on this machine
        return 0
    try:
        return pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()


def parse_slots(spec: str, cpu_slots: int = 1) -> list[Slot]:
    """`--gpus` value -> slots. `0,1`: those GPUs; `auto`: every GPU NVML sees, else CPU slots;
    `none`: `cpu_slots` CPU slots."""
    spec = spec.strip().lower()
    if cpu_slots < 1:
        raise SchedError("--cpu-slots must be at least 1")
    if spec == "none":
        threads = max(1, (os.cpu_count() or 1) // cpu_slots)
        return [Slot(f"cpu{i}", None, threads) for i in range(cpu_slots)]
    if spec == "auto":
        count = nvml_gpu_count()
        return [Slot(f"gpu{i}", i) for i in range(count)] if count else parse_slots("none", cpu_slots)
    try:
        gpus = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise SchedError(f"--gpus takes a list like 0,1, or auto, or none; got '{spec}'") from None
    if not gpus or len(set(gpus)) != len(gpus) or min(gpus) < 0:
        raise SchedError(f"--gpus: list each GPU index once, e.g. 0,1; got '{spec}'")
    return [Slot(f"gpu{i}", i) for i in gpus]


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
