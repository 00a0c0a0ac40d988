"""GPU time without a GPU: placement rules (whole, gangs, shares, reservation), the defaults and
checks of queue.yaml, and a worker on a fake GPU inventory running real runner processes."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest

from scheduler.errors import PlanError, SchedError
from scheduler.resources import (
    DEFAULT_CONTEXT_MIB,
    Request,
    auto_need,
    fmt_mib,
    memory_key,
    parse_memory,
    slot_gpus,
    slot_name,
)
from scheduler.execute.placement import ClaimPass, Gpu, Held
from scheduler.jobqueue import JobSpec
from scheduler.plan import build_plan
from scheduler.execute.slots import Slot, parse_slots, placement_env
from scheduler.views import status_snapshot
from scheduler.execute.worker import WorkerLoop, WorkerOptions
from tests.helpers import step_until

GIB = 1024


# ---------------------------------------------------------------- sizes and names

def test_sizes_parse_to_mib_and_bad_ones_say_what_is_wrong():
    assert parse_memory("20GiB") == 20 * GIB and parse_memory("20G") == 20 * GIB
    assert parse_memory("512MiB") == 512 and parse_memory("1.5gb") == 1536 and parse_memory(4096) == 4096
    assert parse_memory("auto") == "auto" and parse_memory(None) is None
    for bad, says in (("lots", "not a size"), ("20 parsecs", "not a size"), ("10MiB", "too small"), (True, "size")):
        with pytest.raises(SchedError, match=says):
            parse_memory(bad)
    assert fmt_mib(20 * GIB) == "20.0GiB" and fmt_mib(512) == "512MiB"


def test_multi_gpu_slots_are_named_by_their_gpus_and_split_back():
    assert slot_name((0,)) == "gpu0" and slot_name((1, 0)) == "gpu0+1"
    assert slot_name((0, 1, 2, 3, 6)) == "gpu0-3+6"
    assert slot_gpus("gpu0-3+6") == ["gpu0", "gpu1", "gpu2", "gpu3", "gpu6"]
    assert slot_gpus("gpu1") == ["gpu1"] and slot_gpus("cpu0") == ["cpu0"]


def test_memory_key_depends_on_model_and_batch_not_on_lr():
    from jobs import get_kind

    finetune = get_kind("finetune")
    base = {"model": "klue/roberta-base", "batch_size": 32, "max_length": 128, "lr": 2e-5}
    assert memory_key(finetune, base) == memory_key(finetune, {**base, "lr": 5e-5})
    assert memory_key(finetune, base) != memory_key(finetune, {**base, "batch_size": 64})
    assert memory_key(finetune, base) != memory_key(finetune, {**base, "model": "klue/bert-base"})
    tune = get_kind("tune")  # a tune's memory is its fine-tunes'
    assert memory_key(tune, {"finetune": base}) != memory_key(tune, {"finetune": {**base, "max_length": 64}})
    assert memory_key(get_kind("ensemble"), {}) is None


# ---------------------------------------------------------------- the claim pass

def _gpus(*totals_gib, free_gib=None):
    return [Gpu(i, t * GIB, (free_gib if free_gib is not None else t) * GIB) for i, t in enumerate(totals_gib)]


def _req(job_id, gpus=1, share_gib=None, priority=0, preemptible=False):
    return Request(job_id, f"job{job_id}", priority, gpus, None if share_gib is None else share_gib * GIB, preemptible)


def test_shared_jobs_spread_over_the_gpus_then_fill_them():
    claim = ClaimPass(_gpus(80, 80), headroom_mib=2 * GIB)
    placed = [claim.place(_req(i, share_gib=20)) for i in range(7)]
    # 78 GiB usable a GPU: one job each, then side by side, three 20 GiB jobs at most on each
    assert [p.gpus[0] for p in placed[:6]] == [0, 1, 0, 1, 0, 1] and placed[6] is None
    assert all(p.share_mib == 20 * GIB for p in placed[:6])


def test_the_tightest_fit_breaks_ties_between_equally_busy_gpus():
    gpus = _gpus(80, 40)
    claim = ClaimPass(gpus, headroom_mib=2 * GIB)
    assert claim.place(_req(1, share_gib=10)).gpus == (1,)  # 40 GiB is enough: the 80 stays free
    assert claim.place(_req(2, share_gib=10)).gpus == (0,)


def test_nvml_free_memory_bounds_a_share_as_well_as_the_declared_sizes():
    claim = ClaimPass(_gpus(80, free_gib=30), headroom_mib=2 * GIB)  # another program holds 50 GiB
    assert claim.place(_req(1, share_gib=20)).gpus == (0,)
    assert claim.place(_req(2, share_gib=20)) is None  # 30 - 2 - 20 placed this pass < 20


def test_whole_and_gang_jobs_take_idle_gpus_only():
    claim = ClaimPass(_gpus(80, 80, 80), headroom_mib=2 * GIB)
    assert claim.place(_req(1, share_gib=10)).gpus == (0,)
    assert claim.place(_req(2, gpus=2)).gpus == (1, 2)
    assert claim.place(_req(3)) is None  # a whole GPU: it keeps gpu0, the one that drains first
    assert claim.reservation.gpus == (0,)
    assert claim.place(_req(4, share_gib=10)) is None  # room beside job 1, but kept for job 3


def test_the_first_job_that_does_not_fit_reserves_free_gpus_from_lower_priority_jobs():
    gpus = _gpus(80, 80)
    gpus[0].held.append(Held(None, priority=5))  # a long job runs on gpu0
    claim = ClaimPass(gpus, headroom_mib=2 * GIB)
    assert claim.place(_req(1, gpus=2, priority=10)) is None
    held = claim.reservation
    assert held.job_id == 1 and held.gpus == (0, 1) and held.needs == 2 and not held.by_preemption
    assert claim.place(_req(2, priority=0)) is None  # would take the reserved gpu1
    assert claim.place(_req(3, share_gib=10, priority=0)) is None
    backfill = claim.place(_req(4, priority=0, preemptible=True))  # may use it until the long job ends
    assert backfill is not None and backfill.gpus == (1,)


def test_a_reservation_that_preemption_can_satisfy_takes_no_backfill():
    gpus = _gpus(80, 80)
    gpus[0].held.append(Held(None, priority=0, preemptible=True))
    claim = ClaimPass(gpus, headroom_mib=2 * GIB)
    assert claim.place(_req(1, gpus=2, priority=10)) is None
    assert claim.reservation.by_preemption  # gpu0's job will be asked to yield
    assert claim.place(_req(2, priority=0, preemptible=True)) is None  # would come back at once


def test_a_waiting_whole_gpu_job_keeps_partly_used_gpus_from_new_shared_jobs():
    gpus = _gpus(80, 80)
    gpus[0].held.append(Held(20 * GIB, priority=0))
    gpus[1].held.extend([Held(20 * GIB, priority=0), Held(20 * GIB, priority=0)])
    claim = ClaimPass(gpus, headroom_mib=2 * GIB)
    assert claim.place(_req(1, priority=10)) is None  # needs a whole GPU; none is idle
    assert claim.reservation.gpus == (0,)  # the GPU with the fewest jobs drains first
    assert claim.place(_req(2, share_gib=10, priority=0)).gpus == (1,)  # not on the kept gpu0


def test_a_waiting_shared_job_keeps_the_gpu_with_the_most_room():
    gpus = _gpus(80, 80)
    gpus[0].held.extend([Held(50 * GIB, priority=0)])
    gpus[1].held.extend([Held(30 * GIB, priority=0), Held(10 * GIB, priority=0)])
    claim = ClaimPass(gpus, headroom_mib=2 * GIB)
    assert claim.place(_req(1, share_gib=60, priority=10)) is None
    assert claim.reservation.gpus == (1,)  # 40 GiB in use there against 50
    assert claim.place(_req(2, share_gib=10, priority=0)).gpus == (0,)


def test_a_share_no_gpu_could_hold_asks_for_a_whole_gpu():
    claim = ClaimPass(_gpus(24, 24), headroom_mib=2 * GIB)
    need = auto_need(21 * GIB)  # an `auto` peak recorded near the card's size
    assert need > 22 * GIB
    placed = claim.place(_req(1, share_gib=need / GIB))
    assert placed.gpus == (0,) and placed.share_mib is None


def test_no_more_jobs_are_asked_to_yield_while_those_leaving_make_room():
    gpus = [Gpu(i, 80 * GIB, 80 * GIB, [Held(None, priority=0, preemptible=True)]) for i in range(4)]
    gpus[0].held = [Held(None, priority=0, preemptible=True, leaving=True)]
    claim = ClaimPass(gpus, headroom_mib=2 * GIB)
    assert claim.place(_req(9, priority=5)) is None
    assert claim.reservation.by_preemption and claim.reservation.by_leaving  # gpu0 is on its way out
    gpus = [Gpu(i, 80 * GIB, 80 * GIB, [Held(None, priority=0, preemptible=True)]) for i in range(2)]
    claim = ClaimPass(gpus, headroom_mib=2 * GIB)
    assert claim.place(_req(9, priority=5)) is None
    assert claim.reservation.by_preemption and not claim.reservation.by_leaving  # one must be asked


def test_without_memory_readings_jobs_take_whole_gpus():
    claim = ClaimPass([Gpu(0, None), Gpu(1, None)])
    assert not claim.can_share
    assert claim.place(_req(1)).gpus == (0,)


def test_auto_asks_for_the_recorded_peak_plus_a_margin():
    assert auto_need(10 * GIB) == int(10 * GIB * 1.1 + 768)


# ---------------------------------------------------------------- queue.yaml: defaults and checks

def _plan(jobs, defaults=None):
    return {s.name: s for s in build_plan({"jobs": jobs, **({"defaults": defaults} if defaults else {})})}


def test_ml_kinds_ask_for_one_gpu_and_light_kinds_for_none_unless_told():
    specs = _plan([{"name": "ft", "kind": "finetune"}, {"name": "ens", "kind": "ensemble", "params": {"members": ["ft"]}},
                   {"name": "sh", "kind": "shell", "params": {"argv": ["true"]}},
                   {"name": "cpu-ft", "kind": "finetune", "gpus": 0}])
    assert {n: s.gpus for n, s in specs.items()} == {"ft": 1, "ens": 0, "sh": 0, "cpu-ft": 0}
    assert _plan([{"name": "ft", "kind": "finetune"}], defaults={"gpus": 0})["ft"].gpus == 0


def test_gpu_memory_applies_to_one_gpu_jobs_and_is_refused_where_it_cannot():
    specs = _plan([{"name": "ft", "kind": "finetune"}, {"name": "sh", "kind": "shell", "params": {"argv": ["true"]}},
                   {"name": "big", "kind": "finetune", "gpus": 2},
                   {"name": "sized", "kind": "finetune", "gpu_memory": "20GiB"}], defaults={"gpu_memory": "auto"})
    assert specs["ft"].gpu_memory_auto and specs["ft"].gpu_memory_mib is None
    assert not specs["sh"].gpu_memory_auto and not specs["big"].gpu_memory_auto  # no GPU / a gang: whole
    assert specs["sized"].gpu_memory_mib == 20 * GIB and not specs["sized"].gpu_memory_auto
    with pytest.raises(PlanError, match=r"job 'g'.*field gpu_memory: only a 1-GPU job shares its GPU"):
        _plan([{"name": "g", "kind": "finetune", "gpus": 2, "gpu_memory": "20GiB"}])
    with pytest.raises(PlanError, match=r"job 'p'.*field gpus: kind predict uses one GPU at most; got 2"):
        _plan([{"name": "p", "kind": "predict", "gpus": 2, "params": {"model": {"from": "x"}, "csv": "t.csv"}}])
    with pytest.raises(PlanError, match=r"gpu_memory.*'lots' is not a size"):
        _plan([{"name": "s", "kind": "finetune", "gpu_memory": "lots"}])


def test_sched_add_takes_gpus_and_gpu_memory(sqlite_url):
    from click.testing import CliRunner

    from scheduler.cli import cli

    result = CliRunner().invoke(cli, ["--db", sqlite_url, "add", "finetune", "--name", "ft", "--gpu-memory", "12GiB",
                                      "--no-check"])
    assert result.exit_code == 0, result.output
    assert "(finetune, priority 0, 1 GPU, shared (12.0GiB))" in result.output
    result = CliRunner().invoke(cli, ["--db", sqlite_url, "add", "echo", "--name", "e", "--gpus", "2"])
    assert result.exit_code != 0 and "kind echo uses one GPU at most" in result.output


# ---------------------------------------------------------------- worker slots from --gpus

def test_gpus_list_beyond_what_nvml_sees_is_an_error_naming_it():
    with pytest.raises(SchedError, match=r"--gpus 0,1: no GPU 1 on this machine \(NVML sees 1 GPU\(s\): 0\)"):
        parse_slots("0,1", gpu_count=(1, ""))
    with pytest.raises(SchedError, match="nvidia-ml-py is not installed"):
        parse_slots("0", gpu_count=(0, "nvidia-ml-py is not installed"))
    slots = parse_slots("0,1", cpu_slots=2, gpu_count=(2, ""))
    assert [s.name for s in slots] == ["gpu0", "gpu1", "cpu0", "cpu1"]  # CPU jobs beside the GPUs


def test_gpus_auto_without_a_gpu_says_so_once_and_runs_cpu_slots(caplog):
    with caplog.at_level(logging.WARNING, logger="sched.worker"):
        slots = parse_slots("auto", cpu_slots=2, gpu_count=(0, "NVML: Driver Not Loaded"))
    assert [s.name for s in slots] == ["cpu0", "cpu1"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "no GPU found (NVML: Driver Not Loaded)" in lines[0]


def test_a_placement_sets_visible_devices_processes_and_share():
    env = placement_env((2, 3), None)
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and env["SCHED_PROCESSES"] == "2" and env["SCHED_SLOT"] == "gpu2+3"
    assert "SCHED_GPU_SHARE_MIB" not in env
    assert placement_env((0,), 12 * GIB)["SCHED_GPU_SHARE_MIB"] == str(12 * GIB)


# ---------------------------------------------------------------- a worker on fake GPUs

@pytest.fixture
def probe(monkeypatch, tmp_path):
    monkeypatch.setenv("SCHED_KINDS", "tests.gpu_kind")  # runners inherit it
    out = tmp_path / "seen"
    out.mkdir()
    return out


def _loop(queue, tmp_path, gpus_gib=(80, 80), cpu_slots=0, free_gib=None):
    slots = [Slot(f"gpu{i}", i) for i in range(len(gpus_gib))] + [Slot(f"cpu{i}", None, 1) for i in range(cpu_slots)]
    options = WorkerOptions(runs_root=tmp_path / "runs", heartbeat_s=0.2, lease_s=5, stop_grace_s=2, poll_s=0.05)

    def inventory(indices):
        return [Gpu(i, gpus_gib[i] * GIB, (free_gib or gpus_gib[i]) * GIB) for i in indices]

    return WorkerLoop(queue, slots, options, inventory=inventory)


def _probe(name, out, seconds=0.0, **fields):
    params = {"out": str(out), "seconds": seconds, **fields.pop("params", {})}
    return JobSpec(name=name, kind="gpu_probe", params=params, gpus=fields.pop("gpus", 1), **fields)


def _seen(out, name, attempt=1):
    return json.loads((out / f"{name}.{attempt}.json").read_text())


def _running(queue, name):
    return queue.get(name).status == "running"


def _stop(loop):
    loop.request_stop()
    step_until(loop, lambda: not loop.children, timeout=60)
    loop.close()


def test_jobs_that_declare_their_memory_share_a_gpu_side_by_side(queue, tmp_path, probe):
    queue.submit([_probe(f"s{i}", probe, seconds=30, gpu_memory_mib=20 * GIB) for i in range(3)] +
                 [_probe("big", probe, seconds=30, gpu_memory_mib=50 * GIB)])
    loop = _loop(queue, tmp_path, gpus_gib=(80, 80, 80))
    try:
        step_until(loop, lambda: all(_running(queue, n) for n in ("s0", "s1", "s2", "big")), timeout=60)
        # one a GPU, then the fourth beside the smallest neighbour it fits with
        assert [queue.get(n).slot for n in ("s0", "s1", "s2", "big")] == ["gpu0", "gpu1", "gpu2", "gpu0"]
        assert queue.get("s0").placed_mib == 20 * GIB
        step_until(loop, lambda: (probe / "big.1.json").exists(), timeout=60)
        seen = _seen(probe, "big")
        assert seen["CUDA_VISIBLE_DEVICES"] == "0" and seen["SCHED_GPU_SHARE_MIB"] == str(50 * GIB)
        snap = status_snapshot(queue, all_jobs=False)
        gpu0 = next(s for s in snap["workers"][0]["slot_use"] if s["slot"] == "gpu0")
        assert sorted((j["name"], j["placed_mib"]) for j in gpu0["jobs"]) == [("big", 50 * GIB), ("s0", 20 * GIB)]
    finally:
        _stop(loop)


def test_a_gang_job_gets_all_its_gpus_at_once(queue, tmp_path, probe):
    queue.submit([_probe("gang", probe, gpus=2)])
    loop = _loop(queue, tmp_path, gpus_gib=(80, 80, 80))
    step_until(loop, lambda: queue.get("gang").status == "succeeded", timeout=60)
    seen = _seen(probe, "gang")
    assert seen["CUDA_VISIBLE_DEVICES"] == "0,1" and seen["SCHED_PROCESSES"] == "2" and seen["SCHED_SLOT"] == "gpu0+1"
    assert seen["SCHED_GPU_SHARE_MIB"] is None
    assert queue.get("gang").slot == "gpu0+1"
    loop.close()


def test_a_waiting_gang_job_reserves_gpus_and_lower_priority_jobs_do_not_starve_it(queue, tmp_path, probe):
    from scheduler.render import status_view
    from tests.test_display import render

    queue.submit([_probe("long", probe, seconds=3, priority=5)])
    loop = _loop(queue, tmp_path)
    step_until(loop, lambda: _running(queue, "long"), timeout=60)
    queue.submit([_probe("gang", probe, seconds=0.5, gpus=2, priority=10)] +
                 [_probe(f"small{i}", probe, seconds=0.5, priority=0) for i in range(2)])
    step_until(loop, lambda: loop.reservation is not None and loop.reservation.gpus == (0, 1), timeout=30)
    loop.run_once()
    assert queue.get("small0").status == "queued" and queue.get("small1").status == "queued"
    snap = status_snapshot(queue, all_jobs=False)
    text = "\n".join(render(status_view(snap, width=160), 160))
    assert "reserving gpu0, gpu1 for job gang" in text and "idle, reserved for gang" in text
    why = {j["name"]: j["why"] for j in snap["queue"]}
    assert why["gang"].startswith("reserved gpu0, gpu1 on worker") and why["small0"] == "gpu0, gpu1 reserved for gang"
    step_until(loop, lambda: queue.get("gang").status != "queued", timeout=60)
    assert queue.get("gang").started_at >= queue.get("long").finished_at
    step_until(loop, lambda: all(queue.get(n).status == "succeeded" for n in ("gang", "small0", "small1")), timeout=60)
    assert queue.get("small0").started_at >= queue.get("gang").started_at
    assert status_snapshot(queue, all_jobs=False)["workers"][0]["reservation"] is None
    loop.close()


def test_preemptible_jobs_on_the_gpus_yield_to_a_higher_priority_gang_job(queue, tmp_path, probe):
    backfill_s = 60
    queue.submit([_probe(f"bf{i}", probe, seconds=backfill_s, preemptible=True) for i in range(2)])
    loop = _loop(queue, tmp_path)
    try:
        step_until(loop, lambda: _running(queue, "bf0") and _running(queue, "bf1"), timeout=60)
        first_end = min(queue.get(n).started_at for n in ("bf0", "bf1")) + timedelta(seconds=backfill_s)
        queue.submit([_probe("gang", probe, seconds=0.2, gpus=2, priority=10)])
        step_until(loop, lambda: queue.get("gang").status == "succeeded", timeout=120)
        # by the database's clock, the gang started while both backfill jobs still had work left
        assert queue.get("gang").started_at < first_end
        for name in ("bf0", "bf1"):
            row = queue.get(name)  # queued again or restarted: a claim keeps how the last attempt ended
            assert (row.failure_kind, row.message) == (
                "preempted", "preempted: stopped on request so a higher-priority job could run"), name
            with open(row.log_path) as fh:  # each yielded once: a stopping job is not replaced by another backfill
                assert fh.read().count(f"=== {name} #") <= 2, name  # its start, and its restart after the gang
    finally:
        _stop(loop)


def test_out_of_memory_on_a_shared_gpu_queues_the_job_again_for_a_whole_gpu(queue, tmp_path, probe):
    queue.submit([_probe("greedy", probe, gpu_memory_mib=10 * GIB, max_attempts=1,
                         params={"oom_when_shared": True})])
    loop = _loop(queue, tmp_path)
    step_until(loop, lambda: queue.get("greedy").status in ("succeeded", "failed"), timeout=60)
    row = queue.get("greedy")
    assert row.status == "succeeded" and row.exclusive and row.attempts == 1  # the shared try was not counted
    assert _seen(probe, "greedy", 1)["SCHED_GPU_SHARE_MIB"] is None  # its second start: a whole GPU
    with open(row.log_path) as fh:
        assert "out of GPU memory on a shared GPU" in fh.read()
    loop.close()


def test_auto_takes_a_whole_gpu_until_a_peak_is_recorded_then_shares(queue, tmp_path, probe):
    queue.submit([_probe("first", probe, gpu_memory_auto=True)])
    loop = _loop(queue, tmp_path)
    step_until(loop, lambda: queue.get("first").status == "succeeded", timeout=60)
    assert queue.get("first").placed_mib is None  # no history: a whole GPU
    queue.record_gpu_peak(queue.resolve("first"), 10 * GIB)  # what a GPU runner records
    queue.submit([_probe("second", probe, gpu_memory_auto=True), _probe("other", probe, gpu_memory_auto=True,
                                                                        params={"size": "large"})])
    step_until(loop, lambda: all(queue.get(n).status == "succeeded" for n in ("second", "other")), timeout=60)
    # the recorded allocator peak, its margin, and the CUDA context outside the allocator
    assert queue.get("second").placed_mib == auto_need(10 * GIB) + DEFAULT_CONTEXT_MIB
    assert queue.get("other").placed_mib is None  # another size: no history
    loop.close()


def test_a_gpu_worker_runs_cpu_jobs_on_its_cpu_slots_while_the_gpus_are_busy(queue, tmp_path, probe):
    queue.submit([_probe("on-gpu", probe, seconds=30), JobSpec(name="light", kind="echo", params={})])
    loop = _loop(queue, tmp_path, gpus_gib=(80,), cpu_slots=1)
    try:
        step_until(loop, lambda: queue.get("light").status == "succeeded", timeout=60)
        assert queue.get("light").slot == "cpu0" and queue.get("on-gpu").slot == "gpu0"
    finally:
        _stop(loop)


def test_a_gpu_job_waits_on_a_cpu_only_worker_with_the_reason_shown(queue, tmp_path, probe):
    queue.submit([_probe("needs-gpu", probe), _probe("gang", probe, gpus=4)])
    loop = WorkerLoop(queue, [Slot("cpu0", None, 1)], WorkerOptions(runs_root=tmp_path / "runs", poll_s=0.05))
    loop.run_once()
    assert queue.get("needs-gpu").status == "queued"
    why = {j["name"]: j["why"] for j in status_snapshot(queue, all_jobs=False)["queue"]}
    assert why == {"needs-gpu": "needs a GPU; no worker has one", "gang": "needs a GPU; no worker has one"}
    loop.close()
    gpu_loop = _loop(queue, tmp_path, gpus_gib=(80, 80))
    gpu_loop.start()
    why = {j["name"]: j["why"] for j in status_snapshot(queue, all_jobs=False)["queue"]}
    assert why["gang"] == "needs 4 GPUs; the largest worker has 2"


# ---------------------------------------------------------------- the runner's side

def test_the_runner_records_the_peak_torch_reserved_on_a_gpu(monkeypatch):
    import sys
    from types import SimpleNamespace

    from jobs import gpu
    from scheduler.execute.runner import record_peak

    fake_cuda = SimpleNamespace(is_initialized=lambda: True, device_count=lambda: 2,
                                max_memory_reserved=lambda d: [3 * 2**30, 5 * 2**30][d])
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=fake_cuda))
    monkeypatch.setenv("SCHED_DEVICE", "cuda")
    assert gpu.peak_mib() == 5 * GIB
    recorded = []
    record_peak(7, SimpleNamespace(record_gpu_peak=lambda job_id, mib: recorded.append((job_id, mib))))
    assert recorded == [(7, 5 * GIB)]
    monkeypatch.setenv("SCHED_DEVICE", "cpu")
    assert gpu.peak_mib() is None  # a CPU job records nothing


def test_prepare_caps_an_in_process_job_to_its_share_and_leaves_other_kinds_alone(monkeypatch):
    import sys
    from types import SimpleNamespace

    from jobs import gpu

    calls = []
    fake_cuda = SimpleNamespace(
        is_available=lambda: True, is_initialized=lambda: False, device_count=lambda: 1,
        reset_peak_memory_stats=lambda d: calls.append(("reset", d)),
        get_device_properties=lambda d: SimpleNamespace(total_memory=80 * 2**30),
        set_per_process_memory_fraction=lambda f, d: calls.append(("fraction", round(f, 3), d)))
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=fake_cuda))
    monkeypatch.setenv("SCHED_DEVICE", "cuda")
    monkeypatch.setenv("SCHED_GPU_SHARE_MIB", str(20 * GIB))
    gpu.prepare(in_process=False)  # a shell job's program: CUDA must not start in the runner
    assert calls == []
    gpu.prepare(in_process=True)  # a fresh process: no peaks to reset (that would need CUDA started)
    assert calls == [("fraction", 0.25, 0)]


def test_the_peak_shows_in_sched_show(queue):
    from scheduler.render import job_view
    from scheduler.views import job_detail
    from tests.test_display import render

    queue.submit([JobSpec(name="ft", kind="finetune", gpus=1, gpu_memory_mib=12 * GIB)])
    queue.record_gpu_peak(queue.resolve("ft"), 9 * GIB)
    queue.record_gpu_peak(queue.resolve("ft"), 7 * GIB)  # another rank's lower peak does not replace it
    text = "\n".join(render(job_view(job_detail(queue, "ft"), width=160), 160))
    assert "1 GPU, shared (12.0GiB)" in text and "9.0GiB (torch max_memory_reserved)" in text


def test_gpu_time_of_a_gang_job_counts_on_each_of_its_gpus(queue):
    from datetime import timedelta

    from scheduler.store import busy

    with queue.write() as conn:
        now = queue.clock.now(conn)
        busy.add_span(conn, "gpu0+1", now - timedelta(seconds=100), now)
        used = busy.used_seconds(conn, now - timedelta(hours=1), now + timedelta(seconds=1), gpu_only=True)
    assert used == pytest.approx(200, abs=1)
