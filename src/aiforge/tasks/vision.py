"""Vision tasks: classification, detection, segmentation and captioning (SAM is in sam.py).

Every task takes an ``image`` that :func:`aiforge.media.load_image` decodes (a file path,
a ``data:`` URI or a bare base64 string, or raw ``bytes`` from an HTTP upload); URLs are refused
because aiforge never fetches from the network on a user's behalf. Results are in the pixel
coordinates of the original
image: boxes are clamped to it, masks have its exact size.

Masks are returned as base64-encoded 1-bit PNGs (white = inside) so that a browser can show them
directly (``<img src="data:image/png;base64,...">``) and a script can read them back with
:func:`decode_mask`. PNG was chosen over RLE because it stays small for the ragged masks a poorly
trained model produces, where uncompressed RLE grows to one run per pixel.

Example::

    from aiforge.tasks import load_pipeline
    pipe = load_pipeline("image-classification", model="efficientnet-lite0", device="cpu", top_k=3)
    pipe("photo.jpg")["labels"]   # [{"label": "daisy", "score": 0.18}, ...]

Image classification runs on two backends: timm (``timm:NAME``, the packaged EfficientNet-Lite0,
or a local timm checkpoint) and transformers (any ``AutoModelForImageClassification``). A local
timm checkpoint is a weights file (``.pth``/``.pt``/``.bin``/``.safetensors``: a bare state dict, or
timm's training checkpoint with ``arch`` and ``state_dict``) or a folder holding one, described by a
``config.json`` in timm's export layout (``architecture``, ``num_classes``, ``pretrained_cfg``,
``label_names``) or by ``aiforge_timm.json`` with the same keys. Class names come from
``label_names``, else from ``labels.txt`` / ``class_map.txt`` (one name per line) or ``labels.json``
beside the weights, else from ImageNet when the head has ImageNet's size.
"""

from __future__ import annotations

import argparse
import json
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from aiforge.errors import AiforgeError
from aiforge.lazy import lazy_module
from aiforge.media import load_image
from aiforge.models import ModelRef, offline_error
from aiforge.tasks.base import TEMPERATURE_KEY, Pipeline, RuntimeParams, TaskParams, fitted_temperature
from aiforge.tasks.card import DemoView, Trainer, register_task
from aiforge.tasks.images import ImageInput, decode_mask, encode_mask, warm_image

if TYPE_CHECKING:
    import torch
    from PIL import Image
else:
    torch = lazy_module("torch")

__all__ = [
    "ImageClassification",
    "ImageSegmentation",
    "ImageToText",
    "ObjectDetection",
    "decode_mask",
    "encode_mask",
]

# ---- batching ---------------------------------------------------------------------------------------


@dataclass
class _Features:
    """One preprocessed image: tensors that batch together, plus per-item values that do not."""

    tensors: dict[str, torch.Tensor]
    size: tuple[int, int]  # original (height, width)
    extra: dict[str, Any] = field(default_factory=dict)

    def shape_key(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return tuple((name, tuple(t.shape)) for name, t in sorted(self.tensors.items()))

    def numel(self) -> int:
        return sum(t.numel() for t in self.tensors.values())


BatchFn = Callable[[dict[str, "torch.Tensor"], list[_Features]], Sequence[Any]]


def _run_grouped(features: list[_Features], fn: BatchFn, device: str) -> list[Any]:
    """Run ``fn`` once per group of same-shaped items; one result per item, in input order.

    Processors that keep the aspect ratio (DETR) give each photo its own shape. Grouping instead of
    padding keeps every model family correct (YOLOS, for one, has no pixel mask to ignore padding),
    and on CPU a batch costs about the same per image as single runs, so little speed is lost.
    """
    groups: dict[tuple, list[int]] = {}
    for i, feats in enumerate(features):
        groups.setdefault(feats.shape_key(), []).append(i)
    results: list[Any] = [None] * len(features)
    with torch.inference_mode():
        for indices in groups.values():
            members = [features[i] for i in indices]
            batch = {
                name: torch.cat([m.tensors[name] for m in members]).to(device) for name in members[0].tensors
            }
            outputs = fn(batch, members)
            for i, out in zip(indices, outputs, strict=True):
                results[i] = out
    return results


class _VisionPipeline(Pipeline):
    """Shared plumbing: decode the image, batch same-shaped tensors, size-sort for bucketing."""

    primary_field = "image"
    default_batch_size = 8

    def length(self, features: _Features) -> int:
        return features.numel()

    def _image(self, item: ImageInput) -> Image.Image:
        return load_image(item.image)


def _hf_load(auto_cls: Any, ref: ModelRef, device: str) -> Any:
    return auto_cls.from_pretrained(ref.location).to(device).eval()


def _hf_features(processor: Any, image: Image.Image, **kwargs: Any) -> _Features:
    encoded = processor(images=image, return_tensors="pt", **kwargs)
    tensors = {k: v for k, v in encoded.items() if isinstance(v, torch.Tensor)}
    return _Features(tensors, (image.height, image.width))


# ---- image classification ---------------------------------------------------------------------------


class ClassificationParams(RuntimeParams):
    top_k: int = Field(5, ge=1, description="how many labels to return, best first")


class LabelScore(BaseModel):
    label: str
    score: float


class ClassificationOutput(BaseModel):
    labels: list[LabelScore] = Field(description="the top_k labels sorted by score, highest first")


@dataclass
class _Classifier:
    """What both backends reduce to: a transform, a logits function, class names, an activation."""

    transform: Callable[[Image.Image], dict[str, torch.Tensor]]
    logits: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    labels: list[str]
    multi_label: bool = False
    model: Any = None  # the timm module behind ``logits`` (ONNX Runtime exports it: onnxrt.py)
    temperature: float = 1.0


@register_task(
    "image-classification",
    summary="ImageNet labels for an image (timm or transformers)",
    hub_default="timm:efficientnet_lite0",
    offline_default="efficientnet-lite0",
    request_params=("top_k",),
    warmup=warm_image,
    demo=DemoView("image", "label"),
    trainer=Trainer(
        "aiforge.train.images:ImageClassificationTask",
        "image",
        ("timm:efficientnet_lite0", "packaged:efficientnet-lite0"),
    ),
    requires=("torch",),  # timm or transformers, whichever the model needs
    architectures=("ForImageClassification",),
    formats=("timm",),
)
class ImageClassification(_VisionPipeline):
    """Label an image: timm models (``timm:NAME``, packaged ``efficientnet-lite0``, local checkpoints)
    or transformers ``AutoModelForImageClassification``. Scores are softmax probabilities (sigmoid
    for multi-label models)::

        pipe = load_pipeline("image-classification", model="efficientnet-lite0", device="cpu")
        pipe("flower.jpg")["labels"][0]   # {"label": "daisy", "score": 0.18}
    """

    Input = ImageInput
    Output = ClassificationOutput
    Params = ClassificationParams
    backend = "timm | transformers"

    def setup(self) -> None:
        use_timm = is_timm_ref(self.model_ref)
        self._clf = _load_timm(self.model_ref, self.device) if use_timm else self._load_hf()
        self.backend = "timm" if use_timm else "transformers"  # type: ignore[misc]  # the one running

    def _load_hf(self) -> _Classifier:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        processor = AutoImageProcessor.from_pretrained(self.model_ref.location)
        model = _hf_load(AutoModelForImageClassification, self.model_ref, self.device)
        config = model.config
        return _Classifier(
            transform=lambda img: _hf_features(processor, img).tensors,
            logits=lambda batch: model(**batch).logits / fitted_temperature(config),
            labels=[config.id2label[i] for i in range(config.num_labels)],
            multi_label=config.problem_type == "multi_label_classification" or config.num_labels == 1,
        )

    def preprocess(self, item: ImageInput) -> _Features:
        image = self._image(item)
        return _Features(self._clf.transform(image), (image.height, image.width))

    def forward(self, batch: list[_Features]) -> list[torch.Tensor]:
        def scores(tensors: dict[str, torch.Tensor], _: list[_Features]) -> list[torch.Tensor]:
            logits = self._clf.logits(tensors).float()
            probs = logits.sigmoid() if self._clf.multi_label else logits.softmax(-1)
            return list(probs.cpu())

        return _run_grouped(batch, scores, self.device)

    def postprocess(self, raw: torch.Tensor, item: ImageInput) -> dict[str, Any]:
        values, indices = raw.topk(min(self.params.top_k, raw.numel()))
        return {
            "labels": [
                {"label": self._clf.labels[int(i)], "score": float(v)}
                for v, i in zip(values, indices, strict=True)
            ]
        }


# ---- timm backend -----------------------------------------------------------------------------------

# Preprocessing of packaged weights whose checkpoint carries no pretrained_cfg: these weights were
# trained with inputs scaled to [-1, 1], not with timm's ImageNet mean/std for the same architecture.
_PACKAGED_TIMM_CFG: dict[str, dict[str, Any]] = {
    "efficientnet-lite0": {
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "input_size": (3, 224, 224),
        "interpolation": "bicubic",
        "crop_pct": 0.875,
        "crop_mode": "center",
    },
}
_DATA_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "checkpoint.pth")
_META_FILES = ("aiforge_timm.json", "config.json", "pretrained_cfg.json")
_LABEL_FILES = ("labels.txt", "class_map.txt", "labels.json")


def is_timm_ref(ref: ModelRef) -> bool:
    """timm refs, plus local folders transformers did not write: timm's export layout (a config.json
    with ``architecture`` and no ``model_type``) or a folder holding only a ``.pth`` checkpoint."""
    folder = Path(ref.location)
    if ref.format == "timm":
        return True
    if ref.kind not in ("local", "registry") or not folder.is_dir():
        return False
    if (folder / "config.json").is_file():
        meta = json.loads((folder / "config.json").read_text())
        return "architecture" in meta and "model_type" not in meta
    return any((folder / name).is_file() for name in _WEIGHT_FILES if name.endswith(".pth"))


def _load_timm(ref: ModelRef, device: str) -> _Classifier:
    from timm.data import create_transform

    model, data_config, labels = load_timm_model(ref)
    transform = create_transform(**data_config, is_training=False)
    model = model.to(device).eval()
    temperature = _timm_temperature(ref)
    return _Classifier(
        transform=lambda img: {"pixel_values": transform(img).unsqueeze(0)},
        logits=lambda batch: model(batch["pixel_values"]) / temperature,
        labels=labels,
        model=model,
        temperature=temperature,
    )


def _timm_temperature(ref: ModelRef) -> float:
    """The calibration temperature `aiforge train` wrote into a local timm export's config.json."""
    config = Path(ref.location) / "config.json"
    if ref.kind == "timm" or not config.is_file():
        return 1.0
    return float(json.loads(config.read_text(encoding="utf-8")).get(TEMPERATURE_KEY) or 1.0)


def load_timm_model(ref: ModelRef) -> tuple[torch.nn.Module, dict[str, Any], list[str]]:
    """(model, preprocessing config, class names) of a timm reference: ``timm:NAME`` (pretrained
    weights through timm's hub cache), a packaged checkpoint or a local one. Fine-tuning
    (:mod:`aiforge.train.images`) starts from the same model and preprocessing inference uses."""
    import timm
    from timm.data import resolve_model_data_config

    if ref.kind == "timm":
        try:
            model = timm.create_model(ref.location, pretrained=True)
        except OSError as exc:  # weights neither cached nor downloadable
            err = offline_error(f"timm:{ref.location}", "image-classification")
            err.message = f"could not get timm weights for '{ref.location}': {exc}"
            raise err from exc
        meta: dict[str, Any] = {}
        weights = None
    else:
        model, meta, weights = _timm_from_checkpoint(ref)
    data_config = resolve_model_data_config(model)
    data_config.update({k: v for k, v in _pretrained_cfg(meta).items() if k in _DATA_KEYS})
    return model, data_config, _timm_labels(model, meta, weights)


def _timm_from_checkpoint(ref: ModelRef) -> tuple[torch.nn.Module, dict[str, Any], Path]:
    """Build the architecture a packaged or local checkpoint names and load its weights."""
    import timm

    if ref.packaged is not None:
        weights, meta = (
            Path(ref.location),
            {
                "architecture": ref.packaged.upstream.removeprefix("timm:"),
                "pretrained_cfg": _PACKAGED_TIMM_CFG.get(ref.packaged.name, {}),
            },
        )
    else:
        weights, meta = _local_timm_files(Path(ref.location))
    checkpoint = _read_weights(weights)
    arch = meta.get("architecture") or checkpoint.get("arch")
    if not arch:
        raise AiforgeError(
            "AF-MODEL-003",
            f"cannot tell which timm architecture the weights '{weights}' belong to",
            'put an aiforge_timm.json beside them: {"architecture": "resnet18"} (a timm model name)',
        )
    state = _state_dict(checkpoint)
    model = timm.create_model(arch, pretrained=False, **meta.get("model_args", {}))
    num_classes = _head_size(model, state)
    if num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    _load_state(model, state, weights)
    return model, meta, weights


def _local_timm_files(path: Path) -> tuple[Path, dict[str, Any]]:
    folder = path if path.is_dir() else path.parent
    candidates = [path] if path.is_file() else [folder / name for name in _WEIGHT_FILES]
    weights = next((c for c in candidates if c.is_file()), None)
    if weights is None:
        raise AiforgeError(
            "AF-MODEL-003",
            f"no timm weights found in '{path}'",
            f"save them as one of: {', '.join(_WEIGHT_FILES)}",
        )
    meta_file = next((folder / n for n in _META_FILES if (folder / n).is_file()), None)
    return weights, json.loads(meta_file.read_text()) if meta_file else {}


def _read_weights(path: Path) -> dict[str, Any]:
    """Tensors only (``weights_only``): a checkpoint must not run code; timm's training args are allowed."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise AiforgeError(
            "AF-MODEL-003",
            f"'{path}' holds Python objects besides tensors, which aiforge does not unpickle: {exc}",
            "re-save the weights alone: torch.save(model.state_dict(), 'model.pth')",
        ) from None


def _state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A bare state dict, or the one inside a training checkpoint (timm's train.py, Lightning, ...)."""
    for key in ("state_dict", "model"):  # timm's own order; EMA weights only when asked for
        if isinstance(checkpoint.get(key), dict):
            return {k.removeprefix("module."): v for k, v in checkpoint[key].items()}
    return checkpoint


def _head_size(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Classes in the checkpoint's head: by the classifier's name, else by its position."""
    key = f"{model.pretrained_cfg.get('classifier', 'classifier')}.weight"
    if key in state:
        return state[key].shape[0]
    names = list(model.state_dict())
    if key in names and len(names) == len(state):
        return list(state.values())[names.index(key)].shape[0]
    return model.num_classes


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load by name; when every name differs but the tensors line up, by position.

    Checkpoints exported from another EfficientNet implementation (the packaged Lite0 uses
    ``_conv_stem``/``_bn0``/``_fc``) hold the same tensors in the same order under other names.
    """
    own = model.state_dict()
    if set(own) == set(state):
        model.load_state_dict(state)
        return
    same_shapes = len(own) == len(state) and all(
        a.shape == b.shape for a, b in zip(own.values(), state.values(), strict=True)
    )
    if same_shapes:
        model.load_state_dict(dict(zip(own, state.values(), strict=True)))
        return
    missing = sorted(set(own) - set(state))[:3]
    raise ValueError(
        f"weights in '{source}' do not fit {type(model).__name__}: {len(state)} tensors for "
        f"{len(own)}, e.g. missing {missing}"
    )


def _pretrained_cfg(meta: dict[str, Any]) -> dict[str, Any]:
    """timm's export nests the config under ``pretrained_cfg``; its legacy format is flat."""
    return meta.get("pretrained_cfg", meta)


def _timm_labels(model: torch.nn.Module, meta: dict[str, Any], weights: Path | None) -> list[str]:
    from timm.data import ImageNetInfo, infer_imagenet_subset

    n = model.num_classes
    names = meta.get("label_names") or _pretrained_cfg(meta).get("label_names")
    if names is None and weights is not None:
        names = _read_label_file(weights.parent)
    if isinstance(names, dict):
        names = [names.get(str(i), names.get(i, f"LABEL_{i}")) for i in range(n)]
    if names is not None and len(names) == n:
        return [str(x) for x in names]
    subset = infer_imagenet_subset(model)
    if subset:
        info = ImageNetInfo(subset)
        return [info.index_to_description(i) for i in range(n)]
    return [f"LABEL_{i}" for i in range(n)]


def _read_label_file(folder: Path) -> list[str] | dict[str, str] | None:
    for name in _LABEL_FILES:
        path = folder / name
        if path.is_file():
            if path.suffix == ".json":
                return json.loads(path.read_text())
            return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return None


# ---- object detection -------------------------------------------------------------------------------


class DetectionParams(TaskParams):
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="drop boxes scoring below this")


class Box(BaseModel):
    xmin: float
    ymin: float
    xmax: float
    ymax: float


class Detection(BaseModel):
    label: str
    score: float
    box: Box = Field(description="pixel coordinates in the original image, clamped to it")


class DetectionOutput(BaseModel):
    objects: list[Detection] = Field(description="detections sorted by score, highest first")


@register_task(
    "object-detection",
    summary="boxes with labels and scores",
    hub_default="facebook/detr-resnet-50",
    offline_default="mtcnn-faces",  # faces only (tasks/faces.py): no package ships a general detector
    request_params=("threshold",),
    warmup=warm_image,
    demo=DemoView("image", "boxes"),
    architectures=("ForObjectDetection",),
)
class ObjectDetection(_VisionPipeline):
    """Boxes with labels and scores from an ``AutoModelForObjectDetection`` (DETR, YOLOS, RT-DETR...)."""

    Input = ImageInput
    Output = DetectionOutput
    Params = DetectionParams

    def setup(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForObjectDetection

        self._processor = AutoImageProcessor.from_pretrained(self.model_ref.location)
        self._model = _hf_load(AutoModelForObjectDetection, self.model_ref, self.device)

    def preprocess(self, item: ImageInput) -> _Features:
        return _hf_features(self._processor, self._image(item))

    def forward(self, batch: list[_Features]) -> list[dict[str, torch.Tensor]]:
        def detect(tensors: dict[str, torch.Tensor], members: list[_Features]) -> list[dict[str, Any]]:
            outputs = self._model(**tensors)
            sizes = [m.size for m in members]
            results = self._processor.post_process_object_detection(
                outputs, threshold=self.params.threshold, target_sizes=sizes
            )
            return [_clamped(r, size) for r, size in zip(results, sizes, strict=True)]

        return _run_grouped(batch, detect, self.device)

    def postprocess(self, raw: dict[str, torch.Tensor], item: ImageInput) -> dict[str, Any]:
        id2label = self._model.config.id2label
        objects = [
            {
                "label": id2label.get(int(label), f"LABEL_{int(label)}"),
                "score": float(score),
                "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), box.tolist(), strict=True)),
            }
            for score, label, box in zip(raw["scores"], raw["labels"], raw["boxes"], strict=True)
        ]
        objects.sort(key=lambda o: o["score"], reverse=True)
        return {"objects": objects}


def _clamped(result: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Clip boxes to the image: DETR-style heads predict centre/size, so edges can fall outside."""
    height, width = size
    boxes = result["boxes"].float().cpu().clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return {"scores": result["scores"].cpu(), "labels": result["labels"].cpu(), "boxes": boxes}


# ---- semantic segmentation --------------------------------------------------------------------------

# Upsampled logits cost labels x pixels floats; above this budget the label map is computed at a
# reduced size and enlarged with nearest-neighbour (the logits are 1/4 of the model input anyway).
_SEGMENTATION_BUDGET = 2**25


class Segment(BaseModel):
    label: str
    score: float = Field(description="mean probability of the label over the mask's pixels")
    area: int = Field(description="pixels in the mask")
    mask: str = Field(description="base64 1-bit PNG, the original image's size, white = this label")


class SegmentationOutput(BaseModel):
    width: int
    height: int
    segments: list[Segment] = Field(description="one per label present, largest area first")


@register_task(
    "image-segmentation",
    summary="per-class masks",
    hub_default="nvidia/segformer-b0-finetuned-ade-512-512",
    warmup=warm_image,
    demo=DemoView("image", "masks"),
    architectures=("ForSemanticSegmentation",),
)
class ImageSegmentation(_VisionPipeline):
    """Semantic segmentation (SegFormer, UperNet, DPT...): one mask per label found in the image."""

    Input = ImageInput
    Output = SegmentationOutput

    def setup(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

        self._processor = AutoImageProcessor.from_pretrained(self.model_ref.location)
        self._model = _hf_load(AutoModelForSemanticSegmentation, self.model_ref, self.device)

    def preprocess(self, item: ImageInput) -> _Features:
        return _hf_features(self._processor, self._image(item))

    def forward(self, batch: list[_Features]) -> list[tuple[torch.Tensor, tuple[int, int]]]:
        def segment(tensors: dict[str, torch.Tensor], members: list[_Features]) -> list[Any]:
            logits = self._model(**tensors).logits.float().cpu()
            return [(row, m.size) for row, m in zip(logits, members, strict=True)]

        return _run_grouped(batch, segment, self.device)

    def postprocess(self, raw: tuple[torch.Tensor, tuple[int, int]], item: ImageInput) -> dict[str, Any]:
        logits, (height, width) = raw
        probs, labels = _label_map(logits, (height, width))
        id2label = self._model.config.id2label
        segments = []
        for label in labels.unique().tolist():
            mask = labels == label
            name = id2label.get(label, f"LABEL_{label}")
            segments.append(
                {
                    "label": name,
                    "score": float(probs[mask].mean()),
                    "area": int(mask.sum()),
                    "mask": encode_mask(mask),
                }
            )
        segments.sort(key=lambda s: s["area"], reverse=True)
        return {"width": width, "height": height, "segments": segments}


def _label_map(logits: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, h, w) logits -> per-pixel (max probability, label) at ``size`` (height, width)."""
    import torch.nn.functional as F

    height, width = size
    scale = min(1.0, (_SEGMENTATION_BUDGET / (logits.shape[0] * height * width)) ** 0.5)
    work = (max(1, round(height * scale)), max(1, round(width * scale)))
    upsampled = F.interpolate(logits[None], size=work, mode="bilinear", align_corners=False)[0]
    probs, labels = upsampled.softmax(0).max(0)
    if work != size:
        probs = F.interpolate(probs[None, None], size=size, mode="nearest")[0, 0]
        labels = F.interpolate(labels[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return probs, labels


# ---- image to text ----------------------------------------------------------------------------------


class CaptionInput(ImageInput):
    prompt: str | None = Field(None, description="text the caption starts with (conditional captioning)")


class CaptionParams(TaskParams):
    max_new_tokens: int = Field(30, ge=1, le=512, description="upper bound on generated tokens")


class CaptionOutput(BaseModel):
    text: str
    truncated: bool = Field(description="stopped at max_new_tokens, before the model ended the text")


@register_task(
    "image-to-text",
    summary="caption an image",
    hub_default="Salesforce/blip-image-captioning-base",
    aliases=("captioning",),
    request_params=("max_new_tokens",),
    warmup=warm_image,
    demo=DemoView("image", "text"),
)
class ImageToText(_VisionPipeline):
    """Caption an image with an image-to-text generator: BLIP, GIT, or a VisionEncoderDecoder
    (ViT + GPT-2...) saved with its image processor and tokenizer.

    Chat-style VLMs that need image tokens in a chat template are not driven by this task.
    """

    Input = CaptionInput
    Output = CaptionOutput
    Params = CaptionParams
    default_batch_size = 4

    def setup(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

        processor = AutoProcessor.from_pretrained(self.model_ref.location)
        if hasattr(processor, "image_processor"):
            self._images, self._tokenizer, self._joint = processor, processor, True
        else:  # VisionEncoderDecoder folders hold an image processor and a tokenizer, no joint processor
            self._images = AutoImageProcessor.from_pretrained(self.model_ref.location)
            self._tokenizer, self._joint = AutoTokenizer.from_pretrained(self.model_ref.location), False
        self._model = _hf_load(AutoModelForImageTextToText, self.model_ref, self.device)
        gen = self._model.generation_config
        eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
        self._end_ids = {t for t in [*eos, gen.pad_token_id] if t is not None}

    def preprocess(self, item: CaptionInput) -> _Features:
        image = self._image(item)
        if item.prompt is None:
            return _hf_features(self._images, image)
        if not self._joint:
            raise AiforgeError(
                "AF-INPUT-002",
                f"model '{self.model_ref.raw}' does not take a 'prompt'",
                "omit 'prompt', or use a captioner with a joint processor (BLIP, GIT)",
            )
        return _hf_features(self._images, image, text=item.prompt)

    def forward(self, batch: list[_Features]) -> list[tuple[str, bool]]:
        max_new = self.params.max_new_tokens

        def generate(tensors: dict[str, torch.Tensor], _: list[_Features]) -> list[tuple[str, bool]]:
            sequences = self._model.generate(**tensors, max_new_tokens=max_new)
            texts = self._tokenizer.batch_decode(sequences, skip_special_tokens=True)
            # generation only stops early once every row has ended (eos, then padding), so a row whose
            # last token is neither was cut by max_new_tokens
            cut = [int(row[-1]) not in self._end_ids for row in sequences]
            return [(text.strip(), c) for text, c in zip(texts, cut, strict=True)]

        return _run_grouped(batch, generate, self.device)

    def postprocess(self, raw: tuple[str, bool], item: CaptionInput) -> dict[str, Any]:
        text, truncated = raw
        return {"text": text, "truncated": truncated}
