"""OCR on the packaged PP-OCRv4 model (rapidocr-onnxruntime) and Tesseract (Korean), on images
rendered with PIL."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from aiforge.errors import AiforgeError
from aiforge.models import PACKAGED, resolve
from aiforge.tasks import load_pipeline
from aiforge.tasks.ocr import PACKAGED_NOTE, reading_order
from aiforge.train.metrics import edit_distance

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
KOREAN_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")  # fonts-noto-cjk; face 1 is KR
TESSERACT = PACKAGED["tesseract-kor"].available()
needs_tesseract = pytest.mark.skipif(
    not TESSERACT or not KOREAN_FONT.exists(),
    reason="needs tesseract-ocr-kor and fonts-noto-cjk (scripts/setup.sh installs them)",
)


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
    assert out["engine"] == "rapidocr"  # no Hangul: Tesseract's Korean read is not kept
    # the note that it cannot read Hangul, only where Tesseract is not there to read it
    assert out["note"] == (None if TESSERACT else PACKAGED_NOTE)


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


def render_korean(lines: list[str], size: int = 30, turn: int = 0) -> bytes:
    """Korean lines in Noto Sans CJK KR, one under the other, the page turned ``turn`` degrees
    counter-clockwise."""
    font = ImageFont.truetype(str(KOREAN_FONT), size, index=1)
    width = max(int(font.getlength(line)) for line in lines) + 80
    image = Image.new("RGB", (width, 40 + int(size * 2.2) * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        draw.text((40, 20 + int(size * 2.2) * row), line, fill="black", font=font)
    buffer = io.BytesIO()
    image.rotate(turn, expand=True, fillcolor="white").save(buffer, format="PNG")
    return buffer.getvalue()


# Sentences neither the code nor the benchmark (bench/bench_ocr.py) was tuned on.
PAGE = [
    "우체국 앞 정류장에서 버스를 기다렸다",
    "겨울 방학 동안 피아노를 배우기로 했다",
    "회의는 오후 두 시에 시작합니다",
]


@needs_tesseract
def test_korean_line_is_read_by_tesseract_by_default(ocr) -> None:
    out = ocr(render_korean(PAGE[:1]))
    assert out["engine"] == "tesseract" and out["note"] is None
    assert edit_distance(PAGE[0], out["text"]) <= 1
    [line] = out["lines"]
    assert 0.5 < line["score"] <= 1.0
    xs, ys = [x for x, _ in line["box"]], [y for _, y in line["box"]]
    assert 25 < min(xs) < 60 and 15 < min(ys) < 45 and max(ys) < 80  # where the line was drawn


@needs_tesseract
@pytest.mark.parametrize("turn", [0, 90, 180])
def test_korean_page_turned_any_way_reads_in_order(ocr, turn: int) -> None:
    out = ocr(render_korean(PAGE, turn=turn))
    rows = out["text"].split("\n")
    assert len(rows) == 3 and len(out["lines"]) == 3
    errors = sum(edit_distance(want, got) for want, got in zip(PAGE, rows, strict=True))
    assert errors <= 3, out["text"]
    # boxes are in the given image's pixels: on a page turned 90 degrees the lines stand upright
    box = out["lines"][0]["box"]
    width, height = (
        max(x for x, _ in box) - min(x for x, _ in box),
        max(y for _, y in box) - min(y for _, y in box),
    )
    assert (height > width) == (turn == 90)


@needs_tesseract
def test_language_parameter_picks_the_engine() -> None:
    english = load_pipeline("ocr", device="cpu", lang="en")
    assert english(render([(60, 150, "HELLO 2026")]))["engine"] == "rapidocr"
    korean_only = load_pipeline("ocr", "packaged:tesseract-kor", device="cpu", lang="ko")
    out = korean_only(render_korean(PAGE[2:]))
    assert out["engine"] == "tesseract" and edit_distance(PAGE[2], out["text"]) <= 1
    with pytest.raises(AiforgeError) as err:
        load_pipeline("ocr", "packaged:tesseract-kor", device="cpu", lang="zh")
    assert "rapidocr" in err.value.fix


def test_missing_tesseract_names_the_install(monkeypatch) -> None:
    import shutil

    from aiforge.tasks._ocr_engines import TesseractEngine

    pytest.importorskip("pytesseract")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(AiforgeError) as err:
        TesseractEngine("kor")
    assert err.value.code == "AF-DEP-001" and "tesseract-ocr-kor" in err.value.fix
