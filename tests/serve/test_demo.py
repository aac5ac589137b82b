"""The Gradio demo page at /demo, driven in a real headless Chromium (Debian's ``chromium`` package)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.serve.conftest import API_KEY, SAMPLE_IMAGES, Server, chromium


@pytest.fixture(scope="module")
def page(api: Server) -> Iterator[Any]:
    with chromium() as browser:
        page = browser.new_page()
        # A browser cannot send a Bearer header: ?api_key= sets the HttpOnly cookie the page's calls use.
        page.goto(f"{api.base}/demo/?api_key={API_KEY}", wait_until="domcontentloaded")
        page.get_by_role("tab", name="clf (text-classification)").wait_for(timeout=60_000)
        yield page


def submit_and_read_label(page: Any) -> tuple[str, dict[str, float]]:
    page.locator("button:visible", has_text="Submit").click()
    top = page.locator('[data-testid="label-output-value"]:visible')
    top.wait_for(timeout=60_000)
    bars = page.locator("meter:visible")
    bars.first.wait_for()
    scores = {m.get_attribute("aria-label"): float(m.get_attribute("value")) for m in bars.all()}
    return top.inner_text(), scores


def test_korean_text_prediction_matches_the_api(api: Server, page: Any) -> None:
    sentence = "이 영화 정말 재미있어요! 배우들의 연기가 최고였다"
    with api.client() as client:
        expected = client.post("/v1/models/clf/predict", json={"inputs": [sentence]}).json()["outputs"][0]
    page.get_by_role("tab", name="clf (text-classification)").click()
    page.locator("textarea:visible").first.fill(sentence)
    label, scores = submit_and_read_label(page)
    assert label == expected["label"]
    assert scores == pytest.approx({s["label"]: s["score"] for s in expected["scores"]}, abs=1e-6)
    assert page.locator("textarea:visible").first.input_value() == sentence  # Hangul round-trips intact


def test_image_upload_shows_label_bars(page: Any) -> None:
    page.get_by_role("tab", name="img (image-classification)").click()
    page.locator("input[type=file]").first.set_input_files(str(SAMPLE_IMAGES / "china.jpg"))
    page.locator("img:visible").first.wait_for(timeout=30_000)  # the preview of the upload
    label, scores = submit_and_read_label(page)
    assert label == "palace"  # the packaged EfficientNet-Lite0's answer, as in the API test
    assert max(scores, key=scores.get) == "palace"
