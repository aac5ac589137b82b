"""OCR: text lines with boxes and scores, in reading order, via RapidOCR (PP-OCR models on ONNX
Runtime) or Tesseract (Korean).

Models:

* ``rapidocr`` (packaged, the default): the PP-OCRv4 detector and recogniser inside the
  ``rapidocr-onnxruntime`` wheel. It reads **Chinese and English (Latin letters, digits), not
  Hangul**: Korean text comes back as nothing or as look-alike Chinese characters. So the default
  model hands Korean to Tesseract (``tesseract-kor``, Debian packages) when it is installed:
  ``lang=ko`` always, and ``lang=auto`` (the default) when Tesseract's Korean read holds Hangul
  (RapidOCR cannot say "this is Korean": it reads Hangul as Chinese look-alikes). Outputs name the
  ``engine`` that answered.
* ``tesseract-kor`` (packaged from Debian): Tesseract only, ``lang`` picks its language data.
* a local folder holding PP-OCR ONNX files, e.g. a Korean recogniser: ``*det*.onnx``, ``*rec*.onnx``,
  optionally ``*cls*.onnx`` and the recogniser's character list (``*.txt``, one character a line)
  when the ONNX file does not embed it. Korean PP-OCR models are on the Hugging Face hub and
  PaddleOCR's model zoo, not in any offline package.

Example::

    pipe = load_pipeline("ocr", device="cpu")
    pipe("receipt.png")["text"]      # "HELLO 2026\\n..."
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from aiforge.errors import AiforgeError, require
from aiforge.media import load_image
from aiforge.models import PACKAGED
from aiforge.tasks._ocr_engines import Line, Rows, TesseractEngine, reading_order, reads_korean
from aiforge.tasks.base import Pipeline, TaskInput, TaskParams
from aiforge.tasks.card import DemoView, register_task
from aiforge.tasks.images import ImageInput, warm_image

PACKAGED_NOTE = (
    "packaged PP-OCRv4 model: reads Chinese and English; Hangul is not recognised "
    "(for Korean install Tesseract: `aiforge models` shows tesseract-kor)"
)
OcrLanguage = Literal["auto", "ko", "en", "zh"]
TESSERACT_LANGUAGES = {"ko": "kor", "en": "eng", "auto": "kor"}


class OcrLine(BaseModel):
    text: str
    score: float
    box: list[list[float]] = Field(description="4 corners [x, y] in image pixels, clockwise from top-left")


class OcrOutput(BaseModel):
    text: str = Field(
        description="the lines in reading order: rows joined by newlines, a row's pieces by spaces"
    )
    lines: list[OcrLine]
    width: int
    height: int
    note: str | None = Field(default=None, description="what the model cannot read, when that matters")
    engine: str = Field(description="which OCR engine answered: rapidocr or tesseract")


class OcrParams(TaskParams):
    min_score: float = Field(
        default=0.5, ge=0.0, le=1.0, description="drop lines recognised below this score"
    )
    lang: OcrLanguage = Field(
        default="auto",
        description="the text's language: ko reads with Tesseract, en and zh with RapidOCR; auto tries "
        "Tesseract's Korean first and keeps it when it finds Hangul",
    )
    auto_rotate: bool = Field(
        default=True, description="Tesseract: turn pages upright (orientation detection, 90-degree steps)"
    )


@register_task(
    "ocr",
    summary="text lines with boxes and scores",
    hub_default="rapidocr",
    offline_default="rapidocr",
    offline_engines=(
        ("Korean (lang=ko, or auto finding Hangul)", "tesseract-kor"),
        ("other text (lang=en, zh, auto)", "rapidocr"),
    ),
    extra="ocr",
    requires=("rapidocr_onnxruntime",),
    request_params=("lang", "min_score"),
    warmup=warm_image,
    demo=DemoView("image", "text"),
)
class OCR(Pipeline):
    """Detect text lines, recognise them, and return them top-to-bottom, left-to-right."""

    Input = ImageInput
    Output = OcrOutput
    Params = OcrParams
    backend = "rapidocr, tesseract"
    primary_field = "image"
    default_batch_size = 1  # RapidOCR runs one image at a time and batches the lines inside it
    sort_window_batches = 1

    @classmethod
    def parse_input(cls, raw: Any) -> TaskInput:
        """Bare upload bytes or a Path are the image, as a bare string is."""
        if isinstance(raw, (bytes, bytearray, Path)):
            raw = {
                "image": bytes(raw)
                if isinstance(raw, bytearray)
                else str(raw)
                if isinstance(raw, Path)
                else raw
            }
        return super().parse_input(raw)

    def setup(self) -> None:
        ref = self.model_ref
        self.rapidocr: Any = None
        self.note: str | None = None  # said when RapidOCR answers and Korean could not be tried
        self.korean_fallback = False
        self._tesseract: dict[str, TesseractEngine] = {}
        if ref.format == "tesseract":
            self._tesseract_for(self.params.lang)  # fail now when tesseract or its Korean data is missing
            return
        rapidocr = require("rapidocr_onnxruntime", "ocr")
        if ref.format == "rapidocr":
            self.rapidocr = rapidocr.RapidOCR()
            self.korean_fallback = PACKAGED["tesseract-kor"].available()
            self.note = None if self.korean_fallback else PACKAGED_NOTE
        elif ref.kind == "local" and Path(ref.location).is_dir():
            # the user's own PP-OCR folder (a Korean recogniser, say) reads everything itself
            self.rapidocr = rapidocr.RapidOCR(**_onnx_model_files(Path(ref.location)))
        else:
            raise AiforgeError(
                "AF-MODEL-003",
                f"model '{ref.raw}' is not an OCR model aiforge can run",
                "use the packaged models (--model rapidocr or tesseract-kor) or a folder with PP-OCR "
                "*det*.onnx and *rec*.onnx",
            )
        if self.params.lang == "ko" and ref.format == "rapidocr":
            self._tesseract_for("ko")  # now, not at the first image: says what to install

    def _tesseract_for(self, lang: str) -> TesseractEngine:
        languages = TESSERACT_LANGUAGES.get(lang)
        if languages is None:
            raise AiforgeError(
                "AF-CONFIG-001",
                f"the tesseract OCR model reads ko and en, not '{lang}'",
                "use -p lang=ko or -p lang=en, or the rapidocr model for Chinese",
            )
        if languages not in self._tesseract:
            self._tesseract[languages] = TesseractEngine(languages, auto_rotate=self.params.auto_rotate)
        return self._tesseract[languages]

    def preprocess(self, item: ImageInput) -> Any:
        return load_image(item.image)

    def forward(self, batch: list[Any]) -> list[tuple[Rows, str, tuple[int, int]]]:
        return [(*self._read(image), image.size) for image in batch]

    def _read(self, image: Any) -> tuple[Rows, str]:
        """(rows of lines in reading order, engine) for one image, by ``lang`` and the model."""
        lang = self.params.lang
        if self.rapidocr is None:
            return self._tesseract_for(lang)(image), "tesseract"
        if lang == "ko" or (lang == "auto" and self.korean_fallback):
            korean = self._tesseract_for("ko")(image)
            if lang == "ko" or reads_korean(korean, self.params.min_score):
                return korean, "tesseract"
        # RapidOCR reads a PIL image as RGB (a bare array would be taken as BGR).
        detections = self.rapidocr(image, text_score=self.params.min_score)[0] or []
        lines: list[Line] = [
            {"text": str(text), "score": float(score), "box": [[float(x), float(y)] for x, y in box]}
            for box, text, score in detections
        ]
        return reading_order(lines), "rapidocr"

    def postprocess(self, raw: tuple[Rows, str, tuple[int, int]], item: ImageInput) -> dict[str, Any]:
        found, engine, (width, height) = raw
        rows = [
            [
                {**line, "score": round(line["score"], 4)}
                for line in row
                if line["score"] >= self.params.min_score and line["text"].strip()
            ]
            for row in found
        ]
        rows = [row for row in rows if row]
        return {
            "text": "\n".join(" ".join(line["text"] for line in row) for row in rows),
            "lines": [line for row in rows for line in row],
            "width": width,
            "height": height,
            "note": self.note if engine == "rapidocr" and self.params.lang != "en" else None,
            "engine": engine,
        }


def _onnx_model_files(folder: Path) -> dict[str, str]:
    """RapidOCR keyword arguments for a folder of PP-OCR ONNX files."""

    def find(pattern: str) -> Path | None:
        return next(iter(sorted(folder.glob(pattern))), None)

    det, rec, cls_model, keys = find("*det*.onnx"), find("*rec*.onnx"), find("*cls*.onnx"), find("*.txt")
    if det is None or rec is None:
        raise AiforgeError(
            "AF-MODEL-003",
            f"OCR model folder '{folder}' needs a detector (*det*.onnx) and a recogniser (*rec*.onnx)",
            "put PP-OCR ONNX files there, e.g. en_PP-OCRv4_det_infer.onnx and korean_PP-OCRv4_rec_infer.onnx",
        )
    kwargs = {"det_model_path": str(det), "rec_model_path": str(rec)}
    if cls_model is not None:
        kwargs["cls_model_path"] = str(cls_model)
    if keys is not None:
        kwargs["rec_keys_path"] = str(keys)
    return kwargs
