"""Configured secrets are replaced in every log record, messages and tracebacks alike, and in
the real worker process when its DATABASE_URL is malformed (libpq quotes it back)."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from worker.core.config import load_settings
from worker.core.redact import REDACTED, install_log_redaction, secret_values


@pytest.fixture
def restore_factory() -> Iterator[None]:
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


def test_secret_values_cover_keys_and_the_database_password() -> None:
    env = {
        "DATABASE_URL": "postgresql://app:p%40ss-word@db.example.com:5432/postgres",
        "OPENAI_API_KEY": "sk-openai-value",
        "FAL_KEY": "fal-key-value",
        "SUPABASE_JWT_SECRET": "jwt-secret-value",
        "PORT": "8000",
    }
    values = secret_values(load_settings(env))
    assert {"sk-openai-value", "fal-key-value", "jwt-secret-value", "p@ss-word"} <= set(values)
    assert "p%40ss-word" in values


def test_messages_and_tracebacks_are_redacted(restore_factory: None) -> None:
    stream = io.StringIO()
    logger = logging.getLogger("tests.redact")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    install_log_redaction(["sk-live-secret"])
    try:
        logger.warning("calling with key %s", "sk-live-secret")
        try:
            raise RuntimeError("https://api.example.com/?key=sk-live-secret failed")
        except RuntimeError:
            logger.exception("provider call failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "sk-live-secret" not in output
    assert f"calling with key {REDACTED}" in output
    assert f"RuntimeError: https://api.example.com/?key={REDACTED} failed" in output
    assert "provider call failed" in output


def test_a_malformed_database_url_is_not_quoted_back() -> None:
    env = {
        **os.environ,
        "APP_ENV": "development",
        "DATABASE_URL": "host=127.0.0.1 port=1 postgresql://app:MARKERdbpass@db.example.com/x",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "worker.cli", "worker"],
            env=env,
            capture_output=True,
            text=True,
            timeout=4,
        )
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:  # the worker keeps retrying: read what it said
        output = (exc.stdout or b"").decode() + (exc.stderr or b"").decode()
    assert "error connecting" in output
    assert REDACTED in output
    assert "MARKERdbpass" not in output
