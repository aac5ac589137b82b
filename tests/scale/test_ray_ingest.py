"""``aiforge rag ingest --backend ray``: the same index as a local ingest, and re-ingest skips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from aiforge.rag import RagSettings, index_info
from aiforge.rag.index import open_store
from tests.scale.conftest import Cluster


def test_ray_ingest_builds_the_same_index_as_local(ray_cluster: Cluster, tmp_path: Path) -> None:
    from aiforge.rag import ingest
    from aiforge.scale.ingest import ingest as ingest_on_ray

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        body = "\n\n".join(
            f"{i}번 문서의 {j}번째 문단: 서버는 {8000 + i}번 포트를 쓴다." * 3 for j in range(4)
        )
        (docs / f"doc{i}.md").write_text(f"# 문서 {i}\n\n{body}\n", encoding="utf-8")
    (docs / "broken.pdf").write_text("not a pdf")
    settings = RagSettings(chunk_tokens=64, batch_size=8, progress=False)
    local = ingest([docs], "local-idx", settings)
    remote = ingest_on_ray([docs], "ray-idx", settings, workers=2, address=ray_cluster.address)
    assert sorted(remote.added) == sorted(local.added) and len(remote.added) == 6
    assert remote.chunks_embedded == local.chunks_embedded > 6
    assert [f["code"] for f in remote.failed] == [f["code"] for f in local.failed] == ["AF-RAG-003"]
    assert index_info("ray-idx")["chunks"] == index_info("local-idx")["chunks"]
    stores = [open_store(name, settings) for name in ("local-idx", "ray-idx")]
    try:
        chunks = [store.chunks_at(range(store.state().n_rows)) for store in stores]
        key = lambda c: (c.source_id, c.ordinal)  # noqa: E731 - commit order differs, content must not
        local_chunks, ray_chunks = (sorted(cs, key=key) for cs in chunks)
        assert [(c.source_id, c.text) for c in local_chunks] == [(c.source_id, c.text) for c in ray_chunks]
        hashes = {c.text_hash for c in local_chunks}
        vectors = [store.reusable_vectors(hashes) for store in stores]
        for h in hashes:
            np.testing.assert_allclose(vectors[0][h], vectors[1][h], atol=1e-5)
    finally:
        for store in stores:
            store.close()
    # the CLI, again: nothing changed, nothing is parsed or embedded
    cli = [sys.executable, "-m", "aiforge.cli", "rag", "ingest", str(docs), "--index", "ray-idx", "--json"]
    again = subprocess.run(
        [*cli, "--backend", "ray"], capture_output=True, text=True, timeout=300, env=ray_cluster.env
    )
    report = json.loads(again.stdout)
    assert report["unchanged"] == 6 and report["chunks_embedded"] == 0, again.stderr[-2000:]
