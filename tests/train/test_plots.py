"""The PNGs a run writes draw Korean labels (no missing-glyph boxes) and keep long titles whole."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from aiforge.fonts import families_for, hangul_font
from aiforge.train.report import display_width, plot_confusion_matrix, plot_loss_curve, wrap

needs_hangul_font = pytest.mark.skipif(
    hangul_font() is None, reason="no Hangul font installed (scripts/setup.sh installs fonts-noto-cjk)"
)


@needs_hangul_font
def test_confusion_matrix_with_korean_labels_has_every_glyph(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph 44557 ... missing from font(s) DejaVu Sans" fails the test
        path = plot_confusion_matrix(
            [[5, 1, 0], [2, 7, 1], [0, 1, 9]],
            ["긍정", "부정", "중립"],
            tmp_path / "confusion_matrix.png",
            "test: sangrimlee/bert-base-multilingual-cased-nsmc 한국어 리뷰 감성 분류",
        )
    assert path.stat().st_size > 0


@needs_hangul_font
def test_loss_curve_with_a_korean_metric_name_has_every_glyph(tmp_path: Path) -> None:
    evals = [{"step": 2, "loss": 0.9, "정확도": 0.5}, {"step": 4, "loss": 0.7, "정확도": 0.7}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_loss_curve([1, 2, 3, 4], [1.0, 0.8, 0.6, 0.5], evals, tmp_path / "loss.png", "정확도")
    assert (tmp_path / "loss.png").stat().st_size > 0


def test_font_chain_keeps_the_default_font_first() -> None:
    chain = families_for(["accuracy", "긍정"])
    assert chain[0] == families_for(["accuracy"])[0]  # Latin text looks as before
    if hangul_font() is not None:
        assert hangul_font() in chain


def test_wrap_counts_hangul_as_two_columns_and_breaks_long_words() -> None:
    assert display_width("긍정 ok") == 7
    assert wrap("아주 긴 한국어 레이블 이름입니다", 10).split("\n") == [
        "아주 긴",
        "한국어",
        "레이블",
        "이름입니다",
    ]
    lines = wrap("validation: sangrimlee/bert-base-multilingual-cased-nsmc", 20).split("\n")
    assert lines[0] == "validation:" and all(display_width(line) <= 20 for line in lines)
    assert "".join(lines[1:]) == "sangrimlee/bert-base-multilingual-cased-nsmc"
