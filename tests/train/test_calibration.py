"""Temperature scaling (aiforge.train.calibration) and its use by the text-classification pipeline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from aiforge.train.calibration import (
    calibrate,
    confidence_and_correct,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    probabilities,
    save_temperature,
)


def overconfident(n: int, seed: int, sharpness: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true class distribution, multiplied by ``sharpness``: a model
    that is right as often as calibrated logits say, but ``sharpness`` times too sure."""
    rng = np.random.default_rng(seed)
    calibrated = rng.normal(0, 1.5, size=(n, 3))
    probs = probabilities(calibrated, 1.0, multi_label=False)
    truth = np.array([rng.choice(3, p=p) for p in probs])
    return calibrated * sharpness, truth


def test_fitted_temperature_undoes_the_overconfidence_and_ece_drops() -> None:
    logits, truth = overconfident(4000, seed=0)
    temperature = fit_temperature(logits, truth, multi_label=False)
    assert temperature == pytest.approx(4.0, rel=0.1)
    held_out, held_truth = overconfident(4000, seed=1)
    before = expected_calibration_error(
        *confidence_and_correct(probabilities(held_out, 1.0, False), held_truth, False)
    )
    after = expected_calibration_error(
        *confidence_and_correct(probabilities(held_out, temperature, False), held_truth, False)
    )
    assert before > 0.15 and after < 0.03
    assert negative_log_likelihood(held_out, held_truth, temperature, False) < negative_log_likelihood(
        held_out, held_truth, 1.0, False
    )


def test_multilabel_temperature_scales_every_sigmoid() -> None:
    rng = np.random.default_rng(0)
    calibrated = rng.normal(0, 2, size=(3000, 4))
    truth = (rng.random(calibrated.shape) < probabilities(calibrated, 1.0, True)).astype(float)
    assert fit_temperature(calibrated * 3, truth, multi_label=True) == pytest.approx(3.0, rel=0.1)


def test_ece_of_a_calibrated_model_is_small_and_of_a_sure_wrong_one_large() -> None:
    confidence = np.full(1000, 0.99)
    assert expected_calibration_error(confidence, np.zeros(1000)) == pytest.approx(0.99)
    assert expected_calibration_error(confidence, np.ones(1000)) == pytest.approx(0.01)


def test_calibrate_fits_on_validation_and_reports_the_test_split() -> None:
    fit_logits, fit_truth = overconfident(2000, seed=2)
    test_logits, test_truth = overconfident(1000, seed=3)
    metrics = {
        "validation": {"rows": {"kind": "single", "true": fit_truth.tolist(), "logits": fit_logits}},
        "test": {"rows": {"kind": "single", "true": test_truth.tolist(), "logits": test_logits}},
    }
    result = calibrate(metrics, multi_label=False, report_split="test")
    assert result is not None and result["split"] == "test" and result["fitted_on"] == "validation"
    assert result["ece_after"] < result["ece_before"] and result["nll_after"] < result["nll_before"]
    assert (
        sum(result["reliability_before"]["count"]) == 1000 and len(result["reliability_after"]["count"]) == 15
    )
    assert calibrate({"test": {"rows": {"kind": "entities"}}}, False, "test") is None  # tokens: none


@pytest.mark.parametrize("temperature", [0.25, 4.0])
def test_pipeline_divides_logits_by_the_saved_temperature(
    tiny_bert: Path, tmp_path: Path, temperature: float
) -> None:
    from aiforge.tasks import load_pipeline

    text = "정말 재미있는 영화였어요"
    plain = load_pipeline("text-classification", model=str(tiny_bert), device="cpu")(text)
    scaled_dir = tmp_path / "scaled"
    shutil.copytree(tiny_bert, scaled_dir)
    save_temperature(scaled_dir, temperature)
    assert json.loads((scaled_dir / "config.json").read_text())["aiforge_temperature"] == temperature
    scaled = load_pipeline("text-classification", model=str(scaled_dir), device="cpu")(text)
    assert scaled["label"] == plain["label"]  # the argmax never moves
    margin = lambda out: abs(out["scores"][0]["score"] - 0.5)  # noqa: E731 - two labels: distance from a coin flip
    # T < 1 sharpens (further from 0.5), T > 1 softens (closer to 0.5)
    assert (margin(scaled) > margin(plain)) if temperature < 1 else (margin(scaled) < margin(plain))
    top = np.log(plain["scores"][0]["score"] / plain["scores"][1]["score"]) / temperature
    assert np.log(scaled["scores"][0]["score"] / scaled["scores"][1]["score"]) == pytest.approx(top, rel=1e-3)
