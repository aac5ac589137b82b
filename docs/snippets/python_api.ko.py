"""파이썬 API 한 번에 보기: 학습, 실행, 서빙, 질문 (README.ko.md, "파이썬 API").

각 호출은 같은 이름의 `aiforge` 명령이 실행하는 바로 그 함수다. 파일을 쓸 수 있는 폴더에서 실행한다:
    python python_api.ko.py
tests/test_api_public.py 가 이 파일의 코드가 python_api.py 와 같은지 확인한다 (주석만 다르다).
"""

import time
from pathlib import Path

from fastapi.testclient import TestClient

import aiforge

# aiforge train: train.yaml 경로 또는 같은 필드의 매핑; sets= 는 --set 덮어쓰기
result = aiforge.train_model(
    {
        "task": "text-classification",
        "output_dir": "runs/api-sentiment",
        "data": {"train": "packaged:nsmc_sample/train.tsv", "test": "packaged:nsmc_sample/test.tsv"},
    },
    sets=["training.epochs=1"],
)
print(result.metrics["test"]["accuracy"], result.model_dir)

# aiforge run: 같은 파이프라인; predict 는 리스트를 받아 입력마다 dict 하나를 돌려준다
classify = aiforge.pipeline("text-classification", model=str(result.model_dir))
print(classify.predict(["정말 재미있는 영화였어요", "시간이 아까웠다"]))

# aiforge serve: 같은 FastAPI 앱; 여기서는 테스트 클라이언트로, 또는 uvicorn.run(app) 으로 띄운다
app = aiforge.serve_app(models=[f"sentiment=text-classification:{result.model_dir}"])
with TestClient(app) as client:
    while client.get("/readyz").status_code != 200:  # 모델은 백그라운드에서 올라온다
        time.sleep(0.1)
    print(client.post("/v1/models/sentiment/predict", json={"inputs": ["최고의 영화"]}).json())

# aiforge rag ingest / ask: 내 문서에서 답하고, 인용 위치를 원문과 대조해 확인한다
Path("manuals").mkdir(exist_ok=True)
Path("manuals/install.md").write_text(
    "# 설치\n\naiforge는 파이썬 3.10 이상에서 동작한다. 설치는 pip 로 한다.\n", encoding="utf-8"
)
aiforge.ingest(["manuals"], index="manuals")
answer = aiforge.ask("aiforge는 어떤 파이썬 버전에서 동작하나요?", index="manuals")
print(answer.answer, [(c.source, c.start, c.end, c.verified) for c in answer.citations])
