"""The pieces of Supabase that RLS policies rely on, recreated on a plain Postgres.

Roles are cluster-wide and other test sessions may create them at the same time: each is created
only when missing, and a concurrent creation is tolerated. Everything else lives in the database.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import psycopg
from psycopg import sql

from tests.sql.helpers import Conn
from worker.core.migrate import migrate
from worker.devtools.embedded import with_database

ROLES = ("anon", "authenticated", "service_role")

CREATE_ROLES = """
DO $$
DECLARE
    _role text;
BEGIN
    FOREACH _role IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF to_regrole(_role) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', _role);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created by another session meanwhile
            END;
        END IF;
    END LOOP;
    IF NOT (SELECT rolbypassrls FROM pg_roles WHERE rolname = 'service_role') THEN
        ALTER ROLE service_role BYPASSRLS;
    END IF;
END;
$$
"""

# What a Supabase project has before our migrations run: an auth schema with auth.uid(), and
# broad grants to the API roles on whatever the migrator creates in public (RLS does the rest).
SUPABASE_DATABASE = """
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid
    LANGUAGE sql STABLE
AS $$
    SELECT (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid
$$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION auth.uid() TO anon, authenticated, service_role;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
"""


@contextmanager
def supabase_database(server_url: str) -> Iterator[str]:
    """A fresh database prepared like a Supabase project, then migrated; dropped afterwards."""
    name = f"imagejobs_rls_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(CREATE_ROLES)
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SUPABASE_DATABASE)
        asyncio.run(migrate(url))
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@asynccontextmanager
async def acting_as(conn: Conn, role: str, user_id: uuid.UUID | None = None) -> AsyncIterator[Conn]:
    """A transaction run as PostgREST runs a request: the API role, the JWT's claims. Rolled back
    at the end, so nothing a test tries persists."""
    claims: dict[str, str] = {"role": role}
    if user_id is not None:
        claims["sub"] = str(user_id)
    async with conn.transaction(force_rollback=True):
        await conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        await conn.execute(
            "SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),)
        )
        yield conn
