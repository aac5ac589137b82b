"""Reading training data: formats, column mapping, bad rows, label checks, the seeded split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from aiforge.errors import AiforgeError
from aiforge.train.config import DataConfig
from aiforge.train.data import Split, read_table, resolve_data_path, stratified_split
from aiforge.train.dataset import load_dataset

ROWS = [{"review": f"text {i}", "sentiment": "pos" if i % 2 else "neg"} for i in range(20)]


def _write(frame: pd.DataFrame, path: Path) -> Path:
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_reads_the_same_rows(suffix: str, tmp_path: Path) -> None:
    path = _write(pd.DataFrame(ROWS), tmp_path / f"train{suffix}")
    cfg = DataConfig(train=str(path), input_column="review", label_column="sentiment")
    data = load_dataset(cfg, seed=0)
    assert len(data.train) + len(data.validation) == 20
    assert data.labels == ["neg", "pos"]
    assert sorted(data.train.inputs + data.validation.inputs) == sorted(r["review"] for r in ROWS)


def test_missing_column_lists_the_columns_found(tmp_path: Path) -> None:
    path = _write(pd.DataFrame(ROWS), tmp_path / "train.csv")
    with pytest.raises(AiforgeError) as err:
        load_dataset(DataConfig(train=str(path)), seed=0)  # default columns: text, label
    assert err.value.code == "AF-DATA-001"
    assert "columns found: review, sentiment" in err.value.message
    assert "data.input_column" in err.value.fix


def test_unseen_validation_labels_are_an_error(tmp_path: Path) -> None:
    train = _write(pd.DataFrame(ROWS), tmp_path / "train.csv")
    val = _write(
        pd.DataFrame([{"review": "x", "sentiment": "neutral"}, {"review": "y", "sentiment": "pos"}]),
        tmp_path / "val.csv",
    )
    cfg = DataConfig(train=str(train), validation=str(val), input_column="review", label_column="sentiment")
    with pytest.raises(AiforgeError) as err:
        load_dataset(cfg, seed=0)
    assert err.value.code == "AF-DATA-002"
    assert "'neutral' (1 rows)" in err.value.message


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(AiforgeError) as err:
        load_dataset(DataConfig(train=str(path)), seed=0)
    assert err.value.code == "AF-DATA-003"


def test_empty_and_undecodable_rows_are_counted_and_skipped_or_strict(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    good = "".join(f"good {i},{'a' if i % 2 else 'b'}\n" for i in range(10))
    path.write_bytes(b"text,label\n" + good.encode() + b",a\n   ,b\nbad \xff\xfe bytes,a\nno label,\n")
    data = load_dataset(DataConfig(train=str(path)), seed=0)
    assert len(data.train) + len(data.validation) == 10
    assert data.skipped["train"] == {"empty input": 2, "undecodable bytes (not UTF-8)": 1, "empty label": 1}
    with pytest.raises(AiforgeError) as err:
        load_dataset(DataConfig(train=str(path)), seed=0, strict=True)
    assert err.value.code == "AF-DATA-003"
    assert "row 11" in err.value.message  # the first bad row, counted from 1 after the header


def test_split_is_stratified_and_seeded() -> None:
    split = Split("train", [f"t{i}" for i in range(100)], ["a"] * 80 + ["b"] * 20)
    train, val = stratified_split(split, 0.2, seed=7, multi_label=False)
    assert Counter(val.labels) == {"a": 16, "b": 4}  # proportions kept
    again_train, again_val = stratified_split(split, 0.2, seed=7, multi_label=False)
    assert again_val.inputs == val.inputs
    other_train, other_val = stratified_split(split, 0.2, seed=8, multi_label=False)
    assert other_val.inputs != val.inputs
    assert not set(train.inputs) & set(val.inputs)


def test_multi_label_cells_are_split(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": "a|b" if i % 3 == 0 else "b"} for i in range(12)]
    path = _write(pd.DataFrame(rows), tmp_path / "train.csv")
    data = load_dataset(DataConfig(train=str(path), multi_label=True), seed=0)
    assert data.labels == ["a", "b"]
    assert ["a", "b"] in data.train.labels + data.validation.labels


def test_data_hash_changes_with_the_data(tmp_path: Path) -> None:
    path = _write(pd.DataFrame(ROWS), tmp_path / "train.csv")
    cfg = DataConfig(train=str(path), input_column="review", label_column="sentiment")
    first = load_dataset(cfg, seed=0).data_hash
    assert load_dataset(cfg, seed=1).data_hash == first  # the split seed is not the data
    _write(pd.DataFrame(ROWS[:-2]), path)
    assert load_dataset(cfg, seed=0).data_hash != first


def test_bundled_sample_is_balanced_and_packaged() -> None:
    train = read_table("packaged:nsmc_sample/train.tsv")
    test = read_table(resolve_data_path("packaged:nsmc_sample/test.tsv"))
    assert len(train) == 8000 and len(test) == 5000  # 5,000 test rows: a ±1.1-point interval
    assert train["label"].value_counts().to_dict() == {"negative": 4000, "positive": 4000}
    assert test["label"].value_counts().to_dict() == {"negative": 2500, "positive": 2500}
    assert not set(train["id"]) & set(test["id"])
    assert not set(train["text"]) & set(test["text"])  # no test review was seen, not even as a repeat
    assert (resolve_data_path("packaged:nsmc_sample/README.md")).read_text(encoding="utf-8").count("CC0") >= 1
