"""A bench driver process for the SSE fan-out scenario: `clients` raw HTTP/1.1 streams of one
generation's events, timed as each progress update arrives.

One Python process reading 1,000 streams through httpx was busier than the API it measured
(docs/benchmarks.md), so the scenario runs several of these, each with plain asyncio sockets
and no HTTP client: it finds `data:` lines and their `"progress":` value, nothing more. Times
are `time.perf_counter()`, CLOCK_MONOTONIC on Linux, which every process on the machine shares,
so the scenario compares them with the times of its own commits.

Protocol on stdout: `ready` once every stream has its first event, then one JSON document:
{"times": {progress: [t, ...]}, "cpu_s": ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import sys
import time
from urllib.parse import urlsplit

_PROGRESS = re.compile(rb'"progress":\s*(\d+)')


async def _stream(
    host: str,
    port: int,
    request: bytes,
    last: int,
    times: dict[int, list[float]],
    opened: asyncio.Event,
    counter: list[int],
    clients: int,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    pending = b""
    first = True
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("the stream ended before the last update")
            now = time.perf_counter()
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                if not line.startswith(b"data: "):
                    continue
                if first:
                    first = False
                    counter[0] += 1
                    if counter[0] == clients:
                        opened.set()
                    continue
                found = _PROGRESS.search(line)
                if found is None:
                    continue
                progress = int(found.group(1))
                times.setdefault(progress, []).append(now)
                if progress >= last:
                    return
    finally:
        writer.close()


async def _main(url: str, key: str, clients: int, last: int) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"GET {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    times: dict[int, list[float]] = {}
    opened = asyncio.Event()
    counter = [0]
    tasks = [
        asyncio.create_task(_stream(host, port, request, last, times, opened, counter, clients))
        for _ in range(clients)
    ]
    await asyncio.wait_for(opened.wait(), 120)
    cpu_before = _cpu_s()
    print("ready", flush=True)
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    json.dump({"times": times, "cpu_s": _cpu_s() - cpu_before}, sys.stdout)
    sys.stdout.flush()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", help="the stream's full URL")
    parser.add_argument("--key", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--last", type=int, required=True, help="the last progress to wait for")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_main(args.url, args.key, args.clients, args.last))
    else:
        uvloop.run(_main(args.url, args.key, args.clients, args.last))


if __name__ == "__main__":
    main()
