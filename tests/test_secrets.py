"""What aiforge writes (doctor reports, run configs and params, exports) carries no secrets."""

from __future__ import annotations

from aiforge.secrets import REDACTED, redact, redact_text


def test_secrets_in_text_are_replaced() -> None:
    hf = "hf_" + "a1B2" * 9
    text = (
        f"index-url https://alice:pa55w0rd@pypi.corp.example/simple token {hf} "
        "Authorization: Bearer abcdefgh12345678 key sk-proj-" + "x" * 30
    )
    out = redact_text(text)
    for secret in ("alice", "pa55w0rd", hf, "abcdefgh12345678", "x" * 30):
        assert secret not in out
    assert "https://<redacted>@pypi.corp.example/simple" in out  # where it was stays readable


def test_fields_named_as_secrets_are_replaced_but_counts_are_not() -> None:
    data = {
        "HF_TOKEN": "anything",
        "tracking": {"uri": "postgresql://u:p@db/mlflow", "password": "x"},
        "max_new_tokens": 128,
        "tokenizer": "klue/bert-base",
        "api_key_file": "keys.txt",
        "generator_api_key_env": "OPENAI_API_KEY",
        "runs": [{"secret": 1}],
    }
    out = redact(data)
    assert out["HF_TOKEN"] == REDACTED and out["tracking"]["password"] == REDACTED
    assert out["tracking"]["uri"] == "postgresql://<redacted>@db/mlflow"
    assert out["runs"] == [{"secret": REDACTED}]
    assert {k: out[k] for k in ("max_new_tokens", "tokenizer", "api_key_file", "generator_api_key_env")} == {
        k: data[k] for k in ("max_new_tokens", "tokenizer", "api_key_file", "generator_api_key_env")
    }


def test_doctor_json_redacts(monkeypatch) -> None:
    from aiforge import doctor
    from aiforge.doctor.model import Finding

    finding = Finding("pip", "ok", "index https://bob:hunter22@pypi.corp/simple", details={"token": "t0k"})
    report = doctor.to_json([finding])
    text = str(report)
    assert "hunter22" not in text and "t0k" not in text and "pypi.corp" in text
