"""GGUF models in and out of training: dequantise once to a trainable Hugging Face directory, and
write a tuned model back as GGUF for the llama.cpp runtime.

In: transformers reads GGUF itself (``from_pretrained(dir, gguf_file=...)``, through the ``gguf``
package), dequantising every tensor to fp32; that takes about 35 s for SmolLM2-135M on 2 cores, so
the result is saved once under ``$AIFORGE_HOME/gguf-hf/`` and reused, as :mod:`aiforge.e5convert`
does for e5.

Out: llama.cpp's own converter (``convert_hf_to_gguf.py``) is a script of the llama.cpp repository,
not part of any wheel installable offline. But a model tuned from a GGUF file has that file: its
metadata (architecture sizes, tokenizer, chat template) is still right, only the weights changed.
:func:`export_gguf` copies the metadata and writes the tuned weights under the same tensor names,
undoing what transformers' loader did to them (llama: the rotary permutation of q / k; gemma: the
``norm + 1`` convention). Matrices are written as Q8_0 (8.5 bits per weight: SmolLM2's file is
145 MB, and its greedy answers match the fp32 model's), vectors as F32. Architectures whose
loader transform is not known here are refused (AF-MODEL-003): serve the merged weights through
transformers instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.cache import cache_dir
from aiforge.errors import AiforgeError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the written directory changes, so caches are rebuilt
Q8_BLOCK = 32  # Q8_0 quantises rows in blocks of 32 weights
# Architectures whose GGUF <-> transformers tensor transforms export_gguf undoes (see _to_gguf).
EXPORTABLE = ("llama", "gemma2", "gemma3")


def dequantized_dir(gguf_file: Path) -> Path:
    """A Hugging Face model directory with ``gguf_file``'s weights in fp32, built on first use."""
    stat = gguf_file.stat()
    key = f"{gguf_file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{FORMAT_VERSION}"
    target = cache_dir() / "gguf-hf" / f"{gguf_file.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (target / "config.json").exists():
        return target
    import torch
    import transformers

    log.info("dequantising %s into %s (once)", gguf_file.name, target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
        )
    except (ValueError, KeyError, RuntimeError) as exc:
        raise AiforgeError(
            "AF-MODEL-003",
            f"'{gguf_file.name}' cannot be turned into a trainable model: {exc}",
            "use a GGUF file of an architecture transformers reads (llama, gemma, qwen, mistral...) "
            "or the model's Hugging Face directory",
        ) from None
    # transformers marks a GGUF-loaded model "quantized" and refuses to save it, though its weights
    # are plain fp32 tensors by now: drop the mark, and the saved directory loads as any other.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "aiforge-source.json").write_text(json.dumps({"gguf": str(gguf_file)}), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # a crash mid-conversion never leaves a half-written directory
    return target


def export_gguf(model: Any, source: Path, target: Path, chat_template: str | None = None) -> Path:
    """Write ``model``'s weights (a transformers causal LM) into a copy of ``source``'s GGUF layout.
    ``chat_template``: the template the model was tuned with, written where ``source`` has none (a base
    model), so llama.cpp renders prompts as training did."""
    import gguf

    reader = gguf.GGUFReader(source)
    arch = str(reader.fields["general.architecture"].contents())
    if arch not in EXPORTABLE:
        raise AiforgeError(
            "AF-MODEL-003",
            f"cannot write a {arch} model back to GGUF (known: {', '.join(EXPORTABLE)})",
            "serve the merged weights in the model directory through transformers; set sft.gguf=false",
        )
    config = model.config
    n_blocks = int(config.num_hidden_layers)
    names = gguf.get_tensor_name_map(_model_arch(gguf, arch), n_blocks)
    weights = {}
    for name, tensor in model.state_dict().items():
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is not None:
            weights[mapped] = tensor.detach().float().cpu().numpy()
    tmp = target.with_name(target.name + ".tmp")
    writer = gguf.GGUFWriter(tmp, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    if chat_template and "tokenizer.chat_template" not in reader.fields:
        writer.add_chat_template(chat_template)
    for tensor in reader.tensors:
        if tensor.name not in weights:
            raise AiforgeError(
                "AF-MODEL-003",
                f"the tuned model has no weight for GGUF tensor {tensor.name} of {source.name}",
                "export only models tuned from this GGUF file; set sft.gguf=false to skip the export",
            )
        data = _to_gguf(arch, tensor.name, weights[tensor.name], config)
        if data.ndim == 2 and data.shape[-1] % Q8_BLOCK == 0:
            quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(tensor.name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(tensor.name, data.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(target)
    return target


def _model_arch(gguf: Any, arch: str) -> Any:
    return next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == arch)


def _to_gguf(arch: str, name: str, weights: np.ndarray, config: Any) -> np.ndarray:
    """Undo transformers' GGUF loader transform of one tensor (modeling_gguf_pytorch_utils)."""
    if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
        heads = int(config.num_attention_heads)
        if ".attn_k." in name:
            heads = int(getattr(config, "num_key_value_heads", None) or heads)
        # llama.cpp's rotary layout: convert_hf_to_gguf.py's LlamaModel.permute
        return (
            weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape)
        )
    if arch in ("gemma2", "gemma3") and "norm.weight" in name:
        return weights + 1
    return weights
