"""Where GPU jobs go on one worker: whole GPUs, gangs of k GPUs, and memory shares of one GPU.

A worker's claim is one *pass* over the runnable GPU jobs in claim order (priority high to low,
then first submitted). Each job asks for k GPUs and, when k is 1, maybe only part of one: its
declared `gpu_memory`, or for `auto` the peak its like (same kind, model and memory params)
reached before plus a margin. The pass places what fits:

- a whole-GPU job (k >= 1, no size, or `exclusive` after an out-of-memory on a shared GPU) takes
  k GPUs that run nothing;
- a shared job takes the GPU with the fewest jobs it fits on (then the tightest fit), so jobs
  spread over idle GPUs instead of queueing for one (a waiting gang or whole-GPU job reserves the
  GPUs it needs first, below); it fits while the declared sizes there add up to at most the GPU's memory minus the
  headroom, and NVML's free memory minus the headroom covers it too (other programs use GPUs).

No starvation (Slurm-style reservation): the first job in claim order that does not fit keeps the
GPUs that will be free soonest for it (idle ones first, then those with the fewest shared jobs).
Jobs after it that are not preemptible may not start on them; a preemptible one may (backfill)
while the kept GPUs wait on jobs that will not yield, and is asked to yield once the reserved job
could start without it.

Pure logic on plain data: the worker feeds it NVML readings and the jobs it runs, tests feed it
fake inventories.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from ..resources import DEFAULT_CONTEXT_MIB, DEFAULT_HEADROOM_MIB, Request, slot_name


@dataclass(frozen=True)
class Held:
    """A job on a GPU: its share (None: the whole GPU), priority, and whether it may be asked to yield."""

    share_mib: int | None
    priority: int = 0
    preemptible: bool = False
    leaving: bool = False  # asked to stop already (preempted, cancelled, timed out): it will be gone


@dataclass
class Gpu:
    """One GPU of a worker as a pass sees it."""

    index: int
    total_mib: int | None  # NVML total; None when unknown (no sharing then)
    free_mib: int | None = None  # NVML free at the start of the pass
    held: list[Held] = field(default_factory=list)  # the jobs on it
    lost: str | None = None  # NVML cannot read it (fell off the bus, reset): no job goes there
    outside: bool = False  # used beyond the headroom with no sched job on it (set by the pass)

    @property
    def whole(self) -> bool:
        return any(h.share_mib is None for h in self.held)

    @property
    def shares(self) -> list[int]:
        return [h.share_mib for h in self.held if h.share_mib is not None]

    @property
    def idle(self) -> bool:
        """Free for a whole-GPU job: no sched job, no other program's memory, and readable."""
        return not self.held and not self.outside and self.lost is None

    def used_outside(self, headroom: int) -> bool:
        """More than the headroom used while no sched job is here: another program (or one a
        crashed job left behind) holds it, and a whole-GPU job there would run out of memory."""
        return (not self.held and self.total_mib is not None and self.free_mib is not None
                and self.total_mib - self.free_mib > headroom)

    def without(self, gone: Callable[[Held], bool]) -> Gpu:
        """This GPU once the jobs `gone` picks had ended (NVML's free reading then no longer holds)."""
        staying = [h for h in self.held if not gone(h)]
        return Gpu(self.index, self.total_mib, None if len(staying) < len(self.held) else self.free_mib, staying,
                   self.lost, self.outside)

    def room(self, headroom: int, placed_now: int) -> int:
        """MiB a new shared job may declare here."""
        if self.whole or self.total_mib is None or self.lost is not None:
            return 0
        room = self.total_mib - headroom - sum(self.shares)
        if self.free_mib is not None:  # what NVML sees free, less what this pass placed already
            room = min(room, self.free_mib - headroom - placed_now)
        return room


@dataclass(frozen=True)
class Placement:
    gpus: tuple[int, ...]
    share_mib: int | None = None

    @property
    def slot(self) -> str:
        return slot_name(self.gpus)


@dataclass(frozen=True)
class Reservation:
    job_id: int
    name: str
    priority: int
    gpus: tuple[int, ...]  # the free GPUs kept for it (none: it waits for memory on busy ones)
    needs: int
    share_mib: int | None = None
    by_preemption: bool = False  # it fits once lower-priority preemptible jobs yield: they are asked to
    by_leaving: bool = False  # it fits once the jobs already asked to stop have gone: ask no more

    def as_json(self) -> dict:
        return {"job_id": self.job_id, "name": self.name, "priority": self.priority,
                "gpus": list(self.gpus), "needs": self.needs}


class ClaimPass:
    """One claim pass over a worker's GPUs: `place(request)` says where a job goes (or None)."""

    def __init__(self, gpus: list[Gpu], headroom_mib: int = DEFAULT_HEADROOM_MIB,
                 context_mib: int = DEFAULT_CONTEXT_MIB):
        self.gpus = {gpu.index: gpu for gpu in gpus}
        self.headroom = headroom_mib
        self.context_mib = context_mib  # in every share (see DEFAULT_CONTEXT_MIB)
        for gpu in gpus:
            gpu.outside = gpu.outside or gpu.used_outside(headroom_mib)
        self.placed_now: dict[int, int] = {}  # MiB placed by this pass per GPU (NVML free lags)
        self.reservation: Reservation | None = None

    @property
    def can_share(self) -> bool:
        """Sharing needs a GPU's memory; without any NVML reading every job takes whole GPUs. A GPU
        that cannot be read (lost, or a failed call) takes no shared job, the others still do."""
        return any(gpu.total_mib is not None for gpu in self.gpus.values())

    def place(self, request: Request) -> Placement | None:
        """Where the job goes (and book it), or None; the first job that does not fit reserves."""
        request = self._whole_if_too_big(request)
        placement = self._fit(request)
        if placement is not None:
            self._book(placement, request)
            return placement
        if self.reservation is None and request.gpus <= len(self.gpus):
            self.reservation = Reservation(request.job_id, request.name, request.priority, self._kept_for(request),
                                           request.gpus, request.share_mib, self.fits_once_yielded(request),
                                           self._fits_once(request, lambda h: h.leaving))
        return None

    def _whole_if_too_big(self, request: Request) -> Request:
        """A share no GPU here could ever hold (an `auto` peak near a GPU's size) asks for a whole GPU."""
        if request.share_mib is None or any(
                g.total_mib is not None and g.total_mib - self.headroom >= request.share_mib for g in self.gpus.values()):
            return request
        return dataclasses.replace(request, share_mib=None)

    def _kept_for(self, request: Request) -> tuple[int, ...]:
        """The GPUs a waiting job keeps from lower-priority jobs: those that will be free soonest.

        Idle ones first, then the ones running the fewest shared jobs (whole-GPU jobs last): no new
        job starts there, so they drain. A shared job keeps the one GPU with the most room that can
        ever hold it. Without this, small jobs landing on partly used GPUs would starve it."""
        if request.share_mib is not None and request.gpus == 1:
            able = [g for g in self.gpus.values() if g.total_mib is not None and g.lost is None
                    and g.total_mib - self.headroom >= request.share_mib]
            if not able:
                return ()
            best = min(able, key=lambda g: (g.whole, sum(g.shares), g.index))
            return (best.index,)
        # A lost GPU never frees up; one another program holds frees when that program ends.
        order = sorted((g for g in self.gpus.values() if g.lost is None),
                       key=lambda g: (not g.idle, g.outside, g.whole, len(g.held), g.index))
        return tuple(sorted(g.index for g in order[:request.gpus]))

    def fits_once_yielded(self, request: Request) -> bool:
        """Whether the job would fit once the preemptible jobs below its priority stopped."""
        return self._fits_once(request, lambda h: h.leaving or (h.preemptible and h.priority < request.priority))

    def _fits_once(self, request: Request, gone: Callable[[Held], bool]) -> bool:
        """Whether the job would fit once the jobs that `gone` picks had ended."""
        trial = ClaimPass([gpu.without(gone) for gpu in self.gpus.values()], self.headroom, self.context_mib)
        return trial._fit(request) is not None

    def _usable(self, gpu: Gpu, request: Request) -> bool:
        """A reserved GPU takes no lower-priority job; a preemptible one may backfill it while the
        reserved job waits for jobs that will not yield (it is asked to yield once that changes)."""
        held = self.reservation
        if held is None or gpu.index not in held.gpus:
            return True
        return request.preemptible and not held.by_preemption

    def _fit(self, request: Request) -> Placement | None:
        if request.share_mib is not None and request.gpus == 1:
            fits = [gpu for gpu in self.gpus.values() if self._usable(gpu, request)
                    and gpu.room(self.headroom, self.placed_now.get(gpu.index, 0)) >= request.share_mib]
            if not fits:
                return None
            # Fewest jobs first: sharing trades speed for GPU time, so no GPU sits idle while another
            # runs several; the reservation keeps idle GPUs whole when a bigger job needs them.
            best = min(fits, key=lambda g: (len(g.held), g.room(self.headroom, self.placed_now.get(g.index, 0)),
                                            g.index))
            return Placement((best.index,), request.share_mib)
        idle = [i for i, gpu in sorted(self.gpus.items()) if gpu.idle and self._usable(gpu, request)]
        if len(idle) < request.gpus:
            return None
        return Placement(tuple(idle[:request.gpus]))

    def _book(self, placement: Placement, request: Request) -> None:
        for index in placement.gpus:
            self.gpus[index].held.append(Held(placement.share_mib, request.priority, request.preemptible))
            if placement.share_mib is not None:
                self.placed_now[index] = self.placed_now.get(index, 0) + placement.share_mib
