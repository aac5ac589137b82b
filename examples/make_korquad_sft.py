"""Build instruction-tuning conversations from the KorQuAD 1.0 sample that ships with aiforge.

    python examples/make_korquad_sft.py            # -> data/korquad-sft/{train,test}.jsonl
    aiforge train examples/korquad-sft.yaml

Each question becomes one conversation: the user message holds a passage of the article's paragraph
(WINDOW characters around the answer, so a prompt stays a few hundred tokens on a 2-core CPU) and the
question; the assistant answers with the gold span. The first TEST_ARTICLES articles are the test
split, so no test question's article is ever trained on. KorQuAD is CC BY-ND 2.0 KR (© LG CNS): the
shipped file is unchanged; these derived files stay on your machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from aiforge.io import resolve_data_path

WINDOW = 300  # characters of context around the answer
TEST_ARTICLES = 3
ARTICLES = 12  # of the 70 bundled: the size the README's figures were measured on (2 CPU cores)
INSTRUCTION = "다음 글을 읽고 질문에 짧게 답하세요. 답은 글에 있는 표현 그대로 쓰세요."


def conversation(context: str, question: str, answer: str, start: int) -> dict:
    begin = max(0, min(start - WINDOW // 2, len(context) - WINDOW))
    passage = context[begin : begin + WINDOW]
    prompt = f"{INSTRUCTION}\n\n글: {passage}\n\n질문: {question}"
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}


def main(out: Path) -> None:
    source = resolve_data_path("packaged:korquad/KorQuAD_v1.0_dev_part_a.json")
    articles = json.loads(source.read_text(encoding="utf-8"))["data"][:ARTICLES]
    out.mkdir(parents=True, exist_ok=True)
    for name, chosen in (("test", articles[:TEST_ARTICLES]), ("train", articles[TEST_ARTICLES:])):
        rows = [
            conversation(
                p["context"], qa["question"], qa["answers"][0]["text"], qa["answers"][0]["answer_start"]
            )
            for article in chosen
            for p in article["paragraphs"]
            for qa in p["qas"]
        ]
        path = out / f"{name}.jsonl"
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
        print(f"{path}: {len(rows)} conversations")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "data/korquad-sft"))
