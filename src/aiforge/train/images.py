"""Image classification for the training loop: timm and transformers backbones.

Data: class folders or tables of image paths (:mod:`aiforge.train.media`). Images are decoded as
batches need them, so a large folder does not have to fit in memory.

Preprocessing starts from what inference uses. A timm backbone (``timm:NAME``, the packaged
EfficientNet-Lite0, a local timm export) brings its pretrained data config (size, mean, std,
interpolation, crop), and ``timm.data.create_transform`` builds the evaluation transform from it
and the training one with augmentation (random resized crop, horizontal flip, colour jitter). A
transformers backbone (``AutoModelForImageClassification``) is evaluated through its image
processor; its training transform is timm's, built from the processor's size, mean and std.
``data.image_size`` overrides the input size of either (small images, small CPUs).

Baseline: a linear probe, logistic regression on the pooled features of the frozen pretrained
backbone over the same split, so the report shows what fine-tuning added to the features.

Output: timm models are saved in timm's own Hugging Face layout (``config.json`` with
``architecture``, ``num_classes``, ``label_names`` and the ``pretrained_cfg`` used, plus
``model.safetensors``); transformers models with ``save_pretrained`` and their image processor.
Both load with ``aiforge run image-classification --model DIR``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aiforge.models import ModelRef, resolve
from aiforge.train.classifier import ClassifierTask
from aiforge.train.config import ScratchModel, TrainConfig
from aiforge.train.data import Dataset, Split
from aiforge.train.media import MediaEncoded

if TYPE_CHECKING:
    from aiforge.train.prepared import Prepared
    from aiforge.train.task import TrainingTask


@dataclass
class ClassifierOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor


class TimmClassifier(torch.nn.Module):
    """A timm model behind the loop's calling convention: ``model(pixel_values=..., labels=...)``
    returns ``.loss`` and ``.logits``, as transformers models do. ``training.freeze`` prefixes are
    timm's own parameter names (``conv_stem``, ``blocks.0``...)."""

    base_model_prefix = "model"

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model: Any = model  # a timm model: forward_features, forward_head, reset_classifier

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ClassifierOutput:
        logits = self.model(pixel_values)
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ClassifierOutput(loss, logits)

    def pooled(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The features the classifier head reads (after global pooling)."""
        return self.model.forward_head(self.model.forward_features(pixel_values), pre_logits=True)


class ImageClassificationTask(ClassifierTask[MediaEncoded]):
    """Image files in (decoded as batches need them), timm or transformers backbones, a linear probe
    as the baseline. Images have no length to truncate (``length_unit`` None, ``max_length`` 0)."""

    name = "image-classification"
    auto_class = "AutoModelForImageClassification"
    backbone_hint = "use a timm model (timm:NAME, packaged:efficientnet-lite0) or an image classifier"

    def __init__(self, config: TrainConfig, dataset: Dataset, ref: ModelRef) -> None:
        from aiforge.tasks.vision import is_timm_ref

        super().__init__(config, dataset, ref)
        self.spec = config.model if isinstance(config.model, ScratchModel) else None
        self.uses_timm = self.spec is not None or is_timm_ref(ref)
        self.processor: Any = None
        self.data_config: dict[str, Any] = {}
        self.train_transform: Any = None
        self.eval_transform: Any = None

    # ---- model ------------------------------------------------------------------------------------
    def load(self) -> torch.nn.Module:
        if not self.uses_timm:
            return super().load()  # load_processor + a transformers model with a new head
        if self.spec is not None:
            from aiforge.train.scratch import timm_data_config, timm_model

            self._set_transforms(timm_data_config(self.spec), eval_transform=None)
            return TimmClassifier(timm_model(self.spec, len(self.labels)))
        from aiforge.tasks.vision import load_timm_model

        model, data_config, _ = load_timm_model(self.ref)
        classifier = TimmClassifier(model)
        classifier.model.reset_classifier(len(self.labels))  # a fresh head, seeded like every other init
        size = self.config.data.image_size
        if size:
            data_config["input_size"] = (data_config["input_size"][0], size, size)
        self._set_transforms(data_config, eval_transform=None)
        return classifier

    def load_processor(self) -> None:
        from transformers import AutoImageProcessor

        self.processor = AutoImageProcessor.from_pretrained(self.location)
        size = self.config.data.image_size
        if size:
            self.processor.size = (
                {"shortest_edge": size}
                if "shortest_edge" in self.processor.size
                else {"height": size, "width": size}
            )
            if getattr(self.processor, "crop_size", None):
                self.processor.crop_size = {"height": size, "width": size}
        height, width = _processor_size(self.processor)
        data_config = {
            "input_size": (3, height, width),
            "mean": tuple(self.processor.image_mean),
            "std": tuple(self.processor.image_std),
        }
        processor = self.processor
        self._set_transforms(
            data_config, lambda img: processor(images=img, return_tensors="pt")["pixel_values"][0]
        )

    def _set_transforms(self, data_config: dict[str, Any], eval_transform: Any) -> None:
        from timm.data import create_transform

        self.data_config = data_config
        self.eval_transform = eval_transform or create_transform(**data_config, is_training=False)
        augment = self.config.data.augment
        if augment == "none":
            self.train_transform = self.eval_transform
        else:
            # ImageNet's crop-to-8 % and mirror flips destroy small or orientation-bound images
            light: dict[str, Any] = (
                {"scale": (0.5, 1.0), "hflip": 0.0, "color_jitter": None} if augment == "light" else {}
            )
            self.train_transform = create_transform(**data_config, is_training=True, **light)

    def save(self, model: torch.nn.Module, directory: Path) -> None:
        if not self.uses_timm:
            model.save_pretrained(directory)  # type: ignore[operator]
            self.processor.save_pretrained(directory)
            return
        from timm.models import save_for_hf

        from aiforge.train.scratch import timm_args

        save_for_hf(
            model.model,  # type: ignore[arg-type]
            str(directory),
            model_config={"label_names": list(self.labels)},
            model_args=timm_args(self.spec) if self.spec is not None else None,  # rebuilds the same sizes
            safe_serialization=True,
            data_config=dict(self.data_config),
        )

    def reload(self, directory: Path, device: str) -> torch.nn.Module:
        if not self.uses_timm:
            return super().reload(directory, device)
        from aiforge.tasks.vision import load_timm_model

        model, _, _ = load_timm_model(resolve(str(directory)))
        return TimmClassifier(model).to(device).eval()

    # ---- data -------------------------------------------------------------------------------------
    def input_lengths(self, split: Split) -> list[int]:
        return [1] * len(split)

    def resolve_max_length(self, lengths: list[int]) -> int:
        return 0

    def encode(self, split: Split) -> MediaEncoded:
        labels = [self.label_index[str(y)] for y in split.labels]
        return MediaEncoded(list(split.inputs), labels, [1] * len(split), augment=split.name == "train")

    def collate(self, encoded: MediaEncoded, indices: list[int], device: str) -> dict[str, torch.Tensor]:
        from aiforge.media import load_image

        transform = self.train_transform if encoded.augment else self.eval_transform
        pixels = torch.stack([transform(load_image(Path(encoded.items[i]))) for i in indices])
        labels = torch.tensor([encoded.labels[i] for i in indices], dtype=torch.long)
        return {"pixel_values": pixels.to(device), "labels": labels.to(device)}

    # ---- baseline ---------------------------------------------------------------------------------
    def fit_baseline(self, prep: Prepared[MediaEncoded]) -> dict[str, Any] | None:
        """Linear probe: logistic regression on the frozen pretrained backbone's pooled features.
        From scratch there are no pretrained features: an RBF SVC on the pixels (scikit-learn's
        digits recipe) is what the network must beat."""
        from aiforge.train.baseline import fit_feature_baseline

        batch = prep.config.training.batch_size * 2
        if self.spec is not None:
            from sklearn.svm import SVC

            return fit_feature_baseline(
                "pixels+SVC(rbf)", lambda encoded: self._pixels(encoded, batch), prep, self.labels, SVC()
            )
        return fit_feature_baseline(
            "linear-probe(frozen backbone)+logreg",
            lambda encoded: self._features(prep.model, encoded, prep.device, batch),
            prep,
            self.labels,
        )

    @torch.inference_mode()
    def _pixels(self, encoded: MediaEncoded, batch_size: int) -> np.ndarray:
        """Each image as the model's evaluation transform gives it, flattened."""
        plain = replace(encoded, augment=False)
        chunks = [
            self.collate(plain, list(range(start, min(start + batch_size, len(plain)))), "cpu")[
                "pixel_values"
            ]
            .flatten(1)
            .numpy()
            for start in range(0, len(plain), batch_size)
        ]
        return np.concatenate(chunks)

    @torch.inference_mode()
    def _features(
        self, model: torch.nn.Module, encoded: MediaEncoded, device: str, batch_size: int
    ) -> np.ndarray:
        plain = replace(encoded, augment=False)  # the probe sees the evaluation transform only
        was_training = model.training
        model.eval()
        chunks = []
        for start in range(0, len(plain), batch_size):
            pixels = self.collate(plain, list(range(start, min(start + batch_size, len(plain)))), device)
            chunks.append(_pooled(model, pixels["pixel_values"]).float().cpu().numpy())
        model.train(was_training)
        return np.concatenate(chunks)


def _pooled(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Pooled backbone features: timm's pre-logits; transformers' pooler output, else the mean of
    the last hidden state over its positions (ViT tokens, CNN feature-map cells)."""
    if isinstance(model, TimmClassifier):
        return model.pooled(pixel_values)
    base: Any = model.base_model
    out = base(pixel_values=pixel_values)
    pooled = getattr(out, "pooler_output", None)
    if pooled is not None:
        return pooled.flatten(1)
    hidden = out.last_hidden_state
    return hidden.mean((2, 3)) if hidden.ndim == 4 else hidden.mean(1)


def _processor_size(processor: Any) -> tuple[int, int]:
    """(height, width) an image processor feeds the model: its crop when it crops, else its size."""
    size = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    size = size or processor.size
    if "height" in size:
        return int(size["height"]), int(size["width"])
    edge = int(size.get("shortest_edge", 224))
    return edge, edge


if TYPE_CHECKING:

    def _implements_the_protocol(task: ImageClassificationTask) -> TrainingTask[MediaEncoded]:
        return task  # mypy checks the adapter against TrainingTask here
