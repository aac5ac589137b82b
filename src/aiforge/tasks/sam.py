"""Segment Anything (SAM): masks for point and box prompts, or for everything in the image.

Three ways to ask, one task (``mask-generation``):

* ``points`` alone: one mask per point (``[[x, y], ...]``, pixels of the original image);
* ``box`` (``[x0, y0, x1, y1]``), with or without ``points``: one mask for the object in the box,
  the points (if any) marking where it is;
* no prompt: automatic mask generation ("segment everything"), as in SAM's ``amg.py`` and
  transformers' ``mask-generation`` pipeline: a ``points_per_side`` grid of point prompts, run
  ``points_per_batch`` at a time through the prompt decoder; candidate masks are kept when their
  predicted IoU passes ``pred_iou_thresh`` and their stability score (IoU of the mask thresholded a
  little above and below 0) passes ``stability_score_thresh``; overlapping ones are removed by
  non-maximum suppression on their boxes (``crops_nms_thresh``); then masks smaller than
  ``min_area`` pixels are dropped. The filtering and suppression are transformers' own
  (``SamProcessor.image_processor.filter_masks`` and ``post_process_for_mask_generation``).

Prompts come per input (``{"image": ..., "box": [...]}``) or as parameters that apply to every input
giving none (``aiforge run mask-generation photo.jpg -p box=[10,20,200,180]``).

Masks are COCO run-length encoded (``rle``: ``{"size": [h, w], "counts": "..."}``, pycocotools'
compressed form; :func:`aiforge.tasks.images.decode_rle` reads one back), with ``mask_format=png``
(or ``both``) adding a base64 1-bit PNG that a browser shows directly. Every mask has its predicted
IoU (``score``), its ``area`` in pixels and its bounding ``box``, all in the original image.

The ViT image encoder is the cost (one run per image, batched across images); the prompt decoder is
light, so the 256 prompts of the default 16 x 16 grid add little. Candidate masks are upsampled only
after the predicted-IoU filter, ``points_per_batch`` at a time, at a working size no larger than the
model's input (1024 px for SAM): the 256 x 256 low-resolution logits hold no finer detail, and the
cost stays bounded whatever the photo's size. Kept masks are then enlarged to the original size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from aiforge.errors import AiforgeError
from aiforge.lazy import lazy_module
from aiforge.tasks.base import TaskParams
from aiforge.tasks.card import DemoView, register_task
from aiforge.tasks.images import ImageInput, encode_mask, encode_rle, warm_image
from aiforge.tasks.vision import Box, _Features, _hf_load, _run_grouped, _VisionPipeline

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_module("torch")

__all__ = ["MaskGeneration"]

Point = tuple[float, float]
BoxPrompt = tuple[float, float, float, float]

_POINTS_HELP = "[[x, y], ...] pixels: one mask per point; with a box, the points mark the box's object"
_BOX_HELP = "[x0, y0, x1, y1] pixels: one mask for the object in the box"


class SamInput(ImageInput):
    points: list[Point] | None = Field(None, description=_POINTS_HELP)
    box: BoxPrompt | None = Field(None, description=_BOX_HELP)


class MaskParams(TaskParams):
    points: list[Point] | None = Field(None, description=f"for inputs without prompts: {_POINTS_HELP}")
    box: BoxPrompt | None = Field(None, description=f"for inputs without prompts: {_BOX_HELP}")
    points_per_side: int = Field(16, ge=1, le=64, description="automatic mode: a grid of n x n point prompts")
    points_per_batch: int = Field(64, ge=1, le=1024, description="automatic mode: prompts decoded at once")
    pred_iou_thresh: float = Field(
        0.88, ge=0.0, le=1.0, description="automatic mode: keep predicted IoU > this"
    )
    stability_score_thresh: float = Field(
        0.95, ge=0.0, le=1.0, description="automatic mode: keep stability score > this"
    )
    crops_nms_thresh: float = Field(
        0.7,
        gt=0.0,
        le=1.0,
        description="automatic mode: drop a mask whose box overlaps a better one's above this IoU",
    )
    min_area: int = Field(0, ge=0, description="automatic mode: drop masks smaller than this many pixels")
    multimask_output: bool = Field(
        False, description="prompted mode: SAM's 3 candidate masks per prompt instead of the best one"
    )
    mask_format: Literal["rle", "png", "both"] = Field(
        "rle", description="rle: COCO run-length encoding; png: base64 1-bit PNG; both"
    )


class SamMask(BaseModel):
    score: float = Field(description="SAM's predicted IoU of the mask")
    area: int = Field(description="pixels inside the mask")
    box: Box = Field(description="the mask's bounding box, pixels of the original image")
    point: Point | None = Field(None, description="the point prompt (points-only mode)")
    rle: dict[str, Any] | None = Field(None, description='COCO RLE {"size": [h, w], "counts": "..."}')
    mask: str | None = Field(None, description="base64 1-bit PNG, the original image's size, white = inside")


class MaskOutput(BaseModel):
    width: int
    height: int
    mode: Literal["points", "box", "automatic"]
    masks: list[SamMask] = Field(
        description="points: in point order (per point, best first); box: best first; automatic: best first"
    )


@register_task(
    "mask-generation",
    summary="Segment Anything: masks for points, a box, or everything in the image",
    hub_default="facebook/sam-vit-base",
    aliases=("sam",),
    request_params=tuple(MaskParams.model_fields),
    warmup=warm_image,
    demo=DemoView("image-click", "masks"),
    requires=("torch", "transformers", "pycocotools"),
    architectures=("SamModel",),
)
class MaskGeneration(_VisionPipeline):
    """Segment Anything through transformers (``SamModel`` + ``SamProcessor``)::

    pipe = load_pipeline("mask-generation", model="facebook/sam-vit-base", device="cpu")
    pipe({"image": "photo.jpg", "box": [10, 20, 200, 180]})["masks"][0]["rle"]
    pipe("photo.jpg")["masks"]   # segment everything
    """

    Input = SamInput
    Output = MaskOutput
    Params = MaskParams
    params: MaskParams
    default_batch_size = 2  # the ViT image encoder is the cost; larger batches only use more memory

    def setup(self) -> None:
        from transformers import SamModel, SamProcessor

        self._processor = SamProcessor.from_pretrained(self.model_ref.location)
        self._model = _hf_load(SamModel, self.model_ref, self.device)

    def preprocess(self, item: SamInput) -> _Features:  # type: ignore[override]
        image = self._image(item)
        prompted = item.points is not None or item.box is not None
        points = item.points if prompted else self.params.points
        box = item.box if prompted else self.params.box
        if points is not None:
            _check_points(points, image.size)
        if box is not None:
            _check_box(box, image.size)
        if box is not None:
            mode = "box"
            prompts: dict[str, Any] = {"input_boxes": [[list(box)]]}
            if points:  # all the points join the box's one prompt
                prompts["input_points"] = [[[list(p) for p in points]]]
                prompts["input_labels"] = [[[1] * len(points)]]
        else:
            mode = "points" if points is not None else "automatic"
            if points is None:
                points = _grid(image.size, self.params.points_per_side)
            prompts = {"input_points": [[[list(p)] for p in points]]}  # one single-point prompt per point
        encoded = self._processor(images=image, return_tensors="pt", **prompts)
        extra = {k: encoded[k] for k in (*prompts, "original_sizes", "reshaped_input_sizes")}
        return _Features(
            {"pixel_values": encoded["pixel_values"]},
            (image.height, image.width),
            {**extra, "points": points, "mode": mode},
        )

    def forward(self, batch: list[_Features]) -> list[dict[str, Any]]:
        def predict(tensors: dict[str, torch.Tensor], members: list[_Features]) -> list[dict[str, Any]]:
            embeddings = self._model.get_image_embeddings(tensors["pixel_values"])
            results = []
            for j, m in enumerate(members):
                image_embedding = embeddings[j : j + 1]
                if m.extra["mode"] == "automatic":
                    results.append(self._everything(image_embedding, m.extra))
                else:
                    results.append(self._prompted(image_embedding, m.extra))
            return results

        return _run_grouped(batch, predict, self.device)

    def _decode(
        self, image_embedding: torch.Tensor, prompts: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt decoder: (1, prompts, 3, 256, 256) low-resolution logits and (1, prompts, 3) IoUs."""
        out = self._model(
            image_embeddings=image_embedding,
            multimask_output=True,
            **{k: v.to(self.device) for k, v in prompts.items()},
        )
        return out.pred_masks.float().cpu(), out.iou_scores.float().cpu()

    def _prompted(self, image_embedding: torch.Tensor, extra: dict[str, Any]) -> dict[str, Any]:
        prompts: dict[str, Any] = {
            k: extra[k] for k in ("input_points", "input_labels", "input_boxes") if k in extra
        }
        low_res, iou = self._decode(image_embedding, prompts)
        keep = None if self.params.multimask_output else 1
        masks = []
        for p in range(iou.shape[1]):
            order = iou[0, p].argsort(descending=True)[:keep]
            # upsample one prompt at a time: all candidates at full size would be prompts x 3 x H x W
            full = self._processor.post_process_masks(
                low_res[:, p : p + 1, order], extra["original_sizes"], extra["reshaped_input_sizes"]
            )[0][0]
            point = tuple(extra["points"][p]) if extra["mode"] == "points" else None
            masks += [(full[k], float(iou[0, p, c]), point) for k, c in enumerate(order.tolist())]
        return {"mode": extra["mode"], "size": extra["original_sizes"][0].tolist(), "masks": masks}

    def _everything(self, image_embedding: torch.Tensor, extra: dict[str, Any]) -> dict[str, Any]:
        """Automatic mask generation: the grid's candidates, filtered, suppressed, at least min_area."""
        p = self.params
        image_processor = self._processor.image_processor
        height, width = (int(v) for v in extra["original_sizes"][0])
        reshaped = [int(v) for v in extra["reshaped_input_sizes"][0]]
        work = (height, width) if max(height, width) <= max(reshaped) else tuple(reshaped)
        rles: list[dict[str, Any]] = []
        scores, boxes = [], []
        grid = extra["input_points"]
        for start in range(0, grid.shape[1], p.points_per_batch):
            low_res, iou = self._decode(
                image_embedding, {"input_points": grid[:, start : start + p.points_per_batch]}
            )
            low_res, iou = low_res.flatten(1, 2), iou.flatten(1, 2)  # (1, candidates, h, w), (1, candidates)
            confident = iou[0] > p.pred_iou_thresh  # before upsampling: most candidates stop here
            if not confident.any():
                continue
            logits = image_processor.post_process_masks(
                low_res[:, confident][None], [work], [reshaped], binarize=False
            )[0]  # (1, confident, work height, work width)
            kept_rles, kept_scores, kept_boxes = image_processor.filter_masks(
                logits,
                iou[:, confident],
                work,
                [0, 0, work[1], work[0]],
                pred_iou_thresh=p.pred_iou_thresh,
                stability_score_thresh=p.stability_score_thresh,
            )
            rles += kept_rles
            scores.append(kept_scores)
            boxes.append(kept_boxes)
        masks: list[tuple[torch.Tensor, float, None]] = []
        if rles:
            work_masks, kept, _, _ = image_processor.post_process_for_mask_generation(
                rles, torch.cat(scores), torch.cat(boxes), p.crops_nms_thresh
            )
            for mask, score in zip(work_masks, kept.tolist(), strict=True):
                full = _resize_mask(mask, (height, width))
                if int(full.sum()) >= max(p.min_area, 1):
                    masks.append((full, score, None))
        masks.sort(key=lambda m: m[1], reverse=True)
        return {"mode": "automatic", "size": [height, width], "masks": masks}

    def postprocess(self, raw: dict[str, Any], item: SamInput) -> dict[str, Any]:  # type: ignore[override]
        height, width = raw["size"]
        fmt = self.params.mask_format
        masks = [_describe(mask, score, point, fmt) for mask, score, point in raw["masks"]]
        return {"width": width, "height": height, "mode": raw["mode"], "masks": masks}


def _resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(mask.shape) == size:
        return mask
    import torch.nn.functional as F

    return F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0] > 0.5


def _describe(mask: torch.Tensor, score: float, point: Point | None, fmt: str) -> dict[str, Any]:
    """One full-size boolean mask -> its output record (area, box, RLE and/or PNG)."""
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    box = (
        {
            "xmin": float(cols.min()),
            "ymin": float(rows.min()),
            "xmax": float(cols.max() + 1),
            "ymax": float(rows.max() + 1),
        }
        if len(rows)
        else {"xmin": 0.0, "ymin": 0.0, "xmax": 0.0, "ymax": 0.0}
    )
    return {
        "score": score,
        "area": int(mask.sum()),
        "box": box,
        "point": point,
        "rle": encode_rle(mask) if fmt in ("rle", "both") else None,
        "mask": encode_mask(mask) if fmt in ("png", "both") else None,
    }


def _grid(size: tuple[int, int], per_side: int) -> list[Point]:
    """Cell centres of a per_side x per_side grid over a (width, height) image."""
    width, height = size
    return [
        ((i + 0.5) * width / per_side, (j + 0.5) * height / per_side)
        for j in range(per_side)
        for i in range(per_side)
    ]


def _check_points(points: list[Point], size: tuple[int, int]) -> None:
    width, height = size
    if not points:
        raise AiforgeError(
            "AF-INPUT-002",
            "field 'points' is an empty list",
            "give at least one [x, y] point, or omit 'points' to segment everything",
        )
    for x, y in points:
        if not (0 <= x <= width and 0 <= y <= height):
            raise AiforgeError(
                "AF-INPUT-002",
                f"point [{x}, {y}] is outside the {width}x{height} image",
                "give pixels of the original image: 0 <= x <= width, 0 <= y <= height",
            )


def _check_box(box: BoxPrompt, size: tuple[int, int]) -> None:
    width, height = size
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise AiforgeError(
            "AF-INPUT-002",
            f"box [{x0}, {y0}, {x1}, {y1}] is not inside the {width}x{height} image",
            "give [x0, y0, x1, y1] pixels with 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height",
        )
