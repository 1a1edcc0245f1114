"""The Gemini judge: the real `google-genai` client (Vertex AI mode) against a local generateContent server."""

from __future__ import annotations

import json

import google.oauth2.credentials
import pytest

from dpo_tasks.config import ConfigError, GeminiConfig, load_persona, with_overrides
from dpo_tasks.judges import make_judge
from dpo_tasks.judges.base import CRITERIA, PairItem
from dpo_tasks.judges.gemini import GeminiJudge
from dpo_tasks.prompts import load_eval_cases
from fake_servers import FakeLLMServer, Reply, default_judge, service_account_key, verdict_json

PERSONA = load_persona("persona_b_indian_veg")
TOKEN = "ya29.test-access-token"
LONG = "Chana masala\nIngredients:\n- chickpeas\n- tomato\n- garam masala\nSteps:\n1. Fry the onions.\n2. Simmer the chickpeas."
SHORT = "Chickpea curry. Cook chickpeas with spices."
ITEM = PairItem(id="e1", prompt="A weeknight curry with chickpeas?", response_a=LONG, response_b=SHORT)


def fast_config(**kw) -> GeminiConfig:
    base = dict(project="test-project", location="us-central1", max_retries=2, backoff_base_s=0.05, backoff_max_s=0.2,
                timeout_s=3.0, requests_per_minute=60_000)
    return GeminiConfig(**{**base, **kw})


def creds():
    # A plain OAuth access token: the credential type the client sends as a Bearer header.
    return google.oauth2.credentials.Credentials(token=TOKEN)


@pytest.fixture
def gemini_server(monkeypatch):
    servers = []

    def start(script=None) -> FakeLLMServer:
        srv = FakeLLMServer("gemini", script).__enter__()
        servers.append(srv)
        monkeypatch.setenv("GOOGLE_VERTEX_BASE_URL", srv.url)
        return srv

    yield start
    for srv in servers:
        srv.__exit__(None, None, None)


def first_attempt(reply):
    return lambda req, attempt: reply if attempt == 0 else None


def always(fn):
    return lambda req, attempt: fn(req)


SCENARIOS = [
    pytest.param(None, [1, 1], "ok", "a", id="clean-json"),
    pytest.param(first_attempt(Reply(status=429, headers={"retry-after": "1"})), [2, 2], "ok", "a", id="429-retry-after"),
    pytest.param(first_attempt(Reply(status=429)), [2, 2], "ok", "a", id="429-without-header-backs-off"),
    pytest.param(first_attempt(Reply(status=500)), [2, 2], "ok", "a", id="500-once"),
    pytest.param(always(lambda r: Reply(status=503)), [3, 3], "failed", None, id="503-always"),
    pytest.param(first_attempt(Reply(delay_s=4.0, text=verdict_json("1"))), [2, 2], "ok", "a", id="slow-past-timeout"),
    pytest.param(always(lambda r: Reply(status=400, error_message="bad model")), [1, 1], "failed", None, id="400-not-retried"),
    pytest.param(always(lambda r: Reply(text='{"preferred": "2", "scores": {"1": {"persona_al', finish_reason="MAX_TOKENS")), [1, 1], "invalid", None, id="truncated-json"),
    pytest.param(always(lambda r: Reply(text="Here is my assessment.\n" + default_judge(r).text + "\nThanks.")), [1, 1], "ok", "a", id="prose-wrapped-json"),
    pytest.param(always(lambda r: Reply(text="```json\n" + default_judge(r).text + "\n```")), [1, 1], "ok", "a", id="json-in-code-fence"),
    pytest.param(always(lambda r: Reply(text=None, finish_reason="SAFETY")), [1, 1], "invalid", None, id="safety-refusal"),
    pytest.param(always(lambda r: Reply(text="I cannot compare recipes.")), [1, 1], "invalid", None, id="prose-refusal"),
    pytest.param(always(lambda r: Reply(text=json.dumps({"preferred": "C"}))), [1, 1], "invalid", None, id="verdict-for-nonexistent-response"),
]


@pytest.mark.parametrize("script, attempts, status, winner", SCENARIOS)
def test_server_behaviour_gives_expected_retries_and_no_guess(gemini_server, tmp_path, script, attempts, status, winner):
    srv = gemini_server(script)
    judge = GeminiJudge(fast_config(), cache_dir=tmp_path, credentials=creds())
    [j] = judge.judge_pairs(PERSONA, [ITEM])
    assert srv.attempts_by_prompt() == attempts
    assert (j.status, j.winner) == (status, winner)
    assert judge.accounting()["calls_made"] == sum(attempts)


def test_request_is_vertex_generate_content_with_the_token(gemini_server, tmp_path):
    srv = gemini_server()
    judge = make_judge("gemini", with_overrides(PERSONA, {"evaluation": {"gemini": fast_config(model="gemini-2.0-flash").model_dump()}}),
                       cache_dir=tmp_path, credentials=creds())
    [j] = judge.judge_pairs(PERSONA, [ITEM])
    req = srv.requests[0]
    assert req.path == "/v1beta1/projects/test-project/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent"
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.body["generationConfig"]["responseMimeType"] == "application/json"
    assert "impartial judge" in req.body["systemInstruction"]["parts"][0]["text"]
    # five criteria for both responses, averaged over the two orders, plus a confidence
    assert set(j.scores_a.as_dict()) == set(CRITERIA) and j.scores_a.overall > j.scores_b.overall
    assert j.confidence == "high" and (tmp_path / "gemini.jsonl").exists()


def test_rerun_is_served_from_the_cache(gemini_server, tmp_path):
    srv = gemini_server()
    first = GeminiJudge(fast_config(), cache_dir=tmp_path, credentials=creds()).judge_pairs(PERSONA, [ITEM])
    again = GeminiJudge(fast_config(), cache_dir=tmp_path, credentials=creds()).judge_pairs(PERSONA, [ITEM])
    assert len(srv.requests) == 2
    assert [j.as_dict() for j in again] == [j.as_dict() for j in first]


def test_missing_project_is_a_clear_config_error(monkeypatch):
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID", raising=False)
    with pytest.raises(ConfigError, match="evaluation.gemini.project"):
        GeminiJudge(fast_config(project=None), credentials=creds())


def test_under_airflow_credentials_come_from_google_cloud_default(gemini_server, tmp_path, monkeypatch):
    """The GenAI hook reads the connection (a service-account key whose token_uri is the local server)."""
    srv = gemini_server()
    keyfile = service_account_key(f"{srv.url}/token", "conn-project")
    conn = {"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": json.dumps(keyfile), "project": "conn-project"}}
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(conn))
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "dpo_persona_b_indian_veg")
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    [j] = GeminiJudge(fast_config(project=None), cache_dir=tmp_path).judge_pairs(PERSONA, [ITEM])
    assert j.status == "ok"
    assert srv.token_requests and "assertion=" in srv.token_requests[0]
    assert {r.headers["authorization"] for r in srv.requests} == {f"Bearer {srv.access_token}"}
    assert "/projects/conn-project/" in srv.requests[0].path


@pytest.mark.slow
def test_evaluate_stage_with_gemini_keeps_the_summary_keys(gemini_server, tmp_path, tiny_model_dir, monkeypatch):
    """`evaluate --set evaluation.judge=gemini` end to end, credentials from ADC (a service-account key file)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from dpo_tasks import evaluate
    from dpo_tasks.runs import RunDir

    srv = gemini_server()
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps(service_account_key(f"{srv.url}/token", "test-project")))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID", raising=False)
    rd = RunDir(tmp_path / "run").ensure()
    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora).save_pretrained(rd.adapter)
    base = {"model": {"base": str(tiny_model_dir)}, "generation": {"batch_size": 10}}
    gemini = with_overrides(PERSONA, {**base, "evaluation": {"judge": "gemini", "max_new_tokens": 8, "gemini": fast_config().model_dump()}})

    n = len(load_eval_cases(PERSONA.id))
    summary = evaluate.run(gemini, rd)
    assert summary["judge"] == "gemini" and summary["n"] == n and summary["failed"] == 0
    assert len(srv.requests) == 2 * n and srv.token_requests  # both orders per case, token from the ADC key's exchange
    assert set(summary["criteria_means"]["candidate"]) == set(CRITERIA) and sum(summary["confidence"].values()) == n
    assert summary["judge_accounting"]["calls_made"] == 2 * n
    html = (rd.eval / "evaluation_report.html").read_text()
    assert "gemini" in html

    rules = evaluate.run(with_overrides(PERSONA, {**base, "evaluation": {"max_new_tokens": 8}}), rd)
    assert set(rules) == set(summary)
