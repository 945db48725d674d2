"""The dashboard JSON is build.py's output, whole and consistent (nobody edits it by hand)."""

from __future__ import annotations

import json

from deploy.grafana import build


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
