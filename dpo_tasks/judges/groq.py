"""Groq labeling judge: chat completions (default llama-3.3-70b-versatile) via the `groq` SDK.

Key: the Airflow connection `groq_default` (its password) when running as an
Airflow task, else `GROQ_API_KEY`. `GROQ_BASE_URL` points the SDK at another
endpoint (how the tests reach their local server). The key is handed to the SDK
and nothing else: it is never logged, put in an error or written to a file.

The SDK's own retries are off (`max_retries=0`); `ApiJudge.call` owns them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from dpo_tasks.config import ConfigError, GroqConfig
from dpo_tasks.judges.api import ApiAnswer, ApiJudge, FatalError, RateLimited, TransientError
from dpo_tasks.judges.prompts import JudgePrompt
from dpo_tasks.redact import redact

log = logging.getLogger(__name__)

_DURATION_RE = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$")


def parse_duration(value: str | None) -> float | None:
    """Groq's reset headers: "7.66s", "2m59.56s", "1h2m3s", "350ms" -> seconds."""
    if not value:
        return None
    m = _DURATION_RE.match(value.strip())
    if not m or not any(m.groups()):
        return None
    h, mi, s, ms = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000


def parse_retry_after(headers: Any) -> float | None:
    """`retry-after-ms` or `retry-after` (seconds) from a response's headers."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name) if headers is not None else None
        if raw is None:
            continue
        try:
            return max(0.0, float(raw) / scale)
        except ValueError:
            continue
    return None


def resolve_api_key(conn_id: str) -> str:
    if os.environ.get("AIRFLOW_CTX_DAG_ID"):
        try:
            from airflow.sdk import BaseHook

            password = BaseHook.get_connection(conn_id).password
            if password:
                return password
            log.warning("Airflow connection %r has no password; trying GROQ_API_KEY", conn_id)
        except Exception as exc:  # noqa: BLE001 - any lookup failure falls back to the env var
            log.warning("Airflow connection %r not available (%s); trying GROQ_API_KEY", conn_id, type(exc).__name__)
    key = os.environ.get("GROQ_API_KEY", "").strip()
    if not key:
        raise ConfigError(
            f"labeling.judge='groq' needs an API key: set the password of the Airflow connection {conn_id!r} "
            "or the environment variable GROQ_API_KEY"
        )
    return key


class GroqJudge(ApiJudge):
    name = "groq"
    purpose = "label"

    def __init__(self, config: GroqConfig, *, cache_dir: str | Path | None = None, api_key: str | None = None):
        super().__init__(
            config,
            both_orders=config.both_orders,
            hard_constraint_shortcut=config.hard_constraint_shortcut,
            cache_dir=cache_dir,
        )
        self.config = config
        import groq

        self._groq = groq
        self._client = groq.Groq(
            api_key=api_key or resolve_api_key(config.conn_id),
            base_url=os.environ.get("GROQ_BASE_URL") or None,
            max_retries=0,
            timeout=config.timeout_s,
        )

    def _send(self, prompt: JudgePrompt) -> ApiAnswer:
        groq = self._groq
        try:
            raw = self._client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=[{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}],
                temperature=self.config.temperature,
                max_completion_tokens=self.max_output_tokens,
            )
            completion = raw.parse()
        except groq.RateLimitError as exc:
            raise RateLimited(f"HTTP 429 from Groq: {_error_message(exc)}", parse_retry_after(exc.response.headers)) from None
        except groq.APIStatusError as exc:
            if exc.status_code >= 500:
                raise TransientError(f"HTTP {exc.status_code} from Groq: {_error_message(exc)}") from None
            raise FatalError(f"HTTP {exc.status_code} from Groq: {_error_message(exc)}") from None
        except groq.APITimeoutError:
            raise TransientError(f"Groq did not answer within {self.config.timeout_s}s") from None
        except groq.APIConnectionError as exc:
            raise TransientError(f"cannot reach Groq: {type(exc.__cause__ or exc).__name__}") from None
        except (json.JSONDecodeError, groq.APIResponseValidationError) as exc:
            raise TransientError(f"Groq sent a malformed response body ({type(exc).__name__})") from None
        self._observe_budget(raw.headers)
        if not completion.choices:
            return ApiAnswer(text=None, finish_reason="empty")
        choice = completion.choices[0]
        usage = completion.usage
        return ApiAnswer(
            text=choice.message.content,
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason,
        )

    def close(self) -> None:
        super().close()
        self._client.close()

    def _observe_budget(self, headers: Any) -> None:
        """Groq says how much of its token budget is left; wait for the reset instead of earning a 429."""
        try:
            remaining = int(headers.get("x-ratelimit-remaining-tokens", ""))
        except ValueError:
            return
        reset = parse_duration(headers.get("x-ratelimit-reset-tokens"))
        if remaining < self.max_output_tokens and reset:
            self.limiter.pause(reset)


def _error_message(exc: Any) -> str:
    """The API's own error message (Groq's body is {"error": {"message": ...}}), not the SDK's repr."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            # Groq's messages can quote the key they refused ("Invalid API Key: gsk_...").
            return redact(str(err["message"])[:300])
    return type(exc).__name__
