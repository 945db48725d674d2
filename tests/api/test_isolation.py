"""Project isolation: one project's keys never read, write or manage another project's data."""

from __future__ import annotations

import os
from typing import Any

from driftline.store import Store, keys
from tests import factory as f
from tests.conftest import Collector


def send(c: Collector, key: str, spans: list, service: str = "app", **kw: Any) -> Any:
    return c.client.post(
        kw.pop("url", "/v1/traces"),
        content=f.request(spans, service=service).SerializeToString(),
        headers={**f.PROTOBUF, **f.auth(key), **kw.pop("headers", {})},
    )


def listed(c: Collector, key: str, **params: Any) -> list[dict[str, Any]]:
    r = c.client.get("/api/calls", params=params, headers=f.auth(key))
    assert r.status_code == 200, r.text
    return r.json()["items"]


def stored_projects(store: Store, table: str = "llm_calls") -> dict[str, int]:
    rows = store.query(f"SELECT project_id, count() AS n FROM {table} GROUP BY project_id")
    return {row["project_id"]: row["n"] for row in rows}


def test_a_project_never_reads_another_projects_calls_or_traces(
    collector_factory, store: Store
) -> None:
    a = collector_factory(project="alpha")
    _, beta_ingest = keys.create_key(store, "beta", "ingest")
    _, beta_read = keys.create_key(store, "beta", "read")

    shared_trace, shared_span = os.urandom(16), os.urandom(8)
    alpha_call = f.span(
        f.genai_attrs(prompt="alpha question"),
        trace_id=shared_trace,
        span_id=shared_span,
        name="alpha-call",
    )
    # Beta happens to send a span with the same ids: it is beta's, and must not replace alpha's.
    beta_twin = f.span(
        f.genai_attrs(prompt="beta secret"),
        trace_id=shared_trace,
        span_id=shared_span,
        name="beta-twin",
    )
    beta_trace = os.urandom(16)
    beta_call = f.span(f.genai_attrs(prompt="beta secret two"), trace_id=beta_trace, name="beta")
    beta_root = f.span({"http.route": "/b"}, trace_id=beta_trace, name="beta-root")
    assert send(a, a.ingest_key, [alpha_call], service="alpha-app").status_code == 200
    assert send(a, beta_ingest, [beta_twin, beta_call, beta_root], "beta-app").status_code == 200
    assert a.wait_stored(count=3) == 3
    a.wait_stored("spans")
    assert stored_projects(store) == {"alpha": 1, "beta": 2}

    assert [c["span_name"] for c in listed(a, a.read_key)] == ["alpha-call"]
    assert listed(a, a.read_key, q="beta secret") == []
    assert listed(a, a.read_key, service="beta-app") == []
    assert listed(a, a.admin_key, q="beta") == []  # an admin key reads its own project only
    assert sorted(c["span_name"] for c in listed(a, beta_read)) == ["beta", "beta-twin"]

    # By trace id: beta's trace does not exist for alpha; the shared id shows each its own span.
    read_a, read_b = f.auth(a.read_key), f.auth(beta_read)
    r = a.client.get(f"/api/traces/{beta_trace.hex()}", headers=read_a)
    assert r.status_code == 404
    assert "beta" not in r.text.replace(beta_trace.hex(), "")
    assert a.client.get(f"/api/traces/{beta_trace.hex()}", headers=read_b).status_code == 200
    alpha_view = a.client.get(f"/api/traces/{shared_trace.hex()}", headers=read_a).json()
    assert [s["span_name"] for s in alpha_view["spans"]] == ["alpha-call"]
    assert alpha_view["spans"][0]["input_text"] == "alpha question"
    beta_view = a.client.get(f"/api/traces/{shared_trace.hex()}", headers=read_b).json()
    assert [s["span_name"] for s in beta_view["spans"]] == ["beta-twin"]

    # Asking for the other project by name is refused, not quietly honoured, even beside a
    # header naming the key's own project.
    for how in (
        {"params": {"project": "beta"}},
        {"headers": {"x-driftline-project": "beta"}},
        {"params": {"project": "beta"}, "headers": {"x-driftline-project": "alpha"}},
    ):
        headers = {**read_a, **how.get("headers", {})}
        r = a.client.get("/api/calls", params=how.get("params"), headers=headers)
        assert r.status_code == 403, how
        assert "alpha" in r.json()["error"]
        r = a.client.get(
            f"/api/traces/{beta_trace.hex()}", params=how.get("params"), headers=headers
        )
        assert r.status_code == 403, how
    assert len(listed(a, a.read_key, project="alpha")) == 1

    # A cursor taken from beta's listing reveals nothing of beta to alpha.
    page = a.client.get("/api/calls", params={"limit": 1}, headers=read_b).json()
    assert page["next_cursor"]
    with_cursor = listed(a, a.read_key, cursor=page["next_cursor"])
    assert all(c["span_name"] == "alpha-call" for c in with_cursor)


def test_a_project_never_writes_into_another_project(collector_factory, store: Store) -> None:
    a = collector_factory(project="alpha")
    _, beta_read = keys.create_key(store, "beta", "read")

    spoofed = f.span(f.genai_attrs(), name="spoof")
    r = send(a, a.ingest_key, [spoofed], headers={"x-driftline-project": "beta"})
    assert r.status_code == 403
    r = send(a, a.ingest_key, [spoofed], url="/v1/traces?project=beta")
    assert r.status_code == 403

    # Resource attributes naming another project change nothing: the key decides.
    claims = f.request([f.span(f.genai_attrs(), name="claims-beta")], service="x")
    claims.resource_spans[0].resource.attributes.extend(
        f.kvs({"driftline.project": "beta", "project": "beta"})
    )
    r = a.client.post(
        "/v1/traces",
        content=claims.SerializeToString(),
        headers={**f.PROTOBUF, **f.auth(a.ingest_key)},
    )
    assert r.status_code == 200
    own = f.span(f.genai_attrs(), name="own")
    assert send(a, a.ingest_key, [own], headers={"x-driftline-project": "alpha"}).status_code == 200
    a.wait_stored(count=2)
    a.drain()

    assert stored_projects(store) == {"alpha": 2}
    assert listed(a, beta_read) == []
    assert sorted(c["span_name"] for c in listed(a, a.read_key)) == ["claims-beta", "own"]


def test_admin_keys_manage_their_own_project_only(collector_factory, store: Store) -> None:
    a = collector_factory(project="alpha", key_cache_seconds=0)
    beta_read_id, beta_read = keys.create_key(store, "beta", "read")
    beta_admin_id, beta_admin = keys.create_key(store, "beta", "admin")
    admin = f.auth(a.admin_key)

    r = a.client.post("/api/admin/keys", json={"project": "beta", "role": "admin"}, headers=admin)
    assert r.status_code == 403
    assert len(keys.list_keys(store, "beta")) == 2

    r = a.client.get("/api/admin/keys", params={"project": "beta"}, headers=admin)
    assert r.status_code == 403
    r = a.client.get("/api/admin/keys", headers=admin)
    assert r.status_code == 200
    items = r.json()["items"]
    assert {item["project_id"] for item in items} == {"alpha"}
    assert len(items) == 3
    assert beta_read_id not in r.text and beta_admin_id not in r.text
    for secret in (a.ingest_key, a.read_key, a.admin_key):
        assert secret.split("_")[2] not in r.text  # keys are never shown again

    r = a.client.delete(f"/api/admin/keys/{beta_read_id}", headers=admin)
    assert r.status_code == 404
    assert not any(k["revoked"] for k in keys.list_keys(store, "beta"))
    assert a.client.get("/api/calls", headers=f.auth(beta_read)).status_code == 200

    # The same holds the other way round: beta's admin cannot touch alpha's keys.
    alpha_ingest_id = a.ingest_key.split("_")[1]
    r = a.client.delete(f"/api/admin/keys/{alpha_ingest_id}", headers=f.auth(beta_admin))
    assert r.status_code == 404
    assert send(a, a.ingest_key, [f.span(f.genai_attrs())]).status_code == 200

    # Within its project an admin key does manage keys, and the new key is bound to it.
    r = a.client.post("/api/admin/keys", json={"project": "alpha", "role": "read"}, headers=admin)
    assert r.status_code == 201
    made = r.json()
    assert made["project"] == "alpha"
    a.wait_stored()
    assert len(listed(a, made["key"])) == 1
    r = a.client.delete(f"/api/admin/keys/{made['key_id']}", headers=admin)
    assert r.status_code == 200
    assert a.client.get("/api/calls", headers=f.auth(made["key"])).status_code == 401

    # Keys without the admin role cannot reach key administration at all.
    for key in (a.read_key, a.ingest_key, beta_read):
        assert a.client.get("/api/admin/keys", headers=f.auth(key)).status_code == 403
        r = a.client.post(
            "/api/admin/keys", json={"project": "alpha", "role": "admin"}, headers=f.auth(key)
        )
        assert r.status_code == 403
