"""Gemini evaluation judge: `generateContent` on Vertex AI through `google-genai`.

Project, location and model come from `evaluation.gemini` (project falls back
to `GOOGLE_CLOUD_PROJECT`). Credentials: as an Airflow task, those of the
connection `google_cloud_default` through the Google provider's
`GenAIGenerativeModelHook` (which also supplies the default project); elsewhere
the explicit `credentials` option or Application Default Credentials (also the fallback
when a stage subprocess cannot read the connection).
`GOOGLE_VERTEX_BASE_URL` (read by the SDK itself) points it at another endpoint.

The SDK's retries are off (no `retry_options`, so one attempt per call);
`ApiJudge.call` owns retries, rate limits and the cache, as for Groq.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from dpo_tasks.config import ConfigError, GeminiConfig
from dpo_tasks.judges.api import ApiAnswer, ApiJudge, FatalError, RateLimited, TransientError
from dpo_tasks.judges.groq import parse_retry_after
from dpo_tasks.judges.prompts import JudgePrompt

log = logging.getLogger(__name__)

_REFUSALS = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}


def resolve_credentials(config: GeminiConfig, credentials: Any = None) -> tuple[Any, str]:
    """(credentials or None for ADC, project) for the Vertex AI client."""
    project = config.project or os.environ.get("GOOGLE_CLOUD_PROJECT")
    if credentials is None and os.environ.get("AIRFLOW_CTX_DAG_ID"):
        try:
            from airflow.providers.google.cloud.hooks.gen_ai import GenAIGenerativeModelHook

            hook = GenAIGenerativeModelHook(gcp_conn_id=config.gcp_conn_id)
            credentials = hook.get_credentials()
            project = project or hook.project_id
        except Exception as exc:  # noqa: BLE001 - e.g. a stage subprocess that cannot reach the connection
            log.warning("Airflow connection %r not usable (%s); using Application Default Credentials", config.gcp_conn_id, type(exc).__name__)
    if not project:
        raise ConfigError(
            "evaluation.judge='gemini' needs a Google Cloud project: set evaluation.gemini.project, "
            f"GOOGLE_CLOUD_PROJECT, or the project of the Airflow connection {config.gcp_conn_id!r}"
        )
    return credentials, project


class GeminiJudge(ApiJudge):
    name = "gemini"
    purpose = "evaluate"

    def __init__(self, config: GeminiConfig, *, cache_dir: str | Path | None = None, credentials: Any = None):
        super().__init__(config, cache_dir=cache_dir)
        self.config = config
        from google import genai
        from google.genai import types

        self._genai, self._types = genai, types
        credentials, project = resolve_credentials(config, credentials)
        self._client = genai.Client(
            vertexai=True,
            project=project,
            location=config.location,
            credentials=credentials,
            # HttpOptions.timeout is in milliseconds; no retry_options = a single attempt.
            http_options=types.HttpOptions(timeout=int(config.timeout_s * 1000)),
        )

    def close(self) -> None:
        super().close()
        self._client.close()

    def _send(self, prompt: JudgePrompt) -> ApiAnswer:
        import httpx
        from google.auth import exceptions as auth_exceptions

        errors = self._genai.errors
        try:
            resp = self._client.models.generate_content(
                model=self.model,
                contents=prompt.user,
                config=self._types.GenerateContentConfig(
                    system_instruction=prompt.system,
                    temperature=0.0,
                    max_output_tokens=self.max_output_tokens,
                    response_mime_type="application/json",
                    # No tools are declared; skip the SDK's function-calling loop.
                    automatic_function_calling=self._types.AutomaticFunctionCallingConfig(disable=True),
                ),
            )
        except errors.APIError as exc:
            msg = f"HTTP {exc.code} from Vertex AI: {exc.status or ''} {(exc.message or '')[:300]}".rstrip()
            if exc.code == 429:
                raise RateLimited(msg, parse_retry_after(getattr(exc.response, "headers", None))) from None
            if exc.code is not None and exc.code >= 500:
                raise TransientError(msg) from None
            raise FatalError(msg) from None
        except httpx.TimeoutException:
            raise TransientError(f"Vertex AI did not answer within {self.config.timeout_s}s") from None
        except httpx.TransportError as exc:
            raise TransientError(f"cannot reach Vertex AI: {type(exc).__name__}") from None
        except auth_exceptions.TransportError as exc:
            raise TransientError(f"cannot reach the Google token endpoint: {type(exc).__name__}") from None
        except auth_exceptions.GoogleAuthError as exc:
            raise FatalError(f"Google credentials rejected: {type(exc).__name__}") from None
        except ValueError as exc:
            raise TransientError(f"Vertex AI sent a malformed response body ({type(exc).__name__})") from None
        usage = resp.usage_metadata
        tokens_in = (usage.prompt_token_count or 0) if usage else 0
        tokens_out = (usage.candidates_token_count or 0) if usage else 0
        if resp.prompt_feedback is not None and resp.prompt_feedback.block_reason is not None:
            return ApiAnswer(text=None, tokens_in=tokens_in, finish_reason="refused")
        if not resp.candidates:
            return ApiAnswer(text=None, tokens_in=tokens_in, tokens_out=tokens_out, finish_reason="empty")
        cand = resp.candidates[0]
        reason = cand.finish_reason.value if cand.finish_reason is not None else None
        finish = "refused" if reason in _REFUSALS else "length" if reason == "MAX_TOKENS" else (reason or "").lower() or None
        parts = (cand.content.parts or []) if cand.content else []
        text = "".join(p.text for p in parts if p.text and not p.thought) or None
        return ApiAnswer(text=text, tokens_in=tokens_in, tokens_out=tokens_out, finish_reason=finish)
