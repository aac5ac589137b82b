"""A tiny CLIP, random (the contract test) or trained in a few seconds on synthetic coloured shapes.

``make_tiny_clip`` saves a 2-layer, 32-wide ``CLIPModel`` with the MiniLM WordPiece tokenizer (no
CLIP BPE vocabulary ships offline; aiforge loads whatever tokenizer the folder holds) and a CLIP
image processor, like any Hugging Face model directory. ``trained_tiny_clip`` then trains it
contrastively on pictures of {red, green, blue} x {circle, square, triangle} on a noisy background,
captioned "a photo of a red circle.", so that zero-shot classification and text-to-image search
really work on fresh pictures of the same kind.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from tests.tiny_models import CLS_ID, PAD_ID, SEP_ID, VOCAB_SIZE, save_bert_tokenizer

IMAGE_SIZE = 32
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 60, 220)}
SHAPES = ("circle", "square", "triangle")
LABELS = [f"{colour} {shape}" for colour, shape in itertools.product(COLOURS, SHAPES)]
TEMPLATE = "a photo of a {}."


def make_tiny_clip(directory: str | Path, seed: int = 0) -> Path:
    """A random 2-layer, 32-wide CLIP (32 x 32 images, 4-px patches) with its tokenizer and processor."""
    text = {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 32,
        # the WordPiece tokenizer ends a text with [SEP]: CLIP pools the text at its end-of-text token
        "bos_token_id": CLS_ID,
        "eos_token_id": SEP_ID,
        "pad_token_id": PAD_ID,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": 4,
    }
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))
    directory = Path(directory)
    model.save_pretrained(directory)
    save_bert_tokenizer(directory, model_max_length=32)
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=size).save_pretrained(directory)
    return directory


def draw_shape(colour: str, shape: str, rng: np.random.Generator, size: int = IMAGE_SIZE) -> Image.Image:
    """One coloured shape at a random place and size on a grey, noisy background."""
    background = rng.integers(90, 170, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    radius = int(rng.integers(size // 4, size // 3 + 1))
    cx, cy = (int(v) for v in rng.integers(radius, size - radius, 2))
    fill = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in COLOURS[colour])
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill)
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Train on one thread: on this shared 2-core machine two OpenMP threads spun in backward for
    minutes (a pytest run timed out at 600 s where one thread trains in ~15 s of CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def trained_tiny_clip(directory: str | Path, steps: int = 200, seed: int = 0) -> Path:
    """``make_tiny_clip`` trained contrastively on shapes and captions; saved back into ``directory``.

    Each step draws fresh pictures, every class twice (a fixed pool of 16 per class was learnt by
    heart: 0.23 training loss, 69 % zero-shot accuracy on new pictures); a caption counts as a match
    for every picture of its class (soft targets), so two pictures of one class are not pushed apart.
    Pictures are drawn at the model's size and normalised here, as the image processor does.
    """
    from transformers import AutoTokenizer

    directory = make_tiny_clip(directory, seed)
    model = CLIPModel.from_pretrained(directory).train()
    captions = AutoTokenizer.from_pretrained(directory)(
        [TEMPLATE.format(label) for label in LABELS], padding=True, return_tensors="pt"
    )
    processor = CLIPImageProcessor.from_pretrained(directory)
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    rng = np.random.default_rng(seed)
    classes = list(range(len(LABELS))) * 2
    match = torch.tensor([[float(a == b) for b in range(len(LABELS))] for a in classes])
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    with one_torch_thread():
        for _step in range(steps):
            pictures = np.stack([np.asarray(draw_shape(*LABELS[c].split(), rng)) for c in classes])
            pixels = (torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 255 - mean) / std
            out = model(pixel_values=pixels, **captions)
            image_loss = F.cross_entropy(out.logits_per_image, match / match.sum(1, True))
            text_loss = F.cross_entropy(out.logits_per_text, match.T / match.T.sum(1, True))
            optimiser.zero_grad()
            (image_loss + text_loss).backward()
            optimiser.step()
    model.eval().save_pretrained(directory)
    return directory


_TRAINED: list[Path] = []


def shared_trained_clip(factory: pytest.TempPathFactory) -> Path:
    """One trained tiny CLIP per test session (training takes ~15 s of CPU), whichever module asks first."""
    if not _TRAINED or not _TRAINED[0].is_dir():
        _TRAINED[:] = [trained_tiny_clip(factory.mktemp("trained-clip"))]
    return _TRAINED[0]
