"""What a finished run leaves behind: the result the CLI prints, ``metrics.json``, the confusion
matrix and loss curve PNGs, the environment, and the model dir's ``aiforge.json``.

Plots use matplotlib's Agg backend (no display needed) and fonts that draw the labels' script
(:mod:`aiforge.fonts`: Korean class names are Hangul, not empty boxes).
"""

from __future__ import annotations

import json
import logging
import subprocess
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.fonts import pyplot
from aiforge.train.callbacks import TrainState
from aiforge.train.config import TrainConfig
from aiforge.train.metrics import scalar_metrics
from aiforge.train.prepared import Prepared
from aiforge.train.significance import describe

log = logging.getLogger(__name__)

METADATA_FILE = "aiforge.json"


@dataclass
class TrainResult:
    """What a finished run produced; ``summary()`` is what the CLI prints."""

    output_dir: Path
    model_dir: Path
    backbone: str
    metrics: dict[str, Any]  # {"validation": {...}, "test": {...}} of the best model
    baseline: dict[str, Any] | None
    seconds: float
    steps: int
    run_id: str | None = None
    registered_name: str | None = None
    registered_version: str | None = None
    alias: str | None = None
    warnings: list[str] = field(default_factory=list)
    comparison: dict[str, Any] = field(default_factory=dict)  # {split: model vs baseline} (significance.py)
    calibration: dict[str, Any] | None = None  # temperature, ECE before / after (calibration.py)
    ensemble: dict[str, Any] | None = None  # {split: the model + TF-IDF stack's scores} (stacking.py)

    @property
    def ref(self) -> str | None:
        """The registry reference that loads this model, e.g. ``registry:nsmc-sentiment@production``."""
        if not self.registered_name:
            return None
        suffix = f"@{self.alias}" if self.alias else f"/{self.registered_version}"
        return f"registry:{self.registered_name}{suffix}"

    def lines(self) -> list[str]:
        """What the CLI prints after a run: the model, its score next to the baseline's, the registry ref."""
        split = "test" if "test" in self.metrics else "validation"
        ours = self.metrics[split]
        took = f"{self.steps} steps, {self.seconds / 60:.1f} min"
        out = [f"model         {self.model_dir} ({self.backbone}, {took})"]
        out.append(f"{split:<14}" + with_intervals(ours))
        if self.baseline and split in self.baseline:
            base = with_intervals(self.baseline[split])
            out.append(f"{'baseline':<14}{base} ({self.baseline['name']})")
        if split in self.comparison:
            out.append(f"{'verdict':<14}" + describe(self.comparison[split]))
        stacked = (self.ensemble or {}).get(split)
        if stacked:
            out.append(f"{'ensemble':<14}{with_intervals(stacked)} (model + baseline, stacked on validation)")
            if "vs_baseline" in stacked:
                out.append(f"{'ensemble':<14}" + describe(stacked["vs_baseline"]))
        out += [f"{'sample':<14}{sample!r}" for sample in ours.get("samples", [])]
        if self.calibration:
            c = self.calibration
            out.append(
                f"{'calibration':<14}temperature {c['temperature']:.3f} (fitted on validation); "
                f"{c['split']} ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}"
            )
        if self.run_id:
            out.append(f"mlflow run    {self.run_id}")
        if self.ref:
            out.append(f"registered    {self.ref} (version {self.registered_version})")
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "model_dir": str(self.model_dir),
            "backbone": self.backbone,
            "seconds": round(self.seconds, 1),
            "steps": self.steps,
            "metrics": {k: scalar_metrics(v) for k, v in self.metrics.items()},
            "baseline": self.baseline,
            "comparison": self.comparison,
            "calibration": summary_of(self.calibration),
            "ensemble": self.ensemble,
            "run_id": self.run_id,
            "registered": self.ref,
        }


def write_reports(
    out: Path,
    prep: Prepared,
    state: TrainState,
    metrics: dict[str, Any],
    baseline: dict[str, Any] | None,
    report_split: str,
    comparison: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    ensemble: dict[str, Any] | None = None,
) -> list[str]:
    """metrics.json, the confusion matrix and loss curve PNGs, the resolved config and the environment."""
    files = [out / "config.yaml"]
    payload = {
        "metrics": metrics,
        "baseline": baseline,
        "comparison": comparison or {},
        "calibration": calibration,
        "ensemble": ensemble,
        "history": state.history,
        "skipped_rows": prep.dataset.skipped,
        "data_hash": prep.dataset.data_hash,
    }
    (out / "metrics.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    files.append(out / "metrics.json")
    matrix = metrics[report_split].get("confusion_matrix")
    if matrix is not None:
        files.append(
            plot_confusion_matrix(
                matrix, prep.task.labels, out / "confusion_matrix.png", f"{report_split}: {prep.backbone}"
            )
        )
    if state.history["steps"]:
        files.append(
            plot_loss_curve(
                state.history["steps"],
                state.history["loss"],
                state.history["evals"],
                out / "loss_curve.png",
                prep.task.metric_name(),
            )
        )
    if calibration is not None:
        files.append(plot_reliability(calibration, out / "reliability.png", prep.backbone))
    environment = doctor_environment()
    if environment is not None:
        (out / "environment.json").write_text(
            json.dumps(environment, indent=2, default=str), encoding="utf-8"
        )
        files.append(out / "environment.json")
    return [str(f) for f in files]


def write_metadata(
    model_dir: Path,
    config: TrainConfig,
    prep: Prepared,
    metrics: dict[str, Any],
    baseline: dict[str, Any] | None,
    state: TrainState,
    comparison: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    ensemble: dict[str, Any] | None = None,
) -> None:
    """The model dir's ``aiforge.json``: what produced this model, and how well it did."""
    from aiforge import __version__

    metadata = {
        "aiforge_version": __version__,
        "task": config.task,
        "backbone": prep.backbone,
        "labels": prep.task.labels,
        "multi_label": prep.task.multi_label,
        "max_length": prep.task.max_length,
        "data_hash": prep.dataset.data_hash,
        "n_examples": {
            "train": len(prep.train),
            "validation": len(prep.validation),
            "test": len(prep.test) if prep.test is not None else 0,
        },
        "metrics": {k: scalar_metrics(v) for k, v in metrics.items()},
        "intervals": {k: v["ci"] for k, v in metrics.items() if "ci" in v},
        "baseline": baseline,
        "comparison": comparison or {},
        "calibration": summary_of(calibration),
        "ensemble": ensemble,
        "steps": state.step,
        "run_id": state.run_id,
        "git_commit": git_commit(),
        "config": config.model_dump(mode="json"),
    }
    (model_dir / METADATA_FILE).write_text(
        json.dumps(metadata, indent=2, ensure_ascii=False), encoding="utf-8"
    )


def with_intervals(scores: dict[str, Any]) -> str:
    """``accuracy 0.8270 [0.8030, 0.8500], macro_f1 ...``: headline metrics with their 95 % intervals."""
    intervals = scores.get("ci", {})
    parts = []
    for name in ("accuracy", "macro_f1", "micro_f1", "exact_match", "f1", "bits_per_char", "perplexity"):
        if name not in scores:
            continue
        bounds = intervals.get(name)
        shown = f" [{bounds[0]:.4f}, {bounds[1]:.4f}]" if bounds else ""
        parts.append(f"{name} {scores[name]:.4f}{shown}")
    return ", ".join(parts)


def comparison_metrics(
    metrics: dict[str, Any],
    baseline: dict[str, Any] | None,
    comparison: dict[str, Any],
    ensemble: dict[str, Any] | None = None,
) -> dict[str, float]:
    """The baseline's scores, every interval's bounds and the paired test's numbers, as flat MLflow
    metrics (``test_accuracy_ci_low``, ``baseline_test_accuracy``, ``test_vs_baseline_p_value``...);
    with an ensemble also ``ensemble_test_accuracy``, ``ensemble_test_vs_baseline_p_value``..."""
    prefix = {"validation": "final_val_", "test": "test_"}
    flat: dict[str, float] = {}
    for split, scores in metrics.items():
        for name, (low, high) in scores.get("ci", {}).items():
            flat[f"{prefix.get(split, split + '_')}{name}_ci_low"] = low
            flat[f"{prefix.get(split, split + '_')}{name}_ci_high"] = high
    for split in ("validation", "test"):
        if baseline and isinstance(baseline.get(split), dict):
            flat.update(scalar_metrics(baseline[split], f"baseline_{split}_"))
    for split, result in comparison.items():
        flat[f"{split}_vs_baseline_difference"] = result["difference"]
        low, high = result["difference_ci"]
        flat[f"{split}_vs_baseline_diff_ci_low"], flat[f"{split}_vs_baseline_diff_ci_high"] = low, high
        flat[f"{split}_vs_baseline_p_value"] = result["p_value"]
    for split in ("validation", "test"):
        stacked = (ensemble or {}).get(split)
        if not stacked:
            continue
        flat.update(scalar_metrics(stacked, f"ensemble_{split}_"))
        for against in ("baseline", "model"):
            if f"vs_{against}" in stacked:
                flat[f"ensemble_{split}_vs_{against}_difference"] = stacked[f"vs_{against}"]["difference"]
                flat[f"ensemble_{split}_vs_{against}_p_value"] = stacked[f"vs_{against}"]["p_value"]
    return flat


def summary_of(calibration: dict[str, Any] | None) -> dict[str, Any] | None:
    """The calibration's numbers without its per-bin tables (those are in metrics.json and the PNG)."""
    if calibration is None:
        return None
    return {k: v for k, v in calibration.items() if not k.startswith("reliability_")}


def git_commit() -> str | None:
    """The commit of the working directory's repository (with '-dirty' when it has changes), if any."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def doctor_environment() -> dict[str, Any] | None:
    """`aiforge doctor --json` without the device tensor test, for reproducibility records."""
    try:
        from aiforge import doctor

        return doctor.to_json(doctor.run_checks(device_ops=False))
    except Exception as exc:  # noqa: BLE001 - an environment report must never fail a finished run
        log.warning("could not record the doctor environment: %s", exc)
        return None


# ---- plots ----------------------------------------------------------------------------------------------
TICK_LABEL_WIDTH = 18  # display columns (a Hangul syllable counts 2) before a class name wraps
CHARS_PER_INCH = 11  # display columns of 10-pt text per inch of figure, for wrapping titles


@contextmanager
def _pyplot(texts: Iterable[str]) -> Iterator[Any]:
    """pyplot (Agg: files only, never needs a display) with fonts that draw every script in ``texts``."""
    with pyplot(texts) as plt:
        yield plt


def display_width(text: str) -> int:
    """Columns ``text`` takes: wide East Asian characters (Hangul, CJK) count two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def wrap(text: str, width: int) -> str:
    """``text`` broken into lines of at most ``width`` display columns, at spaces when it can."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if display_width(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = ""
        for char in word:  # a word wider than a line (a model path, a long Korean label) breaks anywhere
            if display_width(line + char) > width:
                lines.append(line)
                line = ""
            line += char
    return "\n".join([*lines, line] if line or not lines else lines)


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path, title: str = "") -> Path:
    data = np.asarray(matrix)
    size = max(4.0, 0.5 * len(labels) + 2)
    title = wrap(title or "confusion matrix", int(size * CHARS_PER_INCH))
    ticks = [wrap(label, TICK_LABEL_WIDTH) for label in labels]
    with _pyplot([title, *labels]) as plt:
        fig, ax = plt.subplots(figsize=(size, size))
        ax.imshow(data, cmap="Blues")
        ax.set_xticks(range(len(labels)), ticks, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(len(labels)), ticks)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        if len(labels) <= 30:
            threshold = data.max() / 2 if data.size else 0
            for (i, j), value in np.ndenumerate(data):
                color = "white" if value > threshold else "black"
                ax.text(j, i, str(value), ha="center", va="center", color=color)
        _save(plt, fig, path)
    return path


def plot_loss_curve(
    steps: list[int], losses: list[float], evals: list[dict[str, float]], path: Path, metric: str
) -> Path:
    """Training loss per logged step, validation loss and the chosen metric per evaluation."""
    with _pyplot([metric]) as plt:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(steps, losses, label="train loss", alpha=0.8)
        eval_steps = [e["step"] for e in evals]
        if evals and "loss" in evals[0]:
            ax.plot(eval_steps, [e["loss"] for e in evals], "o-", label="validation loss")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        if evals and metric in evals[0]:
            other = ax.twinx()
            other.plot(
                eval_steps, [e[metric] for e in evals], "s--", color="tab:green", label=f"validation {metric}"
            )
            other.set_ylabel(metric)
            other.legend(loc="upper right")
        ax.legend(loc="upper left")
        _save(plt, fig, path)
    return path


def plot_reliability(calibration: dict[str, Any], path: Path, title: str = "") -> Path:
    """Accuracy against confidence per bin, before and after temperature scaling; the diagonal is
    a perfectly calibrated model. Bars hold the bins' accuracy, dots their mean confidence."""
    split, temperature = calibration["split"], calibration["temperature"]
    heading = wrap(f"{split}: {title}" if title else split, int(10 * CHARS_PER_INCH))
    with _pyplot([heading]) as plt:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharey=True)
        for ax, when, name in zip(
            axes, ("before", "after"), ("logits", f"logits / {temperature:.3f}"), strict=True
        ):
            table = calibration[f"reliability_{when}"]
            bins = len(table["count"])
            centres = (np.arange(bins) + 0.5) / bins
            filled = np.asarray(table["count"]) > 0
            ax.bar(
                centres[filled],
                np.asarray(table["accuracy"])[filled],
                width=1 / bins,
                alpha=0.7,
                edgecolor="black",
                label="accuracy",
            )
            ax.plot(
                np.asarray(table["confidence"])[filled],
                np.asarray(table["accuracy"])[filled],
                "o",
                color="tab:red",
                label="mean confidence",
            )
            ax.plot([0, 1], [0, 1], "--", color="gray", label="calibrated")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("confidence")
            ax.set_title(f"{name}: ECE {calibration[f'ece_{when}']:.4f}")
        axes[0].set_ylabel("accuracy")
        axes[0].legend(loc="upper left")
        fig.suptitle(heading)
        _save(plt, fig, path)
    return path


def _save(plt: Any, fig: Any, path: Path) -> None:
    # bbox_inches="tight" grows the image to whatever the title and rotated tick labels need, where
    # tight_layout alone left a long title cut at the figure's edge.
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
