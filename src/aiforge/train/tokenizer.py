"""Tokenizers trained on the run's own corpus (``model.tokenizer`` of a from-scratch model).

Built with the ``tokenizers`` library and wrapped as a transformers ``PreTrainedTokenizerFast``, so
the model directory loads with ``AutoTokenizer`` like any other (``aiforge run``, ``serve``, the
exports). Three kinds:

* ``char``: one token per character (nanoGPT's shakespeare_char recipe); the vocabulary is every
  character of the training text seen ``min_frequency`` times, the rest is ``<unk>``;
* ``bpe``: byte-level BPE (GPT-2's scheme): no ``<unk>`` ever, any script;
* ``unigram``: a Unigram LM (SentencePiece's scheme) over whitespace-marked pieces.

Normalisation: NFKC by default (full-width forms, compatibility jamo and ligatures folded, so a
review typed on a phone and one typed on a PC share characters). ``jamo: true`` also splits Hangul
syllables into their conjoining jamo (NFKD): 11,172 possible syllables become ~70 symbols, at
~2.4x the sequence length; :func:`compose` puts generated jamo back together (NFC).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any

from aiforge.train.config import TokenizerConfig

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS]


def normalizer_for(cfg: TokenizerConfig) -> Any:
    from tokenizers import normalizers

    steps: list[Any] = []
    if cfg.normalize == "nfkc":
        steps.append(normalizers.NFKC())
    if cfg.jamo:
        steps.append(normalizers.NFKD())  # decomposes Hangul syllables into conjoining jamo
    return normalizers.Sequence(steps)


def train_tokenizer(
    texts: list[str], cfg: TokenizerConfig, max_length: int, *, classifier: bool = False
) -> Any:
    """A ``PreTrainedTokenizerFast`` learned from ``texts``. ``classifier``: wrap each input as
    ``<s> text </s>`` (BERT-style encoders read the first position)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizer_for(cfg)
    if cfg.kind == "char":
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(normalizer.normalize_str(text))
        chars = sorted(c for c, n in counts.items() if n >= cfg.min_frequency)
        vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + chars)}
        tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tokenizer.decoder = decoders.Fuse()
    elif cfg.kind == "bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer: Any = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=cfg.vocab_size, special_tokens=SPECIAL_TOKENS, unk_token=UNK, show_progress=False
        )
    tokenizer.normalizer = normalizer
    if cfg.kind != "char":
        tokenizer.train_from_iterator(_batches(texts), trainer=trainer, length=len(texts))
    if classifier:
        bos, eos = tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A {EOS}", special_tokens=[(BOS, bos), (EOS, eos)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
    )


def _batches(texts: list[str], size: int = 1000) -> Iterable[list[str]]:
    for start in range(0, len(texts), size):
        yield texts[start : start + size]


def compose(text: str) -> str:
    """Generated conjoining jamo back into syllables (a no-op on text without them)."""
    return unicodedata.normalize("NFC", text)
