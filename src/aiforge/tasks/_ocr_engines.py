"""OCR engines' shared pieces: reading order, and Tesseract 5 (Debian's ``tesseract-ocr`` +
``tesseract-ocr-kor``) as an OCR engine: lines with boxes and scores, pages of several lines, and
pages turned by 90, 180 or 270 degrees.

Settings, measured on rendered Korean lines (Noto Sans / Serif CJK; tuned on sentences that
``bench/bench_ocr.py`` does not use; its table has the figures on unseen ones):

* ``--psm 4`` (one column of lines of varying size) for a page: 0.6 % character error rate on a
  six-line page; the default ``--psm 3`` (automatic layout) dropped whole words (25-36 %).
* an image that holds one line is read again with ``--psm 7`` (one text line), and that read is kept
  when its mean word confidence is at least the page read's: on 72 clean lines in 4 fonts, 2.6 %
  against 6.5 % for ``--psm 4`` alone, which read parts of a line twice as extra "lines" (always
  keeping the line read: 2.5 % clean but 35 % instead of 18 % on heavy noise);
* no denoising: a 3x3 median filter cut heavy-noise CER from 18.6 % to 3.7 % but raised clean lines
  to 3.2 % and broke clean pages (46 %), and pixel statistics did not tell noisy from clean apart;
* ``kor`` alone, not ``kor+eng``: 1.2 % against 3.0 % on Korean lines; ``kor`` reads Latin letters and
  digits too, so ``kor+eng`` is only for text that is mostly English.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from aiforge.errors import AiforgeError, require
from aiforge.tasks._script import HANGUL

Line = dict[str, Any]  # {"text", "score" in [0, 1], "box": 4 corners [x, y] clockwise from top-left}
Rows = list[list[Line]]  # lines grouped into rows, in reading order

PAGE_LAYOUT = "--psm 4"
LINE_LAYOUT = "--psm 7"
INSTALL_FIX = "sudo apt-get install tesseract-ocr tesseract-ocr-kor && pip install pytesseract"
# Orientation detection needs a few dozen characters: a single line turned upright-to-standing
# (an image taller than wide) whose upright read scores below this is read turned 90 and 270 degrees.
# Only then: retrying every image whose read scores low cost 4 tesseract runs on each English or
# blank image that `lang=auto` tries as Korean first.
RETRY_ROTATION_BELOW = 0.6


# Tesseract's Korean model reads bold Latin text as a few Hangul look-alikes at low confidence
# ('Ｌ타7 0\\16버7', 0.43 for "LEFT RIGHT"); Korean lines score 0.8-0.95. A read counts as Korean
# when, over its lines scoring at least the caller's minimum, this share of the letters is Hangul.
KOREAN_SHARE = 0.3


def reads_korean(rows: Rows, min_score: float) -> bool:
    """Whether Tesseract's Korean read of an image found Korean text (not look-alikes of Latin)."""
    letters = "".join(
        char
        for row in rows
        for line in row
        if line["score"] >= min_score
        for char in line["text"]
        if char.isalnum()
    )
    return bool(letters) and len(HANGUL.findall(letters)) >= KOREAN_SHARE * len(letters)


class TesseractEngine:
    """Reads one PIL image; ``languages`` are tesseract's (``kor``, ``eng``, ``kor+eng``)."""

    def __init__(self, languages: str = "kor", auto_rotate: bool = True) -> None:
        self.pytesseract = require("pytesseract", "ocr")
        if shutil.which("tesseract") is None:
            raise AiforgeError("AF-DEP-001", "the tesseract OCR program is not installed", INSTALL_FIX)
        installed = set(self.pytesseract.get_languages(config=""))
        missing = [lang for lang in languages.split("+") if lang not in installed]
        if missing:
            raise AiforgeError(
                "AF-DEP-001",
                f"tesseract has no language data for {', '.join(missing)} "
                f"(installed: {', '.join(sorted(installed))})",
                "sudo apt-get install " + " ".join(f"tesseract-ocr-{lang}" for lang in missing),
            )
        self.languages = languages
        self.auto_rotate = auto_rotate and "osd" in installed

    def __call__(self, image: Any) -> Rows:
        gray = image.convert("L")
        turn = self._orientation(gray) if self.auto_rotate else 0
        best = self._read_turned(gray, turn)
        width, height = gray.size
        standing = height > width
        if self.auto_rotate and turn == 0 and standing and _mean_score(best) < RETRY_ROTATION_BELOW:
            for other in (90, 270):
                candidate = self._read_turned(gray, other)
                if _mean_score(candidate) > _mean_score(best) + 0.1:
                    best = candidate
        return best

    def _orientation(self, gray: Any) -> int:
        """Degrees (clockwise) that turn the page upright, from tesseract's orientation detection;
        0 when it cannot decide (it needs a few dozen characters)."""
        try:
            osd = self.pytesseract.image_to_osd(gray, output_type=self.pytesseract.Output.DICT)
        except self.pytesseract.TesseractError:
            return 0
        if float(osd.get("orientation_conf", 0.0)) < 1.0:
            return 0
        return int(osd.get("rotate", 0)) % 360

    def _read_turned(self, gray: Any, turn: int) -> Rows:
        """Rows read on the image turned upright (reading order is the upright page's), with boxes
        in the given image's pixels."""
        upright = gray.rotate(-turn, expand=True, fillcolor=255) if turn else gray  # PIL: counter-clockwise
        rows = reading_order(self._read(upright))
        width, height = gray.size
        return [[{**line, "box": _unturn(line["box"], turn, width, height)} for line in row] for row in rows]

    def _read(self, image: Any) -> list[Line]:
        lines = self._read_as(image, PAGE_LAYOUT)
        if lines and _one_row(lines):
            line = self._read_as(image, LINE_LAYOUT)
            if line and _mean_score([line]) >= _mean_score([lines]):
                return line
        return lines

    def _read_as(self, image: Any, layout: str) -> list[Line]:
        text, data = self._run(image, layout)
        lines: dict[tuple[int, int, int], list[int]] = {}
        for i, word in enumerate(data.get("text", [])):
            if str(word).strip() and float(data["conf"][i]) >= 0:
                line_key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
                lines.setdefault(line_key, []).append(i)
        # The plain-text output spaces Korean words right; the word table splits them into syllables
        # (boxes even overlap), so each line's text comes from the former, matched in order.
        spaced = [line.strip() for line in text.splitlines() if line.strip()]
        found = []
        for n, words in enumerate(lines.values()):
            pieces = "".join(str(data["text"][i]).strip() for i in words)
            same_line = n < len(spaced) and spaced[n].replace(" ", "") == pieces
            left = min(int(data["left"][i]) for i in words)
            top = min(int(data["top"][i]) for i in words)
            right = max(int(data["left"][i]) + int(data["width"][i]) for i in words)
            bottom = max(int(data["top"][i]) + int(data["height"][i]) for i in words)
            corners = ((left, top), (right, top), (right, bottom), (left, bottom))
            found.append(
                {
                    "text": spaced[n] if same_line else " ".join(str(data["text"][i]).strip() for i in words),
                    "score": sum(float(data["conf"][i]) for i in words) / len(words) / 100.0,
                    "box": [[float(x), float(y)] for x, y in corners],
                }
            )
        return found

    def _run(self, image: Any, layout: str) -> tuple[str, dict[str, list[Any]]]:
        """One tesseract run writing both the plain text and the word table (TSV)."""
        core = self.pytesseract.pytesseract
        with core.save(image) as (output_base, input_file):
            core.run_tesseract(
                input_file,
                output_base,
                extension="",
                lang=self.languages,
                config=f"{layout} -c tessedit_create_txt=1 -c tessedit_create_tsv=1",
            )
            text = Path(f"{output_base}.txt").read_text(encoding="utf-8")
            table = Path(f"{output_base}.tsv").read_text(encoding="utf-8")
        return text, core.file_to_dict(table, "\t", 11)


def _one_row(lines: list[Line]) -> bool:
    """Whether the lines found all sit in one row of text: their boxes span at most 1.5 line heights."""
    tops = [min(y for _, y in line["box"]) for line in lines]
    bottoms = [max(y for _, y in line["box"]) for line in lines]
    tallest = max(bottom - top for top, bottom in zip(tops, bottoms, strict=True))
    return max(bottoms) - min(tops) <= 1.5 * tallest


def _mean_score(rows: Rows) -> float:
    scores = [line["score"] for row in rows for line in row]
    return sum(scores) / len(scores) if scores else 0.0


def reading_order(lines: list[Line]) -> Rows:
    """Group lines into rows (vertical centres within half a line height of the row's) and sort
    rows top-to-bottom, each row left-to-right. Sorting by top y alone would interleave the
    pieces of one row whose boxes sit a few pixels apart."""
    rows: Rows = []
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


def _unturn(box: list[list[float]], turn: int, width: int, height: int) -> list[list[float]]:
    """A box found on the image turned ``turn`` degrees clockwise, in the original image's pixels
    (4 corners clockwise from top-left)."""

    def back(x: float, y: float) -> tuple[float, float]:
        if turn == 90:
            return y, height - x
        if turn == 180:
            return width - x, height - y
        if turn == 270:
            return width - y, x
        return x, y

    points = [back(x, y) for x, y in box]
    xs, ys = [x for x, _ in points], [y for _, y in points]
    left, top, right, bottom = min(xs), min(ys), max(xs), max(ys)
    return [[left, top], [right, top], [right, bottom], [left, bottom]]
