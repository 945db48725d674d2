"""Schemathesis against a real `driftline serve`: every operation of its /openapi.json.

Each generated case (valid input, invalid input, and valid input naming project A's or B's
things: a trace, snapshot, silence, model version, run, key...) is sent by every caller: no
key; A's ingest, read, review and admin keys; B's read and admin keys; the operator token;
and keys asking for the other project by header or query. Never a 5xx (the failure carries
the server's traceback); never another project's marker in an answer, unless the request
carried it (errors echo what was asked) or the caller's own project stored it; never a 2xx on
/api or /v1 without a key, or for a key naming a project not its own.

Left out: revoking the keys the callers use (each project's spare key may be revoked).
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from pydantic import TypeAdapter
from schemathesis import GenerationMode

from driftline.cli.local import read_control
from driftline.finetune.dataset.formats import FORMATS
from driftline.finetune.ledger import RUN_STATUSES, VERSION_STATUSES
from driftline.review.feedback import FeedbackIn
from tests.conftest import ServerProcess, start_server, stop_server, wait_for

ROLES = ("ingest", "read", "review", "admin")
CALLS = 60  # a reference freezes at least 50 calls
PROJECT_SCOPED = ("/api/", "/v1/")
# Cases per operation, each sent by every caller: valid input, invalid input, and valid input
# naming each project's ids.
POSITIVE, NEGATIVE, WITH_IDS = 20, 20, 3
# The operations by OpenAPI tag, a test each (a new tag must join one: the first test says so).
GROUPS = {
    "ingest and reads": ("ingest", "read", "feedback", "evaluators"),
    "drift and alerts": ("drift", "alerts"),
    "datasets and models": ("datasets", "models"),
    "keys and health": ("admin", "health"),
}


@dataclass
class Project:
    """One project's keys, and the strings only its data holds (`markers`)."""

    name: str
    # What its data's markers begin with: not its name, which the other project's keys may
    # send themselves (to be refused).
    token: str = field(default_factory=lambda: "m" + secrets.token_hex(4))
    keys: dict[str, str] = field(default_factory=dict)
    key_ids: dict[str, str] = field(default_factory=dict)
    markers: list[str] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)  # things of its own, by parameter name
    calls: list[tuple[str, str]] = field(default_factory=list)  # (trace id, span id)

    def mark(self, what: str) -> str:
        marker = f"{self.token}-{what}"
        self.markers.append(marker)
        return marker


@dataclass
class Caller:
    label: str
    key: str | None
    project: str | None  # the project the key speaks for; None: no key, or the operator
    foreign: list[str]  # markers no answer to this caller may hold
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class Fuzz:
    server: ServerProcess
    a: Project
    b: Project
    callers: list[Caller]
    session: requests.Session
    protected_key_ids: set[str]
    models: Path  # the server's finetune.models_root
    written: dict[str | None, set[str]] = field(default_factory=dict)  # by project: see below


def admin_call(
    server: ServerProcess, method: str, path: str, key: str, body: Any = None
) -> dict[str, Any]:
    r = httpx.request(
        method,
        server.url + path,
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert r.status_code in (200, 201), (method, path, r.status_code, r.text)
    return dict(r.json())


def messages(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


def otlp_json(project: Project, count: int) -> tuple[bytes, list[tuple[str, str]]]:
    """`count` LLM calls in OTLP/JSON, every text naming the project's markers."""
    now = time.time_ns() - 3_600 * 10**9
    spans, ids = [], []
    for i in range(count):
        trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
        ids.append((trace_id, span_id))
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": f"{project.token}-model",
            "gen_ai.input.messages": messages("user", f"{project.token}-prompt {i}"),
            "gen_ai.output.messages": messages("assistant", f"{project.token}-answer {i}"),
            "gen_ai.conversation.id": f"{project.token}-conversation",
        }
        start = now + i * 10**9
        spans.append(
            {
                "traceId": trace_id,
                "spanId": span_id,
                "name": f"{project.token}-span",
                "kind": 3,
                "startTimeUnixNano": str(start),
                "endTimeUnixNano": str(start + 500_000_000),
                "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]
                + [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}}],
                "status": {"code": 1},
            }
        )
    service = [{"key": "service.name", "value": {"stringValue": f"{project.token}-svc"}}]
    body = {
        "resourceSpans": [{"resource": {"attributes": service}, "scopeSpans": [{"spans": spans}]}]
    }
    return json.dumps(body).encode(), ids


def seed(server: ServerProcess, operator: str, project: Project, models: Path) -> None:
    """Keys of every role, calls, feedback (an app's and a reviewer's), a silence, a reference,
    a dataset snapshot, a model version and a fine-tune run, each naming the project's markers."""
    for role in (*ROLES, "spare"):
        made = admin_call(
            server,
            "POST",
            "/api/admin/keys",
            operator,
            {"project": project.name, "role": "read" if role == "spare" else role,
             "name": project.mark(f"{role}-key")},
        )  # fmt: skip
        project.keys[role], project.key_ids[role] = made["key"], made["key_id"]
        project.markers.append(made["key_id"])
    project.markers.append(project.name)
    project.ids["key_id"] = project.key_ids["spare"]  # the one key fuzzing may revoke

    body, ids = otlp_json(project, CALLS)
    project.calls = ids
    for what in ("prompt", "answer", "span", "model", "svc", "conversation"):
        project.mark(what)
    r = httpx.post(
        server.url + "/v1/traces",
        content=body,
        headers={"authorization": f"Bearer {project.keys['ingest']}",
                 "content-type": "application/json"},
        timeout=60,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    project.markers += [trace_id for trace_id, _ in ids] + [span_id for _, span_id in ids]
    project.ids |= {
        "trace_id": ids[0][0],
        "span_id": ids[0][1],
        "service": f"{project.token}-svc",
        "model": f"{project.token}-model",
        "q": f"{project.token}-prompt",
    }
    read = project.keys["read"]
    wait_for(
        lambda: (
            len(
                admin_call(
                    server, "GET", f"/api/calls?limit=1000&service={project.token}-svc", read
                )["items"]
            )
            == CALLS
        ),
        f"{project.name}'s calls stored",
    )

    feedback = [
        {"trace_id": t, "span_id": s, "name": project.mark("thumbs") if i == 0 else
         f"{project.token}-thumbs", "value": i % 2 == 0, "comment": f"{project.token}-comment"}
        for i, (t, s) in enumerate(ids[:10])
    ]  # fmt: skip
    project.mark("comment")
    admin_call(server, "POST", "/api/feedback", project.keys["ingest"], feedback)
    scores = [
        {"trace_id": t, "span_id": s, "name": project.mark("score") if i == 0 else
         f"{project.token}-score", "value": 5 if i % 2 else 1}
        for i, (t, s) in enumerate(ids[10:30])
    ]  # fmt: skip
    admin_call(server, "POST", "/api/feedback", project.keys["review"], scores)
    project.ids["name"] = f"{project.token}-thumbs"

    admin = project.keys["admin"]
    silence = admin_call(server, "POST", "/api/silences", admin, {
        "matchers": [f'service="{project.token}-svc"'], "duration": "2h",
        "createdBy": project.mark("creator"), "comment": project.mark("silence")})  # fmt: skip
    project.ids["silence_id"] = silence["id"]
    reference = project.mark("ref")
    admin_call(server, "POST", "/api/references", admin, {"name": reference, "limit": 50})
    project.ids["reference"] = reference
    snapshot = admin_call(server, "POST", "/api/datasets", admin, {"format": "kto"})
    project.ids["snapshot_id"] = snapshot["id"]
    project.markers.append(snapshot["id"])
    version, run = project.mark("v1"), project.mark("run")
    now = time.time()
    admin_call(server, "PUT", f"/api/models/{version}", admin, {
        "path": str(models / project.mark("model-path")), "status": "candidate", "run_id": run,
        "snapshot_id": snapshot["id"], "created_at": now, "updated_at": now})  # fmt: skip
    admin_call(server, "PUT", f"/api/finetune-runs/{run}", admin, {
        "snapshot_id": snapshot["id"], "method": "dpo", "base_model": project.mark("base"),
        "output": project.mark("output"), "status": "running", "created_at": now,
        "updated_at": now})  # fmt: skip
    admin_call(server, "POST", f"/api/finetune-runs/{run}/metrics", admin,
               {"step": 1, "figures": {"loss": 0.5}})  # fmt: skip
    project.ids |= {"version": version, "run_id": run}


def fuzzable(spec: dict[str, Any], a: Project, b: Project, models: Path) -> dict[str, Any]:
    """The served schema, plus what it leaves out and the server checks in code: the bodies of
    the two routes that read theirs raw (feedback, OTLP/JSON), the values a few fields take
    (format, status, role, project, trace ids, times, matchers): without them almost every valid
    case would be refused before it reaches the store."""
    spec = copy.deepcopy(spec)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    enums = {
        ("NewDataset", "format"): list(FORMATS),
        ("VersionBody", "status"): list(VERSION_STATUSES),
        ("RunBody", "status"): list(RUN_STATUSES),
        ("NewKey", "role"): list(ROLES),
        ("NewKey", "project"): [a.name, b.name],
    }
    for (model, name), values in enums.items():
        schemas[model]["properties"][name] = {"type": "string", "enum": values}
    schemas["VersionBody"]["properties"]["path"] = {
        "type": "string",
        "pattern": f"^{re.escape(str(models))}/.{{0,20}}$",  # under the root: and `..`?
    }
    silence = schemas["NewSilence"]["properties"]
    silence["matchers"]["items"] = {
        "type": "string",
        "pattern": '^[a-z_]{1,8}(=|!=|=~|!~)".{0,12}"$',
    }
    silence["duration"] = {"type": "string", "pattern": "^[0-9]{1,14}(ms|s|m|h|d|w)$"}
    for name in ("startsAt", "endsAt"):
        silence[name] = {"type": "string", "format": "date-time"}
    for operations in spec["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "project":
                    parameter["schema"] = {"type": "string", "enum": [a.name, b.name]}
                if parameter["name"] == "trace_id":
                    parameter["schema"] = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
                if parameter["name"] in ("since", "until"):  # RFC 3339 or Unix seconds
                    parameter["schema"] = {
                        "anyOf": [
                            {"type": "string", "format": "date-time"},
                            {"type": "string", "pattern": r"^[0-9]{1,10}(\.[0-9]{1,9})?$"},
                        ]
                    }

    feedback = TypeAdapter(FeedbackIn | list[FeedbackIn]).json_schema(
        ref_template="#/components/schemas/{model}"
    )
    schemas.update(feedback.pop("$defs", {}))
    spec["paths"]["/api/feedback"]["post"]["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": feedback}},
    }
    value = {
        "type": "object",
        "properties": {
            "stringValue": {"type": "string"},
            "intValue": {"type": "string", "pattern": "^-?[0-9]{1,19}$"},
            "boolValue": {"type": "boolean"},
            "doubleValue": {"type": "number"},
        },
    }
    attributes = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"key": {"type": "string"}, "value": value},
            "required": ["key", "value"],
        },
    }
    nanos = {"type": "string", "pattern": "^[0-9]{1,19}$"}
    span = {
        "type": "object",
        "properties": {
            "traceId": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "spanId": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            "parentSpanId": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            "name": {"type": "string"},
            "kind": {"type": "integer"},
            "startTimeUnixNano": nanos,
            "endTimeUnixNano": nanos,
            "attributes": attributes,
            "status": {"type": "object", "properties": {"code": {"type": "integer"}}},
        },
        "required": ["traceId", "spanId"],
    }
    resource_spans = {
        "type": "object",
        "properties": {
            "resource": {"type": "object", "properties": {"attributes": attributes}},
            "scopeSpans": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"spans": {"type": "array", "items": span, "maxItems": 5}},
                },
                "maxItems": 3,
            },
        },
    }
    spec["paths"]["/v1/traces"]["post"]["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "resourceSpans": {"type": "array", "items": resource_spans, "maxItems": 3}
                    },
                }
            }
        },
    }
    return spec


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    root = tmp_path_factory.mktemp("fuzz")
    token = root / "metrics-token"
    token.write_text(secrets.token_hex(16))
    env = {
        "DRIFTLINE_METRICS_TOKEN_FILE": str(token),
        "DRIFTLINE_FINETUNE__MODELS_ROOT": str(root / "models"),
        # Text searches and exports allow a burst of 10 per project, then 1/s: fuzzing would
        # see mostly 429s there.
        "DRIFTLINE_HEAVY_RATE_LIMIT_PER_SECOND": "0",
    }
    server = start_server(root / "data", env=env)
    try:
        control = read_control(server.data)
        assert control is not None
        operator = control["token"]
        tag = secrets.token_hex(3)
        a, b = Project(f"za{tag}"), Project(f"zb{tag}")
        for project in (a, b):
            seed(server, operator, project, root / "models")
        callers = [Caller("no key", None, None, [*a.markers, *b.markers])]
        callers += [Caller(f"A {role}", a.keys[role], a.name, b.markers) for role in ROLES]
        callers += [
            Caller("B read", b.keys["read"], b.name, a.markers),
            Caller("B admin", b.keys["admin"], b.name, a.markers),
            Caller("operator", operator, None, []),  # lists every project's keys, by design
            Caller("A admin asking for B (header)", a.keys["admin"], a.name, b.markers,
                   headers={"x-driftline-project": b.name}),
            Caller("A read asking for B (query)", a.keys["read"], a.name, b.markers,
                   params={"project": b.name}),
            Caller("B admin asking for A (query)", b.keys["admin"], b.name, a.markers,
                   params={"project": a.name}),
        ]  # fmt: skip
        protected = {key_id for p in (a, b) for r, key_id in p.key_ids.items() if r != "spare"}
        with requests.Session() as session:
            yield Fuzz(server, a, b, callers, session, protected, root / "models")
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def api_schema(fuzz: Fuzz) -> Any:
    served = httpx.get(fuzz.server.url + "/openapi.json", timeout=30).json()
    spec = fuzzable(served, fuzz.a, fuzz.b, fuzz.models)
    return schemathesis.openapi.from_dict(spec, config=schemathesis.Config())


def asked_project(prepared: Any) -> str | None:
    """The project a request names, read as the server reads it: the header, else the last
    `project` in the query."""
    header = prepared.headers.get("x-driftline-project")
    if header:
        return str(header)
    query = [v for k, v in parse_qsl(urlsplit(prepared.url).query, True) if k == "project"]
    return query[-1] if query and query[-1] else None


def request_text(prepared: Any) -> str:
    """What a request sent, URL decoded: a marker in it may come back in an error message."""
    body = prepared.body or b""
    body = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    headers = "\n".join(f"{k}: {v}" for k, v in prepared.headers.items())
    return f"{prepared.method} {unquote_plus(prepared.url)}\n{headers}\n\n{body}"


def logged_since(server: ServerProcess, offset: int) -> str:
    """The server's log from `offset`, once the traceback of a 5xx is in (or after 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        with open(server.log, errors="replace") as log:
            log.seek(offset)
            text = log.read()
        if "Traceback" in text or time.monotonic() > deadline:
            time.sleep(0.2)  # the traceback's last lines
            with open(server.log, errors="replace") as log:
                log.seek(offset)
                return log.read()
        time.sleep(0.1)


def call_as_everyone(case: Any, fuzz: Fuzz) -> None:
    """Send the case as each caller: never a 5xx, never the other project's markers, never
    data without a key, never data for a key that names a project not its own."""
    key_id = (case.path_parameters or {}).get("key_id")
    if case.method.upper() == "DELETE" and key_id in fuzz.protected_key_ids:
        return  # revoking the fuzzing keys themselves would make every later case a 401
    for caller in fuzz.callers:
        headers = dict(caller.headers)
        if caller.key is not None:
            headers["authorization"] = f"Bearer {caller.key}"
        log_from = fuzz.server.log.stat().st_size
        response = case.call(
            base_url=fuzz.server.url,
            session=fuzz.session,
            headers=headers,
            params=caller.params or None,
            timeout=60,
        )
        sent = request_text(response.request)
        status, text = response.status_code, response.text
        where = f"{caller.label}:\n{sent[:3000]}\n-> {status} {text[:2000]}"
        if status >= 500:
            pytest.fail(f"{where}\nserver log:\n{logged_since(fuzz.server, log_from)[-8000:]}")
        # What the caller's project stored itself may come back: a model version it named
        # after the other project's, say. Anything else of the other project's is a leak.
        written = fuzz.written.setdefault(caller.project, set())
        leaked = [m for m in caller.foreign if m in text and m not in sent and m not in written]
        assert not leaked, f"leaked {leaked}: {where}"
        if case.method.upper() != "GET" and 200 <= status < 300:
            written.update(m for m in caller.foreign if m in sent)
        if not response.request.path_url.startswith(PROJECT_SCOPED):
            continue
        if caller.key is None:
            assert 400 <= status < 500, f"no key: {where}"
        asked = asked_project(response.request)
        if caller.project is not None and asked and asked != caller.project:
            assert 400 <= status < 500, f"another project asked for: {where}"


def fixed_ids(operation: Any, project: Project) -> dict[str, dict[str, Any]]:
    """The operation's parameters set to things of `project` (its trace, snapshot, silence...)."""
    fixed: dict[str, dict[str, Any]] = {"path_parameters": {}, "query": {}}
    for parameter in operation.iter_parameters():
        where = {"path": "path_parameters", "query": "query"}.get(parameter.location.value)
        if where and parameter.name in project.ids:
            fixed[where][parameter.name] = project.ids[parameter.name]
    if (operation.method.upper(), operation.path) == ("POST", "/api/feedback"):
        # A choice between two of the project's calls: refused unless both are the key's own.
        # (A plain value may name any trace, even one not seen yet: that is no check.)
        first, second = project.calls[0], project.calls[1]
        fixed["body"] = {
            "trace_id": first[0],
            "name": "fuzz",
            "choice": "a",
            "a": {"trace_id": first[0], "span_id": first[1]},
            "b": {"trace_id": second[0], "span_id": second[1]},
        }
    return {k: v for k, v in fixed.items() if v}


def strategies(operation: Any, fuzz: Fuzz) -> list[tuple[str, Any, int]]:
    """(what, cases, how many): valid and invalid input, and input naming each project's ids."""
    out = [
        ("positive", operation.as_strategy(GenerationMode.POSITIVE), POSITIVE),
        ("negative", operation.as_strategy(GenerationMode.NEGATIVE), NEGATIVE),
    ]
    for project in (fuzz.a, fuzz.b):
        fixed = fixed_ids(operation, project)
        if fixed:
            cases = operation.as_strategy(GenerationMode.POSITIVE, **fixed)
            out.append((f"{project.name}'s ids", cases, WITH_IDS))
    return out


def test_every_served_route_is_fuzzed_and_each_projects_ids_reach_those_taking_ids(
    fuzz: Fuzz, api_schema: Any
) -> None:
    """Every operation the server documents falls in one group below, and the cases naming a
    project's things are made for every route that takes an id (there are no notifications
    to name: alerts are off; evaluators are the server's, named in its config, not a
    project's)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    served = httpx.get(fuzz.server.url + "/openapi.json", timeout=30).json()["paths"]
    assert len(operations) == sum(len(methods) for methods in served.values())
    grouped = [op.label for group in GROUPS.values() for op in in_group(api_schema, group)]
    assert sorted(grouped) == sorted(op.label for op in operations)
    for project in (fuzz.a, fuzz.b):
        named = {op.label for op in operations if fixed_ids(op, project)}
        unnamed = ("notification", "evaluators")
        by_id = {op.label for op in operations
                 if "{" in op.path and not any(word in op.path for word in unnamed)}  # fmt: skip
        assert by_id <= named, by_id - named
        assert {"GET /api/calls", "GET /api/feedback", "POST /api/feedback"} <= named


def in_group(api_schema: Any, tags: tuple[str, ...]) -> list[Any]:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    return [op for op in operations if set(op.tags or ()) & set(tags)]


@pytest.mark.parametrize("group", GROUPS)
def test_every_route_answers_every_key_without_5xx_or_another_projects_data(
    fuzz: Fuzz, api_schema: Any, subtests: Any, group: str
) -> None:
    for operation in in_group(api_schema, GROUPS[group]):
        for what, cases, count in strategies(operation, fuzz):
            with subtests.test(msg=f"{operation.label} ({what})"):

                @settings(
                    max_examples=count,
                    deadline=None,
                    database=None,
                    phases=[Phase.generate],  # no shrinking: the report holds the raw input
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=cases)
                def run(case: Any) -> None:
                    call_as_everyone(case, fuzz)

                try:
                    run()
                except Unsatisfiable:
                    # Every parameter is a free string: no input breaks the schema.
                    assert what == "negative", operation.label


NOW = time.time()
RUN = {"snapshot_id": "s", "method": "dpo", "base_model": "b", "output": "o", "status": "running",
       "created_at": NOW, "updated_at": NOW}  # fmt: skip
FOUND = [  # what the fuzzing once turned into a 5xx, and what the answer must name instead
    ("POST", "/api/finetune-runs/r/metrics", {"step": 2**40, "figures": {}}, "body.step"),
    ("PUT", "/api/finetune-runs/r", {**RUN, "total_steps": 2**40}, "body.total_steps"),
    ("PUT", "/api/finetune-runs/r", {**RUN, "created_at": 1e300}, "body.created_at"),
    (
        "PUT",
        "/api/models/v9",
        {
            "path": "{models}/v9",
            "status": "candidate",
            "created_at": NOW,
            "updated_at": float("inf"),
        },
        "body.updated_at",
    ),
    (
        "PUT",
        "/api/models/v9",
        {"path": "{models}/v\u0000", "status": "candidate", "created_at": NOW, "updated_at": NOW},
        "not a folder",
    ),
    ("POST", "/api/models/~nobody/promote", None, "no model version"),
    (
        "POST",
        "/api/silences",
        {"matchers": ['a="b"'], "duration": "99999999999h", "createdBy": "x", "comment": "y"},
        "endsAt",
    ),
    (
        "POST",
        "/api/silences",
        {
            "matchers": ['a="b"'],
            "startsAt": "9999-12-31T23:00:00Z",
            "duration": "2h",
            "createdBy": "x",
            "comment": "y",
        },
        "startsAt",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "named"), FOUND)
def test_what_once_answered_5xx_is_refused_naming_the_field(
    fuzz: Fuzz, method: str, path: str, body: Any, named: str
) -> None:
    content = json.dumps(body).replace("{models}", str(fuzz.models)) if body else None
    r = httpx.request(
        method,
        fuzz.server.url + path,
        content=content,
        headers={"authorization": f"Bearer {fuzz.a.keys['admin']}",
                 "content-type": "application/json"},
    )  # fmt: skip
    assert r.status_code in (400, 404), r.text
    assert named in r.json()["error"]
    # A silence past 2262 was stored before it failed, and listing them failed ever after.
    read = {"authorization": f"Bearer {fuzz.a.keys['read']}"}
    assert httpx.get(fuzz.server.url + "/api/silences", headers=read).status_code == 200


def test_feedback_can_be_filtered_by_time(fuzz: Fuzz) -> None:
    """`since`/`until` on feedback compared the column's RFC 3339 text with a time: a 503."""
    read = {"authorization": f"Bearer {fuzz.a.keys['read']}"}
    url = fuzz.server.url + "/api/feedback"
    every = httpx.get(url, params={"limit": 1000}, headers=read).json()["items"]
    assert every
    since = httpx.get(url, params={"limit": 1000, "since": "0"}, headers=read)
    assert since.status_code == 200, since.text
    assert since.json()["items"] == every
    until = httpx.get(url, params={"until": "1"}, headers=read)
    assert until.status_code == 200, until.text
    assert until.json()["items"] == []


def test_the_fuzzing_left_every_key_working_and_the_log_clean(fuzz: Fuzz) -> None:
    """No case revoked a key it must not, and nothing failed out of sight (a writer's error)."""
    for project in (fuzz.a, fuzz.b):
        r = httpx.get(
            fuzz.server.url + "/api/calls",
            headers={"authorization": f"Bearer {project.keys['read']}"},
        )
        assert r.status_code == 200, (project.name, r.text)
    log = fuzz.server.log.read_text()
    assert "Traceback" not in log, log[-6000:]
