"""The dynamic batcher on a real (tiny) classifier, without HTTP: what it promises callers."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from aiforge.errors import AiforgeError
from aiforge.serve.batcher import Batcher, QueueFull
from aiforge.serve.batchplan import CostModel
from aiforge.serve.metrics import ServeMetrics
from aiforge.serve.runtime import SharedCores, inference_workers, parse_inputs, prepare
from aiforge.tasks import load_pipeline
from aiforge.tasks.base import Pipeline

TEXTS = [
    "짧다",
    "this one is a little longer than the first",
    "중간 길이의 문장입니다",
    "a",
    "the longest sentence of all of these, with many many extra words in it to pad it out",
    "좋아요",
]


@pytest.fixture(scope="module")
def packed(model_dirs: dict[str, Path]) -> Pipeline:
    """The classifier as it runs on a CPU: texts packed into rows, no padding."""
    pipe = load_pipeline("text-classification", str(model_dirs["clf"]), device="cpu")
    assert pipe.packs, "a BERT classifier on CPU runs packed"
    return pipe


@pytest.fixture(scope="module")
def pipe(model_dirs: dict[str, Path]) -> Pipeline:
    """The same classifier on the padded path (what models that cannot pack, and GPUs, run)."""
    pipe = load_pipeline("text-classification", str(model_dirs["clf"]), device="cpu")
    pipe.packer = None
    assert not pipe.packs
    return pipe


class Recorder:
    """Wraps the real forward to record the token lengths of each batch it receives."""

    def __init__(self, pipe: Pipeline, fail_on_token: int | None = None) -> None:
        self.calls: list[list[int]] = []
        self._forward = pipe.forward
        self._fail_on = fail_on_token

    def __call__(self, batch: list[Any]) -> list[Any]:
        self.calls.append([len(f["input_ids"]) for f in batch])
        if self._fail_on is not None and any(self._fail_on in f["input_ids"] for f in batch):
            raise RuntimeError("this item crashes the model")
        return self._forward(batch)


def make_batcher(**kwargs: Any) -> Batcher:
    options = {
        "max_batch_size": 4,
        "sort_window_batches": 4,
        "max_padding": None,
        "max_wait_s": 0.05,
        "max_queue": 100,
        "stall_after_s": 60.0,
        "metrics": ServeMetrics(),
    } | kwargs
    return Batcher("m", **options)


def submit(batcher: Batcher, pipe: Pipeline, texts: list[str]):
    items, features = prepare(pipe, texts)
    return batcher.submit(pipe, items, features)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_batches_count_items_sort_by_length_and_answer_in_order(pipe: Pipeline, monkeypatch) -> None:
    recorder = Recorder(pipe)
    monkeypatch.setattr(pipe, "forward", recorder)
    requests = [TEXTS[:3], TEXTS[3:4], TEXTS[4:], TEXTS[::-1][:2]]

    async def scenario() -> list[list[dict]]:
        batcher = make_batcher()
        batcher.start()
        jobs = [submit(batcher, pipe, texts) for texts in requests]
        results = [await batcher.wait(job, 30) for job in jobs]
        await batcher.close(5)
        return results

    results = run(scenario())
    assert all(len(call) <= 4 for call in recorder.calls), recorder.calls  # the limit counts items
    assert sum(len(call) for call in recorder.calls) == sum(len(r) for r in requests)
    flat = [n for call in recorder.calls for n in call]
    assert flat == sorted(flat), "items gathered together run shortest first"
    monkeypatch.undo()
    for texts, outputs in zip(requests, results, strict=True):  # each request's answers in its own order
        expected = pipe.predict(texts)
        assert [o["label"] for o in outputs] == [e["label"] for e in expected]
        assert [o["score"] for o in outputs] == pytest.approx([e["score"] for e in expected], abs=1e-5)


def test_packed_batches_keep_arrival_order_cut_evenly_and_answer_as_padded(
    packed: Pipeline, pipe: Pipeline, monkeypatch
) -> None:
    recorder = Recorder(packed)
    monkeypatch.setattr(packed, "forward", recorder)
    texts = TEXTS * 3  # 18 items, at most 8 per pass: 6 + 6 + 6, not 8 + 8 + 2

    async def scenario() -> list[dict]:
        batcher = make_batcher(max_batch_size=8, max_padding=0.25, cost_model=True)
        batcher.start()
        outputs = await batcher.wait(submit(batcher, packed, texts), 30)
        await batcher.close(5)
        return outputs

    outputs = run(scenario())
    lengths = [len(f["input_ids"]) for f in prepare(packed, texts)[1]]
    assert recorder.calls == [lengths[:6], lengths[6:12], lengths[12:]], "arrival order, equal cuts"
    expected = pipe.predict(texts)  # one at a time through the padded path
    assert [o["label"] for o in outputs] == [e["label"] for e in expected]
    assert [o["score"] for o in outputs] == pytest.approx([e["score"] for e in expected], abs=1e-5)


def test_two_workers_run_batches_side_by_side_each_with_its_own_torch_threads(
    packed: Pipeline, pipe: Pipeline, monkeypatch
) -> None:
    import torch

    meet = threading.Barrier(2, timeout=20)  # both batches must be inside forward at the same time
    seen: list[tuple[str, int]] = []
    forward = packed.forward

    def side_by_side(batch: list[Any]) -> list[Any]:
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        meet.wait()
        return forward(batch)

    monkeypatch.setattr(packed, "forward", side_by_side)
    texts = TEXTS + TEXTS[:2]  # 8 items, 4 per pass: two batches

    async def scenario() -> list[dict]:
        batcher = make_batcher(max_batch_size=4, workers=2, torch_threads=1)
        batcher.start()
        outputs = await batcher.wait(submit(batcher, packed, texts), 30)
        await batcher.close(5)
        return outputs

    outputs = run(scenario())
    assert len({name for name, _ in seen}) == 2 and {threads for _, threads in seen} == {1}
    assert torch.get_num_threads() >= 1  # the caller's own torch threads are untouched
    expected = pipe.predict(texts)
    assert [o["label"] for o in outputs] == [e["label"] for e in expected]
    assert [o["score"] for o in outputs] == pytest.approx([e["score"] for e in expected], abs=1e-5)


@pytest.mark.parametrize("shared", [True, False])
def test_models_with_one_thread_workers_take_turns_on_the_shared_cores(
    packed: Pipeline, pipe: Pipeline, monkeypatch, shared: bool
) -> None:
    lock = threading.Lock()
    running, most = 0, 0
    forward = packed.forward

    def counted(batch: list[Any]) -> list[Any]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.1)  # long enough that the four batches below would overlap if allowed
            return forward(batch)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(packed, "forward", counted)
    texts = TEXTS + TEXTS[:2]  # 8 items, 4 per pass: two batches per model

    async def scenario() -> list[list[dict]]:
        cores = SharedCores(shared).slots()
        models = [make_batcher(max_batch_size=4, workers=2, torch_threads=1, cores=cores) for _ in "ab"]
        for batcher in models:
            batcher.start()
        jobs = [submit(batcher, packed, texts) for batcher in models]
        outputs = [await batcher.wait(job, 30) for batcher, job in zip(models, jobs, strict=True)]
        for batcher in models:
            await batcher.close(5)
        return outputs

    outputs = run(scenario())
    cores = torch_threads()
    assert most == (min(cores, 4) if shared else 4), "shared: one forward pass per core, across models"
    expected = pipe.predict(texts)
    for answer in outputs:
        assert [o["label"] for o in answer] == [e["label"] for e in expected]


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def test_auto_workers_split_the_cpu_threads_for_models_that_may_run_concurrently(
    packed: Pipeline, model_dirs: dict[str, Path]
) -> None:
    import torch

    threads = torch.get_num_threads()
    assert packed.concurrent_forward
    auto = inference_workers("auto", packed)
    assert auto["workers"] == threads and auto["torch_threads"] == (1 if threads > 1 else None)
    assert inference_workers(1, packed) == {"workers": 1, "torch_threads": None}
    generator = load_pipeline("text-generation", str(model_dirs["gpt"]), device="cpu")
    assert not generator.concurrent_forward  # generate() is no single model call: one worker
    assert inference_workers("auto", generator)["workers"] == 1


def test_one_long_input_does_not_pad_the_whole_batch(pipe: Pipeline, monkeypatch) -> None:
    recorder = Recorder(pipe)
    monkeypatch.setattr(pipe, "forward", recorder)
    long_text = " ".join(["a much longer review that goes on"] * 8)

    async def scenario() -> None:
        batcher = make_batcher(max_batch_size=8, max_padding=0.25)
        batcher.start()
        job = submit(batcher, pipe, ["good", "bad", "fine", long_text])
        await batcher.wait(job, 30)
        await batcher.close(5)

    run(scenario())
    assert recorder.calls == [[3, 3, 3], [recorder.calls[1][0]]]  # [CLS] word [SEP] x3, then the long one
    assert recorder.calls[1][0] > 40


def test_the_cost_model_samples_real_batches_and_merges_when_a_pass_is_dear(
    pipe: Pipeline, monkeypatch
) -> None:
    recorder = Recorder(pipe)
    monkeypatch.setattr(pipe, "forward", recorder)
    long_text = " ".join(["a much longer review that goes on"] * 8)
    words = ["good", "bad", "fine", "ok", "meh", "wow", "nice", "dull"]

    async def scenario() -> tuple[Batcher, int, int]:
        batcher = make_batcher(max_batch_size=8, max_padding=0.25, cost_model=True)
        batcher.start()
        for n in range(1, 9):  # real batches of 1..8 short items feed the fit
            await batcher.wait(submit(batcher, pipe, words[:n]), 30)
        await batcher.wait(submit(batcher, pipe, [long_text, long_text]), 30)
        assert batcher.cost is not None
        sampled, forward_calls = batcher.cost.batches, len(recorder.calls)
        recorder.calls.clear()
        batcher.cost = CostModel(min_batches=1)  # now a machine where each pass costs 1 s fixed:
        for padded in range(10, 510, 10):
            batcher.cost.observe(padded, 1.0 + 1e-3 * padded)
        await batcher.wait(submit(batcher, pipe, ["good", "bad", "fine", long_text]), 30)
        await batcher.close(5)
        return batcher, sampled, forward_calls

    batcher, sampled, forward_calls = run(scenario())
    assert sampled == forward_calls > 8, "every real forward pass is a sample for the fit"
    assert recorder.calls == [[3, 3, 3, recorder.calls[0][-1]]], "padding is cheaper than a 2nd pass"
    gauge = batcher.metrics.batch_cost.labels("m", "fixed")._value.get()
    assert batcher.cost is not None and (fit := batcher.cost.fit()) is not None
    assert gauge == pytest.approx(fit[0]) and 0.5 < gauge < 1.5, "/metrics shows the cost it cuts by"


def test_timeout_is_504_and_drops_the_queued_items(pipe: Pipeline, monkeypatch) -> None:
    recorder = Recorder(pipe)
    monkeypatch.setattr(pipe, "forward", recorder)

    async def scenario() -> tuple[AiforgeError, int, float]:
        batcher = make_batcher(max_batch_size=64, max_wait_s=5.0)
        batcher.start()
        job = submit(batcher, pipe, TEXTS[:3])
        with pytest.raises(AiforgeError) as err:
            await batcher.wait(job, 0.1)
        queued = batcher.queued
        await batcher.close(1)
        return err.value, queued, batcher.metrics.dropped.labels("m", "timeout")._value.get()

    error, queued, dropped = run(scenario())
    assert (error.status, error.code) == (504, "AF-SERVE-004")
    assert queued == 0 and dropped == 3
    assert recorder.calls == [], "timed-out work never reaches the model"


def test_full_queue_is_429_with_retry_after(pipe: Pipeline) -> None:
    async def scenario() -> None:
        batcher = make_batcher(max_batch_size=64, max_wait_s=5.0, max_queue=3)
        batcher.start()
        submit(batcher, pipe, TEXTS[:3])
        with pytest.raises(QueueFull) as full:
            submit(batcher, pipe, TEXTS[:1])
        assert full.value.status == 429 and full.value.retry_after >= 1
        with pytest.raises(AiforgeError) as too_big:
            submit(batcher, pipe, TEXTS[:4])
        assert too_big.value.status == 413  # could never fit: not a retry-later
        await batcher.close(0)

    run(scenario())


def test_an_item_that_crashes_forward_fails_only_its_request(pipe: Pipeline, monkeypatch) -> None:
    boom = pipe.tokenizer.convert_tokens_to_ids("boom")
    monkeypatch.setattr(pipe, "forward", Recorder(pipe, fail_on_token=boom))

    async def scenario() -> tuple[BaseException | None, list[dict]]:
        batcher = make_batcher()
        batcher.start()
        bad, good = submit(batcher, pipe, ["boom"]), submit(batcher, pipe, TEXTS[:2])
        results = await asyncio.gather(batcher.wait(bad, 30), batcher.wait(good, 30), return_exceptions=True)
        await batcher.close(5)
        return results[0], results[1]

    bad, good = run(scenario())
    assert isinstance(bad, AiforgeError) and bad.code == "AF-SERVE-009" and bad.status == 500
    assert [o["label"] for o in good] == [o["label"] for o in pipe.predict(TEXTS[:2])]


def test_close_answers_queued_work_then_refuses(pipe: Pipeline) -> None:
    async def scenario() -> None:
        batcher = make_batcher(max_batch_size=64, max_wait_s=30.0)
        batcher.start()
        job = submit(batcher, pipe, TEXTS[:2])
        await batcher.close(10)  # does not wait the 30 s batch timer: draining dispatches at once
        assert len(job.future.result()) == 2
        assert batcher.metrics.batches.labels("m", "drain")._value.get() == 1
        with pytest.raises(AiforgeError) as err:
            submit(batcher, pipe, TEXTS[:1])
        assert err.value.status == 503

    run(scenario())


def test_a_close_that_times_out_mid_request_frees_only_the_slots_it_held(pipe: Pipeline, monkeypatch) -> None:
    """Two batches for one worker: the second waits for the worker when the close gives up. Its
    request is answered at once (a 503), not left to its timeout; and the cancelled dispatcher gives
    back no slot it did not hold (before: two free slots for one worker afterwards)."""
    release = threading.Event()
    forward = pipe.forward
    monkeypatch.setattr(pipe, "forward", lambda batch: release.wait(10) and forward(batch))

    async def scenario() -> tuple[int, int]:
        cores = SharedCores(True).slots()
        batcher = make_batcher(max_batch_size=2, max_wait_s=0.0, workers=1, torch_threads=1, cores=cores)
        batcher.start()
        job = submit(batcher, pipe, TEXTS[:4])
        await asyncio.sleep(0.2)  # the first batch runs, the second waits for the worker
        await batcher.close(0.1)
        assert job.future.done() and isinstance(job.future.exception(), AiforgeError)  # a 503
        release.set()
        while batcher._running:  # the first batch finishes and frees its worker and core
            await asyncio.sleep(0.01)
        assert cores is not None
        return batcher._free_workers._value, cores._value

    workers_free, cores_free = run(scenario())
    assert workers_free == 1 and cores_free == torch_threads()


def test_text_requests_queued_together_are_tokenised_in_one_call(pipe: Pipeline, monkeypatch) -> None:
    calls: list[int] = []
    preprocess_many = pipe.preprocess_many

    def counting(items: list[Any]) -> list[Any]:
        calls.append(len(items))
        return preprocess_many(items)

    monkeypatch.setattr(pipe, "preprocess_many", counting)
    requests = [TEXTS[:2], TEXTS[2:3], TEXTS[3:]]

    async def scenario() -> list[list[dict]]:
        batcher = make_batcher(max_batch_size=8)
        batcher.start()
        jobs = [batcher.submit(pipe, parse_inputs(pipe, texts)) for texts in requests]
        results = [await batcher.wait(job, 30) for job in jobs]
        await batcher.close(5)
        return results

    results = run(scenario())
    assert calls == [len(TEXTS)], "one tokenizer call for every request queued by the dispatch"
    monkeypatch.undo()
    for texts, outputs in zip(requests, results, strict=True):
        expected = pipe.predict(texts)
        assert [o["score"] for o in outputs] == pytest.approx([e["score"] for e in expected], abs=1e-5)


def test_an_item_that_fails_preprocessing_fails_only_its_request_with_a_4xx(
    pipe: Pipeline, monkeypatch
) -> None:
    preprocess_many = pipe.preprocess_many

    def picky(item: Any) -> Any:
        if item.text == "BAD":
            raise AiforgeError("AF-INPUT-002", "this text cannot be tokenised", "send another text")
        return preprocess_many([item])[0]

    monkeypatch.setattr(pipe, "preprocess", picky)
    monkeypatch.setattr(pipe, "preprocess_many", lambda items: [picky(item) for item in items])

    async def scenario() -> tuple[list[Any], list[Any], BaseException | None]:
        batcher = make_batcher()
        batcher.start()
        good, bad, other = (
            batcher.submit(pipe, parse_inputs(pipe, texts)) for texts in (["좋아요"], ["fine", "BAD"], ["a"])
        )
        first, last = await batcher.wait(good, 30), await batcher.wait(other, 30)
        with pytest.raises(AiforgeError) as failed:
            await batcher.wait(bad, 30)
        await batcher.close(5)
        return first, last, failed.value

    first, last, error = run(scenario())
    assert len(first) == len(last) == 1
    assert isinstance(error, AiforgeError) and error.status == 422
    assert error.message == "inputs[1]: this text cannot be tokenised"
