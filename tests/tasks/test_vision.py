"""Vision tasks: image decoding, the packaged EfficientNet-Lite0 on real photos, and the pre/post-processing
of every vision task on tiny random models of the real architectures (built from configs, nothing downloaded).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aiforge.errors import AiforgeError
from aiforge.media import load_image
from aiforge.tasks import get_task, load_pipeline
from aiforge.tasks.vision import decode_mask

VISION_TASKS = ["image-classification", "object-detection", "image-segmentation", "mask-generation",
                "image-to-text"]


# ---- images -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """scikit-learn's two sample photos (427x640) saved losslessly, plus a small odd-shaped image."""
    from sklearn.datasets import load_sample_images

    folder = tmp_path_factory.mktemp("photos")
    samples = load_sample_images()
    paths = {}
    for name, array in zip(samples.filenames, samples.images, strict=True):
        stem = Path(name).stem
        paths[stem] = folder / f"{stem}.png"
        Image.fromarray(array).save(paths[stem])
    rng = np.random.default_rng(0)
    paths["small"] = folder / "small.png"
    Image.fromarray(rng.integers(0, 255, (50, 83, 3), dtype=np.uint8)).save(paths["small"])
    paths["broken"] = folder / "broken.jpg"
    paths["broken"].write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return paths


def test_every_image_input_form_decodes_to_the_same_rgb_pixels(photos: dict[str, Path]) -> None:
    data = photos["small"].read_bytes()
    b64 = base64.b64encode(data).decode()
    forms = [str(photos["small"]), photos["small"], data, b64, f"data:image/png;base64,{b64}"]
    reference = np.asarray(Image.open(photos["small"]).convert("RGB"))
    for form in forms:
        image = load_image(form)
        assert image.mode == "RGB"
        assert np.array_equal(np.asarray(image), reference)


def test_grayscale_and_alpha_images_become_rgb() -> None:
    for mode in ("L", "RGBA", "P"):
        buffer = io.BytesIO()
        Image.new(mode, (7, 5)).save(buffer, format="PNG")
        image = load_image(buffer.getvalue())
        assert (image.mode, image.size) == ("RGB", (7, 5))


def test_exif_orientation_is_applied() -> None:
    """A phone photo stored sideways with EXIF orientation 6 (rotate 90) must come out upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20)).save(buffer, format="JPEG", exif=exif)
    assert load_image(buffer.getvalue()).size == (20, 40)


def test_unreadable_image_names_the_file_and_the_reason(photos: dict[str, Path]) -> None:
    with pytest.raises(AiforgeError) as info:
        load_image(str(photos["broken"]))
    assert info.value.code == "AF-INPUT-003"
    assert str(photos["broken"]) in info.value.message
    assert "could not be decoded" in info.value.message and info.value.fix


@pytest.mark.parametrize(
    ("value", "code", "mentions"),
    [
        ("https://example.com/cat.jpg", "AF-INPUT-002", "https://example.com/cat.jpg"),
        ("no/such/picture.jpg", "AF-INPUT-001", "no/such/picture.jpg"),
        ("data:image/png;base64,@@@not-base64@@@", "AF-INPUT-003", "base64"),
        (b"plain text, not an image", "AF-INPUT-003", "bytes"),
    ],
)
def test_bad_image_inputs_have_their_own_errors(value: str | bytes, code: str, mentions: str) -> None:
    with pytest.raises(AiforgeError) as info:
        load_image(value)
    assert info.value.code == code
    assert mentions in info.value.message


def test_every_vision_task_describes_itself() -> None:
    for task in VISION_TASKS:
        described = get_task(task).load_class().describe()
        assert described["task"] == task
        assert "image" in described["input"]


# ---- image classification: packaged EfficientNet-Lite0 (real ImageNet weights) -----------------------


@pytest.fixture(scope="module")
def lite0():
    return load_pipeline("image-classification", model="efficientnet-lite0", device="cpu")


def _labels(result: dict) -> list[str]:
    return [entry["label"] for entry in result["labels"]]


def _assert_same_labels(result: dict, expected: dict) -> None:
    """Same labels in the same order; scores equal up to batch-size-dependent float rounding."""
    assert _labels(result) == _labels(expected)
    assert [e["score"] for e in result["labels"]] == pytest.approx([e["score"] for e in expected["labels"]],
                                                                    abs=1e-5)


def test_lite0_recognises_the_flower_photo(lite0, photos: dict[str, Path]) -> None:
    result = lite0(str(photos["flower"]))
    assert _labels(result)[0] == "daisy"


def test_lite0_recognises_the_chinese_palace_photo(lite0, photos: dict[str, Path]) -> None:
    """china.jpg shows a pagoda-roofed palace by a lake; accept any building class of that kind."""
    buildings = {"palace", "bell cote, bell cot", "monastery", "church, church building", "stupa, tope"}
    plausible = buildings | {"boathouse", "lakeside, lakeshore"}
    top = _labels(lite0(str(photos["china"])))
    assert top[0] in buildings
    assert len(plausible.intersection(top)) >= 3


def test_lite0_scores_are_sorted_probabilities(lite0, photos: dict[str, Path]) -> None:
    scores = [entry["score"] for entry in lite0(str(photos["flower"]))["labels"]]
    assert len(scores) == 5
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < s <= 1.0 for s in scores) and sum(scores) <= 1.0 + 1e-6


def test_lite0_batch_equals_one_by_one_in_input_order(lite0, photos: dict[str, Path]) -> None:
    items = [str(photos["flower"]), str(photos["china"]), str(photos["small"])]
    batched = lite0.predict(items, batch_size=3)
    for item, result in zip(items, batched, strict=True):
        _assert_same_labels(result, lite0(item))


def test_uploaded_bytes_give_the_same_answer_as_the_file(lite0, photos: dict[str, Path]) -> None:
    """The server passes multipart uploads as bytes; JSON clients send base64."""
    data = photos["flower"].read_bytes()
    from_bytes, from_b64, bare, path = lite0.predict(
        [{"image": data}, {"image": base64.b64encode(data).decode()}, data, photos["flower"]]
    )
    assert from_bytes == from_b64 == bare == path  # bare bytes and Paths too, as the audio tasks take them
    _assert_same_labels(from_bytes, lite0(str(photos["flower"])))


def test_a_broken_image_in_a_batch_is_an_error_record_not_an_abort(lite0, photos: dict[str, Path]) -> None:
    results = lite0.predict([str(photos["broken"]), str(photos["flower"])])
    assert results[0]["error"]["code"] == "AF-INPUT-003"
    assert str(photos["broken"]) in results[0]["error"]["message"]
    assert _labels(results[1])[0] == "daisy"


# ---- image classification: other backends ------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_vit_classifier

    return make_tiny_vit_classifier(tmp_path_factory.mktemp("tiny-vit"), ["cat", "dog", "bird"])


def test_transformers_classifier_uses_the_config_labels(tiny_vit: Path, photos: dict[str, Path]) -> None:
    pipe = load_pipeline("image-classification", model=str(tiny_vit), device="cpu", top_k=3)
    assert pipe.backend == "transformers"
    labels = pipe(str(photos["small"]))["labels"]
    assert sorted(e["label"] for e in labels) == ["bird", "cat", "dog"]
    assert sum(e["score"] for e in labels) == pytest.approx(1.0, abs=1e-5)


FRUITS = ["apple", "banana", "cherry", "date"]


def _timm_layout(folder: Path, layout: str) -> Path:
    """Save a tiny 4-class timm model the three ways aiforge reads; return the path a user passes."""
    import argparse

    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=len(FRUITS))
    if layout == "state-dict+aiforge_timm.json":
        torch.save(model.state_dict(), folder / "model.pth")
        (folder / "aiforge_timm.json").write_text(json.dumps({"architecture": "test_efficientnet"}))
        (folder / "labels.txt").write_text("\n".join(FRUITS) + "\n")
        return folder / "model.pth"
    if layout == "timm-train-checkpoint":  # what timm's train.py writes: arch, args, epoch, state_dict
        args = argparse.Namespace(model="test_efficientnet", lr=0.1)
        torch.save({"epoch": 3, "arch": "test_efficientnet", "args": args, "state_dict": model.state_dict()},
                   folder / "checkpoint.pth")
        (folder / "class_map.txt").write_text("\n".join(FRUITS))
        return folder
    timm.models.save_for_hf(model, folder, model_config={"label_names": FRUITS}, safe_serialization=True)
    return folder


@pytest.mark.parametrize("layout", ["state-dict+aiforge_timm.json", "timm-train-checkpoint", "timm-export"])
def test_local_timm_checkpoints_load_with_their_labels(layout: str, tmp_path: Path,
                                                       photos: dict[str, Path]) -> None:
    import timm

    model_path = _timm_layout(tmp_path, layout)
    pipe = load_pipeline("image-classification", model=str(model_path), device="cpu", top_k=10)
    assert pipe.backend == "timm"
    labels = pipe(str(photos["small"]))["labels"]
    assert sorted(e["label"] for e in labels) == sorted(FRUITS)
    # the weights are the saved ones, not a fresh initialisation: compare with the model itself
    torch.manual_seed(0)
    reference = timm.create_model("test_efficientnet", pretrained=False, num_classes=len(FRUITS)).eval()
    pixels = pipe.preprocess(pipe.parse_input(str(photos["small"]))).tensors["pixel_values"]
    with torch.inference_mode():
        expected = reference(pixels).softmax(-1)[0]
    by_label = {e["label"]: e["score"] for e in labels}
    assert [by_label[f] for f in FRUITS] == pytest.approx(expected.tolist(), abs=1e-5)


def test_timm_weights_without_an_architecture_are_refused(tmp_path: Path) -> None:
    import timm

    torch.save(timm.create_model("test_efficientnet", num_classes=2).state_dict(), tmp_path / "weights.pth")
    with pytest.raises(AiforgeError) as info:
        load_pipeline("image-classification", model=str(tmp_path / "weights.pth"), device="cpu")
    assert info.value.code == "AF-MODEL-003" and "aiforge_timm.json" in info.value.fix


# ---- object detection ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_detr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_detr

    return make_tiny_detr(tmp_path_factory.mktemp("tiny-detr"))


def test_detection_boxes_lie_inside_the_original_image(tiny_detr: Path, photos: dict[str, Path]) -> None:
    pipe = load_pipeline("object-detection", model=str(tiny_detr), device="cpu", threshold=0.0)
    items = [str(photos["small"]), str(photos["flower"])]
    for path, result in zip(items, pipe.predict(items), strict=True):
        pipe.Output.model_validate(result)
        width, height = Image.open(path).size
        objects = result["objects"]
        assert len(objects) == 12  # threshold 0 keeps every query
        assert [o["score"] for o in objects] == sorted((o["score"] for o in objects), reverse=True)
        for obj in objects:
            box = obj["box"]
            assert 0 <= box["xmin"] <= box["xmax"] <= width and 0 <= box["ymin"] <= box["ymax"] <= height
            assert obj["label"] in {"cat", "dog", "car"}


def test_detection_threshold_drops_low_scores(tiny_detr: Path, photos: dict[str, Path]) -> None:
    everything = load_pipeline("object-detection", model=str(tiny_detr), device="cpu", threshold=0.0)
    scores = [o["score"] for o in everything(str(photos["small"]))["objects"]]
    cut = float(np.median(scores))
    kept = load_pipeline("object-detection", model=str(tiny_detr), device="cpu", threshold=cut)
    kept_scores = [o["score"] for o in kept(str(photos["small"]))["objects"]]
    assert kept_scores == [s for s in scores if s > cut]


# ---- semantic segmentation ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_segformer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_segformer

    return make_tiny_segformer(tmp_path_factory.mktemp("tiny-segformer"))


def _check_partition(result: dict, size: tuple[int, int]) -> None:
    """Segments are full-size masks that tile the image exactly once."""
    width, height = size
    assert (result["width"], result["height"]) == (width, height)
    covered = np.zeros((height, width), dtype=int)
    for segment in result["segments"]:
        mask = decode_mask(segment["mask"])
        assert mask.shape == (height, width)
        assert segment["area"] == int(mask.sum()) > 0
        assert 0.0 < segment["score"] <= 1.0
        covered += mask
    assert (covered == 1).all()


def test_segmentation_masks_tile_the_original_image(tiny_segformer: Path, photos: dict[str, Path]) -> None:
    pipe = load_pipeline("image-segmentation", model=str(tiny_segformer), device="cpu")
    for name in ("small", "flower"):
        result = pipe(str(photos[name]))
        pipe.Output.model_validate(result)
        _check_partition(result, Image.open(photos[name]).size)
        assert {s["label"] for s in result["segments"]} <= {"sky", "tree", "road"}
        areas = [s["area"] for s in result["segments"]]
        assert areas == sorted(areas, reverse=True)


def test_segmentation_of_a_large_image_stays_full_size(tiny_segformer: Path, photos: dict[str, Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the memory budget the label map is computed smaller, then enlarged: masks keep the input size."""
    import aiforge.tasks.vision as vision

    monkeypatch.setattr(vision, "_SEGMENTATION_BUDGET", 3 * 100 * 100)
    pipe = load_pipeline("image-segmentation", model=str(tiny_segformer), device="cpu")
    _check_partition(pipe(str(photos["flower"])), Image.open(photos["flower"]).size)


# ---- image to text -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny BLIP captioners whose LM-head bias makes one token always win: 'cat' (never ends) or the
    end token (ends at once). The model still runs end to end, so the outputs are known answers."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    from tests.tiny_models import minilm_tokenizer

    tokenizer = minilm_tokenizer()
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    text = dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
                pad_token_id=tokenizer.pad_token_id, sep_token_id=tokenizer.sep_token_id,
                eos_token_id=tokenizer.sep_token_id)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=8)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    folders = {}
    for name, winner in (("cat", tokenizer.convert_tokens_to_ids("cat")), ("eos", tokenizer.sep_token_id)):
        torch.manual_seed(0)
        config = BlipConfig(text_config=text, vision_config=vision, projection_dim=16)
        model = BlipForConditionalGeneration(config)
        with torch.no_grad():
            head = model.text_decoder.get_output_embeddings()
            head.bias.zero_()
            head.bias[winner] = 100.0  # random logits are ~0.1: this token always wins
        folders[name] = tmp_path_factory.mktemp(f"tiny-blip-{name}")
        model.save_pretrained(folders[name])
        processor.save_pretrained(folders[name])
    return folders


def test_caption_stopped_by_max_new_tokens_says_truncated(tiny_blip: dict[str, Path],
                                                          photos: dict[str, Path]) -> None:
    pipe = load_pipeline("image-to-text", model=str(tiny_blip["cat"]), device="cpu", max_new_tokens=3)
    results = pipe.predict([str(photos["small"]), {"image": str(photos["flower"]), "prompt": "a picture of"}])
    assert results == [{"text": "cat cat cat", "truncated": True},
                       {"text": "a picture of cat cat cat", "truncated": True}]
    pipe.Output.model_validate(results[0])


def test_caption_that_ends_by_itself_is_not_truncated(tiny_blip: dict[str, Path],
                                                      photos: dict[str, Path]) -> None:
    pipe = load_pipeline("image-to-text", model=str(tiny_blip["eos"]), device="cpu", max_new_tokens=3)
    assert pipe(str(photos["small"])) == {"text": "", "truncated": False}


@pytest.fixture(scope="session")
def tiny_vit_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VisionEncoderDecoder (ViT + GPT-2) folder: image processor and tokenizer, no joint processor."""
    from tests.tiny_models import make_tiny_vit_gpt2

    return make_tiny_vit_gpt2(tmp_path_factory.mktemp("tiny-vit-gpt2"))


def test_vision_encoder_decoder_captions_and_refuses_a_prompt(tiny_vit_gpt2: Path,
                                                              photos: dict[str, Path]) -> None:
    pipe = load_pipeline("image-to-text", model=str(tiny_vit_gpt2), device="cpu", max_new_tokens=4)
    items = [str(photos["small"]), str(photos["flower"])]
    batched = pipe.predict(items)
    assert batched == [pipe(item) for item in items]
    assert all(isinstance(r["text"], str) for r in batched)
    with pytest.raises(AiforgeError) as info:
        pipe({"image": str(photos["small"]), "prompt": "a photo of"})
    assert info.value.code == "AF-INPUT-002" and "prompt" in info.value.message
