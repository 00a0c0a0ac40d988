"""queue.yaml expansion beyond what the CLI tests cover: workers groups, templating details."""

from __future__ import annotations

import pytest

from scheduler.errors import PlanError
from scheduler.jobqueue import JobQueue
from scheduler.plan import build_plan, parse_duration


def test_workers_expand_into_a_group_and_after_means_all_of_them(sqlite_url):
    specs = build_plan({"jobs": [
        {"name": "tune-{m}", "kind": "sleep", "matrix": {"m": ["a", "b"]}, "workers": 2, "preemptible": True},
        {"name": "retrain-a", "kind": "echo", "after": ["tune-a"]},
        {"name": "report", "kind": "echo", "after": ["tune-{m}"]},
    ]})
    by_name = {s.name: s for s in specs}
    assert [s.name for s in specs[:4]] == ["tune-a#1", "tune-a#2", "tune-b#1", "tune-b#2"]
    assert {by_name["tune-b#2"].group_name, by_name["tune-b#2"].preemptible} == {"tune-b", True}
    assert by_name["retrain-a"].after == ["tune-a#1", "tune-a#2"]
    assert len(by_name["report"].after) == 4
    queue = JobQueue(sqlite_url)
    queue.submit(specs)
    row = queue.get("tune-a#2")
    assert (row.group_name, row.preemptible) == ("tune-a", True)


def test_whole_string_variable_keeps_its_type_and_braces_escape():
    spec, = build_plan({"vars": {"lr": 2e-5}, "jobs": [
        {"name": "x", "kind": "echo", "params": {"metric": "{lr}", "message": "{{not a var}} {lr}"}}]})
    assert spec.params == {"metric": 2e-5, "message": "{not a var} 2e-05"}


def test_defaults_apply_per_kind_and_job_values_win():
    specs = build_plan({"defaults": {"priority": 3, "params": {"echo": {"message": "d"}, "sleep": {"seconds": 0}}},
                        "jobs": [{"name": "a", "kind": "echo"},
                                 {"name": "b", "kind": "echo", "priority": 9, "params": {"message": "own"}}]})
    assert [(s.priority, s.params) for s in specs] == [(3, {"message": "d"}), (9, {"message": "own"})]


@pytest.mark.parametrize("text,seconds", [(90, 90.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0),
                                          ("1h30m", 5400.0), (None, None)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_empty_matrix_list_is_an_error():
    with pytest.raises(PlanError, match=r"field matrix.m: empty list"):
        build_plan({"jobs": [{"name": "a-{m}", "kind": "echo", "matrix": {"m": []}}]})


def test_after_with_a_shared_matrix_variable_means_the_matching_job_only():
    specs = build_plan({"jobs": [
        {"name": "tapt-{model}", "kind": "echo", "matrix": {"model": ["a", "b"]}},
        {"name": "ft-{model}", "kind": "echo", "matrix": {"model": ["a", "b"]}, "after": ["tapt-{model}"]},
        {"name": "ensemble", "kind": "echo", "after": ["ft-{model}"]},
    ]})
    after = {s.name: s.after for s in specs}
    assert after["ft-a"] == ["tapt-a"] and after["ft-b"] == ["tapt-b"]
    assert after["ensemble"] == ["ft-a", "ft-b"]


def test_the_campaign_queue_file_expands_to_the_five_model_plan():
    from pathlib import Path

    from scheduler.plan import load_plan

    specs = {s.name: s for s in load_plan(Path(__file__).resolve().parents[1] / "queue.yaml")}
    models = ["klue/roberta-base", "klue/bert-base", "kykim/bert-kor-base", "beomi/kcbert-base",
              "monologg/koelectra-base-v3"]
    for model in models:
        assert specs[f"finetune-{model}"].after == [f"tapt-{model}"]
        assert specs[f"finetune-{model}"].params["model"] == {"from": f"tapt-{model}"}
    assert specs["ensemble"].after == [f"finetune-{m}" for m in models]
    tune = [s for s in specs.values() if s.kind == "tune"]
    assert len(tune) == 2 and all(s.preemptible and s.priority < 0 for s in tune)
    assert max(s.priority for s in specs.values() if s.kind == "tapt") == max(s.priority for s in specs.values())
    final = specs["ensemble-final"]
    assert set(final.after) == {f"finetune-{m}" for m in models} | {f"retrain-{m}" for m in models}
    assert final.params["test_from"] == {f"finetune-{m}": f"retrain-{m}" for m in models}


def test_after_with_some_of_the_variables_keeps_the_ones_the_job_has():
    specs = build_plan({"jobs": [
        {"name": "ft-{model}-{seed}", "kind": "echo", "matrix": {"model": ["a", "b"], "seed": [1, 2]}},
        {"name": "ens-{seed}", "kind": "echo", "matrix": {"seed": [1, 2]}, "after": ["ft-{model}-{seed}"]},
    ]})
    after = {s.name: s.after for s in specs}
    assert after["ens-1"] == ["ft-a-1", "ft-b-1"] and after["ens-2"] == ["ft-a-2", "ft-b-2"]


@pytest.mark.parametrize("field", ["after", "name"])
def test_a_list_variable_where_a_job_name_belongs_is_a_clear_error(field):
    job = {"name": "x", "kind": "echo", field: "{deps}"}
    with pytest.raises(PlanError, match=f"field {field}.*resolves to \\['p', 'q'\\]"):
        build_plan({"vars": {"deps": ["p", "q"]}, "jobs": [{"name": "p", "kind": "echo"}, job]})


def test_defaults_reach_the_params_a_kind_nests():
    """A tune's `finetune:` gets `defaults.params.finetune`, under what the tune sets there."""
    raw = {"defaults": {"params": {"finetune": {"epochs": 1, "max_train_rows": 300, "max_length": 64}}},
           "jobs": [{"name": "t", "kind": "tune",
                     "params": {"space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-3}},
                                "finetune": {"epochs": 2}}}]}
    fixed = build_plan(raw)[0].params["finetune"]
    assert fixed == {"epochs": 2, "max_train_rows": 300, "max_length": 64}
