"""Segment Anything that really segments: a tiny SAM trained here on pictures of two shapes.

``tests/tasks/test_sam.py`` checks the plumbing on a random SAM. Here a 2-layer SAM (8-px patches) is
trained for ~40 s of CPU the way SAM was: a point inside a shape is the prompt, that shape is the
target (binary cross-entropy + dice, only the best of the three multimask candidates learns), and the
IoU head learns each candidate's real IoU. Its automatic mode, with filtering on, must then find the
shapes of pictures it never saw, and a point prompt must pick the shape under it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from aiforge.tasks import load_pipeline
from aiforge.tasks.images import decode_rle
from tests.tiny_clip import one_torch_thread
from tests.tiny_models import make_tiny_sam

SIZE = 64  # the tiny SAM's input: pictures are drawn at its size
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # SamImageProcessor's normalisation
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def scene(rng: np.random.Generator) -> tuple[Image.Image, list[np.ndarray]]:
    """A noisy grey picture with a circle, square or triangle of random colour in each half (never
    overlapping), and the two shapes' masks."""
    picture = Image.fromarray(rng.integers(90, 170, (SIZE, SIZE, 3), dtype=np.uint8))
    masks = []
    for half in (0, 1):
        mask = Image.new("L", (SIZE, SIZE), 0)
        radius = int(rng.integers(7, 13))
        cx = int(rng.integers(half * SIZE // 2 + radius, (half + 1) * SIZE // 2 - radius + 1))
        cy = int(rng.integers(radius, SIZE - radius))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        kind = int(rng.integers(3))
        for draw, fill in ((ImageDraw.Draw(picture), colour), (ImageDraw.Draw(mask), 255)):
            if kind == 0:
                draw.ellipse(box, fill=fill)
            elif kind == 1:
                draw.rectangle(box, fill=fill)
            else:
                draw.polygon(
                    [(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill
                )
        masks.append(np.asarray(mask) > 0)
    return picture, masks


def point_inside(mask: np.ndarray, rng: np.random.Generator) -> list[float]:
    ys, xs = np.nonzero(mask)
    i = int(rng.integers(len(xs)))
    return [float(xs[i]) + 0.5, float(ys[i]) + 0.5]


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + dice per candidate; only the best candidate of each prompt counts (SAM's min-over-masks)."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((-1, -2))
    probs = logits.sigmoid()
    overlap = (probs * target).sum((-1, -2))
    dice = 1 - (2 * overlap + 1) / (probs.sum((-1, -2)) + target.sum((-1, -2)) + 1)
    return (bce + dice).min(-1).values.mean()


def trained_tiny_sam(directory: Path, steps: int = 600, batch: int = 12, seed: int = 0) -> Path:
    from transformers import SamModel

    torch.manual_seed(seed)  # the weights and positional frequencies too: one run is every run
    make_tiny_sam(directory, patch_size=8)
    model = SamModel.from_pretrained(directory).train()
    # transformers draws SAM's random positional frequencies with std = vision width / 2 (16 here): a
    # point's encoding aliases across a 64-px picture and the decoder learnt to ignore the prompt (both
    # shapes' points gave one mask, IoU stuck at 0.43). Std 1, the original SAM's scale, trains to 0.75.
    with torch.no_grad():
        torch.nn.init.normal_(model.shared_image_embedding.positional_embedding, std=1.0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(seed)
    labels = torch.ones(batch, 2, 1, dtype=torch.long)
    with one_torch_thread():
        for _step in range(steps):
            scenes = [scene(rng) for _ in range(batch)]
            pixels = torch.from_numpy(np.stack([np.asarray(picture) for picture, _ in scenes]))
            pixels = (pixels.permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
            points = torch.tensor([[[point_inside(m, rng)] for m in masks] for _, masks in scenes])
            full = torch.from_numpy(np.stack([np.stack(masks) for _, masks in scenes])).float()
            # not get_image_embeddings: it runs without gradients, and the encoder would never learn
            embeddings = model.vision_encoder(pixels).last_hidden_state
            loss = torch.zeros(())
            for multimask in (False, True):  # the single-mask token for prompts, the three for the grid
                out = model(
                    image_embeddings=embeddings,
                    input_points=points,
                    input_labels=labels,
                    multimask_output=multimask,
                )
                target = F.interpolate(full, size=out.pred_masks.shape[-2:], mode="area")[:, :, None]
                target = target.expand_as(out.pred_masks)
                with torch.no_grad():  # each candidate's real IoU is what its IoU head learns
                    hard, truth = out.pred_masks > 0, target > 0.5
                    iou = (hard & truth).sum((-1, -2)) / ((hard | truth).sum((-1, -2)) + 1e-6)
                loss = loss + seg_loss(out.pred_masks, target) + F.mse_loss(out.iou_scores, iou)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    model.eval().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_tiny_sam(tmp_path_factory.mktemp("trained-sam"))


def png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.mark.slow
def test_automatic_masks_cover_the_shapes_of_fresh_pictures(sam_dir: Path) -> None:
    # filtering on (predicted IoU > 0.6, stability > 0.8): a trained model's masks pass, noise does not
    pipe = load_pipeline(
        "mask-generation",
        str(sam_dir),
        device="cpu",
        points_per_side=8,
        pred_iou_thresh=0.6,
        stability_score_thresh=0.8,
    )
    rng = np.random.default_rng(1234)  # pictures the training never drew
    covered, matched = [], []
    for _ in range(10):
        picture, shapes = scene(rng)
        out = pipe(png(picture))
        assert out["mode"] == "automatic"
        masks = [decode_rle(m["rle"]) for m in out["masks"]]
        covered += [max((iou(m, shape) for m in masks), default=0.0) for shape in shapes]
        matched += [max(iou(m, shape) for shape in shapes) >= 0.5 for m in masks]
    # measured: every shape covered at IoU 0.59-0.92 (mean 0.82), 2.1 masks a picture; one unseeded
    # run of CI missed one shape of 20 (IoU 0, the other 19 at 0.73-0.94): 90 % must be covered
    assert np.mean(np.array(covered) >= 0.5) >= 0.9 and np.mean(covered) >= 0.7, np.round(covered, 2)
    assert np.mean(matched) >= 0.8, matched  # the masks are the shapes, not the background


@pytest.mark.slow
def test_a_point_picks_the_shape_under_it(sam_dir: Path) -> None:
    pipe = load_pipeline("mask-generation", str(sam_dir), device="cpu")
    rng = np.random.default_rng(99)
    hits = []
    for _ in range(10):
        picture, shapes = scene(rng)
        points = [point_inside(shape, rng) for shape in shapes]
        out = pipe({"image": png(picture), "points": points})
        assert out["mode"] == "points" and len(out["masks"]) == 2
        for record, shape, other in zip(out["masks"], shapes, shapes[::-1], strict=True):
            mask = decode_rle(record["rle"])
            hits.append(iou(mask, shape) >= 0.5 and iou(mask, other) < 0.1)
    assert np.mean(hits) >= 0.9, hits
