"""APP_ENV=production refuses unsafe configurations, by unit and as real processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from worker.core.config import load_settings
from worker.core.safety import production_problems

SAFE = {
    "APP_ENV": "production",
    "DATABASE_URL": "postgresql://app:pw@db.example.supabase.co:5432/postgres",
    "STORAGE_BACKEND": "supabase",
    "SUPABASE_URL": "https://example.supabase.co",
    "SUPABASE_SERVICE_ROLE_KEY": "service-role",
    "WEBHOOK_SECRET": "whsec_c2VjcmV0",
}


def problems(**changes: str | None) -> list[str]:
    env = {**SAFE, **changes}
    clean = {name: value for name, value in env.items() if value is not None}
    return production_problems(load_settings(clean))


def test_a_complete_production_configuration_has_no_problems() -> None:
    assert problems() == []


def test_the_worker_needs_neither_user_auth_nor_the_webhook_secret() -> None:
    # What render.yaml gives the worker service: no SUPABASE_JWT_SECRET, no WEBHOOK_SECRET.
    env = {k: v for k, v in SAFE.items() if k not in ("WEBHOOK_SECRET", "SUPABASE_URL")}
    settings = load_settings(env)
    assert production_problems(settings, command="worker") == []
    assert len(production_problems(settings, command="api")) == 2
    local = {**env, "STORAGE_BACKEND": "local"}
    assert production_problems(load_settings(local), command="worker") != []


def test_development_is_never_refused() -> None:
    env = {"APP_ENV": "development", "DATABASE_URL": "postgresql://x@h:6543/db"}
    assert production_problems(load_settings(env)) == []


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"STORAGE_BACKEND": "local"}, "STORAGE_BACKEND=local"),
        ({"WEBHOOK_SECRET": None}, "WEBHOOK_SECRET"),
        (
            {"DATABASE_URL": "postgresql://app:pw@aws-0.pooler.supabase.com:6543/postgres"},
            "port 6543",
        ),
        ({"DATABASE_URL": "host=pooler port=6543 dbname=postgres"}, "port 6543"),
        ({"DATABASE_URL": None}, "DATABASE_URL is not set"),
    ],
)
def test_each_unsafe_setting_is_named(changes: dict[str, str | None], named: str) -> None:
    found = problems(**changes)
    assert len(found) == 1
    assert named in found[0]


def test_auth_needs_supabase_or_an_explicit_api_keys_only() -> None:
    # Without SUPABASE_URL storage must not be supabase either; only auth is under test here.
    no_auth = problems(SUPABASE_URL=None)
    assert any("authentication" in p for p in no_auth)
    assert not any(
        "authentication" in p for p in problems(SUPABASE_URL=None, SUPABASE_JWT_SECRET="s")
    )
    assert not any(
        "authentication" in p for p in problems(SUPABASE_URL=None, AUTH_API_KEYS_ONLY="true")
    )


def test_the_session_pooler_port_is_accepted() -> None:
    assert problems(DATABASE_URL="postgresql://a:b@aws-0.pooler.supabase.com:5432/postgres") == []


@pytest.mark.parametrize("command", ["api", "worker"])
def test_the_processes_refuse_to_start(command: str) -> None:
    env = {
        **os.environ,
        **SAFE,
        "STORAGE_BACKEND": "local",
        "WEBHOOK_SECRET": "",
        "DATABASE_URL": "postgresql://app:marker-password@127.0.0.1:6543/postgres",
    }
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"imagejobs {command}: refusing to start with APP_ENV=production" in done.stderr
    assert "STORAGE_BACKEND=local" in done.stderr
    assert ("WEBHOOK_SECRET" in done.stderr) == (command == "api")
    assert "port 6543" in done.stderr
    assert "marker-password" not in done.stderr + done.stdout
