"""Machinery shared by the API judges (Groq, Gemini).

- `VerdictCache`: every verdict is appended (fsynced) to a JSONL file in the run
  dir the moment it arrives, keyed by a hash of (model, template version, the
  rendered prompt). A killed stage that is run again makes no API call for work
  already done, and gets the same verdicts back.
- `RateLimiter`: requests spaced evenly under the requests-per-minute budget,
  a tokens-per-minute bucket (reserved from an estimate, settled with the
  usage the API reports), and a shared pause when the API says `retry-after`.
  Concurrency is the size of the worker pool.
- `ApiJudge.call`: one logical call with our own retries. The SDKs' built-in
  retries are switched off so the attempts counted at the server are exactly
  these: 429 waits `retry-after`; 5xx, timeouts and connection errors back
  off exponentially (capped, with jitter); other 4xx fail at once. After the
  last attempt the item is recorded as failed: not lost, not guessed.
- `parse_verdict`: reads the judge's JSON where the meaning is clear (code
  fences, prose around the object) and otherwise raises `InvalidAnswer`.
  Nothing defaults to "A".
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import threading
import time
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from dpo_tasks.config import GeminiConfig, GroqConfig, Persona
from dpo_tasks.judges.base import CRITERIA, Judge, OrderedVerdict, PairItem, PairJudgement, Scores, combine_orders
from dpo_tasks.judges.prompts import JudgePrompt, Purpose, render
from dpo_tasks.redact import redact
from dpo_tasks.runs import JsonlAppender, read_jsonl

log = logging.getLogger(__name__)


class RateLimited(Exception):
    """HTTP 429; `retry_after` in seconds when the server said."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class TransientError(Exception):
    """5xx, timeout, connection error: worth another attempt after a backoff."""


class FatalError(Exception):
    """A 4xx other than 429 (bad request, auth, unknown model): another attempt would fail the same way."""


class InvalidAnswer(ValueError):
    """The judge answered, but not with a verdict we can read without guessing."""


class CallFailed(Exception):
    """No answer after every attempt."""


@dataclass(frozen=True)
class ApiAnswer:
    text: str | None
    tokens_in: int = 0
    tokens_out: int = 0
    # Normalised: "stop", "length" (cut by the token limit), "refused" (safety block), or the API's own word.
    finish_reason: str | None = None


# ---------------------------------------------------------------------------
# Parsing


_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_PREFERRED = {
    "1": "first", "response 1": "first", "response_1": "first", "first": "first",
    "2": "second", "response 2": "second", "response_2": "second", "second": "second",
    "tie": "tie", "equal": "tie", "neither": "tie", "both": "tie",
}
_CONFIDENCE = {"high", "medium", "low"}


def _json_objects(text: str) -> list[Any]:
    """Every top-level JSON object that decodes, fenced blocks first, then any `{` in the prose."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    for candidate in [m.group(1) for m in _FENCE_RE.finditer(text)] + [text]:
        i = candidate.find("{")
        while i != -1:
            try:
                obj, end = decoder.raw_decode(candidate, i)
            except json.JSONDecodeError:
                i = candidate.find("{", i + 1)
                continue
            if isinstance(obj, dict):
                found.append(obj)
            i = candidate.find("{", end)
    return found


def _scores(raw: Any, which: str) -> Scores:
    if not isinstance(raw, dict):
        raise InvalidAnswer(f"scores for response {which} is {raw!r}, expected an object with {', '.join(CRITERIA)}")
    out = {}
    for k in CRITERIA:
        v = raw.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 10:
            raise InvalidAnswer(f"scores[{which!r}][{k!r}] is {v!r}, expected a number 0-10")
        out[k] = float(v)
    return Scores(**out)


def verdict_from_json(obj: dict[str, Any]) -> OrderedVerdict:
    if "preferred" not in obj:
        raise InvalidAnswer(f"no 'preferred' field in {sorted(obj)!r}")
    raw_pref = obj["preferred"]
    pref = _PREFERRED.get(str(raw_pref).strip().lower()) if isinstance(raw_pref, (str, int)) and not isinstance(raw_pref, bool) else None
    if pref is None:
        # e.g. "3" or "C": a verdict for a response that does not exist.
        raise InvalidAnswer(f"preferred is {raw_pref!r}; only '1', '2' or 'tie' name a response")
    scores = obj.get("scores")
    first = second = None
    if scores is not None:
        if not isinstance(scores, dict):
            raise InvalidAnswer(f"scores is {scores!r}, expected an object keyed '1' and '2'")
        extra = sorted(set(map(str, scores)) - {"1", "2"})
        if extra:
            raise InvalidAnswer(f"scores names responses {extra!r} that do not exist")
        first, second = _scores(scores.get("1"), "1"), _scores(scores.get("2"), "2")
    conf = obj.get("confidence")
    conf = conf.strip().lower() if isinstance(conf, str) else None
    reason = obj.get("reason")
    return OrderedVerdict(
        preferred=pref,  # type: ignore[arg-type]
        scores_first=first,
        scores_second=second,
        confidence=conf if conf in _CONFIDENCE else None,
        reason=reason.strip()[:500] if isinstance(reason, str) else "",
    )


def parse_verdict(answer: ApiAnswer) -> OrderedVerdict:
    """The verdict in a judge's answer, or `InvalidAnswer` saying why there is none."""
    if answer.finish_reason == "refused":
        raise InvalidAnswer("the model refused to answer (safety block)")
    text = (answer.text or "").strip()
    if not text:
        raise InvalidAnswer("empty answer")
    objects = [o for o in _json_objects(text) if "preferred" in o]
    if not objects:
        if answer.finish_reason == "length":
            raise InvalidAnswer("answer cut off by the token limit before the JSON was complete")
        raise InvalidAnswer(f"no JSON verdict in the answer: {text[:120]!r}")
    verdicts = [verdict_from_json(o) for o in objects]
    if len({v.preferred for v in verdicts}) > 1:
        raise InvalidAnswer("the answer holds contradicting verdicts")
    return verdicts[-1]


# ---------------------------------------------------------------------------
# Cache


def cache_key(model: str, prompt: JudgePrompt) -> str:
    payload = json.dumps([model, prompt.version, prompt.system, prompt.user], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class VerdictCache:
    """Append-only verdict log; the last record for a key wins. `path=None` keeps it in memory."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}
        self._appender: JsonlAppender | None = None
        if self.path is not None:
            for rec in read_jsonl(self.path, tolerate_torn_tail=True):
                self._records[rec["key"]] = rec
            self._appender = JsonlAppender(self.path)

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._records.get(key)

    def put(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._records[record["key"]] = record
            if self._appender is not None:
                self._appender.write(record)

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()


# ---------------------------------------------------------------------------
# Rate limiting and retries


class RateLimiter:
    """Even request spacing under an RPM budget, a TPM token bucket, and a shared pause."""

    def __init__(self, requests_per_minute: int, tokens_per_minute: int, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self._interval = 60.0 / requests_per_minute
        self._tpm = float(tokens_per_minute)
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._tokens = self._tpm
        self._tokens_at = clock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self._tpm, self._tokens + (now - self._tokens_at) * self._tpm / 60.0)
        self._tokens_at = now

    def acquire(self, est_tokens: int) -> int:
        """Block until a request of ~`est_tokens` may go; returns the reservation to `settle`."""
        reserve = int(min(est_tokens, self._tpm))
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens -= reserve
            token_wait = max(0.0, -self._tokens * 60.0 / self._tpm)
            slot = max(now + token_wait, self._next_slot, self._paused_until)
            self._next_slot = slot + self._interval
        while True:
            delay = slot - self._clock()
            if delay > 0:
                self._sleep(delay)
            with self._lock:
                if self._paused_until <= slot:
                    return reserve
                # A pause began while we waited and outlasts our slot: queue again behind it.
                slot = max(self._next_slot, self._paused_until)
                self._next_slot = slot + self._interval

    def settle(self, reserved: int, used: int) -> None:
        """Correct the token bucket with what the request really cost."""
        with self._lock:
            self._tokens += reserved - used

    def pause(self, seconds: float) -> None:
        """Nobody sends before `seconds` from now (a 429's retry-after, an exhausted budget)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Capped exponential backoff with jitter in [d/2, d], so retries of a burst spread out."""
    d = min(cap, base * (2 ** attempt))
    return random.uniform(d / 2, d)


# ---------------------------------------------------------------------------
# The judge


class ApiJudge(Judge):
    """A judge behind an HTTP API. Subclasses implement `_send` (one HTTP request, errors classified)."""

    name = "api"
    purpose: Purpose = "label"

    def __init__(
        self,
        config: GroqConfig | GeminiConfig,
        *,
        both_orders: bool = True,
        hard_constraint_shortcut: bool = False,
        cache_dir: str | Path | None = None,
    ):
        # Both API configs name their limits, retries and prices the same way.
        model, max_concurrency, max_retries = config.model, config.max_concurrency, config.max_retries
        requests_per_minute, tokens_per_minute = config.requests_per_minute, config.tokens_per_minute
        backoff_base_s, backoff_max_s = config.backoff_base_s, config.backoff_max_s
        max_output_tokens = config.max_output_tokens
        price_in_per_mtok, price_out_per_mtok = config.price_in_per_mtok, config.price_out_per_mtok
        self.model = model
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.max_output_tokens = max_output_tokens
        self.price_in, self.price_out = price_in_per_mtok, price_out_per_mtok
        self.both_orders = both_orders
        self.hard_constraint_shortcut = hard_constraint_shortcut
        self.limiter = RateLimiter(requests_per_minute, tokens_per_minute)
        self.cache = VerdictCache(Path(cache_dir) / f"{self.name}.jsonl" if cache_dir else None)
        self._lock = threading.Lock()
        self._acct = {
            "calls_made": 0, "retries": 0, "rate_limited": 0, "calls_saved_cache": 0, "calls_saved_rule": 0,
            "tokens_in": 0, "tokens_out": 0, "invalid": 0, "failed": 0, "items": 0, "decided": 0,
        }

    # -- subclasses -------------------------------------------------------

    @abstractmethod
    def _send(self, prompt: JudgePrompt) -> ApiAnswer:
        """One HTTP request. Raises RateLimited / TransientError / FatalError."""

    # -- one call ---------------------------------------------------------

    def _count(self, **inc: int) -> None:
        with self._lock:
            for k, v in inc.items():
                self._acct[k] += v

    def call(self, prompt: JudgePrompt) -> ApiAnswer:
        est = (len(prompt.system) + len(prompt.user)) // 4 + self.max_output_tokens
        for attempt in range(self.max_retries + 1):
            reserved = self.limiter.acquire(est)
            self._count(calls_made=1, retries=int(attempt > 0))
            try:
                answer = self._send(prompt)
            except RateLimited as exc:
                self.limiter.settle(reserved, 0)
                self._count(rate_limited=1)
                wait = exc.retry_after if exc.retry_after is not None else backoff_delay(attempt, self.backoff_base_s, self.backoff_max_s)
                # Shared: every worker waits, not only the one that was told; acquire() sleeps it off.
                self.limiter.pause(wait)
                error = f"{exc} (waiting {wait:.1f}s)"
                wait = 0.0
            except TransientError as exc:
                self.limiter.settle(reserved, 0)
                wait = backoff_delay(attempt, self.backoff_base_s, self.backoff_max_s)
                error = f"{exc} (backing off {wait:.1f}s)"
            except FatalError as exc:
                self.limiter.settle(reserved, 0)
                raise CallFailed(redact(f"{self.name}: {exc}")) from None
            else:
                self.limiter.settle(reserved, answer.tokens_in + answer.tokens_out)
                self._count(tokens_in=answer.tokens_in, tokens_out=answer.tokens_out)
                return answer
            error = redact(error)
            log.warning("%s: attempt %d/%d failed: %s", self.name, attempt + 1, self.max_retries + 1, error)
            if wait and attempt < self.max_retries:
                time.sleep(wait)
        raise CallFailed(f"{self.name}: no answer after {self.max_retries + 1} attempts; last error: {error}")

    def compare_once(self, persona: Persona, prompt: str, first: str, second: str) -> OrderedVerdict:
        return parse_verdict(self.call(render(self.purpose, persona, prompt, first, second)))

    # -- many pairs -------------------------------------------------------

    def _ordered(self, persona: Persona, item: PairItem, order: str) -> tuple[str, dict[str, Any]]:
        """Verdict record for one order: from the cache, else one API call (cached before returning)."""
        first, second = (item.response_a, item.response_b) if order == "ab" else (item.response_b, item.response_a)
        prompt = render(self.purpose, persona, item.prompt, first, second)
        key = cache_key(self.model, prompt)
        cached = self.cache.get(key)
        if cached is not None:
            self._count(calls_saved_cache=1)
            return order, cached
        try:
            answer = self.call(prompt)
        except CallFailed as exc:
            # Not cached: a rerun tries again.
            log.warning("%s: item %s (order %s) failed: %s", self.name, item.id, order, redact(exc))
            return order, {"status": "failed", "error": str(exc)}
        record: dict[str, Any] = {"key": key, "item_id": item.id, "order": order, "model": self.model, "template": prompt.version,
                                  "tokens_in": answer.tokens_in, "tokens_out": answer.tokens_out}
        try:
            verdict = parse_verdict(answer)
            record.update(status="ok", verdict=_verdict_to_dict(verdict))
        except InvalidAnswer as exc:
            # Cached too: the call was made and paid for; asking again at temperature 0 gives the same answer.
            record.update(status="invalid", error=str(exc), raw=(answer.text or "")[:2000])
        self.cache.put(record)
        return order, record

    def _rule_decision(self, persona: Persona, item: PairItem) -> PairJudgement | None:
        """A forbidden ingredient in exactly one response decides the pair without an API call."""
        if not (self.hard_constraint_shortcut and persona.forbidden):
            return None
        from dpo_tasks.judges.rules import RuleJudge

        va = RuleJudge.violations(persona, item.response_a)
        vb = RuleJudge.violations(persona, item.response_b)
        if bool(va) == bool(vb):
            return None
        rules = RuleJudge()
        ab = rules.compare_once(persona, item.prompt, item.response_a, item.response_b)
        winner, bad, terms = ("b", "a", va) if va else ("a", "b", vb)
        j = combine_orders(item.id, ab, None, source="hard-constraint")
        j.status, j.winner = "ok", winner
        j.reason = f"response {bad} uses forbidden {', '.join(f'{t} ({c})' for t, c in terms)}"
        return j

    def judge_pairs(self, persona: Persona, items: Sequence[PairItem], *, both_orders: bool = True, progress: Any = None) -> list[PairJudgement]:
        orders = ("ab", "ba") if (both_orders and self.both_orders) else None
        results: dict[str, PairJudgement] = {}
        pending: dict[str, dict[str, dict[str, Any]]] = {}
        jobs: list[tuple[PairItem, str]] = []
        for item in items:
            decided = self._rule_decision(persona, item)
            if decided is not None:
                self._count(calls_saved_rule=2 if orders else 1)
                results[item.id] = decided
                if progress is not None:
                    progress.advance()
                continue
            item_orders = orders or (_single_order(item.id),)
            pending[item.id] = {}
            jobs += [(item, o) for o in item_orders]
        by_id = {item.id: item for item in items}
        wanted = {item_id: len(orders or (1,)) for item_id in pending}
        with ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix=self.name) as pool:
            futures = {pool.submit(self._ordered, persona, item, o): item.id for item, o in jobs}
            for fut in as_completed(futures):
                item_id = futures[fut]
                order, record = fut.result()
                pending[item_id][order] = record
                if len(pending[item_id]) == wanted[item_id]:
                    results[item_id] = self._combine(by_id[item_id], pending.pop(item_id))
                    if progress is not None:
                        progress.advance()
        out = [results[item.id] for item in items]
        self._count(items=len(out), decided=sum(j.status == "ok" for j in out),
                    invalid=sum(j.status == "invalid" for j in out), failed=sum(j.status == "failed" for j in out))
        a = self.accounting()
        log.info("%s (%s): %d items, %d decided, %d invalid, %d failed; %d calls made (%d retries, %d rate-limited), "
                 "%d saved by the cache and %d by the hard-constraint rule; tokens %d in / %d out, estimated $%.4f",
                 self.name, self.model, a["items"], a["decided"], a["invalid"], a["failed"], a["calls_made"], a["retries"],
                 a["rate_limited"], a["calls_saved_cache"], a["calls_saved_rule"], a["tokens_in"], a["tokens_out"], a["estimated_cost_usd"])
        return out

    def _combine(self, item: PairItem, records: dict[str, dict[str, Any]]) -> PairJudgement:
        for bad in ("failed", "invalid"):
            errs = [f"{o}: {r['error']}" for o, r in sorted(records.items()) if r["status"] == bad]
            if errs:
                return PairJudgement(id=item.id, status=bad, winner=None, reason="; ".join(errs), source=self.name,
                                     verdicts=[{"order": o, **r} for o, r in sorted(records.items())])
        verdicts = {o: _verdict_from_dict(r["verdict"]) for o, r in records.items()}
        if "ab" in verdicts:
            return combine_orders(item.id, verdicts["ab"], verdicts.get("ba"), source=self.name)
        # One order asked, and it was (B, A): mirror it so combine_orders sees (A, B).
        ba = verdicts["ba"]
        mirrored = OrderedVerdict(
            preferred={"first": "second", "second": "first"}.get(ba.preferred, "tie"),  # type: ignore[arg-type]
            scores_first=ba.scores_second, scores_second=ba.scores_first, confidence=ba.confidence, reason=ba.reason,
        )
        j = combine_orders(item.id, mirrored, None, source=self.name)
        j.verdicts = [{"order": "ba", **asdict(ba)}]
        return j

    def accounting(self) -> dict[str, Any]:
        with self._lock:
            a = dict(self._acct)
        a["judge"], a["model"] = self.name, self.model
        a["calls_saved"] = a["calls_saved_cache"] + a["calls_saved_rule"]
        a["estimated_cost_usd"] = round((a["tokens_in"] * self.price_in + a["tokens_out"] * self.price_out) / 1e6, 6)
        a["pass_rate"] = round(a["decided"] / a["items"], 4) if a["items"] else None
        return a

    def close(self) -> None:
        self.cache.close()


def _single_order(item_id: str) -> str:
    """One order per item, swapped for half the items (position bias averages out); stable across reruns so the cache hits."""
    return "ba" if hashlib.sha256(item_id.encode("utf-8")).digest()[0] & 1 else "ab"


def _verdict_to_dict(v: OrderedVerdict) -> dict[str, Any]:
    d = asdict(v)
    d["scores_first"] = v.scores_first.as_dict() if v.scores_first else None
    d["scores_second"] = v.scores_second.as_dict() if v.scores_second else None
    return d


def _verdict_from_dict(d: dict[str, Any]) -> OrderedVerdict:
    return OrderedVerdict(
        preferred=d["preferred"],
        scores_first=Scores.from_dict(d["scores_first"]) if d.get("scores_first") else None,
        scores_second=Scores.from_dict(d["scores_second"]) if d.get("scores_second") else None,
        confidence=d.get("confidence"),
        reason=d.get("reason", ""),
    )
