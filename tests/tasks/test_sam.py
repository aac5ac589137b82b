"""Segment Anything (``mask-generation``) on a tiny random SAM: point, box and point + box prompts,
bad prompts, the automatic mode's filtering, suppression, ordering and minimum area, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aiforge.errors import AiforgeError
from aiforge.tasks import load_pipeline
from aiforge.tasks.images import decode_mask, decode_rle


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_sam

    return make_tiny_sam(tmp_path_factory.mktemp("tiny-sam"))


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An odd-shaped 83 x 50 image: masks must come back at exactly this size."""
    path = tmp_path_factory.mktemp("sam-photo") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 83, 3), dtype=np.uint8)).save(path)
    return path


def check_mask(record: dict, size: tuple[int, int]) -> np.ndarray:
    """A mask record's RLE decodes at the image's size; its area and box describe that mask."""
    mask = decode_rle(record["rle"])
    assert mask.shape == size
    assert record["area"] == int(mask.sum())
    if record["area"]:
        ys, xs = np.nonzero(mask)
        assert record["box"] == {
            "xmin": xs.min(),
            "ymin": ys.min(),
            "xmax": xs.max() + 1,
            "ymax": ys.max() + 1,
        }
    return mask


def test_points_give_one_full_size_mask_per_point_in_order(tiny_sam: Path, photo: Path) -> None:
    pipe = load_pipeline("mask-generation", model=str(tiny_sam), device="cpu")
    points = [(10.0, 20.0), (80.0, 40.0), (41.5, 0.0)]
    result = pipe({"image": str(photo), "points": points})
    pipe.Output.model_validate(result)
    assert result["mode"] == "points" and (result["width"], result["height"]) == (83, 50)
    assert [tuple(m["point"]) for m in result["masks"]] == points
    for mask in result["masks"]:
        check_mask(mask, (50, 83))
        assert mask["mask"] is None  # PNG only on request


def test_multimask_returns_three_per_point_best_first_and_png_matches_rle(
    tiny_sam: Path, photo: Path
) -> None:
    pipe = load_pipeline(
        "mask-generation", model=str(tiny_sam), device="cpu", multimask_output=True, mask_format="both"
    )
    result = pipe({"image": str(photo), "points": [[5, 5], [60, 30]]})
    assert len(result["masks"]) == 2 * 3
    for start in (0, 3):
        scores = [m["score"] for m in result["masks"][start : start + 3]]
        assert scores == sorted(scores, reverse=True)
    for mask in result["masks"]:
        assert np.array_equal(decode_mask(mask["mask"]), check_mask(mask, (50, 83)))


def test_a_box_and_a_box_with_points_give_one_mask(tiny_sam: Path, photo: Path) -> None:
    pipe = load_pipeline("mask-generation", model=str(tiny_sam), device="cpu")
    for record in ({"box": [5, 5, 60, 40]}, {"box": [5, 5, 60, 40], "points": [[20, 20], [30, 25]]}):
        result = pipe({"image": str(photo), **record})
        assert result["mode"] == "box" and len(result["masks"]) == 1
        assert result["masks"][0]["point"] is None
        check_mask(result["masks"][0], (50, 83))


def test_prompt_parameters_apply_to_inputs_without_prompts(tiny_sam: Path, photo: Path) -> None:
    """`aiforge run mask-generation IMAGE -p box=[...]`: the parameter is the prompt of bare inputs."""
    pipe = load_pipeline("mask-generation", model=str(tiny_sam), device="cpu", box=[5, 5, 60, 40])
    assert pipe(str(photo))["mode"] == "box"
    assert pipe({"image": str(photo), "points": [[1, 1]]})["mode"] == "points"  # the input's own prompt wins


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"points": [[5, 5], [100, 10]]}, "point [100.0, 10.0] is outside the 83x50 image"),
        ({"points": []}, "field 'points' is an empty list"),
        ({"points": [[1, 2, 3]]}, "points[0]"),
        ({"box": [10, 10, 90, 40]}, "box [10.0, 10.0, 90.0, 40.0] is not inside the 83x50 image"),
        ({"box": [50, 10, 20, 40]}, "box [50.0, 10.0, 20.0, 40.0] is not inside"),
        ({"box": [1, 2, 3]}, "box"),
    ],
)
def test_bad_prompts_are_input_errors_naming_the_problem(
    tiny_sam: Path, photo: Path, record: dict, message: str
) -> None:
    pipe = load_pipeline("mask-generation", model=str(tiny_sam), device="cpu")
    [result] = pipe.predict([{"image": str(photo), **record}])
    assert result["error"]["code"] == "AF-INPUT-002" and message in result["error"]["message"]


def test_a_malformed_box_parameter_is_an_error_naming_it(tiny_sam: Path) -> None:
    with pytest.raises(AiforgeError) as info:
        load_pipeline("mask-generation", model=str(tiny_sam), device="cpu", box="10,10")
    assert info.value.code == "AF-INPUT-002" and "box" in info.value.message


def box_iou(a: dict, b: dict) -> float:
    """The IoU NMS computes: on the masks' inclusive pixel boxes (torchvision's box_iou)."""
    a, b = ({**box, "xmax": box["xmax"] - 1, "ymax": box["ymax"] - 1} for box in (a, b))
    inter_w = max(0.0, min(a["xmax"], b["xmax"]) - max(a["xmin"], b["xmin"]))
    inter_h = max(0.0, min(a["ymax"], b["ymax"]) - max(a["ymin"], b["ymin"]))
    inter = inter_w * inter_h
    area = lambda box: (box["xmax"] - box["xmin"]) * (box["ymax"] - box["ymin"])  # noqa: E731
    return inter / max(1e-9, area(a) + area(b) - inter)


def test_automatic_masks_are_filtered_suppressed_and_sorted(tiny_sam: Path, photo: Path) -> None:
    """No prompt: the grid's candidates pass the IoU and stability filters, box NMS and min_area."""
    unfiltered = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "points_per_side": 4}
    pipe = load_pipeline("mask-generation", model=str(tiny_sam), device="cpu", **unfiltered)
    small = photo.with_name("small.png")  # within the 64-px model input: masks are filtered at this size
    Image.open(photo).crop((0, 0, 60, 40)).save(small)
    photo, size = small, (40, 60)
    result = pipe(str(photo))
    assert result["mode"] == "automatic" and result["masks"]
    scores = [m["score"] for m in result["masks"]]
    assert scores == sorted(scores, reverse=True)
    boxes = [m["box"] for m in result["masks"]]
    assert all(box_iou(a, b) <= 0.7 for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    for mask in result["masks"]:
        assert check_mask(mask, size).any()
    smallest = min(m["area"] for m in result["masks"])
    bigger = load_pipeline(
        "mask-generation", model=str(tiny_sam), device="cpu", min_area=smallest + 1, **unfiltered
    )(str(photo))
    assert [m["area"] for m in bigger["masks"]] == [
        m["area"] for m in result["masks"] if m["area"] > smallest
    ]
    # SAM's defaults (predicted IoU > 0.88, stability > 0.95): a random model's candidates all fail
    assert load_pipeline("mask-generation", model=str(tiny_sam), device="cpu")(str(photo))["masks"] == []


def test_cli_takes_a_box_parameter_and_refuses_one_outside_the_image(tiny_sam: Path, photo: Path) -> None:
    from tests.test_cli import aiforge

    ok = aiforge("run", "mask-generation", str(photo), "-m", str(tiny_sam), "-p", "box=[5, 5, 60, 40]")
    assert ok.returncode == 0, ok.stderr
    [row] = [json.loads(line) for line in ok.stdout.splitlines()]
    assert row["mode"] == "box" and decode_rle(row["masks"][0]["rle"]).shape == (50, 83)
    bad = aiforge("run", "mask-generation", str(photo), "-m", str(tiny_sam), "-p", "box=[5, 5, 600, 40]")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "is not inside the 83x50 image" in bad.stdout
