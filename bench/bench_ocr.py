"""Korean OCR accuracy: character error rate (CER) per backend, on Korean text rendered here.

The sentences below were written for this benchmark: neither the tests nor the tuning of the
Tesseract settings (``src/aiforge/tasks/_ocr_engines.py``) saw them. Each is drawn as one line in
Noto Sans / Serif CJK KR (Regular and Bold, from Debian's ``fonts-noto-cjk``) at several sizes, then
degraded by one of the noise levels:

* ``clean``: black on white;
* ``scan``: a 0.6-degree skew, Gaussian pixel noise (sigma 20), 0.5 % salt-and-pepper, JPEG quality 60;
* ``heavy``: 1.2-degree skew, blur, sigma 40, 2 % salt-and-pepper, JPEG quality 35.

Pages of six lines turned 0, 90, 180 and 270 degrees measure layout and auto-rotation.

Backends: ``tesseract`` (``--model tesseract-kor -p lang=ko``), ``auto`` (the default model with
``lang=auto``: what ``aiforge run ocr`` does), ``rapidocr`` (the packaged PP-OCRv4, which has no
Hangul: a reference) and, with ``--onnx-folder``, a folder of Korean PP-OCR ONNX files.

CER = edit distance / reference length, on text with runs of spaces collapsed (spaces count: a
missing word space is an error); ``CER no-space`` ignores spaces. The spread is the lowest and
highest CER over the four fonts. Usage::

    flock /tmp/aiforge-cpu.lock python bench/bench_ocr.py [--backends tesseract,auto,rapidocr] [--full]
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from aiforge.train.metrics import edit_distance

SENTENCES = [
    "강아지가 마당에서 공을 물고 신나게 뛰어다녔다",
    "이번 학기에는 통계학과 경제학 수업을 듣는다",
    "냉장고에 남은 재료로 볶음밥을 만들어 먹었다",
    "비행기는 인천공항에서 오전 열 시에 출발한다",
    "박물관 입장료는 성인 기준 삼천 원입니다",
    "동생은 매일 저녁 일기를 쓰는 습관이 있다",
    "어제 내린 눈 때문에 길이 몹시 미끄러웠다",
    "새 노트북의 배터리는 하루 종일 버틴다",
    "시청 앞 광장에서 작은 음악회가 열렸다",
    "감기에 걸리지 않도록 손을 자주 씻으세요",
    "회사 근처에 새로운 빵집이 문을 열었다",
    "그는 은퇴한 뒤 시골에서 텃밭을 가꾸며 산다",
    "택배 상자가 문 앞에 놓여 있었다",
    "여름휴가 때 제주도에서 바다낚시를 했다",
    "도로 공사로 인해 우회 도로를 이용해 주십시오",
    "아이들이 운동장에서 줄넘기를 하고 있다",
    "2024년 매출은 전년보다 12% 늘었다",
    "서버 응답 시간이 평균 35ms로 줄었다",
    "회의실 B동 3층에서 오후 4시에 만납시다",
    "우리 동네 도서관은 토요일에도 문을 연다",
    "친구에게 생일 선물로 목도리를 떠 주었다",
    "연구팀은 새로운 배터리 소재를 개발했다",
    "지하철 2호선이 잠시 운행을 멈췄다",
    "가을이 되니 하늘이 높고 공기가 맑다",
]
FONT_DIR = Path("/usr/share/fonts/opentype/noto")
FONTS = {  # face 1 of each collection is the KR one
    "sans": "NotoSansCJK-Regular.ttc",
    "sans-bold": "NotoSansCJK-Bold.ttc",
    "serif": "NotoSerifCJK-Regular.ttc",
    "serif-bold": "NotoSerifCJK-Bold.ttc",
}
NOISE = {
    "clean": None,
    "scan": {"skew": 0.6, "blur": 0.0, "sigma": 20.0, "salt": 0.005, "jpeg": 60},
    "heavy": {"skew": 1.2, "blur": 0.6, "sigma": 40.0, "salt": 0.02, "jpeg": 35},
}


def render_line(text: str, font: str, size: int) -> Image.Image:
    face = ImageFont.truetype(str(FONT_DIR / FONTS[font]), size, index=1)
    left, top, right, bottom = face.getbbox(text)
    pad = size
    image = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 255)
    ImageDraw.Draw(image).text((pad - left, pad - top), text, font=face, fill=0)
    return image


def render_page(lines: list[str], font: str, size: int) -> Image.Image:
    face = ImageFont.truetype(str(FONT_DIR / FONTS[font]), size, index=1)
    width = max(int(face.getlength(line)) for line in lines) + 4 * size
    step = int(size * 1.8)
    image = Image.new("L", (width, step * len(lines) + 3 * size), 255)
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        draw.text((2 * size, int(1.5 * size) + step * row), line, font=face, fill=0)
    return image


def degrade(image: Image.Image, level: str, rng: np.random.Generator) -> Image.Image:
    noise = NOISE[level]
    if noise is None:
        return image
    image = image.rotate(noise["skew"], expand=True, fillcolor=255, resample=Image.Resampling.BICUBIC)
    if noise["blur"]:
        image = image.filter(ImageFilter.GaussianBlur(noise["blur"]))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(
        0.0, noise["sigma"], (image.height, image.width)
    )
    salt = rng.random(pixels.shape)
    pixels[salt < noise["salt"] / 2] = 0
    pixels[salt > 1 - noise["salt"] / 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
        buffer, format="JPEG", quality=noise["jpeg"]
    )
    return Image.open(buffer)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def normalise(text: str) -> str:
    return " ".join(text.split())


def line_cases(full: bool) -> Iterator[tuple[str, str, int, str]]:
    """(noise, font, size, sentence): every sentence in every condition with --full, else each
    (noise, font, size) gets 6 sentences, rotating through the list."""
    sizes = (16, 24, 32, 48) if full else (20, 28, 40)
    n = 0
    for noise in NOISE:
        for font in FONTS:
            for size in sizes:
                chosen = SENTENCES if full else [SENTENCES[(n + k) % len(SENTENCES)] for k in range(6)]
                n += 6
                for sentence in chosen:
                    yield noise, font, size, sentence


def load(backend: str, onnx_folder: str | None):  # noqa: ANN201 - a Pipeline
    from aiforge.tasks import load_pipeline

    if backend == "tesseract":
        return load_pipeline("ocr", "packaged:tesseract-kor", device="cpu", lang="ko", min_score=0.0)
    if backend == "auto":
        return load_pipeline("ocr", device="cpu", lang="auto", min_score=0.0)
    if backend == "rapidocr":
        return load_pipeline("ocr", device="cpu", lang="zh", min_score=0.0)
    if backend == "onnx-folder":
        return load_pipeline("ocr", onnx_folder, device="cpu", min_score=0.0)
    raise SystemExit(f"unknown backend {backend}")


def cer(pairs: list[tuple[str, str]], spaces: bool = True) -> float:
    def strip(text: str) -> str:
        return normalise(text) if spaces else text.replace(" ", "").replace("\n", "")

    return sum(edit_distance(strip(ref), strip(hyp)) for ref, hyp in pairs) / sum(
        len(strip(ref)) for ref, _ in pairs
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="tesseract,auto,rapidocr")
    parser.add_argument("--onnx-folder", help="a folder of Korean PP-OCR ONNX files, measured as onnx-folder")
    parser.add_argument("--full", action="store_true", help="every sentence in every condition (slow)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    backends = args.backends.split(",") + (["onnx-folder"] if args.onnx_folder else [])

    rng = np.random.default_rng(args.seed)
    cases = [
        (noise, font, size, text, png(degrade(render_line(text, font, size), noise, rng)))
        for noise, font, size, text in line_cases(args.full)
    ]
    random.Random(args.seed).shuffle(page_sentences := list(SENTENCES))
    pages = []
    for turn in (0, 90, 180, 270):
        for font in ("sans", "serif"):
            lines = page_sentences[:6]
            page_sentences = page_sentences[6:] + lines
            pages.append(
                (
                    turn,
                    font,
                    lines,
                    png(render_page(lines, font, 28).rotate(turn, expand=True, fillcolor=255)),
                )
            )

    print(f"{len(cases)} rendered lines, {len(pages)} pages of 6 lines")
    for backend in backends:
        pipe = load(backend, args.onnx_folder)
        started = time.perf_counter()
        outputs = pipe.predict([image for *_, image in cases])
        seconds = (time.perf_counter() - started) / len(cases)
        groups: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        engines: dict[str, int] = defaultdict(int)
        for (noise, font, size, text, _), out in zip(cases, outputs, strict=True):
            hyp = out.get("text", "")
            groups[(noise, "all")].append((text, hyp))
            groups[(noise, font)].append((text, hyp))
            groups[(noise, f"{size}px")].append((text, hyp))
            engines[out.get("engine", "error")] += 1
        print(f"\n== {backend}: {seconds:.2f} s a line; engines {dict(engines)}")
        for noise in NOISE:
            per_font = [cer(groups[(noise, font)]) for font in FONTS]
            sizes = sorted(
                {key for n, key in groups if n == noise and key.endswith("px")}, key=lambda k: int(k[:-2])
            )
            print(
                f"  lines {noise:5s}: CER {100 * cer(groups[(noise, 'all')]):5.2f} %"
                f" (fonts {100 * min(per_font):.2f}-{100 * max(per_font):.2f} %),"
                f" no-space {100 * cer(groups[(noise, 'all')], spaces=False):5.2f} %; by size: "
                + ", ".join(f"{key} {100 * cer(groups[(noise, key)]):.2f} %" for key in sizes)
            )
        page_outputs = pipe.predict([image for *_, image in pages])
        by_turn: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for (turn, _, lines, _), out in zip(pages, page_outputs, strict=True):
            by_turn[turn].append(("\n".join(lines), out.get("text", "")))
        print(
            "  pages (6 lines, 28 px): "
            + ", ".join(f"turned {turn}: CER {100 * cer(pairs):.2f} %" for turn, pairs in by_turn.items())
        )
        in_order = [statistics.mean(out.get("text", "").count("\n") == 5 for out in page_outputs)]
        print(f"  pages read as 6 rows: {100 * in_order[0]:.0f} %")


if __name__ == "__main__":
    main()
