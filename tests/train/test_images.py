"""Image classification through ``aiforge train``: class folders of scikit-learn's digits (8x8,
upscaled to 32x32 PNGs), a tiny random timm model and a tiny ViT, a few steps each. The models are
random, so these tests check plumbing (data layouts, baseline, saving, loading, resume, errors),
not accuracy; the linear probe still separates digits well above chance on random features."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiforge import registry
from aiforge.errors import AiforgeError
from aiforge.tasks import load_pipeline
from aiforge.train import dry_run, train
from aiforge.train.callbacks import Callback
from aiforge.train.config import dump_yaml
from tests.train.conftest import config_builder

DIGITS = {0: "zero", 1: "one", 2: "two"}  # the names examples/make_digits.py gives
PER_CLASS = 30


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train/{zero,one,two}/`` with 30 PNGs each and ``test/`` with 8 each, plus ``train.csv``
    listing the training images by relative path (the example's own generator)."""
    from examples.make_digits import write_digits

    return write_digits(tmp_path_factory.mktemp("digits"), tuple(DIGITS), PER_CLASS, test_per_class=8)


@pytest.fixture(scope="session")
def tiny_timm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_timm

    return make_tiny_timm(tmp_path_factory.mktemp("tiny-timm"))  # an ImageNet-sized head, replaced


@pytest.fixture(scope="session")
def tiny_vit_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_vit_classifier

    return make_tiny_vit_classifier(tmp_path_factory.mktemp("tiny-vit"), ["cat", "dog"])


@pytest.fixture
def image_config(tiny_timm: Path, digits: Path, tmp_path: Path):
    return config_builder(
        "task=image-classification",
        f"model={tiny_timm}",
        f"output_dir={tmp_path / 'run'}",
        f"data.train={digits / 'train'}",
        f"data.test={digits / 'test'}",
        "data.validation_split=0.2",
        "data.image_size=32",
        "training.batch_size=16",
        "training.lr=1e-3",
    )


def test_timm_training_saves_a_timm_export_that_loads_by_path_and_registry(
    image_config, digits: Path
) -> None:
    config = image_config(
        "tracking.enabled=true", "tracking.model_name=tiny-digits", "tracking.alias=production"
    )
    result = train(config, progress=False)

    exported = json.loads((result.model_dir / "config.json").read_text())
    assert exported["architecture"] == "test_efficientnet" and exported["num_classes"] == 3
    assert exported["label_names"] == ["one", "two", "zero"]
    assert exported["pretrained_cfg"]["input_size"] == [3, 32, 32]  # what training used
    assert (result.model_dir / "model.safetensors").is_file()
    assert set(result.metrics) == {"validation", "test"} and result.metrics["test"]["per_class"].keys() == {
        "one",
        "two",
        "zero",
    }
    assert (result.output_dir / "confusion_matrix.png").stat().st_size > 0
    assert result.baseline["name"].startswith("linear-probe")
    assert result.baseline["test"]["accuracy"] > 0.5  # digits separate even on random conv features
    assert any(line.startswith("baseline") and "linear-probe" in line for line in result.lines())

    image = str(digits / "test" / "two" / "000.png")
    local = load_pipeline("image-classification", model=str(result.model_dir), device="cpu", top_k=3)
    assert local.backend == "timm"
    out = local(image)
    assert {s["label"] for s in out["labels"]} == {"zero", "one", "two"}
    served = load_pipeline(
        "image-classification", model="registry:tiny-digits@production", device="cpu", top_k=3
    )
    assert served(image) == out
    assert registry.client().get_run(result.run_id).data.metrics["baseline_test_accuracy"] > 0.5


def test_transformers_vit_trains_with_a_new_head_and_saves_its_processor(
    image_config, tiny_vit_backbone: Path, digits: Path
) -> None:
    result = train(image_config(f"model={tiny_vit_backbone}", "training.freeze=[embeddings]"), progress=False)
    assert (result.model_dir / "preprocessor_config.json").is_file()
    assert result.baseline["test"]["accuracy"] > 0.4
    pipe = load_pipeline("image-classification", model=str(result.model_dir), device="cpu", top_k=3)
    assert pipe.backend == "transformers"
    labels = {s["label"] for s in pipe(str(digits / "test" / "one" / "000.png"))["labels"]}
    assert labels == {"zero", "one", "two"}


class _InterruptAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, state) -> None:
        if state.step == self.step:
            raise KeyboardInterrupt  # Ctrl-C: not an observer failure, it stops the run


def test_resume_after_ctrl_c_matches_an_uninterrupted_run(image_config, tmp_path: Path) -> None:
    # 72 training images / batch 16 = 5 steps per epoch; checkpoint every 3 steps, stopped at step 7
    common = ["training.checkpoint_every_steps=3", "baseline=false"]
    reference = train(image_config(*common, f"output_dir={tmp_path / 'reference'}"), progress=False)
    stopped = image_config(*common, f"output_dir={tmp_path / 'stopped'}")
    with pytest.raises(KeyboardInterrupt):
        train(stopped, callbacks=[_InterruptAt(7)], progress=False)
    resumed = train(stopped, resume=True, progress=False)
    assert resumed.steps == reference.steps == 10
    assert resumed.metrics["test"]["loss"] == reference.metrics["test"]["loss"]  # bit for bit
    assert resumed.metrics["validation"] == reference.metrics["validation"]


def test_a_table_of_relative_image_paths_reads_like_the_folders(image_config, digits: Path) -> None:
    report = dry_run(image_config(f"data.train={digits / 'train.csv'}", "data.text_column=image"))
    folders = dry_run(image_config())
    assert report.rows == folders.rows == {"train": 72, "validation": 18, "test": 24}
    assert report.labels == {"one": 24, "two": 24, "zero": 24}
    assert report.seconds_per_step > 0 and report.length_unit is None
    assert not any(line.startswith(("tokens", "max_length")) for line in report.lines())


def _copy_tree(digits: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(digits / "train", target)
    return target


def test_undecodable_images_are_counted_and_skipped_or_fail_with_strict(
    image_config, digits: Path, tmp_path: Path
) -> None:
    train_dir = _copy_tree(digits, tmp_path / "train")
    (train_dir / "one" / "broken.png").write_bytes(b"not a png")
    (train_dir / "one" / "notes.txt").write_text("not an image")
    config = image_config(f"data.train={train_dir}", "data.test=null")
    report = dry_run(config)
    assert report.skipped_rows == {"train": {"undecodable image": 1, "not an image file": 1}}
    assert report.rows["train"] + report.rows["validation"] == 3 * PER_CLASS
    with pytest.raises(AiforgeError) as err:
        dry_run(config, strict=True)
    assert err.value.code == "AF-DATA-003" and "broken.png" in err.value.message


def test_empty_class_folder_and_unseen_validation_labels_are_clear_errors(
    image_config, digits: Path, tmp_path: Path
) -> None:
    train_dir = _copy_tree(digits, tmp_path / "train")
    (train_dir / "three").mkdir()
    with pytest.raises(AiforgeError) as err:
        dry_run(image_config(f"data.train={train_dir}"))
    assert (
        err.value.code == "AF-DATA-003"
        and "three" in err.value.message
        and "remove the folder" in err.value.fix
    )

    (train_dir / "three").rmdir()
    validation = _copy_tree(digits, tmp_path / "validation")
    (validation / "zero").rename(validation / "seven")
    with pytest.raises(AiforgeError) as err:
        dry_run(image_config(f"data.train={train_dir}", f"data.validation={validation}"))
    assert err.value.code == "AF-DATA-002" and "'seven'" in err.value.message

    with pytest.raises(AiforgeError) as err:
        dry_run(image_config(f"data.train={tmp_path / 'nowhere/'}"))
    assert err.value.code == "AF-INPUT-001"


def test_cli_reports_a_folder_without_classes_without_traceback(image_config, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes(b"")
    path = tmp_path / "train.yaml"
    path.write_text(dump_yaml(image_config(f"data.train={flat}")), encoding="utf-8")
    assert yaml.safe_load(path.read_text())["data"]["train"] == str(flat)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "aiforge.cli", "train", str(path), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    message = " ".join(done.stderr.split())  # the CLI wraps long lines
    assert "AF-DATA-003" in message and "has no class folders" in message and "Traceback" not in message


def test_augmentation_presets_keep_digits_upright(image_config) -> None:
    from torchvision import transforms as T

    from aiforge.train.loop import prepare

    def steps(augment: str) -> tuple[list[Any], Any]:
        task = prepare(image_config(f"data.augment={augment}")).task
        return list(getattr(task.train_transform, "transforms", [])), task

    timm_steps, _ = steps("timm")
    assert any(isinstance(t, T.RandomHorizontalFlip) for t in timm_steps)  # ImageNet's recipe mirrors
    light_steps, _ = steps("light")
    assert not any(isinstance(t, T.RandomHorizontalFlip) for t in light_steps)  # a mirrored 2 is no 2
    crop = next(t for t in light_steps if "RandomResizedCrop" in type(t).__name__)  # timm's own subclass
    assert tuple(crop.scale) == (0.5, 1.0)
    _, plain = steps("none")
    assert plain.train_transform is plain.eval_transform


def test_links_out_of_the_data_folder_are_skipped(tmp_path: Path, digits: Path) -> None:
    import shutil

    from aiforge.train.media import read_class_folders

    root = tmp_path / "data"
    shutil.copytree(digits / "train", root)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(next((root / "zero").iterdir()), outside / "private.png")
    (root / "zero" / "leak.png").symlink_to(outside / "private.png")
    (root / "one" / "alias.png").symlink_to(next((root / "two").iterdir()))  # inside: fine
    split, skipped = read_class_folders("train", root, "image")
    assert not any("private" in p or "leak" in p for p in split.inputs)
    assert skipped == {"link outside the data folder": 1}
    assert len(split.inputs) == 3 * PER_CLASS + 1
