"""Property-based fuzzing of the whole HTTP API from its own OpenAPI document (schemathesis):
no server errors, and every answer matches the document (status, content type, schema)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api.conftest import WEBHOOK_SECRET
from tests.api.test_webhooks import signed
from tests.conftest import Tenant
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e
STACK_ENV = {"WEBHOOK_SECRET": WEBHOOK_SECRET}
CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance"


def test_schemathesis_finds_no_server_error_in_over_1000_requests(
    stack: Stack, tenant: Tenant, tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{stack.url}/schema/openapi.json",
        "--header",
        f"Authorization: Bearer {tenant.api_key}",
        "--checks",
        CHECKS,
        "--max-examples",
        "60",
        "--seed",
        "20261122",
        # One worker: with two threads, hypothesis' ast.parse on CPython 3.11 sometimes raised
        # a spurious "SystemError: AST constructor recursion depth mismatch" (CPython
        # gh-106905, seen in threaded use) inside the fuzzer, failing the run for no finding.
        "--workers",
        "1",
        "--request-timeout",
        "5",
        # The SSE streams are long-lived by design; their validation is tested in tests/api.
        "--exclude-path-regex",
        "/events$",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    output = result.stdout + result.stderr
    generated = re.search(r"(\d+) generated", output)
    assert generated is not None, output[-3000:]
    print(f"\n[fuzz] schemathesis: {generated[0]}, exit {result.returncode}")
    assert int(generated[1]) >= 1000, output[-3000:]
    assert result.returncode == 0, output[-6000:]


async def raw_status(url: str, request: bytes) -> int:
    """Sends bytes no HTTP client would (NUL, raw non-ASCII) and reads the status line."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    return int(line.split()[1])


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


ODD_SIGNED_DATA: list[Any] = [
    "completed",
    [1, 2],
    {"job_id": {"a": 1}, "status": "completed"},
    {"job_id": "j", "status": ["completed"]},
    {"job_id": "j", "status": "completed", "images": 7},
    {"job_id": "j", "status": "completed", "images": [{"url": {"x": 1}}]},
    {"job_id": "j", "status": "completed", "note": "a\u0000b"},
    {"job_id": "j" * 5000, "status": "completed"},
]


async def test_hostile_requests_get_no_server_error(stack: Stack, tenant: Tenant) -> None:
    """What the fuzzer does not generate: deep nesting, NUL and non-ASCII in paths and headers
    (through the real server's HTTP parser), validly signed webhooks of odd shapes."""
    host = urlsplit(stack.url).netloc.encode()
    auth = f"Authorization: Bearer {tenant.api_key}\r\n".encode()
    raw = [
        b"GET /files/%00 HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
        b"GET /files/a%00.png HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
        b"GET /v1/generations/\xff\xfe HTTP/1.1\r\nHost: " + host + b"\r\n" + auth + b"\r\n",
        b"GET /v1/projects/%C3%A9%00 HTTP/1.1\r\nHost: " + host + b"\r\n" + auth + b"\r\n",
        b"GET /v1/projects HTTP/1.1\r\nHost: "
        + host
        + b"\r\nX-Workspace-Id: \xc3\xa9\r\n"
        + auth
        + b"\r\n",
        b"GET /v1/projects HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: Bearer a\x00b\r\n\r\n",
        b"GET /v1/projects HTTP/1.1\r\nHost: "
        + host
        + b"\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
    ]
    for request in raw:
        status = await raw_status(stack.url, request)
        assert 400 <= status < 500, (request, status)

    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        project = await http.post("/v1/projects", json={"name": "hostile"}, headers=tenant.headers)
        project_id = project.json()["id"]
        body = f'{{"project_id": "{project_id}", "prompt": "x", "metadata": {{"a": {deep(2000)}}}}}'
        nested = await http.post(
            "/v1/generations",
            content=body,
            headers=tenant.headers | {"content-type": "application/json"},
        )
        assert nested.status_code == 400, nested.text
        payloads = [b'{"type": "image.generation.status", "data": ' + deep(2000).encode() + b"}"]
        payloads += [
            json.dumps({"type": "image.generation.status", "data": data}).encode()
            for data in ODD_SIGNED_DATA
        ]
        for payload in payloads:
            response = await http.post(
                "/v1/webhooks/generic", content=payload, headers=signed(payload)
            )
            assert 400 <= response.status_code < 500, (payload[:200], response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
        long_id = await http.post(
            "/v1/webhooks/generic",
            content=b"{}",
            headers=signed(b"{}", msg_id="m" * 5000),
        )
        assert 400 <= long_id.status_code < 500
    assert "Traceback" not in (stack.log / "api.log").read_text()
