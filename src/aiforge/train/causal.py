"""Instruction / chat fine-tuning (SFT) of causal LMs for the training loop (task text-generation).

Data: conversations (``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}``) or a
prompt column beside a completion column (:func:`aiforge.train.data.read_chat_split`). Each
conversation is rendered with the model's own chat template, and the loss covers the answer tokens
only: every assistant turn (its end-of-turn token included, so the model learns to stop), never
the system / user text or the template's markup, which get label -100.

Packing (``sft.packing``): short examples are concatenated into rows of ``max_length`` tokens; the
position ids restart at each example, from which transformers builds a block-diagonal causal
mask, so no example attends to its neighbour (checked in tests/train/test_sft.py) and no token is
padding.

LoRA (``sft.method: lora``, through ``peft``) trains low-rank adapters on every linear layer of the
blocks (or ``sft.target_modules``); the saved model is the merged weights, an ordinary Hugging Face
causal LM that ``aiforge serve`` and the chat route load through transformers (the adapter alone is
kept in ``lora-adapter/``). A GGUF backbone is dequantised once into a cached trainable directory
(:mod:`aiforge.train.gguf`) and the tuned model is written back as ``model.gguf`` for llama.cpp.

Evaluation: answer-token loss, and exact match / character F1 (KorQuAD's definitions) of greedy
answers to the first ``sft.eval_rows`` conversations. The baseline is the backbone before any step:
the "before" of before vs after.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aiforge.errors import AiforgeError
from aiforge.models import ModelRef
from aiforge.tasks.qa import exact_match, f1_score
from aiforge.train.config import TrainConfig
from aiforge.train.data import Dataset, Split
from aiforge.train.task import Autocast

if TYPE_CHECKING:
    from aiforge.train.prepared import Prepared
    from aiforge.train.task import TrainingTask

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # the causal LM loss skips these positions
MAX_LENGTH_MULTIPLE = 8
# A template for tokenizers that have none (base models): ChatML, as SmolLM2 and Qwen write it. It is
# saved with the model, so serving renders prompts exactly as training did.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)
# Gemma's turn markers, for a Gemma base model (its vocabulary has them as single tokens, ChatML's not).
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + ('model' if message['role'] == "
    "'assistant' else 'user') + '\n' + message['content'] + '<end_of_turn>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def fallback_template(tokenizer: Any) -> str:
    """A chat template for a tokenizer without one (a base model) whose turns end with ONE token of its
    vocabulary, so a tuned model learns to emit it and generation stops there. Measured: Gemma-3-270M
    base under ChatML spelt ``<|im_end|>`` in 6 text pieces, never stopped, and scored EM 0.00 on
    KorQuAD although its answers began with the gold span."""

    def single(token: str) -> bool:
        return len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1

    if single("<|im_start|>") and single("<|im_end|>"):
        return CHATML_TEMPLATE
    if single("<start_of_turn>") and single("<end_of_turn>"):
        return GEMMA_TEMPLATE
    return CHATML_TEMPLATE.replace("'<|im_end|>'", "eos_token")  # the end-of-text token ends a turn


def stop_ids(tokenizer: Any) -> list[int]:
    """The token ids that end an answer: end-of-text and the template's end-of-turn token (the first
    token after an assistant message)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    user = [{"role": "user", "content": "q"}]
    prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*user, {"role": "assistant", "content": "a"}], tokenize=False)
    answer = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    if full.startswith(prompt) and answer[: len(bare)] == bare and len(answer) > len(bare):
        ids.append(answer[len(bare)])
    return list(dict.fromkeys(ids))


def answer_logits_only(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's loss inputs that project only the positions whose next token is an answer token
    onto the vocabulary (transformers' boolean ``logits_to_keep``; ``shift_labels`` are their targets,
    flattened in the same order). Prompts are most of a conversation and the vocabulary is most of a
    small LLM's compute: Gemma-3-270M's 262k-token head is ~60 % of its forward FLOPs per token (dry
    run: 544 vs 222 MFLOPs) and KorQuAD answers ~3 % of the tokens. Measured on the KorQuAD recipe, 2
    idle CPU cores: 16.5 -> 7.0 s a step, peak memory 5.6 -> 4.2 GB; the loss is the same number."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    targets = labels[:, 1:][keep[:, :-1]]
    return {"labels": targets, "shift_labels": targets, "logits_to_keep": keep}


def projects_kept_positions(model: torch.nn.Module) -> bool:
    """Whether the model's forward takes a boolean ``logits_to_keep`` (transformers'
    ``slice_logits_to_keep``: Llama, Gemma, Qwen... in transformers 5); others get full logits."""
    import inspect

    try:
        return "slice_logits_to_keep" in inspect.getsource(type(model).forward)
    except (OSError, TypeError):
        return False


@dataclass
class ChatEncoded:
    """Token rows ready for batching. Training rows may be packed (``position_ids`` set); evaluation
    splits keep one conversation per row with its prompt (for generation) and reference answer."""

    input_ids: list[list[int]]
    targets: list[list[int]]  # the label ids: the token itself where trained, -100 elsewhere
    labels: list[str]  # the reference answer of each conversation
    prompts: list[list[int]]  # the last answer's prompt (template up to "assistant:"), per conversation
    truncated: int
    position_ids: list[list[int]] | None = None  # packed rows: positions restart at each example

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def __len__(self) -> int:
        return len(self.input_ids)


class CausalLMTask:
    """Supervised fine-tuning of a causal LM on conversations; see the module docstring."""

    name = "text-generation"
    multi_label = False
    length_unit: str | None = "tokens"

    def __init__(self, config: TrainConfig, dataset: Dataset, ref: ModelRef) -> None:
        self.config = config
        self.sft = config.sft
        self.dataset = dataset
        self.ref = ref
        self.labels: list[str] = []  # free-text answers: no label vocabulary
        self.max_length = 0
        self.tokenizer: Any = None
        self.model_config: Any = None
        self.source_gguf: Path | None = None  # set when the backbone was a GGUF file
        self.lora_modules: list[str] = []
        self.answer_logits = False  # set by load: the model projects only the answer positions
        self.stop_ids: list[int] = []  # set by load: end-of-text and end-of-turn

    # ---- model ------------------------------------------------------------------------------------
    def load(self) -> torch.nn.Module:
        import transformers

        location = self.ref.location
        if self.ref.format == "gguf":
            from aiforge.train.gguf import dequantized_dir

            self.source_gguf = Path(location)
            location = str(dequantized_dir(self.source_gguf))
        self.location = location
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(location)
        if not getattr(self.tokenizer, "chat_template", None):
            self.tokenizer.chat_template = fallback_template(self.tokenizer)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        try:
            model: torch.nn.Module = transformers.AutoModelForCausalLM.from_pretrained(
                location, dtype=torch.float32
            )
        except (ValueError, KeyError) as exc:
            raise AiforgeError(
                "AF-MODEL-003",
                f"'{self.config.model}' cannot be loaded as a causal LM: {exc}",
                "use a decoder-only model (Llama, Gemma, Qwen, SmolLM2, GPT-2...) or a packaged GGUF model",
            ) from None
        self.model_config = model.config
        self.stop_ids = stop_ids(self.tokenizer)
        # saved with the model: serving on transformers stops where training taught the model to
        model.generation_config.eos_token_id = self.stop_ids  # type: ignore[union-attr]
        self.answer_logits = projects_kept_positions(model)
        # Without a KV cache, transformers reads packed rows' restarting position ids as separate
        # sequences (a block-diagonal mask); with one, it would let examples see each other.
        model.config.use_cache = False  # type: ignore[union-attr]
        if self.sft.method == "lora":
            model = self.add_lora(model)
        return model

    def add_lora(self, model: torch.nn.Module) -> torch.nn.Module:
        """Wrap ``model`` with LoRA adapters (peft); only they train."""
        try:
            import peft
        except ImportError as exc:
            raise AiforgeError(
                "AF-DEP-001",
                "sft.method: lora needs peft, which is not installed",
                'pip install "aiforge[train]"  (or --set sft.method=full)',
            ) from exc
        targets = "all-linear" if self.sft.target_modules == "auto" else list(self.sft.target_modules)
        lora = peft.LoraConfig(
            r=self.sft.lora_r,
            lora_alpha=self.sft.lora_alpha,  # type: ignore[arg-type]  # peft reads it as a float
            lora_dropout=self.sft.lora_dropout,
            target_modules=targets,
            task_type="CAUSAL_LM",
        )
        try:
            wrapped: torch.nn.Module = peft.get_peft_model(model, lora)
        except ValueError as exc:
            names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if not list(m.children())})
            raise AiforgeError(
                "AF-CONFIG-001",
                f"sft.target_modules: {exc}",
                f"name layers of this model, e.g. {', '.join(names[:12])}; or use auto",
            ) from None
        self.lora_modules = sorted(
            {name.rsplit(".", 1)[-1] for name, module in wrapped.named_modules() if hasattr(module, "lora_A")}
        )
        log.info("LoRA r=%d on %s", self.sft.lora_r, ", ".join(self.lora_modules))
        return wrapped

    def reload(self, directory: Path, device: str) -> torch.nn.Module:
        import transformers

        model: torch.nn.Module = transformers.AutoModelForCausalLM.from_pretrained(
            directory, dtype=torch.float32
        )
        return model.to(device).eval()

    def save(self, model: torch.nn.Module, directory: Path) -> None:
        """The merged weights and the tokenizer (with its chat template): a plain causal LM dir;
        plus the LoRA adapter alone, and ``model.gguf`` when the backbone was GGUF."""
        if hasattr(model, "merge_and_unload"):
            model.save_pretrained(directory / "lora-adapter")  # type: ignore[operator]
            # A copy is merged: the training model keeps its adapters (the run goes on after a save).
            merged = copy.deepcopy(model).merge_and_unload()  # type: ignore[operator]
        else:
            merged = model
        merged.config.use_cache = True  # training ran without a KV cache; generation wants one
        merged.save_pretrained(directory)
        merged.config.use_cache = False
        self.tokenizer.save_pretrained(directory)
        if self.source_gguf is not None and self.sft.gguf:
            from aiforge.train.gguf import export_gguf

            export_gguf(merged, self.source_gguf, directory / "model.gguf", self.tokenizer.chat_template)
        del merged

    # ---- inputs -------------------------------------------------------------------------------------
    def render(self, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
        """(token ids, label ids) of a conversation: label = the token on assistant turns, -100 elsewhere.

        The template renders growing prefixes of the conversation; each new stretch of text is either
        template + user / system text (masked) or an assistant answer with its end-of-turn (trained).
        """
        ids: list[int] = []
        targets: list[int] = []
        done = ""
        for turn, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = self.template(messages[:turn], generation_prompt=True)
            full = self.template(messages[: turn + 1], generation_prompt=False)
            if not prompt.startswith(done) or not full.startswith(prompt):
                raise AiforgeError(
                    "AF-MODEL-003",
                    "the model's chat template does not render a conversation as a growing text, so "
                    "its answer tokens cannot be told apart",
                    "fine-tune with prompt / completion columns, or give the tokenizer a chat template",
                )
            for text, trained in ((prompt[len(done) :], False), (full[len(prompt) :], True)):
                piece = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                ids += piece
                targets += piece if trained else [IGNORE_INDEX] * len(piece)
            done = full
        return ids, targets

    def template(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        text: str = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
        return text

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The tokens a model reads before it writes the last answer."""
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        text = self.template(messages[:last], generation_prompt=True)
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def input_lengths(self, split: Split) -> list[int]:
        return [len(self.render(messages)[0]) for messages in split.inputs]

    def resolve_max_length(self, lengths: list[int]) -> int:
        """``max_length: auto``: a percentile of the conversations' lengths, within the model's positions."""
        limit = int(getattr(self.model_config, "max_position_embeddings", 0) or 2048)
        model_max = int(self.tokenizer.model_max_length or limit)
        limit = min(limit, model_max) if model_max < 1_000_000 else limit
        wanted = self.config.training.max_length
        if wanted == "auto":
            value = (
                float(np.percentile(lengths, self.config.training.max_length_percentile)) if lengths else 512
            )
            wanted = int(math.ceil(value / MAX_LENGTH_MULTIPLE) * MAX_LENGTH_MULTIPLE)
        self.max_length = max(8, min(int(wanted), limit))
        return self.max_length

    def encode(self, split: Split) -> ChatEncoded:
        rows = [self.render(messages) for messages in split.inputs]
        truncated = sum(len(ids) > self.max_length for ids, _ in rows)
        ids = [r[0][: self.max_length] for r in rows]
        targets = [r[1][: self.max_length] for r in rows]
        if split.name == "train" and self.sft.packing:
            return self.pack(ids, targets, list(split.labels), truncated)
        prompts = [self.prompt_ids(messages) for messages in split.inputs]
        return ChatEncoded(ids, targets, list(split.labels), prompts, truncated)

    def pack(
        self, ids: list[list[int]], targets: list[list[int]], answers: list[str], truncated: int
    ) -> ChatEncoded:
        """Concatenate examples, in order, into rows of at most ``max_length`` tokens."""
        rows: list[list[int]] = [[]]
        row_targets: list[list[int]] = [[]]
        positions: list[list[int]] = [[]]
        for example, target in zip(ids, targets, strict=True):
            if rows[-1] and len(rows[-1]) + len(example) > self.max_length:
                rows.append([])
                row_targets.append([])
                positions.append([])
            rows[-1] += example
            row_targets[-1] += target
            positions[-1] += list(range(len(example)))
        return ChatEncoded(rows, row_targets, answers, [], truncated, positions)

    def collate(self, encoded: ChatEncoded, indices: list[int], device: str) -> dict[str, torch.Tensor]:
        """Right-padded rows. Packed rows carry position ids and no attention mask (the mask comes from
        the positions); their padding is one more "example" whose labels are all ignored."""
        longest = max(len(encoded.input_ids[i]) for i in indices)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(indices), longest), pad_id, dtype=torch.long)
        labels = torch.full((len(indices), longest), IGNORE_INDEX, dtype=torch.long)
        for row, i in enumerate(indices):
            n = len(encoded.input_ids[i])
            input_ids[row, :n] = torch.tensor(encoded.input_ids[i], dtype=torch.long)
            labels[row, :n] = torch.tensor(encoded.targets[i], dtype=torch.long)
        batch = {
            "input_ids": input_ids,
            **(answer_logits_only(labels) if self.answer_logits else {"labels": labels}),
        }
        if encoded.position_ids is not None:
            position_ids = torch.zeros((len(indices), longest), dtype=torch.long)
            for row, i in enumerate(indices):
                n = len(encoded.position_ids[i])
                position_ids[row, :n] = torch.tensor(encoded.position_ids[i], dtype=torch.long)
                position_ids[row, n:] = torch.arange(longest - n)
            batch["position_ids"] = position_ids
        else:
            attention = torch.zeros((len(indices), longest), dtype=torch.long)
            for row, i in enumerate(indices):
                attention[row, : len(encoded.input_ids[i])] = 1
            batch["attention_mask"] = attention
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    # ---- evaluation -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def evaluate(
        self, model: torch.nn.Module, encoded: ChatEncoded, device: str, batch_size: int, autocast: Autocast
    ) -> dict[str, Any]:
        """Answer-token loss over the split; EM / F1 of greedy answers to its first ``sft.eval_rows``."""
        model.eval()
        total_loss, total_tokens = 0.0, 0
        order = sorted(range(len(encoded)), key=encoded.lengths().__getitem__)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = self.collate(encoded, chunk, device)
            targets = batch["labels"] if self.answer_logits else batch["labels"][:, 1:]
            tokens = int((targets != IGNORE_INDEX).sum())
            with autocast():
                loss = model(**batch).loss
            total_loss += float(loss) * tokens
            total_tokens += tokens
        loss_value = total_loss / max(1, total_tokens)
        metrics: dict[str, Any] = {"loss": loss_value, "perplexity": math.exp(min(loss_value, 50.0))}
        rows = min(self.sft.eval_rows, len(encoded.prompts))
        if rows:
            answers = self.generate(model, encoded.prompts[:rows], device, autocast)
            truths = encoded.labels[:rows]
            metrics["exact_match"] = float(
                np.mean([exact_match(a, t) for a, t in zip(answers, truths, strict=True)])
            )
            metrics["f1"] = float(np.mean([f1_score(a, t) for a, t in zip(answers, truths, strict=True)]))
            metrics["generated_rows"] = rows
            # per question, for the report's intervals and the paired test against the baseline
            metrics["rows"] = {"kind": "spans", "true": [[t] for t in truths], "pred": answers}
            metrics["examples"] = [
                {"answer": t, "generated": a} for a, t in zip(answers[:5], truths[:5], strict=True)
            ]
        return metrics

    def generate(self, model: Any, prompts: list[list[int]], device: str, autocast: Autocast) -> list[str]:
        """Greedy answers to token prompts, ``sft.eval_batch_size`` at a time (left-padded): small
        batches keep the KV cache of long prompts within a few hundred MB."""
        pad_id = self.tokenizer.pad_token_id
        room = max(1, self.max_length) if self.max_length else None
        answers: list[str] = []
        for start in range(0, len(prompts), self.sft.eval_batch_size):
            chunk = [p[-room:] if room else p for p in prompts[start : start + self.sft.eval_batch_size]]
            longest = max(len(p) for p in chunk)
            input_ids = torch.full((len(chunk), longest), pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), longest), dtype=torch.long)
            for row, ids in enumerate(chunk):
                input_ids[row, longest - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention[row, longest - len(ids) :] = 1
            with autocast():
                out = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    max_new_tokens=self.sft.max_new_tokens,
                    do_sample=False,
                    pad_token_id=pad_id,
                    eos_token_id=self.stop_ids,
                    use_cache=True,
                )
            for row in out[:, longest:].tolist():
                end = next((i for i, token in enumerate(row) if token in self.stop_ids), len(row))
                answers.append(self.tokenizer.decode(row[:end], skip_special_tokens=True).strip())
        return answers

    def metric_name(self) -> str:
        wanted = self.config.training.metric
        return "loss" if wanted == "auto" else wanted

    def fit_baseline(self, prep: Prepared[ChatEncoded]) -> dict[str, Any] | None:
        """The backbone before fine-tuning, scored like the tuned model (LoRA starts as a no-op)."""
        from aiforge.train.loop import autocast_factory

        autocast, _ = autocast_factory(self.config.training.mixed_precision, prep.device)
        batch = self.config.training.batch_size * 2
        out: dict[str, Any] = {"name": "before fine-tuning"}
        for split, encoded in (("validation", prep.validation), ("test", prep.test)):
            if encoded is not None:
                scores = self.evaluate(prep.model, encoded, prep.device, batch, autocast)
                out[split] = scores
        prep.model.train()
        return out


if TYPE_CHECKING:

    def _implements_the_protocol(task: CausalLMTask) -> TrainingTask[ChatEncoded]:
        return task  # mypy checks the adapter against TrainingTask here
