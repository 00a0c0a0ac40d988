"""The defects a review of the GPU code found, each checked on this CPU-only machine.

NVML is a fake pynvml module (FakeNvml) with the calls sched makes; torch is the real CPU build
(where CUDA is truly unusable) or a few attributes patched where a GPU's answer is needed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from jobs import gpu
from scheduler.execute import nvml
from scheduler.errors import SchedError
from scheduler.execute.placement import ClaimPass, Gpu
from scheduler.resources import Request
from scheduler.jobqueue import JobSpec
from scheduler.execute.runner import CUDA_UNUSABLE_EXIT, failure_of
from scheduler.execute.slots import Slot, gpu_readings, nvml_inventory, parse_slots, placement_env
from scheduler.views import status_snapshot
from scheduler.execute.worker import WorkerLoop, WorkerOptions
from tests.helpers import step_until

GIB = 1024


class NVMLError(Exception):
    pass


class FakeNvml:
    """pynvml as sched calls it, over fake GPUs: dicts of total/used GiB, util (None: NOT_SUPPORTED),
    lost (reads fail), hidden (a cgroup denies it), mig (MIG mode on), uuid."""

    NVMLError = NVMLError

    def __init__(self, gpus: list[dict]):
        self.gpus = [{"total": 80, "used": 0, "util": 10, "uuid": f"GPU-{'abcdefgh'[i]}", **g}
                     for i, g in enumerate(gpus)]
        self.inits = self.shutdowns = 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        if self.gpus[index].get("hidden"):
            raise NVMLError("Insufficient Permissions")
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid):
        for index, g in enumerate(self.gpus):
            if uuid == g["uuid"]:
                return index
            if uuid.startswith("MIG-") and uuid.startswith(f"MIG-{g['uuid'][4:]}"):
                return ("mig", index)
        raise NVMLError("Not Found")

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle):
        return handle[1]

    def nvmlDeviceGetIndex(self, handle):
        return handle

    def nvmlDeviceGetMemoryInfo(self, handle):
        g = self.gpus[handle]
        if g.get("lost"):
            raise NVMLError("GPU is lost")
        return SimpleNamespace(total=g["total"] * 2**30, used=g["used"] * 2**30, free=(g["total"] - g["used"]) * 2**30)

    def nvmlDeviceGetUtilizationRates(self, handle):
        g = self.gpus[handle]
        if g.get("lost") or g["util"] is None:
            raise NVMLError("Not Supported")
        return SimpleNamespace(gpu=g["util"], memory=0)

    def nvmlDeviceGetMigMode(self, handle):
        if not self.gpus[handle].get("mig"):
            raise NVMLError("Not Supported")
        return (1, 1)


@pytest.fixture
def fake_nvml(monkeypatch):
    """Install a fake NVML as this process's session; returns a function (gpus) -> FakeNvml."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def install(gpus: list[dict]) -> FakeNvml:
        fake = FakeNvml(gpus)
        monkeypatch.setattr(nvml, "SESSION", nvml.Session(fake))
        import scheduler.execute.slots as slots

        monkeypatch.setattr(slots, "SESSION", nvml.SESSION)
        return fake

    return install


# ---------------------------------------------------------------- 2. one failing NVML call

def test_each_gpu_is_read_on_its_own_and_a_lost_gpu_is_reported_as_such(fake_nvml):
    fake_nvml([{"used": 30}, {"util": None, "mig": True}, {"lost": True}])
    readings = gpu_readings([0, 1, 2])
    assert readings[0] == {"gpu": 0, "util": 10, "mem_used": 30 * GIB, "mem_total": 80 * GIB}
    assert readings[1] == {"gpu": 1, "util": None, "mem_used": 0, "mem_total": 80 * GIB}  # MIG: no utilisation
    assert readings[2] == {"gpu": 2, "lost": "GPU is lost"}
    gpus = nvml_inventory([0, 1, 2])
    assert [(g.total_mib, g.free_mib, g.lost) for g in gpus] == [
        (80 * GIB, 50 * GIB, None), (80 * GIB, 80 * GIB, None), (None, None, "GPU is lost")]
    # The readable GPUs still share, and no job goes to the lost one.
    claim = ClaimPass(gpus)
    assert claim.can_share
    assert claim.place(Request(1, "whole", 0, 1)).gpus == (1,)  # gpu0 holds another program's memory
    assert claim.place(Request(2, "shared", 0, 1, 20 * GIB)).gpus == (0,)  # its free memory is read apart
    assert claim.place(Request(3, "whole", 0, 1)) is None
    assert 2 not in claim.reservation.gpus  # a lost GPU is never kept for a job: it will not free up


def test_a_lost_gpu_shows_as_lost_in_status(fake_nvml, queue, tmp_path):
    from scheduler.render import status_view
    from tests.test_display import render

    fake_nvml([{"used": 1}, {"lost": True}])
    loop = WorkerLoop(queue, [Slot("gpu0", 0), Slot("gpu1", 1)], WorkerOptions(runs_root=tmp_path / "runs"))
    loop.run_once()
    text = "\n".join(render(status_view(status_snapshot(queue, all_jobs=False), width=160), 160))
    assert "lost (GPU is lost)" in text and "10% · 1.0/80 GiB" in text
    loop.close()


def test_a_gpu_in_mig_mode_is_one_slot_and_the_log_says_so_once(fake_nvml, caplog):
    fake_nvml([{"mig": True, "util": None}, {}])
    with caplog.at_level(logging.WARNING, logger="sched.worker"):
        slots = parse_slots("auto", cpu_slots=1)
    assert [s.name for s in slots] == ["gpu0", "gpu1", "cpu0"]
    lines = [r.getMessage() for r in caplog.records if "MIG" in r.getMessage()]
    assert len(lines) == 1 and "gpu0 is in MIG mode: sched treats the physical GPU as one slot" in lines[0]


# ---------------------------------------------------------------- 10. NVML once per process

def test_nvml_starts_once_per_process_and_shuts_down_at_exit(fake_nvml, monkeypatch):
    registered = []
    monkeypatch.setattr(nvml.atexit, "register", registered.append)
    fake = fake_nvml([{}, {}])
    parse_slots("auto")
    for _ in range(5):  # heartbeats and claim passes
        gpu_readings([0, 1])
        nvml_inventory([0, 1])
    assert fake.inits == 1 and fake.shutdowns == 0
    assert registered == [nvml.SESSION.shutdown]
    registered[0]()  # what the interpreter does at exit
    assert fake.shutdowns == 1


# ---------------------------------------------------------------- 11. an inherited CUDA_VISIBLE_DEVICES

def test_a_worker_in_an_allocation_uses_only_its_gpus(fake_nvml, monkeypatch):
    fake_nvml([{}, {}, {}, {}])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    slots = parse_slots("auto", cpu_slots=1)
    assert [(s.name, s.gpu) for s in slots if s.gpu is not None] == [("gpu2", 2), ("gpu3", 3)]
    assert slots[1].child_env(1)["CUDA_VISIBLE_DEVICES"] == "3"
    with pytest.raises(SchedError, match=r"--gpus 1: GPU 1 is not in this allocation \(CUDA_VISIBLE_DEVICES=2,3 "
                                         r"gives gpu2, gpu3\)"):
        parse_slots("1")
    assert [s.name for s in parse_slots("3")][:1] == ["gpu3"]


def test_uuids_and_a_cgroup_that_hides_gpus_map_to_nvml_indices(fake_nvml, monkeypatch):
    fake_nvml([{}, {}, {}, {}])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-d,GPU-b")
    slots = parse_slots("auto", cpu_slots=1)
    assert [(s.name, s.visible) for s in slots if s.gpu is not None] == [("gpu3", "GPU-d"), ("gpu1", "GPU-b")]
    env = placement_env((1, 3), None, {s.gpu: s.device_name for s in slots if s.gpu is not None})
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-b,GPU-d"
    # Inside a cgroup that lets the process open gpu2 and gpu3 only, CUDA numbers them 0 and 1.
    fake_nvml([{"hidden": True}, {"hidden": True}, {}, {}])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    slots = parse_slots("auto", cpu_slots=1)
    assert [(s.name, s.device_name) for s in slots if s.gpu is not None] == [("gpu2", "0"), ("gpu3", "1")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "NoDevFiles")  # what Slurm sets for a job without GPUs
    assert [s.name for s in parse_slots("auto", cpu_slots=1)] == ["cpu0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-zzz")
    with pytest.raises(SchedError, match="CUDA_VISIBLE_DEVICES names GPU-zzz, which NVML does not know"):
        parse_slots("auto")


def test_mig_instance_uuids_keep_one_slot_per_physical_gpu(fake_nvml, monkeypatch, caplog):
    fake_nvml([{"mig": True}, {}])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-a-1,MIG-a-2")
    with caplog.at_level(logging.WARNING, logger="sched.worker"):
        slots = parse_slots("auto", cpu_slots=1)
    assert [(s.name, s.device_name) for s in slots if s.gpu is not None] == [("gpu0", "MIG-a-1")]
    assert any("MIG-a-2 is left out" in r.getMessage() for r in caplog.records)


def test_a_job_sees_the_allocations_names_for_its_gpus(fake_nvml, monkeypatch, queue, tmp_path):
    monkeypatch.setenv("SCHED_KINDS", "tests.gpu_kind")
    out = tmp_path / "seen"
    out.mkdir()
    fake_nvml([{}, {}, {}, {}])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-c,GPU-d")
    slots = parse_slots("auto", cpu_slots=1)
    queue.submit([JobSpec(name="gang", kind="gpu_probe", params={"out": str(out)}, gpus=2),
                  JobSpec(name="one", kind="gpu_probe", params={"out": str(out)}, gpus=1)])
    loop = WorkerLoop(queue, slots, WorkerOptions(runs_root=tmp_path / "runs", poll_s=0.05))
    step_until(loop, lambda: queue.get("one").status == "succeeded" and queue.get("gang").status == "succeeded",
               timeout=60)
    gang = json.loads((out / "gang.1.json").read_text())
    one = json.loads((out / "one.1.json").read_text())
    assert gang["CUDA_VISIBLE_DEVICES"] == "GPU-c,GPU-d" and gang["SCHED_SLOT"] == "gpu2+3"
    assert one["CUDA_VISIBLE_DEVICES"] in ("GPU-c", "GPU-d")
    loop.close()


# ---------------------------------------------------------------- 4. a GPU another program holds

def test_a_gpu_full_of_another_programs_memory_is_not_idle(fake_nvml, queue, tmp_path, monkeypatch):
    claim = ClaimPass([Gpu(0, 80 * GIB, 9 * GIB), Gpu(1, 80 * GIB, 80 * GIB)])
    assert claim.place(Request(1, "whole", 0, 1)).gpus == (1,)
    assert claim.place(Request(2, "gang", 0, 2)) is None  # gpu0 is not free for a whole-GPU job
    assert ClaimPass([Gpu(0, 80 * GIB, 79 * GIB)]).place(Request(3, "w", 0, 1)).gpus == (0,)  # under the headroom

    monkeypatch.setenv("SCHED_KINDS", "tests.gpu_kind")
    fake_nvml([{"used": 71}])
    queue.submit([JobSpec(name="waits", kind="gpu_probe", params={"out": str(tmp_path)}, gpus=1)])
    loop = WorkerLoop(queue, [Slot("gpu0", 0)], WorkerOptions(runs_root=tmp_path / "runs"))
    loop.run_once()
    assert queue.get("waits").status == "queued"
    why = {j["name"]: j["why"] for j in status_snapshot(queue, all_jobs=False)["queue"]}
    assert why["waits"] == "gpu0 busy outside sched (71 GiB used) (reserved for it on worker 1)"
    loop.close()


# ---------------------------------------------------------------- 3. each process's CUDA context

def test_a_shared_jobs_allocator_is_capped_at_its_share_less_the_context(monkeypatch):
    calls = []
    fake_cuda = SimpleNamespace(
        is_available=lambda: True, is_initialized=lambda: False, device_count=lambda: 1,
        get_device_properties=lambda d: SimpleNamespace(total_memory=80 * 2**30),
        set_per_process_memory_fraction=lambda f, d: calls.append(round(f * 80 * GIB)))
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=fake_cuda))
    env = placement_env((0,), 20 * GIB, context_mib=512)
    monkeypatch.setattr(os, "environ", {**os.environ, **env})
    gpu.prepare(in_process=True)
    assert calls == [20 * GIB - 512]  # context and allocator together stay within the 20GiB share
    # k such jobs on one GPU: the shares (context included) fit the GPU less its headroom
    claim = ClaimPass([Gpu(0, 80 * GIB, 80 * GIB)], headroom_mib=2 * GIB, context_mib=512)
    placed = [claim.place(Request(i, f"s{i}", 0, 1, 20 * GIB)) for i in range(4)]
    assert [p is not None for p in placed] == [True, True, True, False]


# ---------------------------------------------------------------- 1. no silent CPU fallback

def test_prepare_on_a_gpu_slot_without_cuda_fails_with_the_reason(monkeypatch):
    def init():
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 11040).")

    fake_cuda = SimpleNamespace(is_available=lambda: False, init=init, is_initialized=lambda: False)
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=fake_cuda, __version__="2.11.0",
                                                              version=SimpleNamespace(cuda="13.0")))
    monkeypatch.setenv("SCHED_DEVICE", "cuda")
    monkeypatch.setenv("SCHED_SLOT", "gpu1")
    with pytest.raises(gpu.CudaUnusable, match=r"CUDA is not usable on GPU slot gpu1 .*driver on your system is too "
                                               r"old.*not run on the CPU"):
        gpu.prepare(in_process=True)
    try:
        gpu.prepare(in_process=True)
    except gpu.CudaUnusable as exc:
        assert failure_of(exc)[0] == CUDA_UNUSABLE_EXIT
    monkeypatch.setenv("SCHED_DEVICE", "cpu")
    gpu.prepare(in_process=True)  # a CPU slot asks nothing of CUDA


@pytest.fixture
def review_kinds(monkeypatch):
    monkeypatch.setenv("SCHED_KINDS", "tests.gpu_review_kinds")


def _fake_gpu_loop(queue, tmp_path, gpus: int, cpu_slots: int = 0):
    slots = [Slot(f"gpu{i}", i) for i in range(gpus)] + [Slot(f"cpu{i}", None, 1) for i in range(cpu_slots)]
    options = WorkerOptions(runs_root=tmp_path / "runs", heartbeat_s=0.2, lease_s=30, stop_grace_s=5, poll_s=0.05)
    return WorkerLoop(queue, slots, options, inventory=lambda idx: [Gpu(i, 80 * GIB, 80 * GIB) for i in idx])


def test_a_job_on_a_gpu_slot_without_cuda_fails_at_once_and_the_worker_takes_no_more_gpu_jobs(
        review_kinds, queue, tmp_path):
    queue.submit([JobSpec(name="first", kind="cuda_probe", gpus=1, priority=5, max_attempts=3),
                  JobSpec(name="second", kind="cuda_probe", gpus=1),
                  JobSpec(name="light", kind="echo", params={})])
    loop = _fake_gpu_loop(queue, tmp_path, gpus=1, cpu_slots=1)
    step_until(loop, lambda: queue.get("first").status == "failed" and queue.get("light").status == "succeeded",
               timeout=120)
    first = queue.get("first")
    assert first.attempts == 1 and "CUDA is not usable on GPU slot gpu0" in first.error  # not retried
    assert not (Path(first.output_dir) / "ran-0.json").exists()  # it never ran on the CPU
    for _ in range(5):
        loop.run_once()
    assert queue.get("second").status == "queued" and loop.gpu_fault is not None
    loop._renew_leases(0, force=True)
    why = {j["name"]: j["why"] for j in status_snapshot(queue, all_jobs=False)["queue"]}
    assert why["second"].startswith("gpu0: CUDA unusable on its worker")
    loop.close()


@pytest.mark.slow
def test_each_rank_of_a_data_parallel_job_refuses_a_gpu_without_cuda(review_kinds, sqlite_url, tmp_path):
    from scheduler.jobqueue import JobQueue

    queue = JobQueue(sqlite_url)
    queue.submit([JobSpec(name="dp", kind="cuda_probe", gpus=2, max_attempts=3)])
    loop = _fake_gpu_loop(queue, tmp_path, gpus=2)
    step_until(loop, lambda: queue.get("dp").status == "failed", timeout=180)
    row = queue.get("dp")
    assert row.attempts == 1 and "CUDA is not usable" in row.error
    assert not list(Path(row.output_dir).glob("ran-*.json"))
    assert loop.gpu_fault is not None
    loop.close()
    queue.dispose()


# ---------------------------------------------------------------- 8. torchrun's 30 s after SIGTERM

@pytest.mark.slow
def test_a_stopped_data_parallel_job_gets_the_workers_grace_to_checkpoint(review_kinds, sqlite_url, tmp_path,
                                                                          monkeypatch):
    from scheduler.execute.dataparallel import SHUTDOWN_TIMEOUT_ENV, _env
    from scheduler.jobqueue import JobQueue
    from scheduler.execute.ranks import read_endings
    from scheduler.execute.runner import PREEMPTED_EXIT

    # torchrun, were it signalled, would kill its ranks 1 s later: far less than the checkpoint takes.
    monkeypatch.setenv(SHUTDOWN_TIMEOUT_ENV, "1")
    monkeypatch.setenv("SCHED_PROCESSES", "2")
    queue = JobQueue(sqlite_url)
    queue.submit([JobSpec(name="ckpt", kind="dp_checkpoint", params={"checkpoint_s": 4})])
    options = WorkerOptions(runs_root=tmp_path / "runs", heartbeat_s=0.2, lease_s=60, stop_grace_s=60, poll_s=0.05,
                            max_jobs=1)
    loop = WorkerLoop(queue, [Slot("cpu0", None)], options)
    folder = tmp_path / "none"
    try:
        def started() -> bool:
            nonlocal folder
            folder = Path(queue.get("ckpt").output_dir or folder)
            return all((folder / f"started-{r}").exists() for r in (0, 1))

        step_until(loop, started, timeout=120)
        (child,) = loop.children.values()
        os.kill(child.runner.pid, signal.SIGUSR1)  # the worker's stop request
        step_until(loop, lambda: not loop.children, timeout=90)
    finally:
        loop.close()
    assert all((folder / f"checkpointed-{r}").exists() for r in (0, 1))
    assert {r: e.code for r, e in read_endings(folder).items()} == {0: PREEMPTED_EXIT, 1: PREEMPTED_EXIT}
    assert queue.get("ckpt").status == "queued"  # preempted, not failed
    queue.dispose()
    # and a torchrun that someone else signals waits the worker's grace, not its own 30 s
    monkeypatch.setenv("SCHED_STOP_GRACE_S", "45")
    assert _env(2, None)[SHUTDOWN_TIMEOUT_ENV] == "45"


# ---------------------------------------------------------------- 7. out-of-memory wordings

@pytest.mark.parametrize("message", [
    "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported",
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED",
    "NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled cuda error, NCCL version 2.21.5\n"
    "ncclUnhandledCudaError: Call to CUDA function failed.\nLast error:\nCuda failure 'out of memory'",
])
def test_out_of_memory_is_recognised_in_every_library_wording(message):
    assert gpu.is_out_of_memory(RuntimeError(message))
    try:
        try:
            raise RuntimeError(message)
        except RuntimeError as inner:
            raise ValueError("the step failed") from inner
    except ValueError as outer:
        assert gpu.is_out_of_memory(outer)


def test_other_cuda_errors_are_not_out_of_memory():
    assert not gpu.is_out_of_memory(RuntimeError("CUDA error: device-side assert triggered"))
    assert not gpu.is_out_of_memory(RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED"))


def test_an_out_of_memory_in_cublas_halves_the_batch(tmp_path):
    from pipeline import training
    from pipeline.hooks import NULL_HOOKS

    built = []

    class Trainer:
        def __init__(self, batch):
            self.batch = batch
            self.state = SimpleNamespace(global_step=0)

        def train(self, resume_from_checkpoint=None):
            if self.batch > 8:
                raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")

    def build(batch, accum):
        built.append((batch, accum))
        return Trainer(batch), None

    state = {"batch_size": 32, "grad_accum": 1, "oom_retries": 0}
    training._train_with_oom_retry(build, str(tmp_path), state, NULL_HOOKS)
    assert built == [(32, 1), (16, 2), (8, 4)] and state["oom_retries"] == 2


# ---------------------------------------------------------------- 5. emulated bf16; 12. TF32

def test_auto_precision_takes_fp16_where_bf16_is_only_emulated(monkeypatch):
    from pipeline.training import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert resolve_precision("auto") == (True, False)  # Turing: fp16 with a grad scaler
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("auto") == (False, True)  # Ampere and newer


def test_fp32_runs_set_tf32_matmuls_explicitly_by_gpu_generation(monkeypatch):
    from pipeline.training import set_matmul_precision

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    try:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
        set_matmul_precision("fp32")
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
        set_matmul_precision("fp32")
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


# ---------------------------------------------------------------- 6. checkpoints' saved dtype

@pytest.fixture(scope="module")
def half_checkpoints(tmp_path_factory):
    """A tiny MLM and a tiny classifier saved in fp16, as some hub checkpoints are."""
    from transformers import BertForSequenceClassification

    from pipeline.models import build_tiny
    from tests.helpers import DATA

    import pandas as pd

    folder = tmp_path_factory.mktemp("half")
    texts = pd.read_csv(DATA / "reviews_train.csv")["review"].astype(str).head(200).tolist()
    mlm = build_tiny(folder / "mlm", texts, vocab_size=500)
    from transformers import AutoModelForMaskedLM

    AutoModelForMaskedLM.from_pretrained(mlm).half().save_pretrained(mlm)
    classifier = BertForSequenceClassification.from_pretrained(mlm, num_labels=4).half()
    classifier.save_pretrained(folder / "clf")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(mlm).save_pretrained(folder / "clf")
    return mlm, str(folder / "clf")


def test_models_load_for_training_in_float32_whatever_they_were_saved_in(half_checkpoints):
    from pipeline.models import load_classifier, load_mlm

    mlm, clf = half_checkpoints
    for model in (load_mlm(mlm)[0], load_classifier(mlm)[0], load_classifier(clf, num_labels=None)[0]):
        assert {p.dtype for p in model.parameters()} == {torch.float32}


# ---------------------------------------------------------------- 9. SWA's copy of the model

def test_swa_builds_its_average_without_copying_the_model_where_it_is(monkeypatch):
    from transformers import BertConfig, BertForSequenceClassification

    from pipeline.callbacks import SWACallback

    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32))
    own = {id(p) for p in model.parameters()}
    copied_in_place = []
    original = torch.nn.Parameter.__deepcopy__

    def watch(self, memo):
        if id(self) in own:
            copied_in_place.append(self.shape)
        return original(self, memo)

    monkeypatch.setattr(torch.nn.Parameter, "__deepcopy__", watch)
    swa = SWACallback(swa_epochs=1, total_epochs=2)
    swa.on_train_begin(None, None, None, model=model)
    assert copied_in_place == []  # on a GPU this deep copy would have doubled the model's memory there
    averaged = dict(swa.average.module.named_parameters())
    for name, param in model.named_parameters():
        assert averaged[name].device.type == "cpu" and torch.equal(averaged[name], param.detach())
        assert averaged[name].data_ptr() != param.data_ptr()


# ---------------------------------------------------------------- 12. prediction in the run's precision

def test_prediction_uses_the_precision_the_model_was_trained_in(monkeypatch, half_checkpoints, tmp_path):
    import contextlib

    from pipeline import training

    seen = []
    monkeypatch.setattr(training, "_autocast", lambda device, precision: seen.append(precision)
                        or contextlib.nullcontext())
    _, clf = half_checkpoints
    (Path(clf) / training.INFERENCE).write_text(json.dumps({"max_length": 32, "num_labels": 4, "precision": "fp32"}))
    training.predict(clf, ["좋다", "별로다"], cache_dir=str(tmp_path / "cache"))
    assert seen and set(seen) == {"fp32"}
    seen.clear()
    training.predict(clf, ["좋다"], cache_dir=str(tmp_path / "cache"), precision="bf16")
    assert set(seen) == {"bf16"}
