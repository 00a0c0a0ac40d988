"""The `ensemble` job (fake members with synthetic logits) and `sched results` (SQLite and PostgreSQL).

The last test runs tiny fine-tunes, a baseline, ensembles and predict jobs through the real queue.
"""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import click
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import event

from jobs import ParamsError, get_kind
from jobs.context import JobContext, MemoryReporter
from jobs.ensemble import EnsembleError
from pipeline.ensemble import combine
from pipeline.metrics import accuracy
from scheduler.cli import cli
from scheduler.cli.results import results
from scheduler.jobqueue import JobQueue, JobSpec
from scheduler.records import JobRecord, Records
from scheduler.render import results_table
from scheduler.results import columns, leaderboard

DATA = Path(__file__).resolve().parents[1] / "data"
N_VAL, N_TEST, CLASSES = 80, 12, 4


# ---------------------------------------------------------------- the ensemble job, fake members

@pytest.fixture
def campaign(tmp_path):
    """Validation labels and texts shared by every member, a test CSV, and a member factory."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, N_VAL)
    val_texts = [f"review {i}" for i in range(N_VAL)]
    test_csv = tmp_path / "test.csv"
    pd.DataFrame({"review_id": [f"r{i:03d}" for i in range(N_TEST)],
                  "review": [f"test review {i}" for i in range(N_TEST)]}).to_csv(test_csv, index=False)
    reporter = MemoryReporter()
    seeds = iter(range(1, 100))

    def member(name, *, noise=2.0, signal=2.0, metrics=None, status="succeeded", split="split-a", kind="finetune",
               params=None, tags=(), order=None, artifacts=("val_logits", "test_logits", "val_predictions",
                                                             "test_predictions", "val_split")):
        """A finished model: noisy logits that favour the true class, written where a finetune writes them."""
        r = np.random.default_rng(next(seeds))
        folder = tmp_path / name
        folder.mkdir()
        val = r.normal(0, noise, (N_VAL, CLASSES))
        val[np.arange(N_VAL), labels] += signal
        test = r.normal(0, noise, (N_TEST, CLASSES))
        rows = np.arange(N_VAL) if order is None else np.asarray(order)
        files = {"val_logits": "val_logits.npy", "test_logits": "test_logits.npy",
                 "val_predictions": "val_predictions.csv", "test_predictions": "test_predictions.csv",
                 "val_split": "val_split.txt"}
        np.save(folder / files["val_logits"], val[rows])
        np.save(folder / files["test_logits"], test)
        pd.DataFrame({"text": np.array(val_texts)[rows], "label": labels[rows], "pred": val[rows].argmax(1)}
                     ).to_csv(folder / files["val_predictions"], index=False)
        pd.DataFrame({"text": [f"test review {i}" for i in range(N_TEST)], "pred": test.argmax(1)}
                     ).to_csv(folder / files["test_predictions"], index=False)
        (folder / files["val_split"]).write_text(split + "\n")
        reporter.others[name] = JobRecord(
            id=len(reporter.others) + 1, name=name, kind=kind, status=status,
            params={"test": str(test_csv), **(params or {})}, tags=list(tags), output_dir=str(folder),
            metrics=dict(metrics or {}), artifacts={a: str(folder / files[a]) for a in artifacts})
        return val, test

    def run(**params):
        ctx = JobContext(job_id=99, name="ens", output_dir=tmp_path / "ens", device="cpu", reporter=reporter)
        kind = get_kind("ensemble")
        kind.run(kind.parse(params), ctx)
        return ctx

    class Campaign:
        pass

    c = Campaign()
    c.labels, c.member, c.run, c.reporter, c.test_csv, c.out = labels, member, run, reporter, test_csv, tmp_path / "ens"
    return c


def logged(reporter, key):
    return {m["step"]: m["value"] for m in reporter.metrics if m["key"] == key}


def test_accuracy_weights_are_the_normalised_logged_accuracies(campaign):
    # The logged numbers differ from what the logits score: the weights must come from the database.
    accs = {"ft-a": 0.70, "ft-b": 0.80, "ft-c": 0.90}
    vals = [campaign.member(n, metrics={"val_accuracy": a, "val_f1": a - 0.1})[0] for n, a in accs.items()]
    campaign.run(members=list(accs))
    expected = np.array(list(accs.values())) / sum(accs.values())
    weights = json.loads((campaign.out / "weights.json").read_text())
    assert list(weights) == list(accs)
    np.testing.assert_allclose(list(weights.values()), expected)
    np.testing.assert_allclose([logged(campaign.reporter, "weight")[i] for i in range(3)], expected)
    ensemble_acc = accuracy(campaign.labels, combine(vals, expected).argmax(-1))
    assert logged(campaign.reporter, "val_accuracy_in_sample")[None] == pytest.approx(ensemble_acc)
    assert 0 <= logged(campaign.reporter, "val_f1")[None] <= 1
    # the validation outputs are out of fold, as val_accuracy is, in the project's predictions layout
    val_out = pd.read_csv(campaign.reporter.artifacts["val_predictions"])
    assert list(val_out.columns) == ["id", "text", "label", "pred", "pred_name", *(f"prob_{c}" for c in range(4))]
    hits = (val_out["pred"] == val_out["label"]).mean()
    assert logged(campaign.reporter, "val_accuracy")[None] == pytest.approx(hits)
    np.testing.assert_allclose(val_out[["prob_0", "prob_1", "prob_2", "prob_3"]].sum(axis=1), 1.0, atol=1e-5)
    assert sum(v for s, v in logged(campaign.reporter, "predicted_share").items()) == pytest.approx(1.0)
    artifacts = campaign.reporter.artifacts
    assert {"val_logits", "test_logits", "val_probs", "test_probs", "val_predictions", "test_predictions",
            "submission", "weights", "val_split", "result"} <= set(artifacts)
    assert np.load(artifacts["test_probs"]).shape == (N_TEST, CLASSES)
    assert Path(artifacts["val_split"]).read_text().strip() == "split-a"
    assert len(pd.read_csv(artifacts["val_predictions"])) == N_VAL


def test_f1_uniform_and_sharpened_weights(campaign):
    campaign.member("ft-a", metrics={"val_accuracy": 0.8, "val_f1": 0.6})
    campaign.member("ft-b", metrics={"val_accuracy": 0.9, "val_f1": 0.2})
    campaign.run(members=["ft-a", "ft-b"], weighting="f1")
    np.testing.assert_allclose(list(logged(campaign.reporter, "weight").values()), [0.75, 0.25])
    campaign.reporter.metrics.clear()
    campaign.run(members=["ft-a", "ft-b"], weighting="uniform", vote="logits")
    np.testing.assert_allclose(list(logged(campaign.reporter, "weight").values()), [0.5, 0.5])
    campaign.reporter.metrics.clear()
    campaign.run(members=["ft-a", "ft-b"], weighting="sharpened", temperature=0.05)
    w = np.exp(np.array([0.8, 0.9]) / 0.05)
    np.testing.assert_allclose(list(logged(campaign.reporter, "weight").values()), w / w.sum())


def test_optimized_weights_favour_the_good_member(campaign):
    campaign.member("good", noise=0.3)
    campaign.member("noisy-1", noise=6.0)
    campaign.member("noisy-2", noise=6.0)
    for optimizer in ("logloss", "greedy"):
        campaign.reporter.metrics.clear()
        campaign.run(members=["good", "noisy-1", "noisy-2"], weighting="optimized", optimizer=optimizer,
                     leave_out_dead=False)
        weights = logged(campaign.reporter, "weight")
        assert weights[0] > 0.5, (optimizer, weights)
        assert logged(campaign.reporter, "val_accuracy")[None] >= 0.9
        assert logged(campaign.reporter, "val_accuracy_in_sample")[None] >= 0.9


def test_fitted_weights_are_scored_out_of_fold(campaign):
    # Members that know nothing: weights fitted on the validation rows find lucky combinations there,
    # which the rows they were not fitted on do not confirm.
    names = [f"noise-{i}" for i in range(6)]
    for name in names:
        campaign.member(name, signal=0.0)
    campaign.run(members=names, weighting="optimized", optimizer="greedy", greedy_metric="accuracy",
                 leave_out_dead=False)
    honest, in_sample = (logged(campaign.reporter, k)[None] for k in ("val_accuracy", "val_accuracy_in_sample"))
    assert in_sample > honest + 0.05, (in_sample, honest)
    assert honest < 0.4  # four classes: chance is about 0.25
    result = json.loads(Path(campaign.reporter.artifacts["result"]).read_text())
    assert (result["val_accuracy"], result["val_accuracy_in_sample"]) == (honest, in_sample)


def test_members_that_learned_nothing_are_left_out_with_a_warning(campaign, caplog):
    campaign.member("good", metrics={"val_accuracy": 0.9})
    one_class, _ = campaign.member("one-class", metrics={"val_accuracy": 0.3})
    np.save(campaign.reporter.others["one-class"].artifacts["val_logits"], np.tile([5.0, 0, 0, 0], (N_VAL, 1)))
    campaign.member("chance", signal=0.0, noise=0.01, metrics={"val_accuracy": 0.25})
    campaign.member("fair", noise=3.0, metrics={"val_accuracy": 0.6})
    with caplog.at_level(logging.WARNING, logger="jobs.ensemble"):
        campaign.run(members=["good", "one-class", "chance", "fair"])
    assert "member 'one-class' left out: its validation predictions are one class (100.0% of rows" in caplog.text
    assert "member 'chance' left out: its validation accuracy" in caplog.text
    assert list(json.loads((campaign.out / "weights.json").read_text())) == ["good", "fair"]
    left_out = json.loads(Path(campaign.reporter.artifacts["result"]).read_text())["left_out"]
    assert set(left_out) == {"one-class", "chance"} and "majority" in left_out["chance"]
    ids = {n: campaign.reporter.others[n].id for n in ("one-class", "chance")}
    assert logged(campaign.reporter, "left_out") == {ids["one-class"]: 1.0, ids["chance"]: 1.0}
    with pytest.raises(EnsembleError, match="every member learned nothing.*one-class: predictions are one class"):
        campaign.run(members=["one-class", "chance"])
    campaign.run(members=["one-class", "good"], leave_out_dead=False)  # the check can be turned off
    assert list(json.loads((campaign.out / "weights.json").read_text())) == ["one-class", "good"]


def test_above_majority_weights_measure_accuracy_from_the_majority_floor(campaign):
    campaign.member("ft-a", metrics={"val_accuracy": 0.70})
    campaign.member("ft-b", metrics={"val_accuracy": 0.50})
    campaign.run(members=["ft-a", "ft-b"], weighting="above_majority")
    floor = np.bincount(campaign.labels).max() / N_VAL
    gains = np.array([0.70, 0.50]) - floor
    np.testing.assert_allclose(list(logged(campaign.reporter, "weight").values()), gains / gains.sum())
    assert gains[0] / gains[1] > 0.70 / 0.50  # sharper than accuracy weights


def test_a_member_without_the_metric_warns_and_gets_the_mean_of_the_others(campaign, caplog):
    campaign.member("ft-a", metrics={"val_accuracy": 0.8})
    campaign.member("ft-b", metrics={})
    campaign.member("ft-c", metrics={"val_accuracy": 0.6})
    with caplog.at_level(logging.WARNING, logger="jobs.ensemble"):
        campaign.run(members=["ft-a", "ft-b", "ft-c"])
    assert "member 'ft-b' logged no val_accuracy" in caplog.text
    assert logged(campaign.reporter, "missing_metric") == {1: 1.0}
    np.testing.assert_allclose(list(logged(campaign.reporter, "weight").values()), [0.8 / 2.1, 0.7 / 2.1, 0.6 / 2.1])
    assert json.loads(Path(campaign.reporter.artifacts["result"]).read_text())["missing_metric"] == ["ft-b"]


def test_no_member_with_the_metric_falls_back_to_uniform(campaign, caplog):
    campaign.member("ft-a")
    campaign.member("ft-b")
    with caplog.at_level(logging.WARNING, logger="jobs.ensemble"):
        campaign.run(members=["ft-a", "ft-b"], weighting="f1")
    assert "uniform weights" in caplog.text
    assert logged(campaign.reporter, "missing_metric") == {0: 1.0, 1: 1.0}
    np.testing.assert_allclose(list(logged(campaign.reporter, "weight").values()), [0.5, 0.5])


def test_members_from_different_validation_splits_are_refused(campaign):
    campaign.member("ft-a", metrics={"val_accuracy": 0.8}, split="aaaa1111")
    campaign.member("ft-b", metrics={"val_accuracy": 0.8}, split="aaaa1111")
    campaign.member("ft-c", metrics={"val_accuracy": 0.8}, split="bbbb2222")
    with pytest.raises(EnsembleError, match="different validation splits") as err:
        campaign.run(members=["ft-a", "ft-b", "ft-c"])
    assert "split aaaa1111: ft-a, ft-b; split bbbb2222: ft-c" in str(err.value)


def test_a_failed_member_or_one_without_logits_is_a_clear_error(campaign):
    campaign.member("ft-a", metrics={"val_accuracy": 0.8})
    campaign.member("ft-b", status="failed")
    campaign.member("ft-c", artifacts=("test_logits", "val_split"))
    with pytest.raises(EnsembleError, match="member 'ft-b' has status failed, not succeeded"):
        campaign.run(members=["ft-a", "ft-b"])
    with pytest.raises(EnsembleError, match="member 'ft-c' saved no val_logits; its artifacts: test_logits, val_split"):
        campaign.run(members=["ft-a", "ft-c"])
    with pytest.raises(LookupError, match="no job named 'nope'"):
        campaign.run(members=["ft-a", "nope"])


def test_members_listing_validation_rows_in_another_order_are_aligned(campaign):
    val_a, _ = campaign.member("ft-a", metrics={"val_accuracy": 0.5})
    order = np.random.default_rng(5).permutation(N_VAL)
    val_b, _ = campaign.member("ft-b", metrics={"val_accuracy": 0.5}, order=order)
    campaign.run(members=["ft-a", "ft-b"])
    expected = accuracy(campaign.labels, combine([val_a, val_b], [0.5, 0.5]).argmax(-1))
    assert logged(campaign.reporter, "val_accuracy_in_sample")[None] == pytest.approx(expected)


def test_default_members_are_the_succeeded_held_out_finetunes_and_tags_select_too(campaign):
    campaign.member("ft-a", metrics={"val_accuracy": 0.8}, tags=["r2"])
    campaign.member("ft-b", metrics={"val_accuracy": 0.7})
    campaign.member("retrain", params={"full_data": True}, artifacts=("test_logits",), tags=["r2"])
    campaign.member("broken", status="failed", tags=["r3"])
    campaign.member("old-ens", kind="ensemble", tags=["r2"])
    campaign.run()
    assert list(json.loads((campaign.out / "weights.json").read_text())) == ["ft-a", "ft-b"]
    campaign.run(member_tags=["r2"], members=["ft-b"])
    assert list(json.loads((campaign.out / "weights.json").read_text())) == ["ft-b", "ft-a"]
    with pytest.raises(EnsembleError, match="member 'broken' has status failed"):
        campaign.run(member_tags=["r3"])
    with pytest.raises(EnsembleError, match="no job carries the tag"):
        campaign.run(member_tags=["nothing"])


def test_submission_csv_format(campaign):
    _, test_a = campaign.member("ft-a", metrics={"val_accuracy": 0.8})
    _, test_b = campaign.member("ft-b", metrics={"val_accuracy": 0.6})
    expected = combine([test_a, test_b], [0.8 / 1.4, 0.6 / 1.4]).argmax(-1)
    campaign.run(members=["ft-a", "ft-b"])  # defaults: id (row number), label
    sub = pd.read_csv(campaign.reporter.artifacts["submission"])
    assert list(sub.columns) == ["id", "label"]
    assert sub["id"].tolist() == list(range(N_TEST)) and sub["label"].tolist() == expected.tolist()
    # ids from a column of the members' test file (taken from their params)
    campaign.run(members=["ft-a", "ft-b"], submission={"id_column": "ID", "prediction_column": "Target",
                                                       "id_from": "review_id"})
    sub = pd.read_csv(campaign.reporter.artifacts["submission"], dtype={"ID": str})
    assert list(sub.columns) == ["ID", "Target"]
    assert sub["ID"].tolist() == [f"r{i:03d}" for i in range(N_TEST)]
    assert sub["Target"].tolist() == expected.tolist()
    with pytest.raises(EnsembleError, match="has no column 'row'; its columns: review_id, review"):
        campaign.run(members=["ft-a", "ft-b"], submission={"id_from": "row"})
    short = campaign.test_csv.with_name("short.csv")
    pd.read_csv(campaign.test_csv).head(3).to_csv(short, index=False)
    with pytest.raises(EnsembleError, match="has 3 rows but the members predicted 12"):
        campaign.run(members=["ft-a", "ft-b"], submission={"test_csv": str(short)})


def test_params_are_checked_at_submit_time():
    kind = get_kind("ensemble")
    with pytest.raises(ParamsError, match="params.weighting"):
        kind.parse({"weighting": "best"})
    with pytest.raises(ParamsError, match="params.submission.id_col: unknown key"):
        kind.parse({"submission": {"id_col": "x"}})
    with pytest.raises(ParamsError, match="listed twice: a"):
        kind.parse({"members": ["a", "a"]})
    with pytest.raises(ParamsError, match="cv_folds"):
        kind.parse({"cv_folds": 1})
    assert kind.parse({"submission": None}).submission is None


# ---------------------------------------------------------------- sched results

def _finished(queue: JobQueue, worker: int, *names: str) -> None:
    for _ in names:
        job = queue.claim(worker, "cpu0", 0)
        assert job is not None and job.name in names
        assert queue.succeed(job.id, worker)


@pytest.fixture
def board(db_url):
    """ft-a/b/c (scored), an ensemble, a queued finetune, an echo job, on SQLite and PostgreSQL."""
    queue = JobQueue(db_url)
    queue.submit([
        JobSpec("ft-a", "finetune", {"model": "klue/bert-base", "lr": 3e-5, "focal_gamma": 2.0}, tags=["r1"]),
        JobSpec("ft-b", "finetune", {"model": {"from": "tapt"}, "batch_size": 16}, tags=["r1", "r2"]),
        JobSpec("ft-c", "finetune", {"model": "tiny", "epochs": 4}, tags=["r2"]),
        JobSpec("ens", "ensemble", {"members": ["ft-a", "ft-b", "ft-c"], "weighting": "optimized"}, tags=["r2"]),
        JobSpec("hello", "echo", {"message": "hi"}),
    ])
    worker = queue.register_worker("host", 1, ["cpu0"])
    _finished(queue, worker, "ft-a", "ft-b", "ft-c", "ens", "hello")
    queue.submit([JobSpec("ft-later", "finetune", {"lr": 1e-4})])
    records = Records(queue)
    ids = {name: queue.resolve(name) for name in ("ft-a", "ft-b", "ft-c", "ens")}
    for name, acc, f1 in (("ft-a", 0.81, 0.70), ("ft-b", 0.85, 0.66), ("ft-c", 0.78, 0.75), ("ens", 0.87, 0.72)):
        records.log_metric(ids[name], "val_accuracy", acc - 0.2)  # an earlier value: the last one counts
        records.log_metric(ids[name], "val_accuracy", acc)
        records.log_metric(ids[name], "val_f1", f1)
        records.log_metric(ids[name], "accuracy", 0.1, step=1, split="val")
    records.log_metric(ids["ft-a"], "epochs_run", 3)
    records.log_metric(ids["ft-a"], "best_epoch", 2)
    yield queue
    queue.dispose()


def invoke_results(queue, *args):
    result = CliRunner().invoke(results, list(args), obj={"db": queue.url, "verbose": False})
    return result


def test_results_json_lists_models_and_ensembles_best_first(board):
    result = invoke_results(board, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["job"] for r in rows] == ["ens", "ft-b", "ft-a", "ft-c", "ft-later"]  # no echo; unscored last
    assert all(set(columns()) == set(r) for r in rows)
    a = next(r for r in rows if r["job"] == "ft-a")
    assert (a["kind"], a["model"], a["val_accuracy"], a["val_f1"], a["epochs"], a["best_epoch"]) == \
        ("finetune", "klue/bert-base", 0.81, 0.70, 3, 2)
    assert (a["lr"], a["focal_gamma"], a["batch_size"], a["status"], a["tags"]) == (3e-5, 2.0, 32, "succeeded", ["r1"])
    assert a["duration_s"] is not None and a["duration_s"] >= 0
    b, c, ens, later = (next(r for r in rows if r["job"] == n) for n in ("ft-b", "ft-c", "ens", "ft-later"))
    assert b["model"] == "from:tapt" and b["batch_size"] == 16
    assert c["epochs"] == 4 and c["model"] == "tiny"  # configured epochs when none were logged
    assert ens["kind"] == "ensemble" and ens["model"] is None and ens["weighting"] == "optimized"
    assert later["status"] == "queued" and later["val_accuracy"] is None and later["duration_s"] is None


def test_results_sort_and_filters(board):
    names = lambda *args: [r["job"] for r in json.loads(invoke_results(board, "--json", *args).output)]  # noqa: E731
    assert names("--sort", "val_f1") == ["ft-c", "ens", "ft-a", "ft-b", "ft-later"]
    assert names("--sort", "val_f1", "--asc") == ["ft-b", "ft-a", "ens", "ft-c", "ft-later"]
    assert names("--sort", "job") == ["ens", "ft-a", "ft-b", "ft-c", "ft-later"]
    assert names("--tag", "r2") == ["ens", "ft-b", "ft-c"]
    assert names("--kind", "ensemble") == ["ens"]
    assert names("--kind", "echo") == ["hello"]
    assert names("--status", "queued") == ["ft-later"]
    assert names("-n", "2") == ["ens", "ft-b"]
    bad = invoke_results(board, "--sort", "accuracy")
    assert bad.exit_code != 0 and "cannot sort by 'accuracy'; columns: job," in str(bad.exception)


def test_results_table_and_csv_export(board, tmp_path):
    path = tmp_path / "results.csv"
    result = invoke_results(board, "--csv", str(path))
    assert result.exit_code == 0, result.output
    assert "ft-a" in result.output and "0.8500" in result.output and "0.7000" in result.output
    assert "wrote 5 row(s)" in result.output
    frame = pd.read_csv(path)
    assert list(frame.columns) == list(columns())
    assert frame["job"].tolist() == ["ens", "ft-b", "ft-a", "ft-c", "ft-later"]
    assert frame.loc[frame.job == "ft-b", "tags"].item() == "r1,r2"
    assert frame.loc[frame.job == "ft-a", "val_accuracy"].item() == pytest.approx(0.81)
    assert "Example" in invoke_results(board, "--help").output


def test_results_is_a_constant_number_of_queries(board):
    def statements() -> int:
        count = []
        listener = lambda *a, **k: count.append(1)  # noqa: E731
        event.listen(board.engine, "before_cursor_execute", listener)
        try:
            leaderboard(board)
        finally:
            event.remove(board.engine, "before_cursor_execute", listener)
        return len(count)

    before = statements()
    board.submit([JobSpec(f"more-{i}", "finetune", {"seed": i}) for i in range(30)])
    records = Records(board)
    for i in range(30):
        records.log_metric(board.resolve(f"more-{i}"), "val_accuracy", i / 100)
    assert statements() == before <= 5  # BEGIN, the clock, metrics, left-out marks, jobs
    assert len(leaderboard(board)) == 35


def test_results_commands_run_inside_the_sched_group(board):
    # How the lead registers it: cli.add_command(results); errors print as one line.
    from scheduler.cli import SchedGroup

    @click.group(cls=SchedGroup)
    @click.pass_context
    def group(ctx):
        ctx.ensure_object(dict)
        ctx.obj.update(db=board.url, verbose=False)

    group.add_command(results)
    result = CliRunner().invoke(group, ["results", "--sort", "nope"])
    assert result.exit_code == 1 and "error: cannot sort by 'nope'" in result.output


def test_only_succeeded_jobs_carry_scores_a_tune_is_its_best_trial_and_left_out_members_are_marked(board):
    board.cancel(board.resolve("ft-later"))
    board.submit([
        JobSpec("ft-broken", "finetune", {"lr": 1e-2}),
        JobSpec("tune-x", "tune", {"space": {"lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}},
                                   "finetune": {"model": {"from": "tapt"}, "batch_size": 16, "epochs": 2}}),
        JobSpec("ens-2", "ensemble", {"members": ["ft-a", "ft-b", "ft-c"]}),
        JobSpec("ens-failed", "ensemble", {"members": ["ft-a"]}),
    ])
    worker = board.register_worker("host-2", 1, ["cpu0"])
    records, ids = Records(board), {n: board.resolve(n) for n in ("ft-broken", "tune-x", "ens-2", "ens-failed", "ft-c")}
    for name in ("ft-broken", "tune-x", "ens-2", "ens-failed"):
        job = board.claim(worker, "cpu0", 0)
        assert job is not None and job.name == name
        records.log_metric(job.id, "val_accuracy", 0.99)  # logged before it ended either way
        if name in ("ft-broken", "ens-failed"):
            records.log_metric(job.id, "left_out", 1.0, step=ids["ft-c"])
            assert board.fail(job.id, worker, message="boom") == "failed"
        else:
            assert board.succeed(job.id, worker)
    records.log_metric(ids["ens-2"], "left_out", 1.0, step=ids["ft-c"])
    for key, value in (("val_f1", 0.5), ("epochs_run", 2), ("best_lr", 3e-4), ("best_trial", 1)):
        records.log_metric(ids["tune-x"], key, value)
    rows = {r["job"]: r for r in json.loads(invoke_results(board, "--json").output)}
    assert rows["ft-broken"]["val_accuracy"] is None and rows["ft-broken"]["status"] == "failed"
    assert rows["ens-failed"]["val_accuracy"] is None
    tune = rows["tune-x"]
    assert (tune["val_accuracy"], tune["val_f1"], tune["epochs"]) == (0.99, 0.5, 2)
    assert (tune["lr"], tune["batch_size"], tune["model"]) == (3e-4, 16, "from:tapt")  # best trial over fixed
    assert rows["ft-c"]["left_out_by"] == ["ens-2"]  # a failed ensemble's marks do not count
    assert rows["ft-a"]["left_out_by"] == []
    wide = Console(width=220, record=True)
    wide.print(results_table(leaderboard(board), None))
    shown = {line.split("│")[2].strip(): line for line in wide.export_text().splitlines() if line.count("│") > 3}
    assert "(left out of ens-2)" in shown["ft-c"] and "left out" not in shown["ft-a"]
    status = json.loads(CliRunner().invoke(cli, ["--db", board.url, "status", "--json"]).output)
    scores = {j["name"]: j["score"] for j in status["recent"]}
    assert scores["ft-broken"] is None and scores["tune-x"]["value"] == 0.99


# ---------------------------------------------------------------- end to end through the queue

ENSEMBLE_QUEUE = """
vars: {train: "%(train)s", test: "%(test)s"}
defaults:
  gpus: 0  # the CPU
  params:
    finetune: {model: tiny, train: "{train}", test: "{test}", epochs: 2, batch_size: 32, max_length: 48,
               lr: 2e-3, precision: fp32, not_learning_epoch: 0}
jobs:
  - {name: ft-a, kind: finetune, tags: [models], params: {seed: 1}}
  - {name: base, kind: baseline, tags: [models], params: {train: "{train}", test: "{test}"}}
  # learns nothing (lr 1e-9) but is not stopped for it: the ensemble must leave it out
  - {name: ft-dead, kind: finetune, tags: [models], params: {lr: 1.0e-9, epochs: 1}}
  # learns nothing and is stopped for it: its reason is the job's message
  - name: ft-stalled
    kind: finetune
    params: {lr: 1.0e-9, not_learning_epoch: 1, not_learning_min_steps: 0, min_gain_over_majority: 0.05}
  - name: ens
    kind: ensemble
    after: [ft-a, base, ft-dead]
    params: {member_tags: [models], submission: {id_column: review_id, id_from: index}}
  - {name: predict-ens, kind: predict, after: [ens], params: {model: {from: ens}, csv: "{test}"}}
  - {name: predict-a, kind: predict, after: [ft-a], params: {model: {from: ft-a}, csv: "{test}"}}
  - name: ens-from-predict
    kind: ensemble
    after: [ft-a, base, predict-a]
    params: {members: [ft-a, base], weighting: uniform, leave_out_dead: false, test_from: {ft-a: predict-a}}
"""


@pytest.mark.slow
def test_finetunes_a_baseline_an_ensemble_and_predict_through_the_queue(small_data, tmp_path, monkeypatch):
    from tests.helpers import run_campaign

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCHED_CACHE_DIR", str(tmp_path / "token-cache"))
    url = run_campaign(textwrap.dedent(ENSEMBLE_QUEUE % {"train": small_data[0], "test": small_data[1]}), tmp_path)
    queue, records = JobQueue(url), Records(JobQueue(url))
    status = json.loads(CliRunner().invoke(cli, ["--db", url, "status", "--json"]).output)
    states = {j["name"]: j["status"] for j in status["jobs"]}
    assert states.pop("ft-stalled") == "failed" and set(states.values()) == {"succeeded"}, states
    stalled = next(j for j in status["jobs"] if j["name"] == "ft-stalled")
    assert stalled["message"].startswith("NotLearning: validation "), stalled["message"]
    assert "after epoch 1 (lr 1e-09)" in stalled["message"]

    # the baseline is a model like the fine-tunes: scored on the same rows, logits saved
    base = records.job("base")
    assert 0.25 < base.metrics["val_accuracy"] <= 1 and base.metrics["cpu_seconds"] > 0
    assert np.load(base.artifacts["test_logits"]).shape == (60, 4)
    ens = records.job("ens")
    weights = json.loads(Path(ens.artifacts["weights"]).read_text())
    left_out = json.loads(Path(ens.artifacts["result"]).read_text())["left_out"]
    assert "ft-dead" in left_out and "ft-dead" not in weights and "base" in weights
    members = {n: records.job(n).metrics["val_accuracy"] for n in weights}
    assert weights == pytest.approx({n: a / sum(members.values()) for n, a in members.items()})
    sub = pd.read_csv(ens.artifacts["submission"])
    assert list(sub.columns) == ["review_id", "label"] and len(sub) == 60

    # predict re-runs every member on the CSV: the ensemble's own test predictions, reproduced
    predicted = records.job("predict-ens")
    np.testing.assert_allclose(np.exp(np.load(predicted.artifacts["test_logits"])),
                               np.load(ens.artifacts["test_probs"]), atol=1e-5)
    rows = pd.read_csv(predicted.artifacts["test_predictions"])
    assert list(rows.columns) == ["id", "text", "label", "pred", "pred_name", "prob_0", "prob_1", "prob_2", "prob_3"]
    labels = pd.read_csv(small_data[1])["label"].to_numpy()
    assert predicted.metrics["test_accuracy"] == pytest.approx((rows["pred"].to_numpy() == labels).mean())
    assert 0 <= predicted.metrics["test_f1"] <= 1
    # ...and one fine-tune, with the max_length it was trained with (48, not predict's old 128)
    np.testing.assert_allclose(np.load(records.job("predict-a").artifacts["test_logits"]),
                               np.load(records.job("ft-a").artifacts["test_logits"]), atol=1e-4)
    # test_from takes a predict job: its test logits stand in for the member's
    both = records.job("ens-from-predict")
    expected = combine([np.load(records.job(n).artifacts["test_logits"]) for n in ("predict-a", "base")], [0.5, 0.5])
    np.testing.assert_allclose(np.load(both.artifacts["test_probs"]), expected, atol=1e-6)

    # the leaderboard: the stalled run has no score, the dead member is marked
    board = {r["job"]: r for r in leaderboard(queue)}
    assert board["ft-stalled"]["val_accuracy"] is None and board["ft-stalled"]["status"] == "failed"
    for name in ("ft-a", "base", "ft-dead"):  # ft-a may have learned nothing either on 320 rows
        assert board[name]["left_out_by"] == (["ens"] if name in left_out else [])
    assert board["base"]["kind"] == "baseline" and board["base"]["val_accuracy"] == base.metrics["val_accuracy"]
    shown = CliRunner().invoke(cli, ["--db", url, "results"], catch_exceptions=False, terminal_width=200).output
    assert "left out of ens" in shown
    queue.dispose()


def test_test_from_takes_test_logits_from_a_full_data_retrain(campaign):
    campaign.member("ft-a", metrics={"val_accuracy": 0.8})
    _, test_b = campaign.member("ft-b", metrics={"val_accuracy": 0.6})
    _, retrain_a = campaign.member("retrain-a", params={"full_data": True},
                                   artifacts=("test_logits", "test_predictions"))
    campaign.run(members=["ft-a", "ft-b"], test_from={"ft-a": "retrain-a"})
    weights = json.loads((campaign.out / "weights.json").read_text())
    assert weights == pytest.approx({"ft-a": 0.8 / 1.4, "ft-b": 0.6 / 1.4})  # from the validated runs
    expected = combine([retrain_a, test_b], [0.8 / 1.4, 0.6 / 1.4])
    np.testing.assert_allclose(np.load(campaign.reporter.artifacts["test_probs"]), expected)
    with pytest.raises(EnsembleError, match="test_from names job\\(s\\) that are not members: ft-z"):
        campaign.run(members=["ft-a", "ft-b"], test_from={"ft-z": "retrain-a"})
    campaign.member("retrain-b", status="failed", artifacts=())
    with pytest.raises(EnsembleError, match="'retrain-b' \\(for member 'ft-b'\\) is failed"):
        campaign.run(members=["ft-a", "ft-b"], test_from={"ft-b": "retrain-b"})
