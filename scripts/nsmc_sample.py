"""Draw the NSMC sample that ships in the package (src/aiforge/data/nsmc_sample/), reproducibly.

    python scripts/nsmc_sample.py --nsmc ../shared/data/nsmc --train-rows 8000 --test-rows 5000

Training rows come from NSMC's train file, test rows from its test file; both are balanced (half
negative, half positive). Every row gets a seeded random rank, and each label keeps its lowest-ranked
rows, so a smaller sample is a subset of a larger one (the lever experiments of
bench/bench_quickstart.py compare training sizes on nested samples). A test row whose review text also
appears among the first EXCLUDE_ROWS training rows (NSMC repeats short reviews such as "최고") is
dropped before drawing, so no test review was seen in training, not even as another row with the same
text, for any training size up to EXCLUDE_ROWS (the test rows stay the same when the training size
changes).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 42
EXCLUDE_ROWS = 20_000
LABEL_NAMES = {"0": "negative", "1": "positive"}


def read_nsmc(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    frame["text"] = frame["document"].str.replace("\t", " ").str.strip()
    frame = frame[frame["text"] != ""]
    return pd.DataFrame({"id": frame["id"], "text": frame["text"], "label": frame["label"].map(LABEL_NAMES)})


def balanced(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """``rows`` rows, half per label, the lowest seeded ranks of each label, in rank order."""
    rank = np.random.default_rng(seed).permutation(len(frame))
    ranked = frame.assign(rank=rank).sort_values("rank")
    half = ranked.groupby("label", group_keys=False).head(rows // 2)
    return half.sort_values("rank").drop(columns="rank")


def draw(nsmc: Path, train_rows: int, test_rows: int, seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    if train_rows > EXCLUDE_ROWS:
        raise SystemExit(f"--train-rows is at most {EXCLUDE_ROWS} (the test rows exclude that many)")
    pool = read_nsmc(nsmc / "train.tsv")
    seen = set(balanced(pool, EXCLUDE_ROWS, seed)["text"])
    train = balanced(pool, train_rows, seed)
    test_pool = read_nsmc(nsmc / "test.tsv")
    test_pool = test_pool[~test_pool["text"].isin(seen)]
    return train, balanced(test_pool, test_rows, seed)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nsmc", type=Path, required=True, help="folder with NSMC's train.tsv and test.tsv")
    parser.add_argument("--train-rows", type=int, required=True)
    parser.add_argument("--test-rows", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=Path("src/aiforge/data/nsmc_sample"))
    args = parser.parse_args()
    train, test = draw(args.nsmc, args.train_rows, args.test_rows)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, frame in (("train", train), ("test", test)):
        frame.to_csv(args.out / f"{name}.tsv", sep="\t", index=False)
        print(f"{args.out / name}.tsv: {len(frame)} rows, {frame['label'].value_counts().to_dict()}")


if __name__ == "__main__":
    main()
