"""The Groq judge: the real `groq` SDK against a local server speaking Groq's wire format."""

from __future__ import annotations

import json
import logging
import time

import pytest

from dpo_tasks.config import ConfigError, GroqConfig, load_persona, with_overrides
from dpo_tasks.judges import make_judge
from dpo_tasks.judges.base import PairItem
from dpo_tasks.judges.groq import GroqJudge, parse_duration
from fake_servers import FakeLLMServer, Reply, default_judge, verdict_json

PERSONA = load_persona("persona_e_mexican_vegan")
SECRET = "gsk_test_SECRET_do_not_leak_4242"
GOOD = "Smoky black bean tacos\nIngredients:\n- black beans\n- corn tortillas\n- avocado\n- lime\nSteps:\n1. Warm the beans with chipotle.\n2. Fill the tortillas."
PLAIN = "Bean tacos. Warm beans, fill tortillas."
ITEM = PairItem(id="p1", prompt="Tacos for dinner with black beans?", response_a=GOOD, response_b=PLAIN)


def fast_config(**kw) -> GroqConfig:
    base = dict(max_retries=2, backoff_base_s=0.05, backoff_max_s=0.2, timeout_s=3.0,
                hard_constraint_shortcut=False, requests_per_minute=60_000, tokens_per_minute=10_000_000)
    return GroqConfig(**{**base, **kw})


@pytest.fixture
def groq_server(monkeypatch):
    servers = []

    def start(script=None, **kw) -> FakeLLMServer:
        srv = FakeLLMServer("groq", script, **kw).__enter__()
        servers.append(srv)
        monkeypatch.setenv("GROQ_BASE_URL", srv.url)
        monkeypatch.setenv("GROQ_API_KEY", SECRET)
        return srv

    yield start
    for srv in servers:
        srv.__exit__(None, None, None)


def first_attempt(reply: Reply):
    """Script: `reply` on the first attempt at each prompt, a sensible verdict after."""
    return lambda req, attempt: reply if attempt == 0 else None


def always(reply_fn):
    return lambda req, attempt: reply_fn(req)


def wrapped(prefix: str, suffix: str):
    return always(lambda req: Reply(text=prefix + default_judge(req).text + suffix))


TRUNCATED = '{"preferred": "1", "scores": {"1": {"persona_alignment": 8, "constraint_compl'

# (script, attempts the server sees per prompt, status, winner)
SCENARIOS = [
    pytest.param(None, [1, 1], "ok", "a", id="clean-json"),
    pytest.param(first_attempt(Reply(status=429, headers={"retry-after": "1"})), [2, 2], "ok", "a", id="429-retry-after"),
    pytest.param(first_attempt(Reply(status=500)), [2, 2], "ok", "a", id="500-once"),
    pytest.param(first_attempt(Reply(status=503)), [2, 2], "ok", "a", id="503-once"),
    pytest.param(always(lambda r: Reply(status=503)), [3, 3], "failed", None, id="503-always-fails-after-retries"),
    pytest.param(first_attempt(Reply(delay_s=4.0, text=verdict_json("1"))), [2, 2], "ok", "a", id="slow-past-timeout"),
    pytest.param(first_attempt(Reply(raw_body=b'{"id": "chatcmpl-1", "choi')), [2, 2], "ok", "a", id="truncated-http-body"),
    pytest.param(always(lambda r: Reply(status=401, error_message="Invalid API Key")), [1, 1], "failed", None, id="401-not-retried"),
    pytest.param(always(lambda r: Reply(text=TRUNCATED, finish_reason="length")), [1, 1], "invalid", None, id="truncated-json"),
    pytest.param(wrapped("After weighing both recipes, my verdict: ", " I hope this helps."), [1, 1], "ok", "a", id="prose-wrapped-json"),
    pytest.param(wrapped("```json\n", "\n```"), [1, 1], "ok", "a", id="json-in-code-fence"),
    pytest.param(always(lambda r: Reply(text="I'm sorry, but I can't help with evaluating these recipes.")), [1, 1], "invalid", None, id="refusal"),
    pytest.param(always(lambda r: Reply(text=json.dumps({"preferred": "3", "confidence": "high"}))), [1, 1], "invalid", None, id="verdict-for-nonexistent-response"),
    pytest.param(always(lambda r: Reply(text=json.dumps({"winner": "A"}))), [1, 1], "invalid", None, id="missing-preferred"),
    # Position bias: a judge that always picks whatever is shown first decides nothing.
    pytest.param(always(lambda r: Reply(text=verdict_json("1"))), [1, 1], "disagree", "tie", id="position-bias-disagrees"),
]


@pytest.mark.parametrize("script, attempts, status, winner", SCENARIOS)
def test_server_behaviour_gives_expected_retries_and_no_guess(groq_server, tmp_path, script, attempts, status, winner):
    srv = groq_server(script)
    judge = GroqJudge(fast_config(), cache_dir=tmp_path)
    [j] = judge.judge_pairs(PERSONA, [ITEM])
    assert srv.attempts_by_prompt() == attempts
    assert (j.status, j.winner) == (status, winner)
    acct = judge.accounting()
    assert acct["calls_made"] == sum(attempts)
    assert {k: acct[k] for k in ("decided", "invalid", "failed")} == {k: int(status == s) for k, s in
                                                                        (("decided", "ok"), ("invalid", "invalid"), ("failed", "failed"))}
    if status in ("invalid", "failed"):
        assert j.reason, "an undecided item says why"


def test_429_makes_every_worker_wait_for_retry_after(groq_server, tmp_path):
    srv = groq_server(first_attempt(Reply(status=429, headers={"retry-after": "1"})))
    GroqJudge(fast_config(), cache_dir=tmp_path).judge_pairs(PERSONA, [ITEM])
    first_429 = min(r.time for r in srv.requests if r.status == 429)
    retries = [r.time for r in srv.requests if r.attempt == 1]
    assert len(retries) == 2 and min(retries) - first_429 >= 0.95


def test_exhausted_token_budget_header_pauses_before_next_request(groq_server, tmp_path):
    headers = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1.2s"}
    srv = groq_server(lambda req, attempt: Reply(text=default_judge(req).text, headers=headers) if len(srv.requests) == 1 else None)
    judge = GroqJudge(fast_config(max_concurrency=1, both_orders=False), cache_dir=tmp_path)
    judge.judge_pairs(PERSONA, [ITEM, PairItem("p2", "Enchiladas?", GOOD + " extra", PLAIN)])
    t = sorted(r.time for r in srv.requests)
    assert len(t) == 2 and t[1] - t[0] >= 1.1


def test_rerun_reads_the_cache_and_makes_no_call(groq_server, tmp_path):
    srv = groq_server()
    items = [PairItem(f"p{i}", f"Request {i}", GOOD + "x" * i, PLAIN) for i in range(5)]
    first = GroqJudge(fast_config(), cache_dir=tmp_path).judge_pairs(PERSONA, items)
    assert len(srv.requests) == 10
    rerun_judge = GroqJudge(fast_config(), cache_dir=tmp_path)
    again = rerun_judge.judge_pairs(PERSONA, items)
    assert len(srv.requests) == 10, "the rerun sent requests for finished work"
    assert [j.as_dict() for j in again] == [j.as_dict() for j in first]
    acct = rerun_judge.accounting()
    assert (acct["calls_made"], acct["calls_saved_cache"], acct["tokens_in"]) == (0, 10, 0)


def test_failed_items_are_retried_on_rerun_and_finished_ones_are_not(groq_server, tmp_path):
    # p0 fails for good on the first run; p1 succeeds.
    bad = PairItem("p0", "Broken request", GOOD, PLAIN + " (server errors for this one)")
    ok = PairItem("p1", "Fine request", GOOD, PLAIN)
    srv = groq_server(lambda req, attempt: Reply(status=503) if "server errors" in req.user_text else None)
    run1 = GroqJudge(fast_config(max_retries=0), cache_dir=tmp_path).judge_pairs(PERSONA, [bad, ok])
    assert [j.status for j in run1] == ["failed", "ok"]
    srv2 = groq_server()
    run2 = GroqJudge(fast_config(max_retries=0), cache_dir=tmp_path).judge_pairs(PERSONA, [bad, ok])
    assert [j.status for j in run2] == ["ok", "ok"]
    assert len(srv2.requests) == 2 and all("server errors" in r.user_text for r in srv2.requests)


def test_hard_constraint_decides_without_a_call(groq_server, tmp_path):
    srv = groq_server()
    cheesy = "Quesadilla\nIngredients:\n- corn tortillas\n- cheese\n- sour cream\nSteps:\n1. Melt the cheese."
    decided = PairItem("rule", "Quesadillas?", GOOD, cheesy)
    both_bad = PairItem("api", "Quesadillas again?", cheesy, cheesy + "\n2. Add more cheese.")
    judge = GroqJudge(fast_config(hard_constraint_shortcut=True), cache_dir=tmp_path)
    j_rule, j_api = judge.judge_pairs(PERSONA, [decided, both_bad])
    assert (j_rule.status, j_rule.winner, j_rule.source) == ("ok", "a", "hard-constraint")
    assert "cheese" in j_rule.reason
    assert j_api.source == "groq"
    assert len(srv.requests) == 2  # only the pair where both break the rule went to the API
    assert judge.accounting()["calls_saved_rule"] == 2


def test_one_order_with_stable_random_swap(groq_server, tmp_path):
    srv = groq_server()
    items = [PairItem(f"p{i}", f"Request {i}", GOOD + "!" * i, PLAIN) for i in range(12)]
    out = GroqJudge(fast_config(both_orders=False), cache_dir=tmp_path).judge_pairs(PERSONA, items)
    assert len(srv.requests) == 12
    shown_first = [r.responses()[0] for r in srv.requests]
    assert any(s.startswith(GOOD) for s in shown_first) and any(s == PLAIN for s in shown_first), "no swap happened"
    assert all((j.status, j.winner) == ("ok", "a") for j in out)


def test_key_never_leaks_into_logs_errors_or_files(groq_server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    srv = groq_server(lambda req, attempt: Reply(status=401, error_message="Invalid API Key") if "unauthorised" in req.user_text else
                      Reply(status=503) if "flaky" in req.user_text and attempt == 0 else None)
    items = [PairItem("a", "unauthorised request", GOOD, PLAIN), PairItem("b", "flaky request", GOOD, PLAIN), PairItem("c", "fine", GOOD, PLAIN)]
    persona = with_overrides(PERSONA, {"labeling": {"groq": fast_config().model_dump()}})
    judge = make_judge("groq", persona, cache_dir=tmp_path)
    out = judge.judge_pairs(PERSONA, items)
    assert srv.requests[0].headers["authorization"] == f"Bearer {SECRET}"  # the key was used...
    assert [j.status for j in out] == ["failed", "ok", "ok"]
    blobs = [caplog.text, json.dumps([j.as_dict() for j in out]), json.dumps(judge.accounting())]
    blobs += [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    assert all(SECRET not in b for b in blobs)  # ...and shown nowhere


def test_missing_key_is_a_clear_config_error(monkeypatch):
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID", raising=False)
    with pytest.raises(ConfigError, match="GROQ_API_KEY"):
        GroqJudge(fast_config())


@pytest.mark.parametrize(
    "value, seconds",
    [
        pytest.param("7.66s", 7.66, id="seconds"),
        pytest.param("2m59.56s", 179.56, id="minutes"),
        pytest.param("1h2m3s", 3723.0, id="hours"),
        pytest.param("350ms", 0.35, id="millis"),
        pytest.param("soon", None, id="garbage"),
    ],
)
def test_reset_header_durations(value, seconds):
    assert parse_duration(value) == pytest.approx(seconds) if seconds is not None else parse_duration(value) is None


def test_accounting_adds_up(groq_server, tmp_path):
    groq_server(first_attempt(Reply(status=500)))
    judge = GroqJudge(fast_config(), cache_dir=tmp_path)
    judge.judge_pairs(PERSONA, [ITEM])
    a = judge.accounting()
    assert (a["calls_made"], a["retries"], a["items"], a["decided"], a["pass_rate"]) == (4, 2, 1, 1, 1.0)
    assert a["tokens_in"] > 0 and a["tokens_out"] > 0
    expected = (a["tokens_in"] * 0.59 + a["tokens_out"] * 0.79) / 1e6
    assert a["estimated_cost_usd"] == pytest.approx(expected, abs=1e-6)


def test_under_airflow_the_key_comes_from_groq_default(groq_server, tmp_path, monkeypatch):
    srv = groq_server()
    monkeypatch.delenv("GROQ_API_KEY")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "dpo_persona_e_mexican_vegan")
    monkeypatch.setenv("AIRFLOW_CONN_GROQ_DEFAULT", json.dumps({"conn_type": "generic", "password": "gsk_from_connection"}))
    GroqJudge(fast_config(), cache_dir=tmp_path).judge_pairs(PERSONA, [ITEM])
    assert {r.headers["authorization"] for r in srv.requests} == {"Bearer gsk_from_connection"}


def test_server_enforced_rpm_above_the_client_limit_loses_nothing(groq_server, tmp_path):
    # The server allows 10 requests per one-second window (600/min) and answers 429 + retry-after (whole
    # seconds, as Groq sends it) above that; the client is configured five times too fast.
    srv = groq_server(rpm_limit=10, window_s=1.0)
    items = [PairItem(f"p{i}", f"Request {i}", GOOD + "." * i, PLAIN) for i in range(15)]
    judge = GroqJudge(fast_config(requests_per_minute=3000, max_retries=5), cache_dir=tmp_path)
    out = judge.judge_pairs(PERSONA, items)
    assert all((j.status, j.winner) == ("ok", "a") for j in out)
    assert judge.accounting()["rate_limited"] == sum(r.status == 429 for r in srv.requests) > 0
    assert sum(r.status == 200 for r in srv.requests) == 30
