"""One `redact()` for every credential a log line or an error message could carry.

    redact("postgresql://u:pw@h/db?sslpassword=x")  -> "postgresql://u:***@h/db?sslpassword=***"
    redact("host=h password='a b' user=u")           -> "host=h password=*** user=u"
    redact("Authorization: Bearer gsk_abc...")       -> "Authorization: Bearer ***"

Forms covered: a URL's userinfo password (`scheme://user:PASSWORD@host`), secret query
parameters (`?password=`, `&token=`, `api_key=`, ...), `key=value` DSN fields (libpq's
`password=`, quoted or not), credential headers (`Authorization: Bearer/Basic ...`,
`x-api-key:`, `x-goog-api-key:`, in header or dict-repr form), and bare API keys of known shapes
(Groq `gsk_...`, Google `AIza...`, OAuth `ya29....`), and the value of any secret environment
variable of this process (`*_API_KEY`, `*PASSWORD`, `*SECRET`, `*TOKEN`) wherever it appears. The CLI installs `RedactingFilter` on its
log handler, so a stage's log lines pass through here too. Only the standard library: the DAG files may import it.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

MASK = "***"

_SECRET_KEYS = r"(?:password|passwd|pwd|sslpassword|secret|client_secret|token|access_token|refresh_token|id_token|api[_-]?key|apikey|key|auth|authorization|credentials|signature|x-goog-signature|sig)"
# scheme://user:password@host -- the password ends at the last '@' before the host part.
_URL_USERINFO = re.compile(r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/?#@'\"]*:)(?P<secret>[^\s/?#'\"]*)(?P<at>@)")
# ?password=x&... and key=value DSN fields (password=x, password='a b', "password": "x" is handled below).
_KEY_VALUE = re.compile(
    rf"(?P<pre>(?<![A-Za-z0-9_-]){_SECRET_KEYS}\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;,'\")]+)",
    re.IGNORECASE,
)
# Authorization: Bearer x / x-api-key: x (header lines) and 'Authorization': 'Bearer x' (dict reprs, JSON).
_HEADER = re.compile(
    r"(?P<pre>(?P<q>['\"]?)(?:authorization|proxy-authorization|x-api-key|x-goog-api-key|api-key|x-auth-token|cookie)(?P=q)\s*[:=]\s*['\"]?"
    r"(?:(?:bearer|basic|token)\s+)?)(?P<secret>[^\s'\",}]+)",
    re.IGNORECASE,
)
# "password": "x" in JSON or a dict repr.
_QUOTED_FIELD = re.compile(rf"(?P<pre>['\"]{_SECRET_KEYS}['\"]\s*:\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")", re.IGNORECASE)
_KNOWN_KEYS = re.compile(r"\b(?:gsk_[A-Za-z0-9_]{16,}|AIza[0-9A-Za-z_-]{30,}|ya29\.[0-9A-Za-z._-]{10,}|sk-[A-Za-z0-9_-]{16,})")
# The values of this process's secret environment variables are masked wherever they appear.
_SECRET_ENV = re.compile(r"(?:API_KEY|PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIALS?)$|^(?:PGPASSWORD|GROQ_API_KEY|GEMINI_API_KEY|GOOGLE_API_KEY)$", re.IGNORECASE)
_MIN_SECRET_LEN = 8


def redact(text: Any) -> str:
    """`text` (anything; str() of it) with every credential form replaced by `***`."""
    s = str(text)
    if not s:
        return s
    s = _URL_USERINFO.sub(lambda m: f"{m['pre']}{MASK if m['secret'] else ''}{m['at']}", s)
    s = _HEADER.sub(lambda m: f"{m['pre']}{MASK}", s)
    s = _QUOTED_FIELD.sub(lambda m: f"{m['pre']}{m['secret'][0]}{MASK}{m['secret'][0]}", s)
    s = _KEY_VALUE.sub(lambda m: f"{m['pre']}{MASK}", s)
    s = _KNOWN_KEYS.sub(MASK, s)
    for name, value in os.environ.items():
        if len(value) >= _MIN_SECRET_LEN and _SECRET_ENV.search(name) and value in s:
            s = s.replace(value, MASK)
    return s


class RedactingFilter(logging.Filter):
    """Rewrites each record's message through `redact` (and drops its args, already merged in)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's to report, not ours
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True
