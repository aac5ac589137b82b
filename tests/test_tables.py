"""Terminal tables keep names whole: a narrow terminal folds other columns, or prints records."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from aiforge.tables import print_table

HEADERS = ["task", "default model", "output"]
ROWS = [
    ["automatic-speech-recognition", "openai/whisper-base", "text: str, chunks: list (optional)"],
    ["text-classification", "sangrimlee/bert-base-multilingual-cased-nsmc", "label: str, score: float"],
]


def render(width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    print_table(console, HEADERS, ROWS, names={"task", "default model"}, title="Defaults")
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined]


@pytest.mark.parametrize("width", [80, 100, 120, 200])  # the promise: from 80 columns up
def test_names_are_whole_on_one_line_and_nothing_is_wider_than_the_terminal(width: int) -> None:
    lines = render(width)
    assert all(len(line) <= width for line in lines)
    for row in ROWS:
        assert any(row[0] in line for line in lines) and any(row[1] in line for line in lines)


def test_a_wide_terminal_gets_a_table_and_a_narrow_one_records() -> None:
    wide, narrow = render(120), render(80)
    assert any("┃ task" in line for line in wide)
    assert not any("┃" in line for line in narrow)
    heading = narrow.index("text-classification")
    assert narrow[heading + 1].split() == ["default", "model", "sangrimlee/bert-base-multilingual-cased-nsmc"]
