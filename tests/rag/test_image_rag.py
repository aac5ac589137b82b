"""An image index: `rag ingest` of a folder of pictures with a CLIP embedder, found by a text query.

The CLIP is the tiny one trained here on coloured shapes (``tests/tiny_clip.py``). The pictures have
neutral file names, so only the image vectors can find them; the query goes through the text tower.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import aiforge.rag as rag
from aiforge.serve import ServeSettings
from tests.serve.conftest import Server, running_server
from tests.test_cli import aiforge
from tests.tiny_clip import TEMPLATE, draw_shape, png_bytes, shared_trained_clip

PICTURES = {"red circle": "img_3.png", "green square": "img_1.png", "blue triangle": "sub/img_2.png"}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_trained_clip(tmp_path_factory)


@pytest.fixture(scope="module")
def image_index(clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(AIFORGE_HOME, the pictures folder) with the folder ingested as index 'shapes'."""
    home = tmp_path_factory.mktemp("image-rag")
    folder = home / "pictures"
    rng = np.random.default_rng(5)
    for label, name in PICTURES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(png_bytes(draw_shape(*label.split(), rng)))
    (folder / "notes.md").write_text("# not a picture\n", encoding="utf-8")  # an image index skips it
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    previous = os.environ.get("AIFORGE_HOME")
    os.environ["AIFORGE_HOME"] = str(home)
    try:
        yield home, folder
    finally:
        rag.close_indexes()
        if previous is None:
            os.environ.pop("AIFORGE_HOME", None)
        else:
            os.environ["AIFORGE_HOME"] = previous


@pytest.mark.slow
def test_a_text_query_finds_the_picture_and_cites_its_file(
    image_index: tuple[Path, Path], clip_dir: Path
) -> None:
    _, folder = image_index
    settings = rag.RagSettings(embedder=str(clip_dir), progress=False)
    report = rag.ingest([folder], "shapes", settings).to_dict()
    assert len(report["added"]) == 3 and report["chunks_embedded"] == 3, report
    [failed] = report["failed"]
    assert failed["source"].endswith("broken.png") and failed["code"] == "AF-INPUT-003"

    # re-ingest without naming the embedder: the index's own (CLIP) is used, nothing changes or goes
    again = rag.ingest([folder], "shapes", rag.RagSettings(progress=False)).to_dict()
    assert again["unchanged"] == 3 and not again["added"] and not again["deleted"], again

    for label, name in PICTURES.items():
        body = rag.query("shapes", TEMPLATE.format(label), top_k=3)
        assert body["found"] and body["method"] == "image-search", body
        assert [c["source"] for c in body["chunks"]][0] == name, (label, body["chunks"])
        best = body["citations"][0]
        assert best["source"] == name and best["quote"] == Path(name).name and best["verified"]
        assert body["chunks"][0]["dense_score"] > body["chunks"][1]["dense_score"]


@pytest.mark.slow
def test_server_route_and_cli_search_the_image_index(image_index: tuple[Path, Path], clip_dir: Path) -> None:
    home, folder = image_index
    rag.ingest([folder], "shapes", rag.RagSettings(embedder=str(clip_dir), progress=False))
    settings = ServeSettings(
        host="127.0.0.1",
        port=0,
        log_level="warning",
        models=[{"name": "clip", "task": "zero-shot-image-classification", "model": str(clip_dir)}],
    )
    server: Server
    with running_server(settings) as server, server.client() as client:
        found = client.post(
            "/v1/rag/shapes/query", json={"question": "a photo of a green square.", "top_k": 1}
        )
        assert found.status_code == 200, found.text
        assert [c["source"] for c in found.json()["citations"]] == ["img_1.png"]
        picture = png_bytes(draw_shape("blue", "triangle", np.random.default_rng(11)))
        labels = ["red circle", "green square", "blue triangle"]
        predicted = client.post(
            "/v1/models/clip/predict",
            json={"inputs": [{"image": base64.b64encode(picture).decode(), "candidate_labels": labels}]},
        )
        assert predicted.json()["outputs"][0]["labels"][0] == "blue triangle", predicted.text
        unlabeled = client.post("/v1/models/clip/predict", json={"inputs": [{"image": "not base64"}]})
        assert 400 <= unlabeled.status_code < 500 and unlabeled.json()["error"]["code"].startswith("AF-INPUT")

    cli = aiforge("rag", "ask", "a photo of a red circle.", "--index", "shapes", "--json")
    assert cli.returncode == 0, cli.stderr
    assert '"img_3.png"' in cli.stdout and str(home) not in cli.stdout
