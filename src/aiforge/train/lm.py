"""Causal language modelling for the training loop (``task: text-generation`` on a text corpus).

Data: a corpus (:mod:`aiforge.train.corpus`), documents joined by newlines, tokenised once and
packed into blocks of ``context`` tokens (no padding, every position predicts the next token); the
loop shuffles blocks per epoch with the same seeded order as every task, so a resumed run replays
it. The model is built from scratch (``model.init: scratch``, a tokenizer trained on the training
text: :mod:`aiforge.train.tokenizer`) or continues a pretrained causal LM on the corpus.

Evaluation: mean next-token loss over the split's blocks, perplexity, and **bits per character**
(the loss in bits times tokens per character of the split), which compares models with different
tokenizers and the character n-gram baseline (:mod:`aiforge.train.ngram`) on the same text. Each
evaluation also samples continuations (appended to ``samples.txt`` in the output directory), under
a forked RNG so sampling never changes the training run's random stream.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from aiforge.models import ModelRef
from aiforge.train.config import ScratchModel, TrainConfig
from aiforge.train.data import Dataset, Split
from aiforge.train.task import Autocast

if TYPE_CHECKING:
    from aiforge.train.prepared import Prepared
    from aiforge.train.task import TrainingTask

DOCUMENT_SEPARATOR = "\n"
SAMPLES = 2  # continuations generated at each evaluation
SAMPLE_TOKENS = 80
SAMPLE_TEMPERATURE = 0.8
TOKENIZER_CACHE = "tokenizer"  # under checkpoints/: a resumed run reuses the tokenizer it trained
DEFAULT_CONTEXT = 512  # pretrained models: block size when training.max_length is auto


@dataclass
class Blocks:
    """A split packed into equal blocks of token ids, with what bits per character needs."""

    ids: torch.Tensor  # (blocks, context)
    characters: int  # characters of the split's text (normalised as the n-gram sees it)
    tokens: int  # tokens of the split's text
    prompts: list[str]
    truncated: int = 0
    labels: list[Any] = field(default_factory=list)  # none: the text is its own target

    def lengths(self) -> list[int]:
        return [self.ids.shape[1]] * len(self)

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class CausalLMTask:
    """Packed next-token prediction; the baseline is a character Kneser-Ney n-gram."""

    name = "text-generation"
    labels: list[str] = []
    multi_label = False
    length_unit: str | None = "tokens"
    max_length_cuts = False  # documents are packed into blocks: max_length cuts nothing

    def __init__(self, config: TrainConfig, dataset: Dataset, ref: ModelRef) -> None:
        self.config = config
        self.dataset = dataset
        self.ref = ref
        self.spec = config.model if isinstance(config.model, ScratchModel) else None
        self.tokenizer: Any = None
        self.max_length = 0
        self.evaluations = 0

    # ---- model ------------------------------------------------------------------------------------
    def load(self) -> torch.nn.Module:
        import transformers

        if self.spec is None:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.ref.location)
            model: torch.nn.Module = transformers.AutoModelForCausalLM.from_pretrained(self.ref.location)
            return model
        from aiforge.train.scratch import text_model
        from aiforge.train.tokenizer import train_tokenizer

        cached = Path(self.config.output_dir) / "checkpoints" / TOKENIZER_CACHE
        if (cached / "tokenizer.json").is_file():
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(cached)
        else:
            self.tokenizer = train_tokenizer(
                self.dataset.train.inputs, self.spec.tokenizer, self.spec.context
            )
            self.tokenizer.save_pretrained(cached)
        return text_model(self.spec, self.tokenizer)

    def save(self, model: torch.nn.Module, directory: Path) -> None:
        model.save_pretrained(directory)  # type: ignore[operator]
        self.tokenizer.save_pretrained(directory)

    def reload(self, directory: Path, device: str) -> torch.nn.Module:
        import transformers

        model: torch.nn.Module = transformers.AutoModelForCausalLM.from_pretrained(directory)
        return model.to(device).eval()

    # ---- data -------------------------------------------------------------------------------------
    def input_lengths(self, split: Split) -> list[int]:
        """Tokens per document (the dry run's length statistics)."""
        return [len(ids) for ids in self.tokenizer(split.inputs, add_special_tokens=False)["input_ids"]]

    def resolve_max_length(self, lengths: list[int]) -> int:
        if self.spec is not None:
            self.max_length = self.spec.context
        else:
            wanted = self.config.training.max_length
            limit = int(getattr(self.tokenizer, "model_max_length", DEFAULT_CONTEXT) or DEFAULT_CONTEXT)
            self.max_length = min(limit, DEFAULT_CONTEXT) if wanted == "auto" else int(wanted)
        return self.max_length

    def character_text(self, split: Split) -> str:
        """The split's text as characters are counted: joined, NFKC-normalised when the tokenizer
        normalises (jamo stay syllables: bits per character counts what a reader sees)."""
        text = DOCUMENT_SEPARATOR.join(split.inputs)
        if self.spec is not None and self.spec.tokenizer.normalize == "nfkc":
            text = unicodedata.normalize("NFKC", text)
        return text

    def encode(self, split: Split) -> Blocks:
        encoded = self.tokenizer(split.inputs, add_special_tokens=False)["input_ids"]
        separator = self.tokenizer(DOCUMENT_SEPARATOR, add_special_tokens=False)["input_ids"]
        ids: list[int] = []
        for document in encoded:
            ids.extend(document)
            ids.extend(separator)
        block = self.max_length
        n_blocks = len(ids) // block
        if n_blocks == 0:
            from aiforge.errors import AiforgeError

            raise AiforgeError(
                "AF-DATA-003",
                f"the {split.name} text has {len(ids)} tokens, fewer than one block of {block}",
                "add text, or lower model.context (training.max_length for a pretrained model)",
            )
        tensor = torch.tensor(ids[: n_blocks * block], dtype=torch.long).view(n_blocks, block)
        prompts = [doc[:8] for doc in split.inputs[:SAMPLES]]
        return Blocks(tensor, len(self.character_text(split)), len(ids), prompts)

    def collate(self, encoded: Blocks, indices: list[int], device: str) -> dict[str, torch.Tensor]:
        ids = encoded.ids[indices].to(device, non_blocking=True)
        return {"input_ids": ids, "labels": ids}

    # ---- evaluation -------------------------------------------------------------------------------
    @torch.inference_mode()
    def evaluate(
        self, model: torch.nn.Module, encoded: Blocks, device: str, batch_size: int, autocast: Autocast
    ) -> dict[str, Any]:
        model.eval()
        total, count = 0.0, 0
        for start in range(0, len(encoded), batch_size):
            batch = self.collate(encoded, list(range(start, min(start + batch_size, len(encoded)))), device)
            with autocast():
                loss = model(**batch).loss
            predicted = (
                batch["input_ids"].numel() - batch["input_ids"].shape[0]
            )  # the first of each block has no target
            total += float(loss) * predicted
            count += predicted
        loss_value = total / max(1, count)
        samples = self.samples(model, encoded.prompts, device)
        self._append_samples(samples)
        return {
            "loss": loss_value,
            "perplexity": math.exp(min(loss_value, 50.0)),
            "bits_per_char": loss_value / math.log(2) * encoded.tokens / max(1, encoded.characters),
            "samples": samples,
        }

    def samples(self, model: torch.nn.Module, prompts: list[str], device: str) -> list[str]:
        """Sampled continuations of the first characters of validation documents."""
        from aiforge.train.tokenizer import compose

        out = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.training.seed)
            for prompt in prompts:
                ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(
                    device
                )
                room = max(1, self.max_length - ids.shape[1])
                generated = model.generate(  # type: ignore[operator]
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=min(SAMPLE_TOKENS, room),
                    do_sample=True,
                    temperature=SAMPLE_TEMPERATURE,
                    top_k=0,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
                out.append(compose(self.tokenizer.decode(generated[0], skip_special_tokens=True)))
        return out

    def _append_samples(self, samples: list[str]) -> None:
        self.evaluations += 1
        path = Path(self.config.output_dir) / "samples.txt"
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"# evaluation {self.evaluations}\n" + "".join(f"{s!r}\n" for s in samples))

    def metric_name(self) -> str:
        return "loss" if self.config.training.metric == "auto" else self.config.training.metric

    # ---- baseline ---------------------------------------------------------------------------------
    def fit_baseline(self, prep: Prepared[Blocks]) -> dict[str, Any] | None:
        """A character Kneser-Ney n-gram on the same training text, scored in bits per character."""
        from aiforge.train.ngram import fit_ngram_baseline

        splits = {"validation": self.character_text(prep.dataset.validation)}
        if prep.dataset.test is not None:
            splits["test"] = self.character_text(prep.dataset.test)
        return fit_ngram_baseline(self.character_text(prep.dataset.train), splits)


if TYPE_CHECKING:

    def _implements_the_protocol(task: CausalLMTask) -> TrainingTask[Blocks]:
        return task  # mypy checks the adapter against TrainingTask here
