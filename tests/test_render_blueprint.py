"""render.yaml is a valid Render Blueprint that deploys what the contract promises."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.server import GRACEFUL_SHUTDOWN_S
from worker.cli.admin import build_parser
from worker.core.config import load_settings

ROOT = Path(__file__).resolve().parent.parent

# Fields documented in Render's Blueprint YAML reference, https://render.com/docs/blueprint-spec
# (also served as JSON Schema at https://render.com/schema/render.yaml.json).
ROOT_FIELDS = {"services", "databases", "envVarGroups", "previews", "projects", "ungrouped"}
SERVICE_FIELDS = {
    "name",
    "type",
    "runtime",
    "env",
    "plan",
    "region",
    "repo",
    "branch",
    "rootDir",
    "buildCommand",
    "startCommand",
    "preDeployCommand",
    "dockerCommand",
    "dockerfilePath",
    "dockerContext",
    "registryCredential",
    "image",
    "healthCheckPath",
    "envVars",
    "autoDeploy",
    "autoDeployTrigger",
    "buildFilter",
    "numInstances",
    "scaling",
    "disk",
    "domains",
    "initialDeployHook",
    "maxShutdownDelaySeconds",
    "previews",
    "pullRequestPreviewsEnabled",
    "staticPublishPath",
    "headers",
    "routes",
    "schedule",
    "ipAllowList",
}
ENV_VAR_FIELDS = {
    "key",
    "value",
    "generateValue",
    "sync",
    "fromDatabase",
    "fromService",
    "fromGroup",
}
ENV_GROUP_FIELDS = {"name", "envVars"}
SERVICE_TYPES = {"web", "pserv", "worker", "cron", "keyvalue", "redis"}
RUNTIMES = {"node", "python", "elixir", "go", "ruby", "rust", "docker", "image", "static"}
AUTO_DEPLOY_TRIGGERS = {"commit", "checksPass", "off"}
MAX_SHUTDOWN_DELAY_RANGE = range(1, 301)

# Variables holding credentials or deployment-specific URLs: never committed, set in the dashboard.
SECRETS = {
    "DATABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_JWT_SECRET",
    "OPENAI_API_KEY",
    "GOOGLE_API_KEY",
    "FAL_KEY",
    "STABILITY_API_KEY",
    "WEBHOOK_SECRET",
    "OUTGOING_WEBHOOK_SECRET",
    "SENTRY_DSN",
}


@pytest.fixture(scope="module")
def blueprint() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "render.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _services(blueprint: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {service["type"]: service for service in blueprint["services"]}


def _env(blueprint: dict[str, Any], service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The service's variables, its groups' included, keyed by name."""
    groups = {group["name"]: group for group in blueprint.get("envVarGroups", [])}
    found: dict[str, dict[str, Any]] = {}
    for entry in service["envVars"]:
        if "fromGroup" in entry:
            found.update({var["key"]: var for var in groups[entry["fromGroup"]]["envVars"]})
        else:
            found[entry["key"]] = entry
    return found


def test_only_documented_fields(blueprint: dict[str, Any]) -> None:
    assert set(blueprint) <= ROOT_FIELDS
    for service in blueprint["services"]:
        assert set(service) <= SERVICE_FIELDS, set(service) - SERVICE_FIELDS
        assert service["type"] in SERVICE_TYPES
        assert service["runtime"] in RUNTIMES
        assert service["autoDeployTrigger"] in AUTO_DEPLOY_TRIGGERS
        assert service["maxShutdownDelaySeconds"] in MAX_SHUTDOWN_DELAY_RANGE
        for var in service["envVars"]:
            assert set(var) <= ENV_VAR_FIELDS, var
    for group in blueprint["envVarGroups"]:
        assert set(group) <= ENV_GROUP_FIELDS
        for var in group["envVars"]:
            # Groups hold plain values only: no references to other resources.
            assert set(var) <= {"key", "value", "generateValue"}, var


def test_web_service(blueprint: dict[str, Any]) -> None:
    web = _services(blueprint)["web"]
    assert web["runtime"] == "python"
    assert web["buildCommand"] == "pip install ."
    assert web["startCommand"] == "imagejobs api"
    assert web["preDeployCommand"] == "imagejobs migrate"
    assert web["healthCheckPath"] == "/readyz"
    assert web["autoDeployTrigger"] == "commit"
    # uvicorn must finish its graceful shutdown before Render's SIGKILL.
    assert web["maxShutdownDelaySeconds"] > GRACEFUL_SHUTDOWN_S


def test_health_check_path_is_served() -> None:
    from api.routes.health import readyz

    assert "/readyz" in readyz.paths


def test_worker_service(blueprint: dict[str, Any]) -> None:
    worker = _services(blueprint)["worker"]
    assert worker["runtime"] == "python"
    assert worker["buildCommand"] == "pip install ."
    assert worker["startCommand"] == "imagejobs worker"
    assert worker["autoDeployTrigger"] == "commit"
    env = _env(blueprint, worker)
    grace = float(env["WORKER_SHUTDOWN_GRACE_S"]["value"])
    default_grace = load_settings({}).worker_shutdown_grace_s
    assert grace == default_grace
    assert worker["maxShutdownDelaySeconds"] > grace


def test_start_commands_are_cli_commands(blueprint: dict[str, Any]) -> None:
    parser = build_parser()
    for service in blueprint["services"]:
        for key in ("startCommand", "preDeployCommand"):
            if key in service:
                argv = shlex.split(service[key])
                assert argv[0] == "imagejobs"
                parser.parse_args(argv[1:])


def test_secrets_are_never_committed(blueprint: dict[str, Any]) -> None:
    for service in blueprint["services"]:
        env = _env(blueprint, service)
        assert "DATABASE_URL" in env
        assert "SENTRY_DSN" in env
        for key in SECRETS & set(env):
            assert env[key] == {"key": key, "sync": False}, key


def test_shared_settings_and_python_pinned(blueprint: dict[str, Any]) -> None:
    services = _services(blueprint)
    shared = [set(_env(blueprint, s)) for s in services.values()]
    for service in services.values():
        assert any("fromGroup" in var for var in service["envVars"])
        version = _env(blueprint, service)["PYTHON_VERSION"]["value"]
        assert str(version).startswith("3.11.")
        assert len(str(version).split(".")) == 3
    assert {"APP_ENV", "WORKER_SHUTDOWN_GRACE_S"} <= shared[0] & shared[1]


def test_procfile_matches_contract() -> None:
    lines = dict(
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    assert lines == {
        "release": "imagejobs migrate",
        "web": "imagejobs api",
        "worker": "imagejobs worker",
    }
