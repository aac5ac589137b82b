"""token-classification's offline default: the packaged spaCy English pipeline, on sentences of our own."""

from __future__ import annotations

import pytest

from aiforge.models import PACKAGED
from aiforge.tasks import load_pipeline

pytestmark = pytest.mark.skipif(
    not PACKAGED["spacy-en-core-web-sm"].available(),
    reason=f"needs {PACKAGED['spacy-en-core-web-sm'].install_command()}",
)


@pytest.fixture(scope="module")
def ner():
    return load_pipeline("ner", device="cpu")  # no model: the offline default


def test_the_offline_default_finds_people_places_and_dates_at_their_offsets(ner) -> None:
    assert ner.model_ref.raw == "spacy-en-core-web-sm"
    text = "Marie Curie moved to Paris in 1891 and later worked for the University of Paris."
    entities = ner(text)["entities"]
    found = {(e["word"], e["entity_group"]) for e in entities}
    assert {("Marie Curie", "PERSON"), ("Paris", "GPE"), ("1891", "DATE")} <= found
    assert all(text[e["start"] : e["end"]] == e["word"] for e in entities)


def test_ignore_labels_drops_a_type_and_batches_match_single_calls(ner) -> None:
    texts = ["Samsung opened an office in Berlin on Friday.", "Nothing to see here."]
    alone = [ner(t) for t in texts]
    assert ner.predict(texts) == alone and alone[1]["entities"] == []
    ner_no_dates = load_pipeline("ner", device="cpu", ignore_labels=["DATE"])
    labels = {e["entity_group"] for e in ner_no_dates(texts[0])["entities"]}
    assert "GPE" in labels and "DATE" not in labels
