"""Images in and masks out, shared by the vision tasks, OCR, the server and the demo page.

:func:`load_image` accepts a file path, a ``data:`` URI or bare base64 string, raw ``bytes`` from an
HTTP upload, or a PIL image; URLs are refused because aiforge never fetches from the network on a
user's behalf. Masks travel as base64 1-bit PNGs (white = inside): a browser shows them directly
and :func:`decode_mask` reads them back.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from aiforge.errors import AiforgeError
from aiforge.lazy import lazy_module
from aiforge.tasks.base import TaskInput

if TYPE_CHECKING:
    from PIL import Image, ImageOps
else:  # pillow loads with the first image, not when the task cards are listed
    Image = lazy_module("PIL.Image")
    ImageOps = lazy_module("PIL.ImageOps")


class ImageInput(TaskInput):
    """The input of every image task."""

    image: str | bytes = Field(
        description="file path, data: URI or base64 string of an image (upload bytes are accepted too)"
    )


# ---- image decoding ---------------------------------------------------------------------------------

_BASE64_RE = re.compile(r"[A-Za-z0-9+/_\-\s]+={0,2}")


def load_image(value: str | bytes | bytearray | memoryview | Path | Image.Image) -> Image.Image:
    """Decode any image input aiforge accepts into an upright RGB ``PIL.Image``.

    Shared by every vision task and by the server (which passes multipart upload bytes), so that a
    file, a JSON base64 string and an upload of the same picture give the same pixels. EXIF
    orientation is applied because phone photos are stored sideways and models expect them upright.
    """
    if isinstance(value, Image.Image):
        return _to_rgb(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _decode(bytes(value), f"<{len(value)} bytes of image data>")
    if isinstance(value, Path):
        return _open_file(value)
    if not isinstance(value, str):
        raise AiforgeError(
            "AF-INPUT-003",
            f"cannot read an image from a {type(value).__name__}",
            "pass a file path, a base64 string or the image bytes",
        )
    text = value.strip()
    if text.startswith("data:"):
        header, _, payload = text.partition(",")
        if ";base64" not in header:
            raise AiforgeError(
                "AF-INPUT-003",
                f"data URI '{header},...' is not base64-encoded",
                "encode the image as data:image/png;base64,...",
            )
        data = _b64decode(payload)
        if data is None:
            raise AiforgeError(
                "AF-INPUT-003",
                f"data URI '{header},...' holds invalid base64",
                "send standard base64 (RFC 4648) of the image file's bytes",
            )
        return _decode(data, f"<data URI, {len(text)} chars>")
    if text.startswith(("http://", "https://")):
        raise AiforgeError(
            "AF-INPUT-003",
            f"image URL '{text[:200]}' is not fetched: aiforge does not download inputs",
            "download the image and pass the file path, or send its bytes / base64",
        )
    path = Path(text).expanduser()
    if _is_file(path):
        return _open_file(path)
    data = _b64decode(text) if len(text) >= 64 and _BASE64_RE.fullmatch(text) else None
    if data is None:
        raise AiforgeError(
            "AF-INPUT-001",
            f"image file '{text[:200]}' does not exist (nor is it base64)",
            "check the path (relative paths are read from the current directory)",
        )
    return _decode(data, f"<base64 string, {len(text)} chars>")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a long base64 string is not a valid file name on every OS
        return False


def _open_file(path: Path) -> Image.Image:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AiforgeError(
            "AF-INPUT-001",
            f"cannot read image file '{path}': {exc.strerror or exc}",
            "check that the file exists and is readable",
        ) from None
    return _decode(data, f"'{path}'")


def _b64decode(payload: str) -> bytes | None:
    """Standard or URL-safe base64 -> bytes; None when it is not base64 at all."""
    compact = "".join(payload.split())
    altchars = b"-_" if "-" in compact or "_" in compact else None
    try:
        return base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None


def _decode(data: bytes, name: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img))
    except (
        Image.UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as exc:
        reason = (
            "not a recognised image format" if isinstance(exc, Image.UnidentifiedImageError) else str(exc)
        )
        raise AiforgeError(
            "AF-INPUT-003",
            f"image {name} could not be decoded: {reason}",
            "pass a JPEG, PNG, WebP, BMP, GIF or TIFF file that opens in an image viewer",
        ) from None


def _to_rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


# ---- masks ------------------------------------------------------------------------------------------


def encode_mask(mask: Any) -> str:
    """A boolean (H, W) mask -> base64 of a 1-bit PNG of the same size (white = inside)."""
    # a torch tensor (possibly on a GPU) or anything array-like; torch itself is not imported here
    array = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
    buffer = io.BytesIO()
    Image.fromarray(array.astype(bool)).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_mask(value: str) -> np.ndarray:
    """The inverse of :func:`encode_mask`: base64 PNG (or data URI) -> boolean (H, W) array."""
    payload = value.partition(",")[2] if value.startswith("data:") else value
    with Image.open(io.BytesIO(base64.b64decode(payload))) as img:
        return np.asarray(img.convert("L")) > 127


def warm_image(params: dict[str, Any]) -> dict[str, bytes]:
    """A 64 x 64 grey PNG, sent as upload bytes: decoding, preprocessing and the model all run."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buffer, format="PNG")
    return {"image": buffer.getvalue()}
