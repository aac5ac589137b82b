"""``aiforge sweep``: grid, random and TPE run their trial budget; a trial that trails is pruned at its
first evaluation; trials are MLflow runs nested under the sweep's run, which holds the table and the
plots; an interrupted sweep resumes (the interrupted trial from its checkpoint); bad sweep files are
errors that name the field and the fix."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import aiforge
from aiforge import registry
from aiforge.cli import app
from aiforge.errors import AiforgeError
from aiforge.sweeps import LocalRunner, load_spec, run_sweep
from aiforge.train.callbacks import Callback, TrainState

PLOTS = ("metric_vs_parameters.png", "metric_vs_compute.png", "parallel_coordinates.png")


def write_sweep(path: Path, **fields: Any) -> Path:
    path.write_text(yaml.safe_dump(fields, allow_unicode=True), encoding="utf-8")
    return path


def test_grid_sweep_prunes_a_trailing_trial_nests_runs_and_writes_table_and_plots(
    train_fields: dict[str, Any], tmp_path: Path
) -> None:
    train_fields["tracking"]["enabled"] = True
    train_fields["training"]["epochs"] = 2  # two evaluations: the bad trial is pruned after the first
    sweep_dir = tmp_path / "grid"
    sweep_file = write_sweep(
        tmp_path / "sweep.yaml",
        train=train_fields,
        method="grid",
        metric="loss",  # lr 5.0 blows the loss up from the first epoch; 1e-4 keeps it near ln 2
        parameters={"training.lr": [1e-4, 5.0]},
        pruning={"startup_trials": 1, "warmup_evals": 0},
        output_dir=str(sweep_dir),
        name="lr-grid",
    )
    result = CliRunner().invoke(app, ["sweep", str(sweep_file)])
    assert result.exit_code == 0, result.output
    assert "trial 1 pruned" in result.output and "best          trial 0" in result.output

    summary = json.loads((sweep_dir / "summary.json").read_text(encoding="utf-8"))
    states = [(t["trial"], t["state"], t["params"]["training.lr"]) for t in summary["trials"]]
    assert states == [(0, "complete", 1e-4), (1, "pruned", 5.0)]  # grid: the file's order
    complete, pruned = summary["trials"]
    assert complete["steps"] == 12 and pruned["steps"] == 6  # stopped after its first epoch
    assert summary["best"]["trial"] == 0 and summary["direction"] == "minimize"
    with (sweep_dir / "summary.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["state"] for r in rows] == ["complete", "pruned"] and "training.lr" in rows[0]
    for name in PLOTS:
        assert (sweep_dir / "plots" / name).stat().st_size > 5000

    client = registry.client(train_fields["tracking"]["tracking_uri"])
    trial_runs = [client.get_run(t["run_id"]) for t in summary["trials"]]
    parent_id = trial_runs[0].data.tags["mlflow.parentRunId"]
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parent_id}
    assert [r.data.tags["aiforge.sweep.state"] for r in trial_runs] == ["complete", "pruned"]
    parent = client.get_run(parent_id)
    assert parent.info.run_name == "lr-grid" and parent.info.status == "FINISHED"
    assert parent.data.metrics["best_trial"] == 0 and parent.data.metrics["trials_pruned"] == 1
    logged = {a.path for a in client.list_artifacts(parent_id, "sweep/plots")}
    assert logged == {f"sweep/plots/{name}" for name in PLOTS}
    assert not client.search_registered_models()  # trials are not registered one by one


@pytest.mark.parametrize("method", ["random", "tpe"])
def test_random_and_tpe_run_their_trial_budget_within_the_space(
    method: str, train_fields: dict[str, Any], tmp_path: Path
) -> None:
    result = aiforge.sweep(
        {
            "train": train_fields,
            "method": method,
            "trials": 3,
            "parameters": {
                "training.lr": {"low": 1e-5, "high": 1e-3, "log": True},
                "training.batch_size": [8, 16],
            },
            "pruning": {"enabled": False},
            "output_dir": str(tmp_path / method),
        },
        sets=["seed=3"],
    )
    assert [r["state"] for r in result.rows] == ["complete"] * 3
    for row in result.rows:
        assert 1e-5 <= row["params"]["training.lr"] <= 1e-3 and row["params"]["training.batch_size"] in (
            8,
            16,
        )
        assert (
            row["steps"]
            == (90 + row["params"]["training.batch_size"] - 1) // row["params"]["training.batch_size"]
        )
    assert result.best is not None and result.direction == "maximize" and result.metric == "accuracy"


class InterruptTrial(Callback):
    """Ctrl-C in the middle of one trial, after its checkpoint at step 2."""

    def __init__(self, trial_dir: str) -> None:
        self.trial_dir = trial_dir

    def on_checkpoint(self, state: TrainState) -> None:
        if state.output_dir.name == self.trial_dir and state.step >= 2:
            raise KeyboardInterrupt


def test_an_interrupted_sweep_resumes_the_trial_it_cut_short(
    train_fields: dict[str, Any], tmp_path: Path
) -> None:
    train_fields["tracking"]["enabled"] = True
    train_fields["training"]["checkpoint_every_steps"] = 2
    fields = {
        "train": train_fields,
        "method": "grid",
        "parameters": {"training.lr": [1e-4, 3e-4]},
        "output_dir": str(tmp_path / "resume"),
    }
    spec = load_spec(None, base=fields)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, runner=LocalRunner([InterruptTrial("trial-001")]))
    with pytest.raises(AiforgeError) as again:  # a fresh start would mix two sweeps
        run_sweep(spec)
    assert again.value.code == "AF-SWEEP-003" and "--resume" in again.value.fix

    result = aiforge.sweep(fields, resume=True)
    assert [(r["trial"], r["state"]) for r in result.rows] == [
        (0, "complete"),
        (1, "interrupted"),
        (2, "complete"),
    ]
    cut, resumed = result.rows[1], result.rows[2]
    assert resumed["params"] == cut["params"] and resumed["output_dir"] == cut["output_dir"]
    assert resumed["steps"] == 6
    # the resumed trial continued the interrupted one's MLflow run: two trial runs, not three
    client = registry.client(train_fields["tracking"]["tracking_uri"])
    parent_id = client.get_run(result.rows[0]["run_id"]).data.tags["mlflow.parentRunId"]
    children = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.mlflow.parentRunId = '{parent_id}'",
    )
    assert sorted(r.info.run_id for r in children) == sorted([result.rows[0]["run_id"], resumed["run_id"]])
    assert client.get_run(parent_id).info.status == "FINISHED"


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ({"trails": 3, "method": "random"}, "AF-SWEEP-001", ["trails", "did you mean 'trials'"]),
        ({"method": "random"}, "AF-SWEEP-001", ["needs trials"]),
        (
            {"parameters": {"training.lr": {"low": 1e-5, "high": 1e-3}}},
            "AF-SWEEP-001",
            ["grid search needs a list", "training.lr"],
        ),
        ({"parameters": {"training.epoch": [1, 2]}}, "AF-SWEEP-002", ["training.epoch", "training.epochs"]),
        (
            {"parameters": {"training.warmup_ratio": [0.1, 1.5]}},
            "AF-SWEEP-002",
            ["training.warmup_ratio", "1.5"],
        ),
        (
            {"parameters": {"training.lr": {"low": 1e-3, "high": 1e-5}}, "method": "tpe", "trials": 2},
            "AF-SWEEP-001",
            ["must be below high"],
        ),
    ],
)
def test_bad_sweep_files_name_the_field_and_the_fix(
    fields: dict[str, Any], code: str, words: list[str], train_fields: dict[str, Any], tmp_path: Path
) -> None:
    sweep = {"train": train_fields, "method": "grid", "parameters": {"training.lr": [1e-4]}, **fields}
    result = CliRunner().invoke(app, ["sweep", str(write_sweep(tmp_path / "bad.yaml", **sweep))])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # rich wraps lines at the terminal's width
    assert code in text and "fix:" in text and "Traceback" not in text
    for word in words:
        assert word in text


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[2].glob("examples/*-sweep.yaml")), ids=str)
def test_example_sweeps_load_and_fit_their_training_config(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(path.parents[1])  # examples name their training config from the repository root
    spec = load_spec(path)
    assert spec.n_trials() >= 2 and spec.parameters


def test_set_replaces_a_dotted_parameter_of_the_sweep(train_fields: dict[str, Any]) -> None:
    fields = {"train": train_fields, "method": "grid", "parameters": {"training.lr": [1e-4, 1e-3]}}
    sets = ["parameters.training.lr=[3e-4]", "parameters.training.epochs=[1, 2]"]
    spec = load_spec(None, sets, base=fields)
    assert spec.parameters.keys() == {"training.lr", "training.epochs"}
    assert spec.n_trials() == 2
