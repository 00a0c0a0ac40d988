"""The start-up profile (SCHED_PROFILE_STARTUP): off by default, a table of phases when asked."""

from __future__ import annotations

import io
import pstats

import pytest

from pipeline import startup


@pytest.fixture(autouse=True)
def no_profile_left_open():
    yield
    startup._current = None


def test_without_the_variable_nothing_is_written(monkeypatch):
    monkeypatch.delenv(startup.ENV, raising=False)
    out = io.StringIO()
    startup.begin(origin=0.0)
    startup.mark("data")
    startup.first_step(out)
    assert out.getvalue() == ""


def test_the_table_names_each_phase_and_reads_back(monkeypatch):
    monkeypatch.setenv(startup.ENV, "1")
    out = io.StringIO()
    startup.begin()
    startup.mark("data read")
    startup.mark("model loaded")
    startup.first_step(out)
    startup.first_step(out)  # the profile closed at the first step: later steps write nothing
    text = out.getvalue()
    assert all(line.startswith(startup.PREFIX) for line in text.splitlines())
    phases = startup.read_table("=== job header ===\n" + text + "training goes on\n")
    assert [name for name, _ in phases] == ["data read", "model loaded", startup.FIRST_STEP]
    assert all(seconds >= 0 for _, seconds in phases)


def test_the_origin_is_the_claim(monkeypatch):
    monkeypatch.setenv(startup.ENV, "1")
    out = io.StringIO()
    startup.begin(origin=0.0)  # claimed at the epoch: the first phase holds all the time since
    startup.first_step(out)
    assert startup.read_table(out.getvalue())[0][1] > 1e9


def test_cprofile_writes_a_profile_in_the_run_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(startup.ENV, "cprofile")
    startup.begin(run_folder=str(tmp_path))
    sum(range(1000))
    startup.first_step(io.StringIO())
    assert pstats.Stats(str(tmp_path / startup.PROFILE_FILE)).total_calls > 0
