"""Configured secrets never reach a log line: every record is rendered once, when it is made,
with each secret value replaced. A record factory (not a handler filter) so that loggers with
their own handlers (uvicorn's) are covered too, and exceptions' text as well as messages."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

import psycopg

from worker.core.config import Settings
from worker.core.logs import REDACTED, hide_query_tokens, hide_url_credentials

__all__ = ["REDACTED", "install_log_redaction", "redact", "scrub", "secret_values"]

# Shorter values are not worth redacting (and would mangle ordinary text).
MIN_SECRET_LENGTH = 6


# Where a password sits in a URL or a key=value string that libpq cannot parse (a malformed
# DATABASE_URL is exactly what its error messages quote back).
_PASSWORDS = re.compile(r"://[^:/@\s]*:([^@\s]+)@|\bpassword\s*=\s*'?([^\s']+)")


def _database_passwords(database_url: str | None) -> list[str]:
    if not database_url:
        return []
    found = [a or b for a, b in _PASSWORDS.findall(database_url)]
    try:
        password = psycopg.conninfo.conninfo_to_dict(database_url).get("password")
    except psycopg.ProgrammingError:
        password = None
    if password:
        found.append(str(password))
    found += [unquote(value) for value in found]
    return found


def secret_values(settings: Settings) -> list[str]:
    values = [
        settings.webhook_secret,
        settings.outgoing_webhook_secret,
        settings.openai_api_key,
        settings.google_api_key,
        settings.fal_key,
        settings.stability_api_key,
        settings.supabase_service_role_key,
        settings.sentry_dsn,
        settings.supabase_jwt_secret,
        *_database_passwords(settings.database_url),
    ]
    found = {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}
    # Longest first: a secret containing another is replaced whole.
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Configured secrets, and the password and query values of every URL, removed."""
    return hide_url_credentials(redact(text, secrets))


def install_log_redaction(secrets: list[str]) -> None:
    """Installed in every process, secrets or none: URLs with credentials in their query (a
    `webhook_url?token=` in httpx's request line) are hidden whatever logger writes them."""
    make_record = logging.getLogRecordFactory()
    formatter = logging.Formatter()

    def redacting_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: let the handler report it as usual
            return record
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            # Kept as arguments: the JSON formatter reads method, path and status from them.
            record.args = tuple(
                hide_query_tokens(scrub(a, secrets)) if isinstance(a, str) else a
                for a in record.args
            )
        else:
            record.msg, record.args = scrub(message, secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(formatter.formatException(record.exc_info), secrets)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, secrets)
        return record

    logging.setLogRecordFactory(redacting_record)
