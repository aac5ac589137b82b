"""Visual question answering on a tiny ViLT trained here on coloured shapes.

The contract test covers the plumbing on a random ViLT; these check that the task really answers
from the image and the question: a ViLT trained for ~15 s of CPU on "what colour is the shape?" and
"what shape is this?" names the colour of fresh pictures and answers a shape question with a shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aiforge.errors import AiforgeError
from aiforge.tasks import load_pipeline
from tests.test_cli import aiforge
from tests.tiny_clip import COLOURS, SHAPES, draw_shape, one_torch_thread, png_bytes
from tests.tiny_models import make_tiny_blip_vqa, make_tiny_vilt

ANSWERS = [*COLOURS, *SHAPES]
QUESTIONS = {"colour": ["what colour is the shape?", "which colour is it?"], "shape": ["what shape is this?"]}


def trained_tiny_vilt(directory: Path, steps: int = 300, seed: int = 0) -> Path:
    """``make_tiny_vilt`` trained with ViLT's objective (binary cross-entropy over the answers) on
    fresh pictures every step, half asked for the colour and half for the shape.

    Measured: colour answers 1.00 on fresh pictures after 300 steps; shape questions are answered
    with a shape every time but which shape stays near chance (0.3) even at 700 steps or 64 wide:
    a 2-layer ViLT on 4-px patches does not learn the outline in this budget (the tiny CLIP does).
    """
    from transformers import AutoProcessor, ViltForQuestionAnswering

    make_tiny_vilt(directory, ANSWERS, seed)
    processor = AutoProcessor.from_pretrained(directory)
    model = ViltForQuestionAnswering.from_pretrained(directory).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    with one_torch_thread():
        for _step in range(steps):
            pictures, questions, targets = [], [], []
            for _ in range(24):
                colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
                kind = str(rng.choice(list(QUESTIONS)))
                pictures.append(draw_shape(colour, shape, rng))
                questions.append(str(rng.choice(QUESTIONS[kind])))
                targets.append(ANSWERS.index(colour if kind == "colour" else shape))
            batch = processor(images=pictures, text=questions, padding=True, return_tensors="pt")
            logits = model(**batch).logits
            loss = F.binary_cross_entropy_with_logits(
                logits, F.one_hot(torch.tensor(targets), len(ANSWERS)).float()
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def vilt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_tiny_vilt(tmp_path_factory.mktemp("trained-vilt"))


@pytest.mark.slow
def test_answers_come_from_the_picture_and_the_question(vilt_dir: Path) -> None:
    pipe = load_pipeline("visual-question-answering", str(vilt_dir), device="cpu", top_k=3)
    rng = np.random.default_rng(1234)  # pictures the training never drew
    truth = [(str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))) for _ in range(30)]
    pictures = [png_bytes(draw_shape(colour, shape, rng)) for colour, shape in truth]
    colours = pipe.predict([{"image": p, "question": "what colour is the shape?"} for p in pictures])
    shapes = pipe.predict([{"image": p, "question": "what shape is this?"} for p in pictures])
    right = np.mean([out["answer"] == colour for out, (colour, _) in zip(colours, truth, strict=True)])
    assert right >= 0.9, [(out["answer"], t) for out, t in zip(colours, truth, strict=True)]  # measured 1.00
    assert all(out["answer"] in SHAPES for out in shapes), [
        out["answer"] for out in shapes
    ]  # the question counts
    for out in colours + shapes:
        scores = [a["score"] for a in out["answers"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert out["answer"] == out["answers"][0]["answer"] and out["score"] == scores[0]
        assert all(0.0 <= s <= 1.0 for s in scores)  # a sigmoid each (ViLT's BCE), not a softmax


@pytest.mark.slow
def test_cli_asks_one_question_of_a_picture_and_explains_a_missing_one(
    vilt_dir: Path, tmp_path: Path
) -> None:
    picture = tmp_path / "shape.png"
    picture.write_bytes(png_bytes(draw_shape("blue", "circle", np.random.default_rng(7))))
    ok = aiforge("run", "vqa", str(picture), "-m", str(vilt_dir), "-p", "question=what colour is the shape?")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["answer"] == "blue"

    missing = aiforge("run", "vqa", str(picture), "-m", str(vilt_dir))
    assert missing.returncode != 0 and "failed" in missing.stderr and "Traceback" not in missing.stderr
    error = json.loads(missing.stdout)["error"]  # the input's line holds the error, naming the fix
    assert error["code"] == "AF-INPUT-002" and "-p question=" in error["fix"]


def test_a_question_longer_than_the_text_window_is_cut_not_an_error(tmp_path: Path) -> None:
    pipe = load_pipeline(
        "visual-question-answering", str(make_tiny_vilt(tmp_path / "vilt", ANSWERS)), device="cpu"
    )
    long_question = "what colour is the shape " * 40 + "?"
    [out] = pipe.predict(
        [
            {
                "image": png_bytes(draw_shape("red", "square", np.random.default_rng(0))),
                "question": long_question,
            }
        ]
    )
    assert out["answer"] in ANSWERS
    with pytest.raises(AiforgeError) as missing:
        pipe({"image": png_bytes(draw_shape("red", "square", np.random.default_rng(0)))})
    assert missing.value.code == "AF-INPUT-002"


def test_a_generator_model_answers_with_text_and_no_score(tmp_path: Path) -> None:
    """BLIP-style models generate the answer: one answer, score null; the demo shows the text alone."""
    from aiforge.serve.demo import render_output

    pipe = load_pipeline("vqa", str(make_tiny_blip_vqa(tmp_path / "blip")), device="cpu", max_new_tokens=3)
    rng = np.random.default_rng(3)
    records = [
        {"image": png_bytes(draw_shape("red", "circle", rng)), "question": "what colour is it?"},
        {"image": png_bytes(draw_shape("blue", "square", rng)), "question": "how many shapes are there?"},
    ]
    outputs = pipe.predict(records)
    for out, record in zip(outputs, records, strict=True):
        assert out["score"] is None and out["answers"] == [{"answer": out["answer"], "score": None}]
        assert out == pipe(record)  # batched or alone, the same greedy answer
        assert render_output("label", out, ()) == out["answer"]
