"""`aiforge export space`: a Gradio Space folder that runs without aiforge: README.md front matter,
app.py (plain transformers, the same input and output widgets as the task's /demo tab), a pinned
requirements.txt and the model files in ``model/``.

Only tasks with an app template here can be exported (text-classification now); others get
AF-EXPORT-003, naming what to use instead.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.export.metadata import ModelFacts, model_facts, pinned
from aiforge.export.source import copy_model_files, prepare_output, resolve_source
from aiforge.tasks.stack import STACK_DIR

MODEL_FOLDER = "model"
EMOJI = {"text-classification": "💬"}
REQUIREMENTS = {"text-classification": ("gradio", "torch", "transformers", "safetensors")}

# The app: the /demo tab's text box and label view (aiforge.serve.demo), the text pipeline's
# postprocessing (aiforge.tasks.text.TextClassification): logits divided by the fitted temperature,
# softmax (sigmoid for multi-label), the top classes. Only gradio, torch and transformers.
TEXT_CLASSIFICATION_APP = '''"""{title}: a text classifier exported by aiforge."""

from pathlib import Path

import gradio as gr
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

MODEL_DIR = Path(__file__).parent / "{model_folder}"
tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
model = AutoModelForSequenceClassification.from_pretrained(MODEL_DIR).eval()
config = model.config
TEMPERATURE = float(getattr(config, "aiforge_temperature", None) or 1.0)  # fitted on validation data
MULTI_LABEL = config.problem_type == "multi_label_classification"
MAX_LENGTH = min(tokenizer.model_max_length, getattr(config, "max_position_embeddings", 512))


@torch.inference_mode()
def classify(text: str) -> dict:
    encoded = tokenizer(text, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    logits = model(**encoded).logits[0] / TEMPERATURE
    probs = torch.sigmoid(logits) if MULTI_LABEL or logits.numel() == 1 else torch.softmax(logits, -1)
    return {{config.id2label[i]: float(p) for i, p in enumerate(probs)}}


demo = gr.Interface(
    fn=classify,
    inputs=gr.Textbox(label="text", lines=3),
    outputs=gr.Label(label="prediction", num_top_classes=5),
    title={title!r},
    description={description!r},
    examples=[[{example!r}]],
    flagging_mode="never",
)

if __name__ == "__main__":
    demo.launch()
'''

APPS = {"text-classification": TEXT_CLASSIFICATION_APP}


def export_space(
    ref: str,
    out: Path,
    *,
    hub_repo: str | None = None,
    language: str | None = None,
    licence: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the Space folder; ``hub_repo`` (the model's hub repo, if pushed) goes in ``models:``."""
    source = resolve_source(ref)
    if source.task not in APPS or source.format != "transformers":
        raise AiforgeError(
            "AF-EXPORT-003",
            f"no Space template for task '{source.task}' ({source.format} model); "
            f"supported: {', '.join(APPS)} (transformers models)",
            "export a model repo with `aiforge export hub` and write the Space's app.py by hand, "
            "or serve it with `aiforge export docker`",
        )
    if (source.model_dir / STACK_DIR).is_dir():  # the app runs plain transformers: it would drop the stack
        raise AiforgeError(
            "AF-EXPORT-003",
            f"'{ref}' is stacked with its TF-IDF baseline (trained with ensemble: baseline); the Space "
            "app runs the transformer alone, so its scores would differ from aiforge run's",
            "serve it with `aiforge export docker` (the same scores as aiforge run), or retrain with "
            "`--set ensemble=none` for a Space",
        )
    out = prepare_output(out, force)
    facts = model_facts(source, language, licence)
    files = [f"{MODEL_FOLDER}/{name}" for name in copy_model_files(source, out / MODEL_FOLDER)]
    (out / "app.py").write_text(app_source(facts), encoding="utf-8")
    requirements = pinned(*REQUIREMENTS[facts.task])
    (out / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    (out / "README.md").write_text(space_readme(facts, hub_repo), encoding="utf-8")
    return {
        "folder": str(out),
        "files": ["README.md", "app.py", "requirements.txt", *files],
        "requirements": requirements,
    }


def app_source(facts: ModelFacts) -> str:
    labels = ", ".join(facts.labels)
    example = "정말 재미있고 감동적인 영화였어요!" if facts.language == "ko" else "What a wonderful film!"
    return APPS[facts.task].format(
        title=facts.name,
        model_folder=MODEL_FOLDER,
        description=f"{facts.task}: {labels}" if labels else facts.task,
        example=example,
    )


def space_readme(facts: ModelFacts, hub_repo: str | None) -> str:
    """The Space card: the front matter the hub reads (``sdk_version``: the Gradio tested here)."""
    import gradio
    import yaml

    models = [hub_repo] if hub_repo else [facts.base_model] if facts.base_model else []
    front = {
        "title": facts.name,
        "emoji": EMOJI.get(facts.task, "🤖"),
        "colorFrom": "indigo",
        "colorTo": "blue",
        "sdk": "gradio",
        "sdk_version": gradio.__version__,
        "app_file": "app.py",
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "models": models,
        "license": facts.licence,
        "tags": ["aiforge", facts.task] + (["korean"] if facts.language == "ko" else []),
        "suggested_hardware": "cpu-basic",
        "short_description": f"{facts.task} demo exported by aiforge",
    }
    score = ""
    split = facts.report_split
    if split and "accuracy" in facts.metrics[split]:
        score = f"\n{split} accuracy of the model: {facts.metrics[split]['accuracy']:.4f}.\n"
    return (
        f"---\n{yaml.safe_dump(front, sort_keys=False, allow_unicode=True)}---\n\n"
        f"# {facts.name}\n\nA `{facts.task}` demo: type a text, get the label scores. "
        f"The model files are in `{MODEL_FOLDER}/`; `app.py` needs only gradio, torch and "
        f"transformers (requirements.txt pins the versions it was tested with).\n{score}"
    )
