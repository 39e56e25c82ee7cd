"""Supabase user JWTs on the API: HS256 with the project's secret, ES256 and RS256 with keys
served by a JWKS emulator on a real port. Every kind of bad token is a 401; a member works in
their workspace (and the generations they create record them); nobody reaches another
workspace."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from api.auth.jwt import LEEWAY_S, JwksUnavailable, JwtVerifier, TokenError
from tests.api.test_isolation import close, open_stream, wait_until
from tests.conftest import Tenant
from tests.emulators.server import serve
from tests.emulators.supabase_auth import (
    SupabaseAuth,
    build_supabase_auth_emulator,
    forge,
    generate_key,
    unsigned_segments,
)
from worker.core.config import load_settings

Client = AsyncTestClient[Litestar]


@pytest.fixture
def supabase_auth() -> Iterator[SupabaseAuth]:
    state = SupabaseAuth()
    state.add_key("ES256")
    state.add_key("RS256")
    with serve(build_supabase_auth_emulator(state)) as url:
        state.url = url
        yield state


@pytest.fixture
async def jwt_client(
    database_url: str, tmp_path: Path, supabase_auth: SupabaseAuth
) -> AsyncIterator[Client]:
    settings = load_settings(
        {
            "DATABASE_URL": database_url,
            "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
            "SUPABASE_URL": supabase_auth.url,
            "SUPABASE_JWT_SECRET": supabase_auth.secret,
        }
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


async def add_member(
    pool: AsyncConnectionPool, workspace_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO workspace_members (workspace_id, user_id) VALUES (%s, %s)",
            (workspace_id, user_id),
        )


@pytest.fixture
async def member(pool: AsyncConnectionPool) -> tuple[uuid.UUID, uuid.UUID]:
    """(user id, the one workspace they belong to)."""
    user_id, workspace_id = uuid.uuid4(), uuid.uuid4()
    await add_member(pool, workspace_id, user_id)
    return user_id, workspace_id


def bearer(token: str, workspace: uuid.UUID | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if workspace is not None:
        headers["X-Workspace-Id"] = str(workspace)
    return headers


def _flip(segment: str, at: int) -> str:
    return segment[:at] + ("A" if segment[at] != "A" else "B") + segment[at + 1 :]


def _tampered_payload(auth: SupabaseAuth, user: uuid.UUID) -> str:
    header, _, signature = auth.token(user).split(".")
    other = unsigned_segments({}, auth.claims(uuid.uuid4())).split(".")[1]
    return f"{header}.{other}.{signature}"


def _tampered_signature(auth: SupabaseAuth, user: uuid.UUID) -> str:
    header, payload, signature = auth.token(user, "ES256").split(".")
    return f"{header}.{payload}.{_flip(signature, 10)}"


def _public_key_as_hmac_secret(auth: SupabaseAuth, user: uuid.UUID) -> str:
    # The classic confusion: HS256 "signed" with the published public key, naming its kid.
    key = auth.key("RS256")
    pem = key.private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return forge({"alg": "HS256", "typ": "JWT", "kid": key.kid}, auth.claims(user), "HS256", pem)


def _algorithm_not_of_the_key(auth: SupabaseAuth, user: uuid.UUID) -> str:
    # A valid ES256 signature, but the header says RS256 (and points at the EC key).
    key = auth.key("ES256")
    return forge({"alg": "RS256", "kid": key.kid}, auth.claims(user), "ES256", key.private)


def _other_algorithms_key(auth: SupabaseAuth, user: uuid.UUID) -> str:
    # ES256 header naming the RS256 key's kid.
    rsa_key, ec_key = auth.key("RS256"), auth.key("ES256")
    return forge({"alg": "ES256", "kid": rsa_key.kid}, auth.claims(user), "ES256", ec_key.private)


def _wrong_key_same_kid(auth: SupabaseAuth, user: uuid.UUID) -> str:
    impostor = generate_key("ES256")
    impostor.kid = auth.key("ES256").kid
    return auth.token(user, "ES256", key=impostor)


def _supabase_anon_key(auth: SupabaseAuth, _: uuid.UUID) -> str:
    # The project's public anon key is an HS256 JWT too: no sub, no aud.
    now = int(time.time())
    claims = {"iss": "supabase", "ref": "abcdefgh", "role": "anon", "iat": now, "exp": now + 60}
    return jwt.encode(claims, auth.secret, algorithm="HS256")


# Each bad kind of token, and the reason the 401 gives.
BAD_TOKENS: dict[str, tuple[Callable[[SupabaseAuth, uuid.UUID], str], str]] = {
    "expired": (lambda a, u: a.token(u, exp=int(time.time()) - 3600), "expired"),
    "expired_es256": (lambda a, u: a.token(u, "ES256", exp=int(time.time()) - 3600), "expired"),
    "wrong_secret": (
        lambda a, u: jwt.encode(
            a.claims(u), "another-secret-that-is-32-characters-long", algorithm="HS256"
        ),
        "signature",
    ),
    "wrong_key_same_kid": (_wrong_key_same_kid, "signature"),
    "alg_none": (
        lambda a, u: unsigned_segments({"alg": "none", "typ": "JWT"}, a.claims(u)) + ".",
        "algorithm 'none' is not accepted",
    ),
    "alg_none_signed": (
        lambda a, u: forge({"alg": "none"}, a.claims(u), "HS256", a.secret.encode()),
        "algorithm 'none' is not accepted",
    ),
    "hostile_alg": (
        lambda a, u: forge({"alg": 'x"\u00e9\r\n'}, a.claims(u), "HS256", a.secret.encode()),
        "algorithm is not accepted",
    ),
    "tampered_payload": (_tampered_payload, "signature"),
    "tampered_signature": (_tampered_signature, "signature"),
    "wrong_aud": (lambda a, u: a.token(u, aud="anon"), "audience"),
    "wrong_aud_rs256": (lambda a, u: a.token(u, "RS256", aud="service"), "audience"),
    "wrong_iss": (
        lambda a, u: a.token(u, iss="https://other-project.supabase.co/auth/v1"),
        "issuer",
    ),
    "missing_iss": (lambda a, u: a.token(u, "ES256", iss=None), "no 'iss' claim"),
    "missing_sub": (lambda a, u: a.token(u, sub=None), "no 'sub' claim"),
    "sub_not_a_user_id": (lambda a, u: a.token(u, sub="service_role"), "not a user id"),
    "missing_exp": (lambda a, u: a.token(u, exp=None), "no 'exp' claim"),
    "missing_aud": (lambda a, u: a.token(u, "RS256", aud=None), "no 'aud' claim"),
    "unknown_kid": (
        lambda a, u: a.token(u, "ES256", key=generate_key("ES256")),
        "unknown signing key",
    ),
    "no_kid": (
        lambda a, u: jwt.encode(a.claims(u), a.key("ES256").private, algorithm="ES256"),
        "no key id",
    ),
    "public_key_as_hmac_secret": (_public_key_as_hmac_secret, "signature"),
    "algorithm_not_of_the_key": (_algorithm_not_of_the_key, "does not match its key"),
    "other_algorithms_key": (_other_algorithms_key, "does not match its key"),
    "hs384": (
        lambda a, u: jwt.encode(a.claims(u), a.secret, algorithm="HS384"),
        "algorithm 'HS384' is not accepted",
    ),
    "supabase_anon_key": (_supabase_anon_key, "no 'aud' claim"),
    "garbage": (lambda a, u: "abc.def.ghi", "malformed"),
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_every_bad_token_is_401(
    jwt_client: Client,
    supabase_auth: SupabaseAuth,
    member: tuple[uuid.UUID, uuid.UUID],
    kind: str,
) -> None:
    user_id, _ = member
    make_token, reason = BAD_TOKENS[kind]
    token = make_token(supabase_auth, user_id)
    for path in ("/v1/projects", f"/v1/generations/{uuid.uuid4()}/events"):
        response = await jwt_client.get(path, headers=bearer(token))
        assert response.status_code == 401, (kind, path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Bearer") and 'error="invalid_token"' in challenge
        assert challenge.isascii() and challenge.count('"') == 6  # realm, error, description
        assert response.json()["status"] == 401
        assert reason in response.json()["detail"], response.json()


async def test_the_good_token_of_the_matrix_works(
    jwt_client: Client, supabase_auth: SupabaseAuth, member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    # The 401s above are about the tokens: the same user with an honest token gets in.
    user_id, _ = member
    for algorithm in ("HS256", "ES256", "RS256"):
        response = await jwt_client.get(
            "/v1/projects", headers=bearer(supabase_auth.token(user_id, algorithm))
        )
        assert response.status_code == 200, (algorithm, response.text)


@pytest.mark.parametrize("algorithm", ["HS256", "ES256", "RS256"])
async def test_a_member_creates_and_reads_a_generation(
    jwt_client: Client,
    supabase_auth: SupabaseAuth,
    member: tuple[uuid.UUID, uuid.UUID],
    pool: AsyncConnectionPool,
    algorithm: str,
) -> None:
    user_id, workspace_id = member
    headers = bearer(supabase_auth.token(user_id, algorithm))
    project = await jwt_client.post("/v1/projects", json={"name": "mine"}, headers=headers)
    assert project.status_code == 201, project.text
    assert project.json()["workspace_id"] == str(workspace_id)
    created = await jwt_client.post(
        "/v1/generations",
        json={"project_id": project.json()["id"], "prompt": "a lighthouse at dusk"},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    generation_id = created.json()["id"]
    fetched = await jwt_client.get(f"/v1/generations/{generation_id}", headers=headers)
    assert fetched.status_code == 200
    assert fetched.json()["prompt"] == "a lighthouse at dusk"
    assert fetched.json()["user_id"] == str(user_id)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT user_id, workspace_id FROM image_generations WHERE id = %s", (generation_id,)
        )
        assert await cur.fetchone() == (user_id, workspace_id)


async def test_sse_and_actions_take_user_tokens(
    jwt_client: Client, supabase_auth: SupabaseAuth, member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user_id, _ = member
    headers = bearer(supabase_auth.token(user_id, "ES256"))
    project = (await jwt_client.post("/v1/projects", json={"name": "p"}, headers=headers)).json()
    created = (
        await jwt_client.post(
            "/v1/generations", json={"project_id": project["id"], "prompt": "x"}, headers=headers
        )
    ).json()
    cancelled = await jwt_client.post(f"/v1/generations/{created['id']}/cancel", headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    # A cancelled generation's stream is its current (terminal) state, then the end.
    events = await jwt_client.get(f"/v1/generations/{created['id']}/events", headers=headers)
    assert events.status_code == 200
    assert events.headers["content-type"].startswith("text/event-stream")
    assert "event: generation" in events.text and '"status":"cancelled"' in events.text


@pytest.fixture
def served_jwt_api(
    database_url: str, tmp_path: Path, supabase_auth: SupabaseAuth
) -> Callable[[float], AbstractContextManager[str]]:
    """A factory for the API on a real port (SSE streams) with a given AUTH_CACHE_TTL_S."""

    @contextmanager
    def start(cache_ttl_s: float) -> Iterator[str]:
        settings = load_settings(
            {
                "DATABASE_URL": database_url,
                "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
                "SUPABASE_URL": supabase_auth.url,
                "SUPABASE_JWT_SECRET": supabase_auth.secret,
                "AUTH_CACHE_TTL_S": str(cache_ttl_s),
                "SSE_KEEPALIVE_S": "60",
            }
        )
        with serve(create_app(settings), lifespan="on") as url:
            yield url

    return start


async def _stream_paths(http: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    project = await http.post("/v1/projects", json={"name": "p"}, headers=headers)
    assert project.status_code == 201, project.text
    created = await http.post(
        "/v1/generations", json={"project_id": project.json()["id"], "prompt": "x"}, headers=headers
    )
    assert created.status_code == 201, created.text
    return [f"/v1/generations/{created.json()['id']}/events", "/v1/projects/events"]


async def test_a_stream_ends_when_its_user_token_expires(
    served_jwt_api: Callable[[float], AbstractContextManager[str]],
    supabase_auth: SupabaseAuth,
    member: tuple[uuid.UUID, uuid.UUID],
) -> None:
    """At the token's `exp` (plus the clock-skew leeway), not at the next cache-TTL check."""
    user_id, workspace_id = member
    with served_jwt_api(60) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            paths = await _stream_paths(http, bearer(supabase_auth.token(user_id)))
            # Expired already, but within the leeway: accepted for about 3 more seconds.
            expires_at = time.time() - LEEWAY_S + 3
            token = supabase_auth.token(user_id, exp=int(expires_at))
            tenant = Tenant(workspace_id, token)
            streams = [await open_stream(http, path, tenant) for path in paths]
            await wait_until(lambda: all(s.events for s in streams), "the first events")
            await wait_until(lambda: all(s.ended for s in streams), "the ends", timeout=10)
            assert time.time() >= expires_at + LEEWAY_S - 1
            for stream in streams:
                final = stream.events[-1]
                assert final.event == "unauthorized", stream.raw
                assert final.json()["code"] == "credential_expired"
            await close(*streams)


async def test_a_stream_ends_when_its_user_leaves_the_workspace(
    served_jwt_api: Callable[[float], AbstractContextManager[str]],
    supabase_auth: SupabaseAuth,
    member: tuple[uuid.UUID, uuid.UUID],
    pool: AsyncConnectionPool,
) -> None:
    user_id, workspace_id = member
    with served_jwt_api(1) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            token = supabase_auth.token(user_id)
            paths = await _stream_paths(http, bearer(token))
            streams = [await open_stream(http, path, Tenant(workspace_id, token)) for path in paths]
            await wait_until(lambda: all(s.events for s in streams), "the first events")
            async with pool.connection() as conn:
                await conn.execute("DELETE FROM workspace_members WHERE user_id = %s", (user_id,))
            await wait_until(lambda: all(s.ended for s in streams), "the ends", timeout=5)
            for stream in streams:
                final = stream.events[-1]
                assert final.event == "unauthorized", stream.raw
                assert final.json()["code"] == "credential_revoked"
            await close(*streams)


async def test_a_user_in_no_workspace_is_403(
    jwt_client: Client, supabase_auth: SupabaseAuth
) -> None:
    response = await jwt_client.get(
        "/v1/projects", headers=bearer(supabase_auth.token(uuid.uuid4()))
    )
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "not a member" in response.json()["detail"]


async def test_another_workspaces_project_is_out_of_reach(
    jwt_client: Client,
    supabase_auth: SupabaseAuth,
    member: tuple[uuid.UUID, uuid.UUID],
    tenant: Tenant,
) -> None:
    user_id, _ = member
    token = supabase_auth.token(user_id, "RS256")
    foreign = (
        await jwt_client.post("/v1/projects", json={"name": "theirs"}, headers=tenant.headers)
    ).json()
    # In their own workspace the other project does not exist...
    response = await jwt_client.get(f"/v1/projects/{foreign['id']}", headers=bearer(token))
    assert response.status_code == 404
    attach = await jwt_client.post(
        "/v1/generations",
        json={"project_id": foreign["id"], "prompt": "intruder"},
        headers=bearer(token),
    )
    assert attach.status_code == 422 and attach.json()["errors"][0]["field"] == "project_id"
    # ...and asking for the other workspace by name is refused outright.
    response = await jwt_client.get(
        f"/v1/projects/{foreign['id']}", headers=bearer(token, tenant.workspace_id)
    )
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_a_member_of_several_workspaces_names_one(
    jwt_client: Client, supabase_auth: SupabaseAuth, pool: AsyncConnectionPool
) -> None:
    user_id, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await add_member(pool, first, user_id)
    await add_member(pool, second, user_id)
    token = supabase_auth.token(user_id)

    unnamed = await jwt_client.post("/v1/projects", json={"name": "?"}, headers=bearer(token))
    assert unnamed.status_code == 400
    assert unnamed.json()["errors"][0]["field"] == "X-Workspace-Id"

    for workspace in (first, second):
        made = await jwt_client.post(
            "/v1/projects", json={"name": "p"}, headers=bearer(token, workspace)
        )
        assert made.status_code == 201 and made.json()["workspace_id"] == str(workspace)
        listed = (await jwt_client.get("/v1/projects", headers=bearer(token, workspace))).json()
        assert {p["workspace_id"] for p in listed["data"]} == {str(workspace)}

    malformed = await jwt_client.get(
        "/v1/projects", headers=bearer(token) | {"X-Workspace-Id": "1"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["errors"][0]["field"] == "X-Workspace-Id"
    stranger = await jwt_client.get("/v1/projects", headers=bearer(token, uuid.uuid4()))
    assert stranger.status_code == 403


async def test_an_api_key_stays_in_its_workspace(
    jwt_client: Client, tenant: Tenant, other_tenant: Tenant
) -> None:
    own = await jwt_client.get(
        "/v1/projects", headers=tenant.headers | {"X-Workspace-Id": str(tenant.workspace_id)}
    )
    assert own.status_code == 200
    other = await jwt_client.get(
        "/v1/projects", headers=tenant.headers | {"X-Workspace-Id": str(other_tenant.workspace_id)}
    )
    assert other.status_code == 403


async def test_a_rotated_in_key_is_fetched_when_first_seen(
    jwt_client: Client, supabase_auth: SupabaseAuth, member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user_id, _ = member
    old = supabase_auth.key("ES256")
    assert (
        await jwt_client.get("/v1/projects", headers=bearer(supabase_auth.token(user_id, "ES256")))
    ).status_code == 200
    assert supabase_auth.fetches == 1

    # Supabase rotates: a new key is published and tokens are signed with it; the old one goes.
    new = supabase_auth.add_key("ES256")
    supabase_auth.remove_key(old)
    token = supabase_auth.token(user_id, "ES256", key=new)
    assert (await jwt_client.get("/v1/projects", headers=bearer(token))).status_code == 200
    assert supabase_auth.fetches == 2
    assert (await jwt_client.get("/v1/projects", headers=bearer(token))).status_code == 200
    assert supabase_auth.fetches == 2  # cached

    # Made-up key ids right after a refresh do not reach Supabase (cooldown).
    for _ in range(3):
        forged = supabase_auth.token(user_id, "ES256", key=generate_key("ES256"))
        assert (await jwt_client.get("/v1/projects", headers=bearer(forged))).status_code == 401
    assert supabase_auth.fetches == 2


async def test_jwks_outage_is_503_and_hs256_still_works(
    jwt_client: Client, supabase_auth: SupabaseAuth, member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user_id, _ = member
    supabase_auth.failing = True
    response = await jwt_client.get(
        "/v1/projects", headers=bearer(supabase_auth.token(user_id, "ES256"))
    )
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"]
    hs256 = await jwt_client.get("/v1/projects", headers=bearer(supabase_auth.token(user_id)))
    assert hs256.status_code == 200


async def test_user_tokens_are_refused_when_supabase_auth_is_not_configured(
    client: Client, supabase_auth: SupabaseAuth, member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user_id, _ = member
    response = await client.get("/v1/projects", headers=bearer(supabase_auth.token(user_id)))
    assert response.status_code == 401
    assert "not configured" in response.json()["detail"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_jwks_refreshes_on_miss_at_most_once_per_cooldown(
    supabase_auth: SupabaseAuth,
) -> None:
    verifier = JwtVerifier(None, supabase_auth.url)
    assert verifier.jwks is not None
    clock = verifier.jwks.clock = FakeClock()
    user_id = uuid.uuid4()
    assert await verifier.user_id(supabase_auth.token(user_id, "RS256")) == user_id
    assert supabase_auth.fetches == 1

    # A burst of unknown key ids, all at once: one refresh between them.
    strangers = [
        supabase_auth.token(user_id, "ES256", key=generate_key("ES256")) for _ in range(10)
    ]
    results = await asyncio.gather(
        *(verifier.user_id(token) for token in strangers), return_exceptions=True
    )
    assert all(isinstance(r, TokenError) for r in results)
    assert supabase_auth.fetches == 2

    # A key rotated in during the cooldown is picked up once the cooldown is over.
    rotated = supabase_auth.add_key("ES256")
    token = supabase_auth.token(user_id, "ES256", key=rotated)
    with pytest.raises(TokenError, match="unknown signing key"):
        await verifier.user_id(token)
    clock.now += verifier.jwks.cooldown_s
    assert await verifier.user_id(token) == user_id
    assert supabase_auth.fetches == 3


async def test_cached_keys_outlive_a_jwks_outage(supabase_auth: SupabaseAuth) -> None:
    verifier = JwtVerifier(None, supabase_auth.url)
    assert verifier.jwks is not None
    clock = verifier.jwks.clock = FakeClock()
    user_id = uuid.uuid4()
    token = supabase_auth.token(user_id, "ES256")
    assert await verifier.user_id(token) == user_id
    supabase_auth.failing = True
    clock.now += verifier.jwks.ttl_s + 1  # stale: a refresh is attempted and fails
    assert await verifier.user_id(token) == user_id
    await verifier.jwks.idle()  # the refresh runs behind the verified token
    assert supabase_auth.fetches == 2
    assert await verifier.user_id(token) == user_id


async def test_unreachable_jwks_with_nothing_cached_is_unavailable() -> None:
    verifier = JwtVerifier(None, "http://127.0.0.1:9")
    token = jwt.encode(
        {"sub": str(uuid.uuid4()), "aud": "authenticated", "exp": int(time.time()) + 60},
        generate_key("ES256").private,
        algorithm="ES256",
        headers={"kid": "k1"},
    )
    with pytest.raises(JwksUnavailable):
        await verifier.user_id(token)


async def test_the_openapi_document_describes_the_bearer_credential(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    bearer_scheme = schema["components"]["securitySchemes"]["bearer"]
    assert (bearer_scheme["type"], bearer_scheme["scheme"]) == ("http", "bearer")
    assert "X-Workspace-Id" in bearer_scheme["description"]
    created = schema["paths"]["/v1/generations"]["post"]
    assert created["security"] == [{"bearer": []}]
    assert "403" in created["responses"]
    webhook = next(p for p in schema["paths"] if p.startswith("/v1/webhooks/"))
    assert "security" not in schema["paths"][webhook]["post"]
