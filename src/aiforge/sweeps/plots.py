"""The sweep's plots, as PNGs in ``SWEEP_DIR/plots``: the validation metric against each parameter,
against compute (training seconds; parameters x examples, which training FLOPs are proportional to),
and a parallel-coordinates view of every trial. Completed trials are dots, pruned ones grey crosses
(their metric is that of a model stopped early), the best trial a star."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from aiforge.fonts import pyplot
from aiforge.sweeps.summary import SweepResult, format_value

PANEL_INCHES = 3.6


def write_plots(result: SweepResult) -> list[Path]:
    rows = [r for r in result.rows if r["state"] in ("complete", "pruned") and r["value"] is not None]
    if not rows:
        return []
    folder = result.sweep_dir / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    texts = [
        result.metric,
        *result.parameters,
        *(format_value(v) for r in rows for v in r["params"].values()),
    ]
    with pyplot(texts) as plt:
        return [
            plot_parameters(plt, result, rows, folder / "metric_vs_parameters.png"),
            plot_compute(plt, result, rows, folder / "metric_vs_compute.png"),
            plot_parallel_coordinates(plt, result, rows, folder / "parallel_coordinates.png"),
        ]


def axis_positions(
    values: list[Any], log: bool
) -> tuple[list[float], list[float] | None, list[str] | None, bool]:
    """(x per value, tick positions, tick labels, log axis): numbers as they are (a log axis when the
    space is logarithmic, or positive and spanning 2+ decades); anything else as evenly spaced categories."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        numbers = [float(v) for v in values]
        spread = min(numbers) > 0 and max(numbers) / min(numbers) >= 100
        return numbers, None, None, log or spread
    labels = list(dict.fromkeys(format_value(v) for v in values))
    return [float(labels.index(format_value(v))) for v in values], list(range(len(labels))), labels, False


def _scatter(ax: Any, result: SweepResult, rows: list[dict[str, Any]], xs: list[float]) -> None:
    best = result.best
    for state, marker, color in (("complete", "o", "tab:blue"), ("pruned", "x", "grey")):
        points = [(x, r["value"]) for x, r in zip(xs, rows, strict=True) if r["state"] == state]
        if points:
            ax.scatter(*zip(*points, strict=True), marker=marker, color=color, label=state, zorder=2)
    if best is not None:
        x = xs[rows.index(best)]
        ax.scatter([x], [best["value"]], marker="*", s=220, color="tab:red", label="best", zorder=3)
    ax.set_ylabel(f"validation {result.metric}")
    ax.grid(alpha=0.3)


def plot_parameters(plt: Any, result: SweepResult, rows: list[dict[str, Any]], path: Path) -> Path:
    n = len(result.parameters)
    fig, axes = plt.subplots(1, n, figsize=(PANEL_INCHES * n, PANEL_INCHES), squeeze=False)
    for ax, name in zip(axes[0], result.parameters, strict=True):
        xs, ticks, labels, log = axis_positions([r["params"][name] for r in rows], result.log_scale[name])
        _scatter(ax, result, rows, xs)
        if ticks is not None:
            ax.set_xticks(ticks, labels)
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(name)
    axes[0][0].legend(loc="best", fontsize="small")
    fig.suptitle(f"{result.method} sweep: validation {result.metric} by parameter")
    return save(plt, fig, path)


def plot_compute(plt: Any, result: SweepResult, rows: list[dict[str, Any]], path: Path) -> Path:
    panels = [("seconds", "training seconds")]
    if all(r["compute"] for r in rows):
        panels.append(("compute", "parameters x training examples (∝ training FLOPs)"))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(PANEL_INCHES * 1.3 * len(panels), PANEL_INCHES), squeeze=False
    )
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        xs = [float(r[key]) for r in rows]
        _scatter(ax, result, rows, xs)
        if key == "compute" or (min(xs) > 0 and max(xs) / min(xs) >= 10):
            ax.set_xscale("log")  # compute: log, as scaling plots are
        ax.set_xlabel(label)
    axes[0][0].legend(loc="best", fontsize="small")
    fig.suptitle(f"validation {result.metric} against compute")
    return save(plt, fig, path)


def plot_parallel_coordinates(plt: Any, result: SweepResult, rows: list[dict[str, Any]], path: Path) -> Path:
    """One vertical axis per parameter and one for the metric, each scaled to its trials' range; a
    line per trial, coloured by its metric (pruned trials dashed grey)."""
    names = [*result.parameters, result.metric]
    columns = []
    tick_text: list[list[str]] = []
    for name in result.parameters:
        xs, ticks, labels, log = axis_positions([r["params"][name] for r in rows], result.log_scale[name])
        scaled = [math.log10(x) for x in xs] if log else xs
        columns.append(normalise(scaled))
        tick_text.append(labels if labels is not None else [format_value(min(xs)), format_value(max(xs))])
    values = [float(r["value"]) for r in rows]
    columns.append(normalise(values))
    tick_text.append([f"{min(values):.4g}", f"{max(values):.4g}"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(names)), PANEL_INCHES * 1.2))
    colormap = plt.get_cmap("viridis_r" if result.direction == "minimize" else "viridis")
    low, high = min(values), max(values)
    for i, row in enumerate(rows):
        ys = [column[i] for column in columns]
        if row["state"] == "pruned":
            ax.plot(range(len(names)), ys, color="grey", linestyle="--", alpha=0.6)
        else:
            shade = (row["value"] - low) / (high - low) if high > low else 1.0
            ax.plot(range(len(names)), ys, color=colormap(shade), linewidth=2, alpha=0.9)
    for x, labels in enumerate(tick_text):
        ax.axvline(x, color="black", linewidth=0.8)
        for j, label in enumerate(labels):
            y = j / (len(labels) - 1) if len(labels) > 1 else 0.5
            ax.annotate(
                label, (x, y), xytext=(4, 0), textcoords="offset points", fontsize="small", va="center"
            )
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    fig.suptitle(f"{len(rows)} trials (colour: validation {result.metric}; dashed: pruned)")
    return save(plt, fig, path)


def normalise(values: list[float]) -> list[float]:
    low, high = min(values), max(values)
    return [(v - low) / (high - low) if high > low else 0.5 for v in values]


def save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
