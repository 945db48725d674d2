"""The dashboard JSON is build.py's output, whole and consistent (nobody edits it by hand)."""

from __future__ import annotations

import json

from deploy.grafana import build
from driftline.review.explorer import router as explorer


def test_json_files_are_what_build_py_writes() -> None:
    rendered = build.render()
    on_disk = {p.name: p.read_text() for p in build.OUT.glob("*.json")}
    assert on_disk.keys() == rendered.keys(), "run: .venv/bin/python deploy/grafana/build.py"
    for name, text in rendered.items():
        assert on_disk[name] == text, (
            f"{name} differs; run .venv/bin/python deploy/grafana/build.py"
        )


def test_dashboards_have_variables_links_and_sources() -> None:
    uids = set()
    for text in build.render().values():
        board = json.loads(text)
        uids.add(board["uid"])
        names = [v["name"] for v in board["templating"]["list"]]
        assert names[:3] == ["project", "service", "model"]
        assert {link["url"] for link in board["links"]} <= {f"/d/{u}" for u, _ in build.DASHBOARDS}
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] in ("driftline-clickhouse", "driftline-prometheus")
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(set(refs)) == len(refs), panel["title"]
            for target in panel["targets"]:
                sql = target.get("rawSql", "")
                assert not sql or "$__timeFilter(" in sql or "$__toTime" in sql or "FINAL" in sql
    assert uids == {u for u, _ in build.DASHBOARDS}


def test_call_tables_open_the_call_in_its_trace() -> None:
    """Each row of the slowest and failed calls links to the explorer's trace page, at the
    call's span (a route of driftline.review.explorer)."""
    assert "/review/traces/{trace_id}" in {getattr(r, "path", "") for r in explorer.routes}
    board = json.loads(build.render()["overview.json"])
    for title in ("Slowest calls", "Latest failed calls"):
        [panel] = [p for p in board["panels"] if p["title"] == title]
        [override] = panel["fieldConfig"]["overrides"]
        assert override["matcher"] == {"id": "byName", "options": "trace_id"}
        [link] = override["properties"][0]["value"]
        trace = "${driftline_url}/review/traces/${__data.fields.trace_id}"
        assert link["url"] == trace + "#span-${__data.fields.span_id}"
