"""The SSRF guard: what outbound fetches may reach, checked after DNS, on every redirect hop."""

from __future__ import annotations

import ipaddress
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from procrastinate.jobs import Job
from psycopg_pool import AsyncConnectionPool

from tests.factories import insert_generation
from tests.worker.conftest import event_trail, generation_row, make_runtime
from worker.core.config import ConfigError, load_settings
from worker.core.errors import ErrorCode, GenerationError
from worker.core.images import download
from worker.core.netguard import (
    IPAddress,
    OutboundPolicy,
    OutboundRefused,
    PrivateAccess,
    address_kind,
)
from worker.providers.local import LocalProvider
from worker.queue.outgoing import DeliveryRefused, WebhookBackoff, deliver
from worker.queue.pipeline import finish_from_urls, run_generation

DEVELOPMENT = OutboundPolicy.from_settings(load_settings({}))
PRODUCTION = OutboundPolicy.from_settings(load_settings({"APP_ENV": "production"}))
PAYLOAD = b"\x89PNG-not-really-but-bytes" * 10


@dataclass
class Site:
    """A local http server: /image answers bytes, /to?url=X redirects to X, /loop redirects to
    itself, /huge declares a large body, /chunked streams one without a length, /slow drips."""

    port: int = 0
    hosts: list[str] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    state = Site()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            state.hosts.append(self.headers.get("host", ""))
            path, _, query = self.path.partition("?")
            if path == "/image":
                self._answer(200, PAYLOAD)
            elif path == "/to":
                self._redirect(query.removeprefix("url="))
            elif path == "/loop":
                self._redirect("/loop")
            elif path == "/huge":
                self.send_response(200)
                self.send_header("content-length", str(10_000_000))
                self.end_headers()
                self.wfile.write(b"x" * 1000)
            elif path == "/chunked":
                self.send_response(200)
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for _ in range(20):
                    self.wfile.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            elif path == "/slow":
                self.send_response(200)
                self.send_header("content-length", "100")
                self.end_headers()
                for _ in range(100):
                    self.wfile.write(b"z")
                    self.wfile.flush()
                    time.sleep(0.05)
            else:
                self._answer(404, b"")

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _redirect(self, location: str) -> None:
            self.send_response(302)
            self.send_header("location", location)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # the client hanging up on /huge or /slow is the point of those tests

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


class FakeDns:
    """A resolver the policy uses instead of the system's: each name has a list of answers,
    given in turn (the last one repeats)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append(host)
        turns = self.answers[host]
        turn = turns[min(self.calls.count(host), len(turns)) - 1]
        return [ipaddress.ip_address(a) for a in turn]


def with_dns(policy: OutboundPolicy, dns: FakeDns) -> OutboundPolicy:
    return OutboundPolicy(
        private=policy.private,
        allow_http=policy.allow_http,
        max_redirects=policy.max_redirects,
        resolver=dns,
    )


async def refusal(url: str, policy: OutboundPolicy, **kwargs: object) -> GenerationError:
    with pytest.raises(GenerationError) as caught:
        await download(url, error=ErrorCode.SOURCE_UNREACHABLE, policy=policy, **kwargs)  # type: ignore[arg-type]
    return caught.value


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("fd12:3456::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("64:ff9b::a00:1", "private"),
        ("8.8.8.8", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
        ("2606:4700::1111", None),
    ],
)
def test_addresses_are_classified(address: str, kind: str | None) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


async def test_development_fetches_loopback_over_http(site: Site) -> None:
    assert await download(site.url("/image"), error=ErrorCode.SOURCE_UNREACHABLE) == PAYLOAD
    data = await download(
        site.url("/image"), error=ErrorCode.SOURCE_UNREACHABLE, policy=DEVELOPMENT
    )
    assert data == PAYLOAD


async def test_loopback_is_refused_without_the_development_allowance(site: Site) -> None:
    public_only = OutboundPolicy(private=PrivateAccess.NONE, allow_http=True)
    error = await refusal(site.url("/image"), public_only)
    assert error.code == ErrorCode.SOURCE_UNREACHABLE and not error.retryable
    assert error.message.endswith("refused: 127.0.0.1 is a loopback address")
    assert (await refusal(site.url("/image", "[::1]"), public_only)).message.endswith(
        "refused: ::1 is a loopback address"
    )


async def test_production_is_https_only(site: Site) -> None:
    before = len(site.hosts)
    error = await refusal(site.url("/image"), PRODUCTION)
    assert error.message.endswith("refused: only https URLs are allowed")
    dns = FakeDns({"cdn.example.com": [["93.184.216.34"]]})
    error = await refusal("http://cdn.example.com/a.png", with_dns(PRODUCTION, dns))
    assert error.message.endswith("refused: only https URLs are allowed")
    assert dns.calls == []  # refused before any lookup
    # Loopback over https is refused for what it is, before any connection.
    error = await refusal(f"https://127.0.0.1:{site.port}/image", PRODUCTION)
    assert error.message.endswith("refused: 127.0.0.1 is a loopback address")
    assert len(site.hosts) == before


async def test_development_http_only_reaches_internal_addresses() -> None:
    dns = FakeDns({"cdn.example.com": [["93.184.216.34"]]})
    error = await refusal("http://cdn.example.com/a.png", with_dns(DEVELOPMENT, dns))
    assert "plain http is only allowed to loopback addresses" in error.message
    assert dns.calls == ["cdn.example.com"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.1/a.png", "10.0.0.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a cloud metadata address"),
        ("http://[fd00:ec2::254]/latest", "fd00:ec2::254 is a cloud metadata address"),
        ("http://100.64.3.4/", "100.64.3.4 is a CGNAT address"),
        ("http://0.0.0.0:9/", "0.0.0.0 is an unspecified address"),
        ("http://0/", "0 resolves to an unspecified address 0.0.0.0"),
        ("http://[::ffff:a9fe:a9fe]/", "(an IPv6 form of 169.254.169.254) is a cloud metadata"),
        ("http://2852039166/", "resolves to a cloud metadata address 169.254.169.254"),
        ("file:///etc/passwd", "the scheme 'file' is not allowed"),
    ],
)
async def test_internal_targets_are_refused_in_development(url: str, reason: str) -> None:
    error = await refusal(url, DEVELOPMENT)
    assert error.code == ErrorCode.SOURCE_UNREACHABLE and not error.retryable
    assert reason in error.message


async def test_metadata_stays_refused_when_every_private_range_is_allowed() -> None:
    everything = OutboundPolicy(private=PrivateAccess.ALL, allow_http=True)
    error = await refusal("http://169.254.169.254/latest/meta-data", everything)
    assert "cloud metadata address" in error.message
    with pytest.raises(OutboundRefused):
        everything.check_url("http://[fd00:ec2::254]/")
    everything.check_url("http://10.0.0.1/")  # allowed by this policy: no exception


async def test_a_name_resolving_to_loopback_is_refused(site: Site) -> None:
    public_only = OutboundPolicy(private=PrivateAccess.NONE, allow_http=True)
    # The system resolver, offline: localhost is loopback.
    error = await refusal(site.url("/image", "localhost"), public_only)
    assert "refused: localhost resolves to a loopback address" in error.message
    dns = FakeDns({"images.attacker.test": [["127.0.0.1"]]})
    error = await refusal("https://images.attacker.test/a.png", with_dns(PRODUCTION, dns))
    assert error.message.endswith(
        "refused: images.attacker.test resolves to a loopback address 127.0.0.1"
    )


async def test_a_name_with_any_internal_address_is_refused() -> None:
    dns = FakeDns({"mixed.test": [["93.184.216.34", "10.0.0.1"]]})
    error = await refusal("https://mixed.test/a.png", with_dns(PRODUCTION, dns))
    assert error.message.endswith("refused: mixed.test resolves to a private address 10.0.0.1")


async def test_the_connection_goes_to_the_address_that_was_checked(site: Site) -> None:
    """DNS rebinding: the name answers loopback (allowed in development) once, then a private
    address. The guard resolves once and dials that address; the system resolver never sees the
    name (it could not resolve it), and the server still gets the name in the Host header."""
    dns = FakeDns({"rebind.test": [["127.0.0.1"], ["10.0.0.1"]]})
    policy = with_dns(DEVELOPMENT, dns)
    data = await download(
        site.url("/image", "rebind.test"), error=ErrorCode.SOURCE_UNREACHABLE, policy=policy
    )
    assert data == PAYLOAD
    assert dns.calls == ["rebind.test"]
    assert site.hosts[-1] == f"rebind.test:{site.port}"
    # The next connection asks again and gets the private answer: refused.
    error = await refusal(site.url("/image", "rebind.test"), policy)
    assert error.message.endswith("rebind.test resolves to a private address 10.0.0.1")


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://10.0.0.1/", "10.0.0.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a cloud metadata address"),
        ("http://internal.test/x", "internal.test resolves to a private address 10.1.2.3"),
        ("file:///etc/passwd", "the scheme 'file' is not allowed"),
    ],
)
async def test_a_redirect_to_an_internal_address_is_refused(
    site: Site, target: str, reason: str
) -> None:
    dns = FakeDns({"internal.test": [["10.1.2.3"]]})
    before = len(site.hosts)
    error = await refusal(site.url(f"/to?url={target}"), with_dns(DEVELOPMENT, dns))
    assert error.code == ErrorCode.SOURCE_UNREACHABLE and not error.retryable
    assert error.message.endswith(f"refused: {reason}")
    assert len(site.hosts) == before + 1  # the first, allowed hop was made


async def test_redirects_are_followed_up_to_three_hops(site: Site) -> None:
    hops = site.url("/image")
    for _ in range(3):
        hops = site.url(f"/to?url={hops}")
    assert await download(hops, error=ErrorCode.SOURCE_UNREACHABLE, policy=DEVELOPMENT) == PAYLOAD
    error = await refusal(site.url("/loop"), DEVELOPMENT)
    assert error.message.endswith("refused: more than 3 redirects")


async def test_size_limits_hold_with_and_without_a_content_length(site: Site) -> None:
    for path in ("/huge", "/chunked"):
        error = await refusal(site.url(path), DEVELOPMENT, max_bytes=4096)
        assert error.message.endswith("larger than 4096 bytes") and not error.retryable


async def test_a_download_has_an_overall_deadline(site: Site) -> None:
    started = time.monotonic()
    error = await refusal(site.url("/slow"), DEVELOPMENT, deadline_s=0.5)
    assert error.message.endswith("took longer than 0.5 s")
    assert time.monotonic() - started < 3


async def test_proxy_variables_do_not_bypass_the_guard(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", site.url(""))
    monkeypatch.setenv("ALL_PROXY", site.url(""))
    error = await refusal("http://10.0.0.1/", DEVELOPMENT)
    assert error.message.endswith("10.0.0.1 is a private address")
    assert await download(site.url("/image"), error=ErrorCode.SOURCE_UNREACHABLE) == PAYLOAD


def test_outbound_allow_private_defaults_and_values() -> None:
    assert load_settings({}).outbound_allow_private == "loopback"
    assert load_settings({"APP_ENV": "production"}).outbound_allow_private == "false"
    assert OutboundPolicy(private=PrivateAccess.NONE, allow_http=False) == PRODUCTION
    assert OutboundPolicy(private=PrivateAccess.LOOPBACK, allow_http=True) == DEVELOPMENT
    allowed = load_settings({"APP_ENV": "production", "OUTBOUND_ALLOW_PRIVATE": "true"})
    assert OutboundPolicy.from_settings(allowed).private is PrivateAccess.ALL
    with pytest.raises(ConfigError, match="OUTBOUND_ALLOW_PRIVATE"):
        load_settings({"OUTBOUND_ALLOW_PRIVATE": "sometimes"})


async def test_a_metadata_source_fails_the_generation_with_source_unreachable(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path
) -> None:
    generation_id = await insert_generation(
        pool, project_id, original_image_url="http://169.254.169.254/latest/meta-data"
    )
    runtime = make_runtime(pool, storage_dir, {"local": LocalProvider(delay_ms=0)})
    await run_generation(runtime, generation_id, attempt=1)  # not raised: not retried
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"]) == ("failed", "source_unreachable")
    assert row["error_message"] == (
        "The original image URL is not accessible:"
        " refused: 169.254.169.254 is a cloud metadata address"
    )
    assert (await event_trail(pool, generation_id))[-1] == ("status", "failed", "failed", 25)


async def test_a_private_result_url_fails_with_result_unreachable_at_once(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path
) -> None:
    generation_id = await insert_generation(pool, project_id)
    runtime = make_runtime(pool, storage_dir, {"local": LocalProvider(delay_ms=0)})
    generation = await runtime.lifecycle.start(generation_id)
    assert generation is not None
    with pytest.raises(GenerationError) as caught:
        await finish_from_urls(runtime, generation, ["http://192.168.1.10/result.png"])
    assert caught.value.code == ErrorCode.RESULT_UNREACHABLE
    assert not caught.value.retryable  # result_unreachable is retried, but not a refusal
    assert caught.value.message.endswith("refused: 192.168.1.10 is a private address")


async def test_a_webhook_to_a_private_address_is_recorded_and_not_retried(
    pool: AsyncConnectionPool, project_id: uuid.UUID
) -> None:
    generation_id = await insert_generation(
        pool, project_id, webhook_url="http://169.254.169.254/hook"
    )
    with pytest.raises(DeliveryRefused) as caught:
        await deliver(pool, None, generation_id, 1, "generation.started", 1, policy=DEVELOPMENT)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT attempt, status_code, error FROM outgoing_webhook_attempts"
            " WHERE generation_id = %s",
            (generation_id,),
        )
        attempts = await cur.fetchall()
    assert attempts == [(1, None, "refused: 169.254.169.254 is a cloud metadata address")]
    job = Job(id=1, queue="webhooks", lock=None, queueing_lock=None, task_name="x", attempts=1)
    assert WebhookBackoff().get_retry_decision(exception=caught.value, job=job) is None
