"""The execution core every caller shares (tasks/execute.py): one item that makes the model raise
fails alone, as a typed ItemError, whatever runs the batch."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
import torch

from aiforge.errors import AiforgeError
from aiforge.tasks.base import Pipeline, TaskInput
from aiforge.tasks.execute import BatchStats, ItemError, is_error, run_batch


class Text(TaskInput):
    text: str


class Shout(Pipeline):
    """Upper-cases texts. ``boom`` crashes forward, ``rude`` is refused by forward with a user
    error, ``mute`` crashes postprocess; ``broken`` makes forward drop an output."""

    task = "text-classification"  # any registered task: it only names the pipeline in messages
    Input = Text
    Output = Text
    default_batch_size = 4

    def __init__(self, device: str = "cpu", concurrent: bool = False) -> None:
        super().__init__(None, device=device)  # type: ignore[arg-type]  # no model to load
        self.concurrent_forward = concurrent  # type: ignore[misc]
        self.batches: list[list[str]] = []
        self.inference_mode: list[bool] = []

    def setup(self) -> None:
        pass

    def preprocess(self, item: Text) -> str:
        return item.text

    def length(self, features: str) -> int:
        return len(features)

    def forward(self, batch: list[str]) -> list[str]:
        self.batches.append(list(batch))
        self.inference_mode.append(torch.is_inference_mode_enabled())
        if "boom" in batch:
            raise RuntimeError("this input crashes the model")
        if "rude" in batch:
            raise AiforgeError("AF-INPUT-002", "the model refuses this input", "send another")
        if "broken" in batch:
            return [text.upper() for text in batch][1:]
        return [text.upper() for text in batch]

    def postprocess(self, raw: str, item: Text) -> dict[str, Any]:
        if raw == "MUTE":
            raise ValueError("cannot postprocess this one")
        return {"text": raw}


TEXTS = ["a", "bb", "boom", "ccc", "dddd", "rude", "ee", "mute", "f"]


@pytest.mark.parametrize("concurrent", [False, True], ids=["serial", "side-by-side"])
def test_one_failing_item_is_an_error_record_not_an_abort(concurrent: bool, monkeypatch) -> None:
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # side by side needs 2 torch threads
    pipe = Shout(concurrent=concurrent)
    assert pipe.side_by_side() == (2 if concurrent else 1)
    results = pipe.predict(TEXTS, batch_size=4)

    good = {i: t for i, t in enumerate(TEXTS) if t not in ("boom", "rude", "mute")}
    assert {i: results[i] for i in good} == {i: {"text": t.upper()} for i, t in good.items()}
    crashed, refused, muted = results[2], results[5], results[7]
    assert all(is_error(r) for r in (crashed, refused, muted))
    assert crashed.internal and crashed["error"]["code"] == "AF-TASK-002"
    assert "RuntimeError: this input crashes the model" in crashed["error"]["message"]
    assert isinstance(crashed.cause, RuntimeError)
    assert not refused.internal and refused["error"] == {
        "code": "AF-INPUT-002",
        "message": "the model refuses this input",
        "fix": "send another",
    }
    assert muted.internal and "ValueError: cannot postprocess this one" in muted["error"]["message"]
    # the batches holding boom and rude ran again one item at a time; every forward in inference mode
    assert ["boom"] in pipe.batches and ["rude"] in pipe.batches
    assert all(pipe.inference_mode)


def test_a_forward_that_drops_outputs_fails_its_items_naming_the_contract() -> None:
    results = Shout().predict(["a", "broken"], batch_size=2)
    assert results[0] == {"text": "A"}
    assert "Shout.forward returned 0 outputs for 1 inputs" in results[1]["error"]["message"]


def test_calling_the_pipeline_raises_what_failed() -> None:
    pipe = Shout()
    assert pipe("a") == {"text": "A"}
    with pytest.raises(RuntimeError, match="crashes the model"):
        pipe("boom")
    with pytest.raises(AiforgeError) as refused:
        pipe("rude")
    assert refused.value.code == "AF-INPUT-002"


def test_item_errors_are_recognised_by_type_and_written_as_before() -> None:
    error = ItemError(AiforgeError("AF-INPUT-002", "bad record", "fix it"))
    line = json.dumps(error, ensure_ascii=False)
    assert line == '{"error": {"code": "AF-INPUT-002", "message": "bad record", "fix": "fix it"}}'
    assert is_error(error) and is_error(pickle.loads(pickle.dumps(error)))  # crosses processes typed
    # an output that merely looks like one (a field named "error") is an output
    assert not is_error(json.loads(line)) and not is_error({"error": "a label"})


def test_on_batch_reports_each_batch_once() -> None:
    pipe, stats = Shout(), []
    items = [Text(text=t) for t in ("a", "boom", "rude")]
    outputs = run_batch(pipe, items, [i.text for i in items], on_batch=stats.append)
    assert [is_error(o) for o in outputs] == [False, True, True]
    [done] = stats
    assert isinstance(done, BatchStats) and done.seconds > 0
    assert (done.failed, done.internal, done.retried) == (2, 1, True)
    run_batch(pipe, items[:1], ["a"], on_batch=stats.append)
    assert (stats[1].failed, stats[1].internal, stats[1].retried) == (0, 0, False)
