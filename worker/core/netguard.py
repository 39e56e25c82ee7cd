"""Safe outbound requests: the SSRF guard for every URL a user or a provider hands us.

Source images, masks, provider result URLs and outgoing webhooks are fetched through a client
whose connections are opened by `GuardedBackend`: it resolves the host itself, refuses the whole
request when any address it resolves to is internal (private, loopback, link-local, CGNAT,
multicast, reserved, unspecified, cloud metadata, or an IPv6 form wrapping one of those), and
then connects to exactly the address it checked. The name is never resolved a second time, so a
DNS answer that changes between check and connect (rebinding) cannot slip through. TLS still
verifies the certificate against the URL's host name (httpcore sends SNI for the origin, not for
the address we dialled), and the Host header is the URL's.

Plain http is only spoken in development, and only to addresses the policy lets through as
internal (loopback by default): the emulators in tests listen on http://127.0.0.1. Redirects are
followed by hand, at most `max_redirects`, each hop going through the same transport.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import httpcore
import httpx

if TYPE_CHECKING:
    from worker.core.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

MAX_REDIRECTS = 3
# Instance metadata services: never reachable, whatever OUTBOUND_ALLOW_PRIVATE says.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class PrivateAccess(StrEnum):
    """OUTBOUND_ALLOW_PRIVATE: which internal addresses outbound requests may reach."""

    NONE = "false"  # public addresses only (production default)
    LOOPBACK = "loopback"  # also 127.0.0.0/8 and ::1 (development default)
    ALL = "true"  # also RFC 1918, ULA, CGNAT, link-local; never metadata/multicast/reserved


class OutboundRefused(Exception):
    """The policy forbids this request; `reason` says why, for users and the audit trail."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"refused: {reason}")


def _embedded(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    embedded = ip.ipv4_mapped or ip.sixtofour
    if embedded is None and ip in NAT64:
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return embedded


def address_kind(ip: IPAddress) -> str | None:
    """The kind of internal address `ip` is ("private", "loopback", ...), None when public."""
    embedded = _embedded(ip)
    if embedded is not None:
        # Judged by the IPv4 address it stands for: NAT64 on an IPv6-only host maps every
        # public IPv4 site to 64:ff9b::/96, and those must stay reachable.
        return address_kind(embedded)
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    if ip.is_unspecified or ip in THIS_NETWORK:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip in CGNAT:
        return "CGNAT"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "reserved"
    return None


_ALLOWED_KINDS: dict[PrivateAccess, frozenset[str]] = {
    PrivateAccess.NONE: frozenset(),
    PrivateAccess.LOOPBACK: frozenset({"loopback"}),
    PrivateAccess.ALL: frozenset({"loopback", "private", "link-local", "CGNAT"}),
}


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for `host`, in its order, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[IPAddress, None] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        seen[ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])] = None
    return list(seen)


def _parse(url: str | httpx.URL) -> httpx.URL:
    try:
        return httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise OutboundRefused(f"not a valid URL ({exc})") from exc


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class OutboundPolicy:
    """What outbound requests may reach. Built from Settings; `resolver` is swappable in tests."""

    private: PrivateAccess = PrivateAccess.NONE
    # Plain http, to addresses the policy lets through as internal only (development).
    allow_http: bool = False
    max_redirects: int = MAX_REDIRECTS
    resolver: Resolver = system_resolve

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        return cls(
            private=PrivateAccess(settings.outbound_allow_private),
            allow_http=not settings.is_production,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OutboundPolicy:
        """For callers that were not handed one: the policy this process's settings give."""
        from worker.core.config import load_settings

        return cls.from_settings(load_settings(env))

    def refusal(self, ip: IPAddress, host: str | None = None) -> str | None:
        """Why `ip` may not be reached (None when it may); `host` names what resolved to it."""
        kind = address_kind(ip)
        if kind is None or kind in _ALLOWED_KINDS[self.private]:
            return None
        what = f"{_article(kind)} {kind} address"
        shown = f"{ip} (an IPv6 form of {_embedded(ip)})" if _embedded(ip) else str(ip)
        return f"{host} resolves to {what} {shown}" if host else f"{shown} is {what}"

    def check_url(self, url: str | httpx.URL) -> httpx.URL:
        """The checks that need no DNS: scheme, host, and a literal IP address. Raises
        OutboundRefused; the transport repeats them for every request and redirect hop."""
        parsed = _parse(url)
        if parsed.scheme not in ("https", "http"):
            raise OutboundRefused(f"the scheme {parsed.scheme or '(none)'!r} is not allowed")
        if parsed.scheme == "http" and not self.allow_http:
            raise OutboundRefused("only https URLs are allowed")
        if not parsed.host:
            raise OutboundRefused("the URL has no host")
        literal = _literal(parsed.host)
        if literal is not None:
            reason = self.refusal(literal)
            if reason:
                raise OutboundRefused(reason)
            if parsed.scheme == "http" and address_kind(literal) is None:
                raise OutboundRefused(_PLAIN_HTTP)
        return parsed

    async def resolve(self, host: str, port: int, *, plain_http: bool) -> list[IPAddress]:
        """The addresses to connect to, all checked; refused when any of them is not allowed
        (a name with one internal address among public ones is still an attempt to reach it)."""
        literal = _literal(host)
        addresses = [literal] if literal is not None else await self.resolver(host, port)
        if not addresses:
            raise OutboundRefused(f"{host} does not resolve to any address")
        for ip in addresses:
            reason = self.refusal(ip, None if literal is not None else host)
            if reason:
                raise OutboundRefused(reason)
            if plain_http and address_kind(ip) is None:
                raise OutboundRefused(_PLAIN_HTTP)
        return addresses

    def transport(self) -> GuardedTransport:
        return GuardedTransport(self)

    def client(self, timeout: httpx.Timeout, **kwargs: typing.Any) -> httpx.AsyncClient:
        """An httpx client that can only reach what this policy allows. It does not follow
        redirects (use `stream_get` for that) and ignores proxy environment variables, since a
        proxy would connect on our behalf to addresses we never checked."""
        return httpx.AsyncClient(
            transport=self.transport(),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            **kwargs,
        )


_PLAIN_HTTP = "plain http is only allowed to loopback addresses in development; use https"


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to addresses the policy allows, dialling the checked IP."""

    def __init__(self, policy: OutboundPolicy, *, plain_http: bool) -> None:
        self.policy = policy
        self.plain_http = plain_http
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self.policy.resolve(host, port, plain_http=self.plain_http)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:  # socket.gaierror: the name does not resolve
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("unix sockets are not reachable")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, backend: GuardedBackend) -> None:
        super().__init__(trust_env=False)
        # httpx has no public way to give its connection pool a network backend: the pool is
        # rebuilt with ours (httpx 0.28 keeps it in `_pool`; tests fail loudly if that changes).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), network_backend=backend
        )


class GuardedTransport(httpx.AsyncBaseTransport):
    """Checks each request's URL, then sends https and plain http through pools whose
    connections come from a GuardedBackend (plain http: internal addresses only)."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self._https = _PinnedTransport(GuardedBackend(policy, plain_http=False))
        self._http = _PinnedTransport(GuardedBackend(policy, plain_http=True))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = self.policy.check_url(request.url)
        inner = self._http if url.scheme == "http" else self._https
        return await inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._https.aclose()
        await self._http.aclose()


@asynccontextmanager
async def stream_get(
    client: httpx.AsyncClient, url: str, policy: OutboundPolicy
) -> AsyncIterator[httpx.Response]:
    """GET `url`, following at most `policy.max_redirects` redirects by hand: every hop is a new
    request through the client's guarded transport, so each target is checked again. (Checked
    here too: httpx would turn a host-less `file:///x` into a relative URL before the transport.)"""
    current = policy.check_url(url)
    for _hop in range(policy.max_redirects + 1):
        response = await client.send(client.build_request("GET", current), stream=True)
        if not response.is_redirect:
            try:
                yield response
            finally:
                await response.aclose()
            return
        await response.aclose()
        current = policy.check_url(current.join(response.headers["location"]))
    raise OutboundRefused(f"more than {policy.max_redirects} redirects")


async def read_capped(response: httpx.Response, max_bytes: int, too_large: Exception) -> bytes:
    """A streamed body read into memory, raising `too_large` as soon as it passes `max_bytes`
    (a declared Content-Length over it is refused before reading)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)
