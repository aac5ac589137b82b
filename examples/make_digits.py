"""Write scikit-learn's handwritten digits as a folder-per-class image dataset (no download).

    python examples/make_digits.py data/digits            # then: aiforge train examples/digits-images.yaml
    python examples/make_digits.py data/digits-all 150 24 # every digit: examples/digits-scratch.yaml

``ROOT/train/<name>/NNN.png`` and ``ROOT/test/<name>/NNN.png`` (8x8 digits upscaled to 32x32 RGB),
plus ``ROOT/train.csv`` listing the training images by relative path (the table layout).
"""

from __future__ import annotations

import sys
from pathlib import Path

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_digits(
    root: str | Path,
    digits: tuple[int, ...] = tuple(range(10)),
    per_class: int = 100,
    test_per_class: int = 20,
) -> Path:
    import numpy as np
    import pandas as pd
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(root)
    data = load_digits()
    rows = []
    for digit in digits:
        name = NAMES[digit]
        chosen = np.flatnonzero(data.target == digit)
        for split, indices in (
            ("train", chosen[:per_class]),
            ("test", chosen[per_class : per_class + test_per_class]),
        ):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(indices):
                gray = (data.images[i] * 255 / 16).astype("uint8")
                image = Image.fromarray(gray).resize((32, 32), Image.Resampling.BILINEAR).convert("RGB")
                image.save(folder / f"{k:03d}.png")
                if split == "train":
                    rows.append({"image": f"train/{name}/{k:03d}.png", "label": name})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root


if __name__ == "__main__":
    # optional: images per class for train and test (scikit-learn has 174-183 per digit)
    sizes = [int(n) for n in sys.argv[2:4]]
    print(write_digits(sys.argv[1] if len(sys.argv) > 1 else "data/digits", tuple(range(10)), *sizes))
