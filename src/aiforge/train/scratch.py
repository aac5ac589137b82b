"""Models built from a config with random weights (``model: {init: scratch, architecture: ...}``).

Text models are transformers configs (``GPT2Config``, ``LlamaConfig``, ``BertConfig``) instantiated
without a checkpoint; image models are timm models created with ``pretrained=False``. Either way the
saved result is an ordinary Hugging Face (or timm) directory, so ``aiforge run``, ``serve``, the
registry and the exports load it like any fine-tuned model. The sizes map one to one onto nanoGPT's
(``layers`` = n_layer, ``heads`` = n_head, ``hidden`` = n_embd, ``context`` = block_size).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiforge.models import ModelRef
from aiforge.train.config import ScratchModel

if TYPE_CHECKING:
    import torch

# timm names the scratch vision models start from; every size comes from the config.
TIMM_BASES = {"vit": "vit_tiny_patch16_224", "resnet": "resnet18"}


def scratch_ref(spec: ScratchModel) -> ModelRef:
    """The ``ModelRef`` adapters receive for a from-scratch model: nothing to download or read."""
    return ModelRef(raw=spec.describe(), kind="scratch", location="", format="scratch")


def text_model(spec: ScratchModel, tokenizer: Any, labels: list[str] | None = None) -> torch.nn.Module:
    """A randomly initialised transformers model: a causal LM (gpt2, llama) or, given ``labels``, a
    sequence classifier (bert). Special-token ids come from ``tokenizer``."""
    import transformers

    ids = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    intermediate = spec.intermediate or 4 * spec.hidden
    config: Any
    if spec.architecture == "gpt2":
        config = transformers.GPT2Config(
            n_positions=spec.context,
            n_embd=spec.hidden,
            n_layer=spec.layers,
            n_head=spec.heads,
            n_inner=intermediate,
            resid_pdrop=spec.dropout,
            embd_pdrop=spec.dropout,
            attn_pdrop=spec.dropout,
            **ids,
        )
    elif spec.architecture == "llama":
        config = transformers.LlamaConfig(
            hidden_size=spec.hidden,
            intermediate_size=intermediate,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.heads,
            max_position_embeddings=spec.context,
            attention_dropout=spec.dropout,
            tie_word_embeddings=True,
            **ids,
        )
    else:
        labels = labels or []
        config = transformers.BertConfig(  # type: ignore[call-arg]  # num_labels etc.: PretrainedConfig kwargs
            hidden_size=spec.hidden,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            intermediate_size=intermediate,
            max_position_embeddings=spec.context,
            hidden_dropout_prob=spec.dropout,
            attention_probs_dropout_prob=spec.dropout,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            **ids,
        )
    for key, value in spec.options.items():
        setattr(config, key, value)
    auto = (
        "AutoModelForCausalLM"
        if spec.architecture in ("gpt2", "llama")
        else "AutoModelForSequenceClassification"
    )
    model: torch.nn.Module = getattr(transformers, auto).from_config(config)
    return model


def timm_args(spec: ScratchModel) -> dict[str, Any]:
    """The keyword arguments of ``timm.create_model`` (saved as ``model_args``, so reloading the
    directory rebuilds the same architecture)."""
    if spec.architecture == "vit":
        args: dict[str, Any] = {
            "img_size": spec.image_size,
            "patch_size": spec.patch_size,
            "embed_dim": spec.hidden,
            "depth": spec.layers,
            "num_heads": spec.heads,
            "mlp_ratio": (spec.intermediate or 4 * spec.hidden) / spec.hidden,
            "drop_rate": spec.dropout,
        }
    else:
        widths = [spec.hidden * 2**stage for stage in range(4)]
        args = {
            "layers": [spec.layers] * 4,
            "channels": widths,
            "stem_width": spec.hidden,
            "drop_rate": spec.dropout,
        }
    return {**args, **spec.options}


def timm_model(spec: ScratchModel, num_classes: int) -> torch.nn.Module:
    import timm

    model: torch.nn.Module = timm.create_model(
        TIMM_BASES[spec.architecture], pretrained=False, num_classes=num_classes, **timm_args(spec)
    )
    return model


def timm_data_config(spec: ScratchModel) -> dict[str, Any]:
    """Preprocessing for images a scratch model sees: resize the whole image (no crop), scale to
    [-1, 1]: nothing about ImageNet's statistics applies to weights that never saw ImageNet."""
    return {
        "input_size": (3, spec.image_size, spec.image_size),
        "interpolation": "bilinear",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "crop_pct": 1.0,
        "crop_mode": "center",
    }
