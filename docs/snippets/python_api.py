"""The Python API in one script: train, run, serve and ask (README, "Python API").

Each call is what the matching `aiforge` command runs. Run it in a folder it may write to:
    python python_api.py
tests/test_api_public.py runs this exact file, on a tiny model.
"""

import time
from pathlib import Path

from fastapi.testclient import TestClient

import aiforge

# aiforge train: a train.yaml path, or the same fields as a mapping; sets= are --set overrides
result = aiforge.train_model(
    {
        "task": "text-classification",
        "output_dir": "runs/api-sentiment",
        "data": {"train": "packaged:nsmc_sample/train.tsv", "test": "packaged:nsmc_sample/test.tsv"},
    },
    sets=["training.epochs=1"],
)
print(result.metrics["test"]["accuracy"], result.model_dir)

# aiforge run: the same pipeline; predict takes a list and returns one dict per input
classify = aiforge.pipeline("text-classification", model=str(result.model_dir))
print(classify.predict(["정말 재미있는 영화였어요", "시간이 아까웠다"]))

# aiforge serve: the same FastAPI app; here behind a test client, or run it with uvicorn.run(app)
app = aiforge.serve_app(models=[f"sentiment=text-classification:{result.model_dir}"])
with TestClient(app) as client:
    while client.get("/readyz").status_code != 200:  # models load in the background
        time.sleep(0.1)
    print(client.post("/v1/models/sentiment/predict", json={"inputs": ["최고의 영화"]}).json())

# aiforge rag ingest / ask: answers from your documents, with checked citations
Path("manuals").mkdir(exist_ok=True)
Path("manuals/install.md").write_text(
    "# 설치\n\naiforge는 파이썬 3.10 이상에서 동작한다. 설치는 pip 로 한다.\n", encoding="utf-8"
)
aiforge.ingest(["manuals"], index="manuals")
answer = aiforge.ask("aiforge는 어떤 파이썬 버전에서 동작하나요?", index="manuals")
print(answer.answer, [(c.source, c.start, c.end, c.verified) for c in answer.citations])
