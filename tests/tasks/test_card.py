"""The task registry itself: a name or alias means one task, and a broken plug-in cannot take
aiforge's own tasks down with it."""

from __future__ import annotations

import logging
import sys
import types
from importlib import metadata

import pytest

from aiforge.errors import AiforgeError
from aiforge.tasks import card as registry
from aiforge.tasks.base import Pipeline


@pytest.fixture
def clean_registry(monkeypatch):
    """The real registry, discovered, but restored afterwards whatever the test registered."""
    registry.discover()
    monkeypatch.setattr(registry, "_CARDS", dict(registry._CARDS))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))


def test_a_task_name_or_alias_cannot_be_taken_twice(clean_registry):
    class Another(Pipeline):
        pass

    with pytest.raises(AiforgeError, match="registered twice") as twice:
        registry.register_task("text-classification", summary="again")(Another)
    assert twice.value.code == "AF-TASK-003" and "aiforge.tasks.text:" in twice.value.message
    with pytest.raises(AiforgeError, match="alias 'ner'") as alias:
        registry.register_task("my-tagger", summary="tags", aliases=("ner",))(Another)
    assert alias.value.code == "AF-TASK-003"
    assert registry.get_task("ner").name == "token-classification"  # unchanged
    assert not registry.is_task_name("my-tagger")


def test_a_plugin_registers_a_task_and_a_broken_one_is_skipped(clean_registry, monkeypatch, caplog):
    good = types.ModuleType("aiforge_test_plugin_good")
    clash = types.ModuleType("aiforge_test_plugin_clash")

    def load_good() -> None:
        @registry.register_task("reverse-text", summary="reverses a text (plug-in)")
        class Reverse(Pipeline):
            pass

    def load_clash() -> None:
        @registry.register_task("text-classification", summary="takes a registered name")
        class Clash(Pipeline):
            pass

    monkeypatch.setitem(sys.modules, good.__name__, good)
    monkeypatch.setitem(sys.modules, clash.__name__, clash)
    real_import = registry.importlib.import_module

    def import_module(name: str, *args):
        {good.__name__: load_good, clash.__name__: load_clash}.get(name, lambda: None)()
        return real_import(name, *args)

    points = [
        metadata.EntryPoint("clash", clash.__name__, "aiforge.tasks"),
        metadata.EntryPoint("missing", "aiforge_test_plugin_not_installed", "aiforge.tasks"),
        metadata.EntryPoint("good", good.__name__, "aiforge.tasks"),
    ]
    monkeypatch.setattr(registry.importlib, "import_module", import_module)
    monkeypatch.setattr(
        registry.metadata, "entry_points", lambda group: points if group == "aiforge.tasks" else []
    )
    monkeypatch.setattr(registry, "_discovered", False)
    with caplog.at_level(logging.WARNING, logger=registry.log.name):
        registry.discover()
    assert registry.get_task("reverse-text").summary == "reverses a text (plug-in)"
    assert registry.get_task("text-classification").pipeline.__module__ == "aiforge.tasks.text"
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 2 and "registered twice" in skipped[0] and "not_installed" in skipped[1]
