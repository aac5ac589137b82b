"""The sweep's summary: one row per trial (its values, state, metric and compute), the best trial,
and the same table as ``summary.csv`` and ``summary.json`` in the sweep dir."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiforge.sweeps.spec import SweepSpec

STATES = ("complete", "pruned", "failed", "interrupted", "running")


@dataclass
class SweepResult:
    sweep_dir: Path
    method: str
    metric: str
    direction: str
    parameters: list[str]  # the dotted paths searched, in the file's order
    log_scale: dict[str, bool]  # parameter -> searched on a log scale (plots use a log axis)
    rows: list[dict[str, Any]]  # one per trial, in trial order
    artifacts: list[Path] = field(default_factory=list)

    @property
    def best(self) -> dict[str, Any] | None:
        """The completed trial with the best metric (pruned trials stopped early: not candidates)."""
        done = [r for r in self.rows if r["state"] == "complete" and r["value"] is not None]
        if not done:
            return None
        pick = min if self.direction == "minimize" else max
        return pick(done, key=lambda r: r["value"])

    def counts(self) -> dict[str, int]:
        return {
            state: sum(r["state"] == state for r in self.rows)
            for state in STATES
            if any(r["state"] == state for r in self.rows)
        }

    def table(self) -> tuple[list[str], list[list[str]]]:
        """(headers, cells) for people: the CLI prints it."""
        headers = ["trial", "state", *self.parameters, self.metric, "steps", "seconds"]
        cells = []
        for row in self.rows:
            value = row["value"]
            cells.append(
                [
                    str(row["trial"]),
                    row["state"],
                    *(format_value(row["params"].get(p)) for p in self.parameters),
                    "" if value is None else f"{value:.4f}",
                    str(row["steps"] or ""),
                    f"{row['seconds']:.1f}" if row["seconds"] else "",
                ]
            )
        return headers, cells

    def lines(self) -> list[str]:
        """What the CLI prints under the table."""
        counts = ", ".join(f"{n} {state}" for state, n in self.counts().items())
        out = [f"trials        {len(self.rows)} ({counts})"]
        best = self.best
        if best is not None:
            values = ", ".join(f"{p}={format_value(best['params'].get(p))}" for p in self.parameters)
            out.append(f"best          trial {best['trial']}: {self.metric} {best['value']:.4f} ({values})")
            out.append(f"best model    {best['output_dir']}/model")
        out.append(f"table, plots  {self.sweep_dir}/summary.csv, {self.sweep_dir}/plots/")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "sweep_dir": str(self.sweep_dir),
            "method": self.method,
            "metric": self.metric,
            "direction": self.direction,
            "best": self.best,
            "counts": self.counts(),
            "trials": self.rows,
            "artifacts": [str(p) for p in self.artifacts],
        }


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def summarize(study: Any, spec: SweepSpec, metric: str, direction: str) -> SweepResult:
    from aiforge.sweeps.spec import Range

    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        state = "interrupted" if attrs.get("interrupted") else _state_name(trial.state)
        params = {p: _decode(trial.params.get(p), spec.parameters[p]) for p in spec.parameters}
        examples, parameters = attrs.get("examples") or 0, attrs.get("parameters")
        rows.append(
            {
                "trial": trial.number,
                "state": state,
                "params": params,
                "value": attrs.get("value"),
                "steps": attrs.get("steps") or 0,
                "seconds": attrs.get("seconds") or 0.0,
                "examples": examples,
                "parameters": parameters,
                # a model-independent compute axis: parameters x training examples (∝ training FLOPs)
                "compute": parameters * examples if parameters and examples else None,
                "run_id": attrs.get("run_id"),
                "output_dir": attrs.get("output_dir", ""),
                "error": (attrs.get("error") or {}).get("message", ""),
            }
        )
    log_scale = {p: isinstance(s, Range) and s.log for p, s in spec.parameters.items()}
    return SweepResult(spec.sweep_dir, spec.method, metric, direction, list(spec.parameters), log_scale, rows)


def _state_name(state: Any) -> str:
    return {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(state.name, "running")


def _decode(value: Any, space: Any) -> Any:
    """A choice stored as JSON text (a list value) back to the value the trial used."""
    if isinstance(space, list) and isinstance(value, str) and value not in space:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def write_tables(result: SweepResult) -> list[Path]:
    """``summary.csv`` (one row per trial, a column per parameter) and ``summary.json``."""
    result.sweep_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = result.sweep_dir / "summary.csv", result.sweep_dir / "summary.json"
    columns = [
        "trial",
        "state",
        *result.parameters,
        result.metric,
        "steps",
        "seconds",
        "examples",
        "parameters",
        "compute",
        "run_id",
        "output_dir",
        "error",
    ]
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in result.rows:
            params = [
                json.dumps(v) if isinstance(v, list | dict) else v
                for v in (row["params"][p] for p in result.parameters)
            ]
            writer.writerow(
                [
                    row["trial"],
                    row["state"],
                    *params,
                    row["value"],
                    row["steps"],
                    round(row["seconds"], 2),
                    row["examples"],
                    row["parameters"],
                    row["compute"],
                    row["run_id"],
                    row["output_dir"],
                    row["error"],
                ]
            )
    json_path.write_text(
        json.dumps(result.to_dict(), indent=2, ensure_ascii=False, default=str), encoding="utf-8"
    )
    return [csv_path, json_path]
