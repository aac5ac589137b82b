"""The image input schema and masks out, shared by the vision tasks, OCR, the server and the demo page.

Images are decoded by :func:`aiforge.media.load_image` (a file path, a ``data:`` URI or bare base64
string, raw ``bytes`` from an HTTP upload, or a PIL image). Masks travel as base64 1-bit PNGs
(white = inside): a browser shows them directly and :func:`decode_mask` reads them back. SAM's
masks also travel as COCO run-length encoding (:func:`encode_rle` / :func:`decode_rle`, pycocotools'
compressed ``counts`` string), the format COCO tools and SAM's own ``amg.py`` exchange.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from aiforge.lazy import lazy_module
from aiforge.tasks.base import TaskInput

if TYPE_CHECKING:
    from PIL import Image
else:  # pillow loads with the first image, not when the task cards are listed
    Image = lazy_module("PIL.Image")


class ImageInput(TaskInput):
    """The input of every image task."""

    image: str | bytes = Field(
        description="file path, data: URI or base64 string of an image (upload bytes are accepted too)"
    )


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


def encode_rle(mask: Any) -> dict[str, Any]:
    """A boolean (H, W) mask -> COCO compressed RLE ``{"size": [H, W], "counts": "..."}`` (JSON-safe)."""
    from pycocotools import mask as coco_mask

    array = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
    rle = coco_mask.encode(np.asfortranarray(array.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """The inverse of :func:`encode_rle`: COCO RLE (compressed string or uncompressed list) -> (H, W) bool."""
    from pycocotools import mask as coco_mask

    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE, as transformers' SAM post-processing writes it
        compressed = coco_mask.frPyObjects({"size": list(rle["size"]), "counts": counts}, *rle["size"])
    else:
        compressed = {"size": list(rle["size"]), "counts": counts.encode("ascii")}
    return coco_mask.decode(compressed).astype(bool)


def warm_image(params: dict[str, Any]) -> dict[str, bytes]:
    """A 64 x 64 grey PNG, sent as upload bytes: decoding, preprocessing and the model all run."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buffer, format="PNG")
    return {"image": buffer.getvalue()}
