"""Local HTTP servers that answer like Groq's and Vertex AI's REST APIs.

Only the far side of the network is fake: the tests drive the real `groq` and
`google-genai` clients against these. Each server records every request it
receives (counted per distinct prompt, so a retry is visible as a second
attempt at the same prompt) and answers from a `script`:
`script(request, attempt) -> Reply | None`, where `attempt` counts earlier
requests with the same body (0 for the first) and None means "answer as a
sensible judge would" (prefers the longer response, whatever the order).

`rpm_limit` makes the server enforce a requests-per-window limit the way Groq
does: a 429 with `retry-after` (whole seconds) above it.

Run standalone for manual poking:  python tests/dpo_tasks/judges/fake_servers.py groq
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from dpo_tasks.judges.base import CRITERIA

_TAG_RE = {n: re.compile(rf"<response_{n}>\n(.*?)\n</response_{n}>", re.DOTALL) for n in (1, 2)}


@dataclass
class Reply:
    status: int = 200
    text: str | None = None  # the model's answer (200 only)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    finish_reason: str | None = None  # wire value; default "stop" / "STOP"
    raw_body: bytes | None = None  # send exactly these bytes (malformed bodies)
    error_message: str = "error"


@dataclass
class Recorded:
    time: float
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    digest: str
    attempt: int
    status: int = 0

    @property
    def user_text(self) -> str:
        if "messages" in self.body:
            return next(m["content"] for m in self.body["messages"] if m["role"] == "user")
        return self.body["contents"][0]["parts"][0]["text"]

    def responses(self) -> tuple[str, str]:
        """(response shown first, response shown second) as the judge saw them."""
        text = self.user_text
        return tuple(_TAG_RE[n].search(text).group(1) for n in (1, 2))  # type: ignore[return-value]


def verdict_json(preferred: str, *, hi: float = 8, lo: float = 3, confidence: str = "high") -> str:
    s_hi = {k: hi for k in CRITERIA}
    s_lo = {k: lo for k in CRITERIA}
    scores = {"1": s_hi, "2": s_lo} if preferred == "1" else {"1": s_lo, "2": s_hi} if preferred == "2" else {"1": s_hi, "2": s_hi}
    return json.dumps({"preferred": preferred, "scores": scores, "confidence": confidence, "reason": f"response {preferred} fits the persona better"})


def default_judge(req: Recorded) -> Reply:
    first, second = req.responses()
    pref = "1" if len(first) > len(second) else "2" if len(second) > len(first) else "tie"
    return Reply(text=verdict_json(pref))


def service_account_key(token_uri: str, project: str) -> dict:
    """A throwaway service-account key; its token_uri sends the JWT-for-token exchange to the local server."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return {"type": "service_account", "project_id": project, "private_key_id": "k1", "private_key": pem,
            "client_email": f"judge@{project}.iam.gserviceaccount.com", "client_id": "1", "token_uri": token_uri}


class FakeLLMServer:
    """`wire` is "groq" (OpenAI-style chat completions) or "gemini" (Vertex generateContent)."""

    def __init__(self, wire: str, script: Callable[[Recorded, int], Reply | None] | None = None, *, rpm_limit: int | None = None, window_s: float = 60.0):
        self.wire = wire
        self.script = script
        self.rpm_limit, self.window_s = rpm_limit, window_s
        self.requests: list[Recorded] = []
        self.token_requests: list[str] = []
        self.access_token = "ya29.fake-token-from-the-token-endpoint"
        self._attempts: Counter[str] = Counter()
        self._accepted: deque[float] = deque()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                server._handle(self, raw)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeLLMServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- bookkeeping ------------------------------------------------------

    def attempts_by_prompt(self) -> list[int]:
        with self._lock:
            return sorted(self._attempts.values())

    def _throttle(self, now: float) -> float | None:
        """Seconds until a slot frees if the window is full, else None (and the request counts)."""
        if self.rpm_limit is None:
            return None
        while self._accepted and self._accepted[0] <= now - self.window_s:
            self._accepted.popleft()
        if len(self._accepted) >= self.rpm_limit:
            return self._accepted[0] + self.window_s - now
        self._accepted.append(now)
        return None

    # -- one request ------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, raw: bytes) -> None:
        if h.path == "/token":
            # OAuth2 token endpoint (a service account's token_uri): trade the signed JWT for an access token.
            self.token_requests.append(raw.decode())
            payload = json.dumps({"access_token": self.access_token, "expires_in": 3600, "token_type": "Bearer"}).encode()
            h.send_response(200)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
            return
        body = json.loads(raw or b"{}")
        digest = hashlib.sha256(raw).hexdigest()
        now = time.monotonic()
        with self._lock:
            attempt = self._attempts[digest]
            self._attempts[digest] += 1
            rec = Recorded(now, h.path, {k.lower(): v for k, v in h.headers.items()}, body, digest, attempt)
            self.requests.append(rec)
            wait = self._throttle(now)
        if wait is not None:
            reply = Reply(status=429, headers={"retry-after": str(max(1, math.ceil(wait)))}, error_message="Rate limit reached on requests per minute (RPM)")
        else:
            reply = (self.script(rec, attempt) if self.script else None) or default_judge(rec)
        rec.status = reply.status
        if reply.delay_s:
            time.sleep(reply.delay_s)
        payload = reply.raw_body if reply.raw_body is not None else json.dumps(self._body(rec, reply)).encode()
        headers = {"content-type": "application/json", **self._rate_headers(), **reply.headers}
        try:
            h.send_response(reply.status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("content-length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout) before the answer came

    def _rate_headers(self) -> dict[str, str]:
        if self.wire != "groq":
            return {}
        return {
            "x-ratelimit-limit-requests": "1000", "x-ratelimit-remaining-requests": "999",
            "x-ratelimit-reset-requests": "1m26.4s", "x-ratelimit-limit-tokens": "12000",
            "x-ratelimit-remaining-tokens": "11000", "x-ratelimit-reset-tokens": "5s",
            "x-request-id": "req_fake",
        }

    def _body(self, rec: Recorded, reply: Reply) -> dict[str, Any]:
        prompt_tokens = len(rec.user_text) // 4
        out_tokens = len(reply.text or "") // 4
        if self.wire == "groq":
            if reply.status != 200:
                return {"error": {"message": reply.error_message, "type": "server_error" if reply.status >= 500 else "invalid_request_error"}}
            return {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": rec.body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text}, "logprobs": None,
                             "finish_reason": reply.finish_reason or "stop"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": out_tokens, "total_tokens": prompt_tokens + out_tokens},
                "system_fingerprint": "fp_fake", "x_groq": {"id": "req_fake"},
            }
        if reply.status != 200:
            status = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 401: "UNAUTHENTICATED", 400: "INVALID_ARGUMENT"}.get(reply.status, "UNKNOWN")
            return {"error": {"code": reply.status, "message": reply.error_message, "status": status}}
        candidate: dict[str, Any] = {"finishReason": reply.finish_reason or "STOP"}
        if reply.text is not None:
            candidate["content"] = {"role": "model", "parts": [{"text": reply.text}]}
        return {
            "candidates": [candidate],
            "usageMetadata": {"promptTokenCount": prompt_tokens, "candidatesTokenCount": out_tokens, "totalTokenCount": prompt_tokens + out_tokens},
            "modelVersion": rec.path.rsplit("/", 1)[-1].split(":")[0],
        }


if __name__ == "__main__":
    import sys

    with FakeLLMServer(sys.argv[1] if len(sys.argv) > 1 else "groq") as srv:
        print(srv.url, flush=True)
        threading.Event().wait()
