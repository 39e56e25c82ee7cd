"""Property-based fuzzing of the whole HTTP API from its own OpenAPI document (schemathesis):
no server errors, and every answer matches the document (status, content type, schema)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Tenant
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e
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
        "--workers",
        "2",
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
