"""object-detection's offline default: the packaged MTCNN face detector, on a real photograph."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from aiforge.models import PACKAGED
from aiforge.tasks import load_pipeline

pytestmark = pytest.mark.skipif(
    not PACKAGED["mtcnn-faces"].available(), reason=f"needs {PACKAGED['mtcnn-faces'].install_command()}"
)
ASTRONAUT = Path(__file__).parent.parent / "data" / "astronaut.jpg"  # one face, at about (91, 32)-(134, 88)


@pytest.fixture(scope="module")
def detector():
    return load_pipeline("object-detection", device="cpu")  # no model: the offline default


def test_the_offline_default_finds_the_one_face_in_a_photograph(detector) -> None:
    assert detector.model_ref.raw == "mtcnn-faces"
    (face,) = detector(str(ASTRONAUT))["objects"]
    box = face["box"]
    assert face["label"] == "face" and face["score"] > 0.99
    assert (
        80 < box["xmin"] < 100 and 25 < box["ymin"] < 40 and 125 < box["xmax"] < 145 and 80 < box["ymax"] < 95
    )


def test_an_image_without_a_face_gives_no_box(detector) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (200, 120), (40, 120, 200)).save(buffer, format="PNG")
    assert detector.predict([buffer.getvalue()]) == [{"objects": []}]
