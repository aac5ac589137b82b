"""The demo's image tabs in a real headless Chromium: click-to-segment (SAM) and visual QA.

Clicking the uploaded picture sends the clicked pixel as SAM's point prompt; the answer is the mask
of that point, drawn over the picture, and the raw output names the point in the picture's own
pixels (the page shows the picture scaled). The VQA tab takes a picture and a question.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from aiforge.serve import ServeSettings
from aiforge.tasks.images import decode_mask
from tests.serve.conftest import Server, chromium, running_server

WIDTH, HEIGHT = 160, 100


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo-picture") / "shapes.png"
    pixels = np.full((HEIGHT, WIDTH, 3), 200, dtype=np.uint8)
    pixels[20:60, 30:90] = (220, 30, 30)  # a red block to click on
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def image_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from tests.tiny_models import make_tiny_sam, make_tiny_vilt

    sam = make_tiny_sam(tmp_path_factory.mktemp("demo-sam"))
    vilt = make_tiny_vilt(tmp_path_factory.mktemp("demo-vilt"), ["red", "green", "blue"])
    settings = ServeSettings(
        host="127.0.0.1",
        port=0,
        log_level="warning",
        demo=True,
        models=[
            {"name": "sam", "task": "mask-generation", "model": str(sam), "params": {"mask_format": "both"}},
            {"name": "vqa", "task": "visual-question-answering", "model": str(vilt)},
        ],
    )
    with running_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def page(image_demo: Server) -> Iterator[Any]:
    with chromium() as browser:
        page = browser.new_page(locale="en-US")
        page.goto(f"{image_demo.base}/demo/", wait_until="domcontentloaded")
        page.get_by_role("tab", name="sam (mask-generation)").wait_for(timeout=60_000)
        yield page


def raw_output(page: Any, mode: str) -> str:
    """The text of the tab's raw JSON view, once it holds an answer in ``mode``, arrays expanded."""
    view = page.locator('[data-testid="json"]:visible').first
    view.get_by_text(f'"{mode}"').first.wait_for(timeout=60_000)
    view.get_by_text("Array(2)").first.click()  # the viewer folds nested values: unfold the point
    return "".join(view.inner_text().split())  # the JSON, with folded objects shown as Object(n)


def test_clicking_the_picture_segments_the_clicked_point(page: Any, picture: Path) -> None:
    page.get_by_role("tab", name="sam (mask-generation)").click()
    page.locator("[role=tabpanel]:visible input[type=file]").first.set_input_files(str(picture))
    shown = page.locator(f'[role=tabpanel]:visible img[src*="{picture.name}"]').first  # the upload's preview
    shown.wait_for(timeout=30_000)
    box = shown.bounding_box()
    # a quarter across and two fifths down the picture as shown, whatever its scale on the page
    shown.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.4})
    out = raw_output(page, "points")
    assert f'"width":{WIDTH},"height":{HEIGHT},"mode":"points"' in out, out
    x, y = (float(v) for v in re.search(r'"point":\[([\d.]+),([\d.]+)\]', out).groups())  # type: ignore[union-attr]
    assert abs(x - WIDTH * 0.25) <= 3 and abs(y - HEIGHT * 0.4) <= 3, (x, y)  # the picture's own pixels
    mask = decode_mask(re.search(r'"mask":"([A-Za-z0-9+/=]+)"', out).group(1))  # type: ignore[union-attr]
    assert mask.shape == (HEIGHT, WIDTH)
    # the mask is drawn over the picture in the output view, labelled with its score
    mask_layer = page.locator("[role=tabpanel]:visible img.mask").first  # the mask over the picture
    mask_layer.wait_for(timeout=30_000)
    assert page.locator("[role=tabpanel]:visible .legend-item").first.inner_text().startswith("#1")


def test_a_question_about_the_picture_gets_the_apis_answer(
    image_demo: Server, page: Any, picture: Path
) -> None:
    import base64

    question = "what colour is the block?"
    record = {"image": base64.b64encode(picture.read_bytes()).decode(), "question": question}
    with image_demo.client() as client:
        response = client.post(
            "/v1/models/vqa/predict", json={"inputs": [record], "parameters": {"top_k": 3}}
        )
    expected = response.json()["outputs"][0]
    page.get_by_role("tab", name="vqa (visual-question-answering)").click()
    page.locator("[role=tabpanel]:visible input[type=file]").first.set_input_files(str(picture))
    page.locator(f'[role=tabpanel]:visible img[src*="{picture.name}"]').first.wait_for(timeout=30_000)
    page.locator("[role=tabpanel]:visible textarea").first.fill(question)
    page.locator("[role=tabpanel]:visible button", has_text="Submit").click()
    top = page.locator('[role=tabpanel]:visible [data-testid="label-output-value"]')
    top.wait_for(timeout=60_000)
    assert top.inner_text() == expected["answer"]
    bars = page.locator("[role=tabpanel]:visible meter")
    bars.first.wait_for()
    shown = {m.get_attribute("aria-label"): float(m.get_attribute("value")) for m in bars.all()}
    assert shown == pytest.approx({a["answer"]: a["score"] for a in expected["answers"]}, abs=1e-6)
