"""Sequence packing: several short texts share one row of an encoder batch, so no padding is computed.

Why: on a CPU every padded token costs as much as a real one, and a batch padded to its longest
text wastes most of its work when lengths vary (NSMC reviews: 10 to 200 tokens). Sorting by length
helps only when many texts are at hand (``pipe.predict`` sorts 512-item windows; a server sees only
the requests in flight). Packing needs neither: texts are laid end to end into rows of about
``ROW_TOKENS`` tokens (first-fit decreasing), each text keeps its own position ids, and a
block-diagonal attention mask stops a text from attending to its neighbours, so every text gets
exactly the hidden states it gets alone (checked against the padded path when a model loads).
Measured on 2 CPU cores, MiniLM-L6 + a classification head, 1,024 NSMC sentences: padded batches
of 32 sorted in 512-item windows 102 items/s; packed, unsorted batches of 32 or 64, 143 items/s.

Rows are short on purpose: attention inside a row costs ``row_tokens**2``, so rows of 128 tokens
spend ~5 % on masked-out pairs, rows of 512 far more (measured: 128 beat 64 and 256).

Only the encoder's own outputs are packed; what sits on top must read per-text states:

* ``token`` heads (``*ForTokenClassification``) are per token: the whole model runs on the rows.
* ``sequence`` heads read each text's first token: the base model runs on the rows, the first
  tokens are gathered, and the head runs on them (BERT: pooler + classifier; RoBERTa, ELECTRA and
  similar: their classification head).

A model whose packed output does not match its padded output (another head layout, an
architecture whose embeddings ignore ``position_ids``) is left on the padded path.

The packed forward is traced (TorchScript) once at load: the traced graph runs whole in C++ with the
GIL released, so a server's event loop does not stall it between ops (measured +3-4 % served
throughput on 2 cores; offline the same speed). The traced graph is what the probe check verifies.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

log = logging.getLogger("aiforge.tasks")

ROW_TOKENS = 128
# Keys of the tokenizer output that travel into the packed rows (the mask is rebuilt, not packed).
PACKED_KEYS = ("input_ids", "token_type_ids")
# Packed logits may differ from padded ones by float reordering only.
TOLERANCE = 1e-3

Head = Literal["sequence", "token"]


def plan_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Item indices per row: first-fit decreasing into rows of at most ``capacity`` tokens (an item
    longer than ``capacity`` gets a row of its own)."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, space in enumerate(free):
            if lengths[i] <= space:
                rows[r].append(i)
                free[r] -= lengths[i]
                break
        else:
            rows.append([i])
            free.append(capacity - lengths[i])
    return rows


@dataclass
class PackedBatch:
    inputs: dict[str, torch.Tensor]  # the model's keyword arguments
    spans: list[tuple[int, int, int]]  # per item, in batch order: (row, first column, length)


def pack(
    batch: list[dict[str, Any]], pad_id: int, position_offset: int, dtype: torch.dtype, row_tokens: int
) -> PackedBatch:
    """Lay the batch's token lists into rows, with per-text position ids and a block-diagonal mask."""
    lengths = [len(f["input_ids"]) for f in batch]
    rows = plan_rows(lengths, max(row_tokens, max(lengths)))
    width = max(sum(lengths[i] for i in row) for row in rows)
    keys = [k for k in PACKED_KEYS if k in batch[0]]
    arrays = {k: np.full((len(rows), width), pad_id if k == "input_ids" else 0, np.int64) for k in keys}
    positions = np.zeros((len(rows), width), np.int64)
    segment = np.full((len(rows), width), -1, np.int64)  # which text of the row a column holds
    spans: list[tuple[int, int, int]] = [(0, 0, 0)] * len(batch)
    for r, row in enumerate(rows):
        column = 0
        for k, i in enumerate(row):
            end = column + lengths[i]
            for key in keys:
                arrays[key][r, column:end] = batch[i][key]
            positions[r, column:end] = np.arange(lengths[i]) + position_offset
            segment[r, column:end] = k
            spans[i] = (r, column, lengths[i])
            column = end
    seg = torch.from_numpy(segment)
    allowed = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] >= 0)
    allowed |= torch.eye(width, dtype=torch.bool)  # padding columns see themselves: no all-masked row
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    inputs = {k: torch.from_numpy(v) for k, v in arrays.items()}
    inputs["position_ids"] = torch.from_numpy(positions)
    inputs["attention_mask"] = mask[:, None]  # (rows, 1, width, width): transformers takes it as is
    return PackedBatch(inputs, spans)


class PackedForward(torch.nn.Module):
    """The model over packed rows, from positional tensors (what tracing records): per-token logits
    for a token head; for a sequence head, the logits of the first tokens at (``rows``, ``firsts``)."""

    def __init__(self, model: Any, head: Head, keys: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.keys = keys

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        inputs = dict(zip(self.keys, args, strict=False))
        if self.head == "token":
            return self.model(**inputs).logits
        rows, firsts = args[len(self.keys) :]
        base = self.model.base_model
        hidden = base(**inputs).last_hidden_state
        firsts_only = hidden[rows, firsts][:, None]  # (items, 1, hidden): a batch of one-token texts
        pooler = getattr(base, "pooler", None)
        if pooler is not None:  # BERT: pooler (dense + tanh over the first token), then the classifier
            return self.model.classifier(pooler(firsts_only))
        return self.model.classifier(firsts_only)  # RoBERTa-style heads read [:, 0] themselves


class Packer:
    """Runs one loaded ``AutoModelFor*`` on packed rows and hands back per-item logits."""

    def __init__(
        self, model: Any, head: Head, pad_id: int, keys: tuple[str, ...], row_tokens: int = ROW_TOKENS
    ) -> None:
        self.head = head
        self.pad_id = pad_id
        self.row_tokens = row_tokens
        embeddings: Any = getattr(model.base_model, "embeddings", None)
        # RoBERTa-style embeddings number positions from padding_idx + 1
        roberta_style = hasattr(embeddings, "create_position_ids_from_input_ids")
        self.position_offset = embeddings.padding_idx + 1 if roberta_style else 0
        self.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device
        self.keys = (*[k for k in PACKED_KEYS if k in keys], "position_ids", "attention_mask")
        self.forward: torch.nn.Module = PackedForward(model, head, self.keys)

    def logits(self, batch: list[dict[str, Any]]) -> list[np.ndarray]:
        packed = pack(batch, self.pad_id, self.position_offset, self.dtype, self.row_tokens)
        with torch.inference_mode():
            out = self.forward(*self._args(packed)).float().cpu().numpy()
        if self.head == "token":
            return [out[r, c : c + n] for r, c, n in packed.spans]
        return list(out)

    def _args(self, packed: PackedBatch) -> list[torch.Tensor]:
        args = [packed.inputs[k].to(self.device) for k in self.keys]
        if self.head == "sequence":
            args += [torch.tensor([span[i] for span in packed.spans], device=self.device) for i in (0, 1)]
        return args

    def trace(self, example: list[dict[str, Any]]) -> None:
        """Record the forward as a TorchScript graph: it runs whole in C++ with the GIL released, so
        in a server the event loop's Python no longer stalls the forward between its ~300 ops."""
        packed = pack(example, self.pad_id, self.position_offset, self.dtype, self.row_tokens)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python values inside model code
            self.forward = torch.jit.trace(self.forward, tuple(self._args(packed)), check_trace=False)


def verified_packer(
    model: Any, head: Head, pad_id: int, probe: list[dict[str, Any]], padded: list[np.ndarray]
) -> Packer | None:
    """A :class:`Packer` for ``model`` if its packed logits on ``probe`` match ``padded`` (the padded
    path's logits for the same features), else None (the reason is logged)."""
    try:
        packer = Packer(model, head, pad_id, tuple(probe[0]))
        packed = packer.logits(probe)
    except Exception as exc:  # an architecture without the pieces packing needs
        log.info("sequence packing off for %s: %s: %s", type(model).__name__, type(exc).__name__, exc)
        return None
    eager = packer.forward
    try:
        packer.trace(probe)
        packed = packer.logits(probe)  # the traced graph must generalise: checked below like the rest
    except Exception as exc:  # a model the tracer cannot record still packs, eagerly
        log.info("packed %s runs eagerly (tracing failed: %s)", type(model).__name__, exc)
        packer.forward = eager
    if [a.shape for a in packed] != [b.shape for b in padded]:
        log.info("sequence packing off for %s: packed outputs have other shapes", type(model).__name__)
        return None
    worst = max(float(np.abs(a - b).max()) for a, b in zip(packed, padded, strict=True))
    scale = max(1.0, max(float(np.abs(b).max()) for b in padded))
    if worst > TOLERANCE * scale:
        log.info("sequence packing off for %s: packed logits differ by %.2g", type(model).__name__, worst)
        return None
    return packer
