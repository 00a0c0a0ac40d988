"""NVML in a worker process: which GPUs it may use, and what each one reads now.

One NVML session per process: `nvmlInit` opens every device, so it is started on first use and
shut down at exit, not on every claim pass and heartbeat. Each GPU is read on its own, and its
memory apart from its utilisation: utilisation is NOT_SUPPORTED on MIG devices and some boards,
and one lost GPU must not blank the others (a missing memory reading turns every `gpu_memory`
request into a whole-GPU one).

The GPUs a worker may use: every GPU NVML sees, or, when the worker inherits
CUDA_VISIBLE_DEVICES (a Slurm allocation, a container), only those it names. NVML ignores that
variable and numbers GPUs in PCI bus order; the entries are mapped to NVML's GPUs by UUID
(`GPU-...`, `MIG-...`) or by position among the GPUs this process can open (what CUDA numbers
0, 1, ... inside a cgroup that hides the others). A job then gets the entry the allocation used
for its GPU, so it never sees a GPU outside the allocation.

MIG: sched does not schedule MIG instances one by one. A GPU in MIG mode is one slot (a job on
it runs on the first instance CUDA enumerates); a worker given MIG instance UUIDs keeps one per
physical GPU. Both are said once in the log.

Never torch: the worker parent must not start CUDA.
"""

from __future__ import annotations

import atexit
import logging
import os
from dataclasses import dataclass

from ..errors import SchedError

log = logging.getLogger("sched.worker")

VISIBLE = "CUDA_VISIBLE_DEVICES"
NO_GPU_VALUES = ("", "-1", "NoDevFiles")  # Slurm sets NoDevFiles for a job without GPUs


@dataclass(frozen=True)
class Device:
    """A GPU a worker may use: NVML's index (the slot is `gpu<index>`, as nvidia-smi numbers it)
    and the name a job's CUDA_VISIBLE_DEVICES gives it."""

    index: int
    visible: str


class Session:
    """NVML for this process: started once, on first use; shut down at exit."""

    def __init__(self, module=None):
        self._module = module  # tests pass a fake pynvml
        self._lib = None
        self.why = ""  # why there is no NVML here, once known
        self._tried = False
        self._warned: set[tuple[int, str]] = set()

    def lib(self):
        """The started pynvml module, or None (and `why`)."""
        if self._tried:
            return self._lib
        self._tried = True
        module = self._module
        if module is None:
            try:
                import pynvml as module
            except ImportError:
                self.why = "nvidia-ml-py is not installed"
                return None
        try:
            module.nvmlInit()
        except Exception as exc:  # NVMLError: no driver on this machine
            self.why = f"NVML: {exc}"
            return None
        self._lib = module
        atexit.register(self.shutdown)
        return module

    def shutdown(self) -> None:
        if self._lib is not None:
            try:
                self._lib.nvmlShutdown()
            except Exception:  # noqa: BLE001 - at exit: nothing left to tell
                pass
        self._lib, self._tried = None, False

    # ---- which GPUs -------------------------------------------------------------------------

    def devices(self, inherited: str | None = None) -> tuple[list[Device], str]:
        """(The GPUs this process may use, why none when empty). `inherited`: the worker's own
        CUDA_VISIBLE_DEVICES (None: not set, every GPU)."""
        nvml = self.lib()
        if nvml is None:
            return self._named_only(inherited)
        count = nvml.nvmlDeviceGetCount()
        if inherited is None:
            found = [Device(i, str(i)) for i in range(count)]
            return found, "" if found else "NVML sees no GPU"
        if inherited.strip() in NO_GPU_VALUES:
            return [], f"{VISIBLE}={inherited!r}: this allocation has no GPU"
        found: dict[int, Device] = {}
        for entry in (part.strip() for part in inherited.split(",")):
            index = self._index_of(nvml, entry, count)
            if index in found:
                log.warning("%s names several MIG instances of GPU %d: sched uses one slot per physical GPU, "
                            "%s is left out", VISIBLE, index, entry)
                continue
            found[index] = Device(index, entry)
        return list(found.values()), ""

    def _named_only(self, inherited: str | None) -> tuple[list[Device], str]:
        """Without NVML, an allocation's CUDA_VISIBLE_DEVICES still says which GPUs are this
        worker's: one slot each, by position, taking whole-GPU jobs only (no memory readings)."""
        if inherited is None or inherited.strip() in NO_GPU_VALUES:
            return [], self.why
        entries = [part.strip() for part in inherited.split(",") if part.strip()]
        log.warning("%s; using the %d GPU(s) %s names, without memory readings (no sharing by gpu_memory)",
                    self.why, len(entries), VISIBLE)
        return [Device(i, entry) for i, entry in enumerate(entries)], ""

    def _index_of(self, nvml, entry: str, count: int) -> int:
        """NVML's index of one CUDA_VISIBLE_DEVICES entry (a position or a UUID)."""
        if entry.upper().startswith(("GPU-", "MIG-")):
            try:
                handle = nvml.nvmlDeviceGetHandleByUUID(entry)
                if entry.upper().startswith("MIG-"):
                    handle = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
                return nvml.nvmlDeviceGetIndex(handle)
            except Exception as exc:
                raise SchedError(f"{VISIBLE} names {entry}, which NVML does not know ({exc})") from None
        try:
            position = int(entry)
        except ValueError:
            raise SchedError(f"{VISIBLE}={os.environ.get(VISIBLE)!r}: '{entry}' is neither a GPU number "
                             "nor a GPU-/MIG- UUID") from None
        openable = [i for i in range(count) if self._opens(nvml, i)]
        if not 0 <= position < len(openable):
            raise SchedError(f"{VISIBLE} names GPU {entry}, but this process can use {len(openable)} GPU(s)")
        return openable[position]

    @staticmethod
    def _opens(nvml, index: int) -> bool:
        """Whether this process may use the GPU (a cgroup hides the others: NO_PERMISSION)."""
        try:
            nvml.nvmlDeviceGetHandleByIndex(index)
            return True
        except Exception:  # noqa: BLE001 - NO_PERMISSION, or lost: not ours to use
            return False

    def mig_note(self, devices: list[Device]) -> None:
        """One log line for each GPU in MIG mode: it is one slot."""
        nvml = self.lib()
        for device in devices if nvml is not None else ():
            try:
                current, _pending = nvml.nvmlDeviceGetMigMode(nvml.nvmlDeviceGetHandleByIndex(device.index))
            except Exception:  # noqa: BLE001 - not supported: no MIG on this GPU
                continue
            if current:
                log.warning("gpu%d is in MIG mode: sched treats the physical GPU as one slot (a job there runs "
                            "on the first MIG instance CUDA sees; memory shown is the whole GPU's)", device.index)

    # ---- readings ---------------------------------------------------------------------------

    def readings(self, indices: list[int]) -> list[dict] | None:
        """Per GPU: {gpu, mem_used, mem_total (MiB), util (% or None)}, or {gpu, lost: reason};
        None where NVML is absent."""
        if not indices:
            return None
        nvml = self.lib()
        if nvml is None:
            return None
        return [self._read(nvml, index) for index in indices]

    def _read(self, nvml, index: int) -> dict:
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        except Exception as exc:  # noqa: BLE001 - a GPU fell off the bus, or was reset
            self._warn_once(index, f"gpu{index}: NVML cannot read it ({exc}); shown as lost")
            return {"gpu": index, "lost": str(exc) or type(exc).__name__}
        reading = {"gpu": index, "util": None, "mem_used": memory.used // 2**20, "mem_total": memory.total // 2**20}
        try:
            reading["util"] = nvml.nvmlDeviceGetUtilizationRates(handle).gpu
        except Exception:  # noqa: BLE001 - NOT_SUPPORTED on MIG devices and some boards
            pass
        return reading

    def _warn_once(self, index: int, message: str) -> None:
        if (index, message) not in self._warned:
            self._warned.add((index, message))
            log.warning(message)


SESSION = Session()  # this process's; tests replace it with one on a fake pynvml
