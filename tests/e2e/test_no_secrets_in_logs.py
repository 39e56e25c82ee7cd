"""No secret ever reaches a log line or a response: the real API and worker run with every
secret set to a recognisable marker, requests succeed and fail (bad auth, bad input, a provider
refusing its key, a forged webhook), and the captured logs and responses are searched for them."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.conftest import Tenant
from tests.e2e.conftest import Stack
from tests.e2e.test_lifecycle import create_generation, create_project, wait_for
from tests.emulators.all import Services, serving
from tests.emulators.fal import FalState
from tests.emulators.openai import OpenAIState, openai_error
from tests.emulators.recorder import Scripted
from tests.emulators.supabase_storage import StorageState

pytestmark = pytest.mark.e2e

TOKEN = secrets.token_hex(4)


def marker(name: str) -> str:
    return f"MARKER{name}{TOKEN}"


def whsec(name: str) -> str:
    return "whsec_" + base64.b64encode(marker(name).encode()).decode()


SECRETS = {
    "WEBHOOK_SECRET": whsec("webhook"),
    "OUTGOING_WEBHOOK_SECRET": whsec("outgoing"),
    "OPENAI_API_KEY": "sk-" + marker("openai"),
    "FAL_KEY": marker("fal"),
    "GOOGLE_API_KEY": marker("google"),
    "SUPABASE_SERVICE_ROLE_KEY": marker("servicerole"),
    "SUPABASE_JWT_SECRET": marker("jwt"),
}
DATABASE_PASSWORD = marker("dbpassword")


def needles() -> list[str]:
    """Each secret as configured, and the base64 payload of the whsec_ ones."""
    values = [*SECRETS.values(), DATABASE_PASSWORD]
    values += [base64.b64decode(v.removeprefix("whsec_")).decode() for v in values if "whsec_" in v]
    return values


def with_password(database_url: str, password: str) -> str:
    """The test database as a URL with a password (the server trusts local connections, so any
    password works), the form a DATABASE_URL usually has."""
    params = conninfo_to_dict(database_url)
    host, port = str(params.get("host", "127.0.0.1")), params.get("port", "5432")
    user, dbname = params.get("user", "postgres"), params["dbname"]
    if host.startswith("/"):
        # The embedded server listens on a socket directory, which a URL carries as a parameter.
        return f"postgresql://{user}:{password}@/{dbname}?host={quote(host, safe='')}&port={port}"
    return f"postgresql://{user}:{password}@{host}:{port}/{dbname}"


def read_logs(directory: Path) -> str:
    return "\n".join(path.read_text(errors="replace") for path in directory.glob("*.log"))


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    # Google is given a key it does not know: every call fails with its auth error.
    state = Services(
        openai=OpenAIState(key=SECRETS["OPENAI_API_KEY"]),
        fal=FalState(key=SECRETS["FAL_KEY"]),
        storage=StorageState(key=SECRETS["SUPABASE_SERVICE_ROLE_KEY"]),
    )
    with serving(state):
        yield state


@pytest.fixture(scope="module")
def stack_env(services: Services, database_url: str) -> dict[str, str]:
    return {
        **SECRETS,
        "DATABASE_URL": with_password(database_url, DATABASE_PASSWORD),
        "STORAGE_BACKEND": "supabase",
        "SUPABASE_URL": services.storage.url,
        "SUPABASE_BUCKET": "generated",
        "OPENAI_BASE_URL": services.openai.url,
        "GOOGLE_BASE_URL": services.google.base_url,
        "FAL_BASE_URL": services.fal.base_url,
        "POLL_INTERVAL_S": "0.2",
    }


async def test_secrets_never_reach_logs_or_responses(
    stack: Stack, http: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    seen: list[httpx.Response] = []

    async def call(method: str, path: str, **kwargs: object) -> httpx.Response:
        response = await http.request(method, path, **kwargs)  # type: ignore[arg-type]
        seen.append(response)
        return response

    # Bad auth: no key, an unknown key, a key that looks like one of ours.
    async with httpx.AsyncClient(base_url=stack.url) as anonymous:
        for headers in (
            {},
            {"Authorization": "Bearer not-a-key"},
            {"Authorization": f"Bearer {SECRETS['SUPABASE_JWT_SECRET']}x"},
        ):
            response = await anonymous.get("/v1/projects", headers=headers)
            assert response.status_code == 401
            seen.append(response)
        forged = await anonymous.post(
            "/v1/webhooks/openai",
            content=b'{"type": "image.completed"}',
            headers={
                "webhook-id": "msg_1",
                "webhook-timestamp": "1",
                "webhook-signature": "v1,Zm9yZ2Vk",
            },
        )
        assert forged.status_code >= 400
        seen.append(forged)

    # Bad input.
    project_id = await create_project(http)
    invalid = await call("POST", "/v1/generations", json={"project_id": project_id, "prompt": ""})
    assert invalid.status_code == 422
    too_big = await call("POST", "/v1/projects", content=b"x" * (1024 * 1024 + 1))
    assert too_big.status_code == 413

    # Providers: OpenAI refusing its key (and echoing it, as some services do), Google with a
    # key it does not know, fal and Supabase Storage working with theirs.
    echo = f"Incorrect API key provided: {SECRETS['OPENAI_API_KEY']}."
    services.openai.recorder.script(
        Scripted(401, openai_error(echo, code="invalid_api_key")),
    )
    refused = await create_generation(http, project_id, "openai refuses", provider="openai")
    google = await create_generation(http, project_id, "google refuses", provider="google")
    fal = await create_generation(http, project_id, "fal works", provider="fal")
    failed = [
        await wait_for(http, refused["id"], "failed", timeout=60),
        await wait_for(http, google["id"], "failed", timeout=60),
    ]
    assert all(f["error_code"] for f in failed)
    await wait_for(http, fal["id"], "completed", timeout=60)
    seen.append(await call("GET", f"/v1/generations?project_id={project_id}"))
    async with http.stream("GET", f"/v1/generations/{refused['id']}/events") as events:
        body = b"".join([chunk async for chunk in events.aiter_bytes()])

    logs = read_logs(stack.log)
    texts = [logs, body.decode(errors="replace")]
    for response in seen:
        texts.append(response.text)
        texts.append("\n".join(f"{k}: {v}" for k, v in response.headers.items()))
    captured = "\n".join(texts)
    leaks = [needle for needle in needles() if needle in captured]
    assert leaks == [], f"secrets leaked: {leaks}"
    assert TOKEN not in captured, "part of a secret leaked"
    # The test saw something: the failures are described, just without the secrets.
    assert "OpenAI 401" in failed[0]["error_message"]
