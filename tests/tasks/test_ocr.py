"""OCR on the packaged PP-OCRv4 model (rapidocr-onnxruntime), on images rendered with PIL."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from aiforge.errors import AiforgeError
from aiforge.models import resolve
from aiforge.tasks import load_pipeline
from aiforge.tasks.ocr import PACKAGED_NOTE, reading_order

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def render(rows: list[tuple[int, int, str]], size: tuple[int, int] = (900, 420)) -> bytes:
    """A white PNG with black text drawn at (x, y) positions, in the order given."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(FONT), 64) if FONT.exists() else ImageFont.load_default(size=64)
    for x, y, text in rows:
        draw.text((x, y), text, fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def ocr():
    return load_pipeline("ocr", device="cpu")


def test_reads_rendered_text_from_a_file(ocr, tmp_path: Path) -> None:
    path = tmp_path / "hello.png"
    path.write_bytes(render([(60, 150, "HELLO 2026")]))
    out = ocr(str(path))
    assert out["text"].replace(" ", "") == "HELLO2026"
    assert (out["width"], out["height"]) == (900, 420)
    [line] = out["lines"]
    assert line["score"] > 0.8
    xs, ys = [x for x, _ in line["box"]], [y for _, y in line["box"]]
    assert 40 < min(xs) < 80 and 140 < min(ys) < 175 and max(ys) < 240  # the box is where the text was drawn
    assert out["note"] == PACKAGED_NOTE  # says it cannot read Hangul


def test_lines_come_back_in_reading_order(ocr) -> None:
    # drawn bottom row first, right piece before left piece
    image = render([(60, 260, "SECOND ROW"), (560, 60, "RIGHT"), (60, 60, "LEFT")])
    out = ocr(image)  # upload bytes, as the server passes them
    assert out["text"] == "LEFT RIGHT\nSECOND ROW"
    assert " ".join(line["text"] for line in out["lines"]) == "LEFT RIGHT SECOND ROW"  # lines in that order


def test_reading_order_groups_rows_despite_small_offsets() -> None:
    def box(x: float, y: float, w: float = 100, h: float = 40) -> list[list[float]]:
        return [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]

    lines = [
        {"text": "c", "box": box(0, 100)},
        {"text": "b", "box": box(300, 6)},  # a few pixels lower than "a", same row
        {"text": "a", "box": box(0, 0)},
    ]
    rows = reading_order(lines)
    assert [[ln["text"] for ln in row] for row in rows] == [["a", "b"], ["c"]]


def test_blank_image_gives_no_lines(ocr) -> None:
    out = ocr(render([]))
    assert out["lines"] == [] and out["text"] == ""


def test_undecodable_image_names_the_file(ocr, tmp_path: Path) -> None:
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"\x89PNG not really")
    [record] = ocr.predict([str(bad)])
    assert record["error"]["code"] == "AF-INPUT-003" and "scan.png" in record["error"]["message"]


def test_local_folder_of_onnx_models(tmp_path: Path) -> None:
    models = Path(resolve("rapidocr").location) / "models"
    for name in ("ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx"):
        (tmp_path / name).symlink_to(models / name)
    pipe = load_pipeline("ocr", str(tmp_path), device="cpu")
    out = pipe(render([(60, 150, "HELLO 2026")]))
    assert out["text"].replace(" ", "") == "HELLO2026" and out["note"] is None
    (tmp_path / "ch_PP-OCRv4_rec_infer.onnx").unlink()
    with pytest.raises(AiforgeError) as err:
        load_pipeline("ocr", str(tmp_path), device="cpu")
    assert err.value.code == "AF-MODEL-003" and "rec" in err.value.message
