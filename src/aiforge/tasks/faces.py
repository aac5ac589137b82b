"""Offline object detection of one class, faces: MTCNN, whose weights ship in the facenet-pytorch wheel.

``packaged:mtcnn-faces`` is object-detection's offline default. It finds **faces only** (label
``face``), with a box and a confidence; it is not a general detector (DETR, the hub default, finds the
80 COCO classes). MTCNN (Zhang et al. 2016) is three small cascaded CNNs (P-Net, R-Net, O-Net, 0.5M
parameters together) run over an image pyramid; facenet-pytorch (MIT) carries the weights ported
from the authors' release. Its declared pins (torch<2.3) would downgrade torch, so it is installed
with ``pip install --no-deps facenet-pytorch``: the detector needs only torch, torchvision and Pillow.
"""

from __future__ import annotations

from typing import Any

from PIL import Image
from pydantic import Field

from aiforge.media import load_image
from aiforge.tasks.base import Pipeline, TaskParams
from aiforge.tasks.card import register_runtime
from aiforge.tasks.images import ImageInput
from aiforge.tasks.vision import DetectionOutput

FACE = "face"
BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


class FaceDetectionParams(TaskParams):
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="drop boxes scoring below this")
    min_face_size: int = Field(
        20,
        ge=8,
        description="smallest face side (pixels) looked for; larger is faster: fewer pyramid levels",
    )


@register_runtime("object-detection", formats=("mtcnn",))
class FaceDetection(Pipeline):
    """Faces with boxes and scores from MTCNN (the packaged ``mtcnn-faces``)."""

    Input = ImageInput
    Output = DetectionOutput
    Params = FaceDetectionParams
    params: FaceDetectionParams
    backend = "mtcnn"
    primary_field = "image"
    default_batch_size = 1  # images of different sizes build different pyramids: one at a time

    def setup(self) -> None:
        # resolve() checked that the package is installed (packaged:mtcnn-faces names its install command)
        from facenet_pytorch import MTCNN  # type: ignore[import-untyped]

        self.detector = MTCNN(
            keep_all=True, min_face_size=self.params.min_face_size, device=self.device
        ).eval()

    def preprocess(self, item: ImageInput) -> Image.Image:  # type: ignore[override]
        return load_image(item.image)

    def length(self, features: Image.Image) -> int:
        return features.width * features.height

    def forward(self, batch: list[Image.Image]) -> list[list[tuple[list[float], float]]]:
        found: list[list[tuple[list[float], float]]] = []
        for image in batch:
            boxes, scores = self.detector.detect(image)
            if boxes is None:
                found.append([])
                continue
            found.append(
                [(_clamped(box, image), float(score)) for box, score in zip(boxes, scores, strict=True)]
            )
        return found

    def postprocess(self, raw: list[tuple[list[float], float]], item: ImageInput) -> dict[str, Any]:  # type: ignore[override]
        kept = sorted((pair for pair in raw if pair[1] >= self.params.threshold), key=lambda p: -p[1])
        objects = [
            {"label": FACE, "score": score, "box": dict(zip(BOX_KEYS, box, strict=True))}
            for box, score in kept
        ]
        return {"objects": objects}


def _clamped(box: Any, image: Image.Image) -> list[float]:
    """MTCNN's boxes are regressed from the pyramid and may reach past the image's edges."""
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    return [max(0.0, xmin), max(0.0, ymin), min(float(image.width), xmax), min(float(image.height), ymax)]
