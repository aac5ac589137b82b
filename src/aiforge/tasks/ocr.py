"""OCR: text lines with boxes and scores, in reading order, via RapidOCR (PP-OCR models on ONNX Runtime).

Models:

* ``rapidocr`` (packaged, the default): the PP-OCRv4 detector and recogniser inside the
  ``rapidocr-onnxruntime`` wheel. It reads **Chinese and English (Latin letters, digits), not
  Hangul**: Korean text comes back as nothing or as look-alike Chinese characters. Outputs say so.
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
from typing import Any

from pydantic import BaseModel, Field

from aiforge.errors import AiforgeError, require
from aiforge.media import load_image
from aiforge.tasks.base import Pipeline, TaskInput, TaskParams
from aiforge.tasks.card import DemoView, register_task
from aiforge.tasks.images import ImageInput, warm_image

PACKAGED_NOTE = "packaged PP-OCRv4 model: reads Chinese and English; Hangul is not recognised"


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


class OcrParams(TaskParams):
    min_score: float = Field(
        default=0.5, ge=0.0, le=1.0, description="drop lines recognised below this score"
    )


@register_task(
    "ocr",
    summary="text lines with boxes and scores",
    hub_default="rapidocr",
    offline_default="rapidocr",
    extra="ocr",
    requires=("rapidocr_onnxruntime",),
    warmup=warm_image,
    demo=DemoView("image", "text"),
)
class OCR(Pipeline):
    """Detect text lines, recognise them, and return them top-to-bottom, left-to-right."""

    Input = ImageInput
    Output = OcrOutput
    Params = OcrParams
    backend = "rapidocr"
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
        rapidocr = require("rapidocr_onnxruntime", "ocr")
        ref = self.model_ref
        if ref.format == "rapidocr":
            self.engine = rapidocr.RapidOCR()
            self.note: str | None = PACKAGED_NOTE
        elif ref.kind == "local" and Path(ref.location).is_dir():
            self.engine = rapidocr.RapidOCR(**_onnx_model_files(Path(ref.location)))
            self.note = None
        else:
            raise AiforgeError(
                "AF-MODEL-003",
                f"model '{ref.raw}' is not an OCR model aiforge can run",
                "use the packaged model (--model rapidocr) or a folder with PP-OCR *det*.onnx and *rec*.onnx",
            )

    def preprocess(self, item: ImageInput) -> Any:
        return load_image(item.image)

    def forward(self, batch: list[Any]) -> list[tuple[list[Any], tuple[int, int]]]:
        # RapidOCR reads a PIL image as RGB (a bare array would be taken as BGR).
        return [
            (self.engine(image, text_score=self.params.min_score)[0] or [], image.size) for image in batch
        ]

    def postprocess(self, raw: tuple[list[Any], tuple[int, int]], item: ImageInput) -> dict[str, Any]:
        detections, (width, height) = raw
        lines = [
            {
                "text": str(text),
                "score": round(float(score), 4),
                "box": [[float(x), float(y)] for x, y in box],
            }
            for box, text, score in detections
            if float(score) >= self.params.min_score and str(text).strip()
        ]
        rows = reading_order(lines)
        return {
            "text": "\n".join(" ".join(line["text"] for line in row) for row in rows),
            "lines": [line for row in rows for line in row],
            "width": width,
            "height": height,
            "note": self.note,
        }


def reading_order(lines: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Group lines into rows (vertical centres within half a line height of the row's) and sort
    rows top-to-bottom, each row left-to-right. Sorting by top y alone would interleave the
    pieces of one row whose boxes sit a few pixels apart."""
    rows: list[list[dict[str, Any]]] = []
    for line in sorted(lines, key=lambda ln: _centre_y(ln["box"])):
        if rows and abs(_centre_y(line["box"]) - _centre_y(rows[-1][-1]["box"])) <= 0.5 * min(
            _height(line["box"]), _height(rows[-1][-1]["box"])
        ):
            rows[-1].append(line)
        else:
            rows.append([line])
    return [sorted(row, key=lambda ln: min(x for x, _ in ln["box"])) for row in rows]


def _centre_y(box: list[list[float]]) -> float:
    return sum(y for _, y in box) / len(box)


def _height(box: list[list[float]]) -> float:
    ys = [y for _, y in box]
    return max(ys) - min(ys)


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
