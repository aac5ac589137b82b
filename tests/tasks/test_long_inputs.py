"""A 200,000-character text and a 200,000-character single token on every text task: cut to the
model's window before tokenising, answered in bounded time, the cut stated (issue 21 item 2)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from aiforge.tasks import load_pipeline
from tests.tasks.contract_models import CONTRACT_MODELS

LONG_TEXT = ("배우들 연기가 정말 훌륭했고 음악도 좋았다. The plot was thin. " * 5000)[:200_000]
LONG_TOKEN = "a" * 200_000
SECONDS = 3.0  # untruncated, these took minutes (e5: 33 s for 20,000 characters)


def long_input(task: str, text: str) -> Any:
    if task == "fill-mask":
        return "[MASK] " + text
    if task == "question-answering":
        return {"question": text, "context": "aiforge는 서울에서 만들어졌다. " + text}
    return text


CASES = [
    ("text-classification", None),
    ("token-classification", None),
    ("fill-mask", None),
    ("zero-shot-classification", None),
    ("question-answering", None),
    ("sentence-embeddings", "packaged:multilingual-e5-small"),
    ("sentence-embeddings", "packaged:all-minilm-l6-v2"),
]


@pytest.mark.parametrize(("task", "packaged"), CASES)
def test_long_inputs_are_cut_in_bounded_time(task: str, packaged: str | None, tmp_path: Path) -> None:
    entry = CONTRACT_MODELS[task]
    model = packaged or str(entry.build(tmp_path / "model"))
    pipe = load_pipeline(task, model, device="cpu", **entry.params)
    pipe.predict([long_input(task, "warm up")])
    for text in (LONG_TEXT, LONG_TOKEN):
        started = time.perf_counter()
        [out] = pipe.predict([long_input(task, text)])
        seconds = time.perf_counter() - started
        assert "error" not in out, out
        assert seconds < SECONDS, f"{task} took {seconds:.1f}s on a {len(text)}-character input"
        if "truncated" in out:
            assert out["truncated"] is True, out
