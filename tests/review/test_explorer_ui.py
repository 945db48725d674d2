"""The calls explorer in real headless Chromium, on spans sent through OTLP: a read key signs
in, lists, filters and pages the calls, opens a trace's waterfall and a call's conversation,
feedback and flags; review pages stay closed to it; another project's trace is not found; a
model's markup stays text."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from driftline.store import Store, keys, migrate, open_store
from tests import factory as f
from tests.sdk.conftest import LiveCollector, start_live

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium")
DOCS = Path(__file__).parents[2] / "docs"
MS = 1_000_000

TRACE = bytes.fromhex("5e" * 16)
ROOT, FIRST, TOOL, NESTED, LAST = (bytes.fromhex(f"{i:016x}") for i in range(0xA1, 0xA6))
SYSTEM = "You are the support bot of a parcel shop."
QUESTION = "Where is my parcel A-17?"
ANSWER = "It left the depot this morning and arrives tomorrow."
HOSTILE = "</script><img src=x onerror=\"document.title='owned'\"><b>bold</b> & more"
HOSTILE_TRACE = bytes.fromhex("6f" * 16)
# Calls of their own traces: (prompt, answer, model, service)
SINGLES = [
    ("How do I reset my password?", "Click 'Forgot password'.", "gpt-4o-mini", "support"),
    ("Can I get a refund for a late parcel?", "Yes, within 30 days.", "claude-sonnet-4", "billing"),
    ("What are your opening hours?", "9 to 5, Monday to Friday.", "gpt-4o-mini", "support"),
    ("Do you ship abroad?", "To 30 countries.", "claude-sonnet-4", "support"),
]


def messages(*pairs: tuple[str, str]) -> str:
    return json.dumps([{"role": r, "parts": [{"type": "text", "content": c}]} for r, c in pairs])


def agent_trace(start: int) -> list[Span]:
    """An agent answering: two LLM calls, a tool that fails with an LLM call inside it."""
    answer_with_tool = json.dumps([{
        "role": "assistant", "finish_reason": "tool_calls",
        "parts": [{"type": "text", "content": ANSWER},
                  {"type": "tool_call", "id": "c1", "name": "lookup_order",
                   "arguments": {"order": "A-17"}}],
    }])  # fmt: skip
    thrown = {"exception.type": "TimeoutError", "exception.message": "order service timed out"}
    timeout = Span.Event(name="exception", time_unix_nano=start + 600 * MS,
                         attributes=f.kvs(thrown))  # fmt: skip
    return [
        f.span({"app.step": "answer"}, trace_id=TRACE, span_id=ROOT, name="answer",
               start_ns=start, duration_ns=1000 * MS),
        f.span(f.genai_attrs(model="gpt-4o", **{
            "gen_ai.input.messages": messages(("system", SYSTEM), ("user", QUESTION)),
            "gen_ai.output.messages": answer_with_tool,
            "gen_ai.response.finish_reasons": ["tool_calls"]}),
            trace_id=TRACE, span_id=FIRST, parent=ROOT, name="chat gpt-4o",
            start_ns=start + 50 * MS, duration_ns=400 * MS),
        f.span({}, trace_id=TRACE, span_id=TOOL, parent=ROOT, name="lookup_order",
               start_ns=start + 460 * MS, duration_ns=200 * MS, error=True, events=[timeout]),
        f.span(f.genai_attrs("Summarise order A-17", "Shipped.", "gpt-4o-mini"), trace_id=TRACE,
               span_id=NESTED, parent=TOOL, name="chat gpt-4o-mini", start_ns=start + 480 * MS,
               duration_ns=100 * MS),
        f.span(f.genai_attrs(QUESTION, ANSWER, "gpt-4o"), trace_id=TRACE, span_id=LAST,
               parent=ROOT, name="chat gpt-4o", start_ns=start + 700 * MS, duration_ns=250 * MS),
    ]  # fmt: skip


@dataclass
class Seeded:
    live: LiveCollector
    store: Store
    read_key: str
    review_key: str
    beta_trace: str


def post_spans(live: LiveCollector, key: str, spans: list[Span], service: str) -> None:
    body = f.request(spans, service).SerializeToString()
    sent = httpx.post(f"{live.url}/v1/traces", content=body, timeout=10,
                      headers={**f.PROTOBUF, **f.auth(key)})  # fmt: skip
    assert sent.status_code == 200, sent.text


def wait_rows(store: Store, table: str, count: int) -> None:
    deadline = time.monotonic() + 15
    while store.query(f"SELECT count() AS n FROM {table}")[0]["n"] < count:
        assert time.monotonic() < deadline, f"{table} never reached {count} rows"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    data = tmp_path_factory.mktemp("explorer") / "data"
    store = open_store(data)
    migrate(store)
    live = start_live(data.parent / "live" / "data", store)
    now = time.time_ns() - 60_000 * MS
    post_spans(live, live.ingest_key, agent_trace(now), "support")
    hostile = f.span(f.genai_attrs("Say hi", HOSTILE), trace_id=HOSTILE_TRACE, name=HOSTILE,
                     start_ns=now - 1000 * MS)  # fmt: skip
    post_spans(live, live.ingest_key, [hostile], "support")
    for i, (prompt, answer, model, service) in enumerate(SINGLES):
        post_spans(live, live.ingest_key, [f.span(f.genai_attrs(prompt, answer, model),
                   start_ns=now - (i + 2) * 1000 * MS)], service)  # fmt: skip
    beta = f.span(f.genai_attrs("beta's secret question", "beta's answer"))
    post_spans(live, keys.create_key(store, "beta", "ingest")[1], [beta], "support")
    wait_rows(store, "llm_calls", 3 + 1 + len(SINGLES) + 1)
    wait_rows(store, "spans", 2)
    feedback = [
        {"trace_id": TRACE.hex(), "span_id": FIRST.hex(), "name": "thumbs", "value": True,
         "comment": "found my parcel", "user": "u-42"},
        {"trace_id": TRACE.hex(), "name": "resolved", "value": "yes"},
    ]  # fmt: skip
    sent = httpx.post(f"{live.url}/api/feedback", json=feedback, timeout=10,
                      headers=f.auth(live.ingest_key))  # fmt: skip
    assert sent.status_code == 200, sent.text
    store.insert_arrow("review_queue", pa.table({
        "project_id": ["alpha"], "trace_id": [TRACE.hex()], "span_id": [FIRST.hex()],
        "call_time": pa.array([now + 50 * MS], pa.timestamp("ns", "UTC")),
        "reasons": [["low_relevance"]],
        "scores": pa.array([[("low_relevance", 0.21)]], pa.map_(pa.string(), pa.float64())),
        "thresholds": pa.array([[("low_relevance", 0.4)]], pa.map_(pa.string(), pa.float64())),
        "priority": [3.0], "source": ["flag"], "window_key": ["bot@1/1-2"],
    }))  # fmt: skip
    read, review = (keys.create_key(store, "alpha", role, name)[1]
                    for role, name in (("read", "dana"), ("review", "rita")))  # fmt: skip
    yield Seeded(live, store, read, review, beta.trace_id.hex())
    live.stop()
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def sign_in(browser: Any, url: str, key: str) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url + "/review/calls")
    assert "/review/login" in page.url
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/review/calls")
    return page


def listed(page: Any) -> list[str]:
    """Span ids of the calls the list shows."""
    return [r.get_attribute("data-span") for r in page.locator("#calls tbody tr[data-span]").all()]


def test_a_read_key_lists_filters_pages_and_opens_a_trace(seeded: Seeded, browser: Any) -> None:
    url = seeded.live.url
    page = sign_in(browser, url, seeded.read_key)
    everything = listed(page)
    assert len(everything) == 3 + 1 + len(SINGLES)  # alpha's calls only, newest first
    assert page.inner_text("#summary dd >> nth=0") == str(len(everything))
    assert "1,280 (960 in, 320 out)" in page.inner_text("#summary")  # 8 calls of 120 + 40
    assert "beta" not in page.inner_text("#calls")
    # Filters: the model (summary follows), then text.
    page.fill("input[name=model]", "claude-sonnet-4")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**model=claude-sonnet-4**")
    assert len(listed(page)) == 2 and page.inner_text("#summary dd >> nth=0") == "2"
    page.fill("input[name=model]", "")
    page.keyboard.press("Escape")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("/")  # focuses the text search
    page.keyboard.type("REFUND")
    page.keyboard.press("Enter")
    page.wait_for_url("**q=REFUND**")
    assert [r.split(" ")[0] for r in [page.inner_text("#calls tbody td.text >> nth=0")]] == ["Can"]
    assert len(listed(page)) == 1
    # Pages of two, each call once, newest first; `n` is the next page.
    page.goto(url + "/review/calls?limit=2")
    seen = listed(page)
    while page.locator("a[rel=next]").count():
        page.locator("body").click(position={"x": 5, "y": 5})
        with page.expect_navigation():
            page.keyboard.press("n")
        assert len(listed(page)) <= 2 and page.locator("#first-page").count() == 1
        seen += listed(page)
    assert seen == everything

    # The agent's trace from its first call's row, with the keyboard.
    page.goto(url + "/review/calls")
    page.locator("body").click(position={"x": 5, "y": 5})
    for _ in range(everything.index(FIRST.hex())):
        page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{url}/review/traces/{TRACE.hex()}#span-{FIRST.hex()}")
    rows = page.locator("#waterfall tbody tr")
    order = [(r.get_attribute("data-span"), r.get_attribute("data-depth")) for r in rows.all()]
    assert order == [(ROOT.hex(), "0"), (FIRST.hex(), "1"), (TOOL.hex(), "1"),
                     (NESTED.hex(), "2"), (LAST.hex(), "1")]  # fmt: skip
    failed = page.locator("#waterfall tr.error")
    assert failed.count() == 1 and failed.get_attribute("data-span") == TOOL.hex()
    bars = {r.get_attribute("data-span"): r.locator(".fill").bounding_box() for r in rows.all()}
    assert bars[ROOT.hex()]["width"] > bars[FIRST.hex()]["width"] > bars[NESTED.hex()]["width"]
    starts = [bars[s.hex()]["x"] for s in (ROOT, FIRST, TOOL, LAST)]
    assert starts == sorted(starts) and len(set(starts)) == 4
    assert "order service timed out" in page.inner_text(f"#span-{TOOL.hex()}")
    call = page.locator(f"#span-{FIRST.hex()}")
    roles = call.locator(".message .role").all_inner_texts()
    assert roles == ["system", "user", "assistant · tool_calls"]
    said = call.locator(".message pre").all_inner_texts()
    assert said[:2] == [SYSTEM, QUESTION]
    assert said[2] == f'{ANSWER}\n→ lookup_order({{"order": "A-17"}})'
    figures = call.locator(".figures").inner_text()
    assert "120 in, 40 out" in figures and "tool_calls" in figures and "gpt-4o" in figures
    assert "low_relevance score 0.21, threshold 0.4" in call.locator(".flags").inner_text()
    assert call.locator(".review-link").count() == 0  # a read key cannot review it
    thumbs = call.locator(".feedback li")
    assert thumbs.count() == 1 and "thumbs yes" in thumbs.inner_text()
    assert "found my parcel" in thumbs.inner_text()
    assert "resolved yes" in page.inner_text("#trace-feedback")
    # The shot for the README, in a temporary file unless asked to replace docs/explorer.png.
    shot = seeded.live.runtime.settings.data / "explorer.png"
    page.goto(f"{url}/review/traces/{TRACE.hex()}")
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000 and shot.read_bytes().startswith(b"\x89PNG")
    if os.environ.get("DRIFTLINE_DOCS_SCREENSHOT"):
        shutil.copyfile(shot, DOCS / "explorer.png")


def test_the_review_item_and_its_trace_link_each_other(seeded: Seeded, browser: Any) -> None:
    url, item = seeded.live.url, f"{TRACE.hex()}/{FIRST.hex()}"
    page = sign_in(browser, url, seeded.review_key)
    page.goto(f"{url}/review/items/{item}")
    page.click("#trace-link")
    page.wait_for_url(f"{url}/review/traces/{TRACE.hex()}#span-{FIRST.hex()}")
    page.click(f"#span-{FIRST.hex()} .review-link")
    page.wait_for_url(f"{url}/review/items/{item}")
    assert page.inner_text("#response").startswith(ANSWER)


def session(url: str, key: str) -> dict[str, str]:
    login = httpx.post(f"{url}/review/login", data={"key": key}, follow_redirects=False, timeout=10)
    assert login.status_code == 303, login.text
    return {"driftline_review": login.cookies["driftline_review"]}


def test_a_read_key_cannot_review_nor_see_another_project(seeded: Seeded) -> None:
    url, item = seeded.live.url, f"{TRACE.hex()}/{FIRST.hex()}"
    cookies = session(url, seeded.read_key)
    for path in ("/review", f"/review/items/{item}", "/review/agreement"):
        refused = httpx.get(url + path, cookies=cookies, timeout=10)
        assert refused.status_code == 403, path
        assert "reviewing needs a review key" in refused.text and 'id="queue"' not in refused.text
    judged = httpx.post(f"{url}/review/api/items/{item}", cookies=cookies, timeout=10,
                        json={"scores": {"accuracy": 1}})  # fmt: skip
    assert judged.status_code == 403 and "review key" in judged.json()["error"]
    bearer = httpx.get(f"{url}/review/items/{item}", headers=f.auth(seeded.read_key), timeout=10)
    assert bearer.status_code == 403
    assert httpx.get(f"{url}/review/overview", cookies=cookies, timeout=10).status_code == 200
    for trace_id in (seeded.beta_trace, "not-a-trace"):
        missing = httpx.get(f"{url}/review/traces/{trace_id}", cookies=cookies, timeout=10)
        assert missing.status_code == 404 and "beta" not in missing.text
    ingest = httpx.post(f"{url}/review/login", data={"key": seeded.live.ingest_key},
                        follow_redirects=False, timeout=10)  # fmt: skip
    assert "error=" in ingest.headers["location"] and "driftline_review" not in ingest.cookies
    asked = httpx.get(f"{url}/review/calls?model=gpt-4o", follow_redirects=False, timeout=10)
    assert asked.headers["location"] == "/review/login?next=/review/calls%3Fmodel%3Dgpt-4o"
    bad = httpx.get(f"{url}/review/calls?since=yesterday", cookies=cookies, timeout=10)
    assert bad.status_code == 400 and "since=" in bad.text


def test_markup_in_a_model_answer_stays_text(seeded: Seeded, browser: Any) -> None:
    url = seeded.live.url
    page = sign_in(browser, url, seeded.read_key)
    page.goto(f"{url}/review/calls?q=say%20hi")
    assert page.locator("#calls img, #calls b").count() == 0
    assert HOSTILE[:40] in page.inner_text("#calls")
    page.goto(f"{url}/review/traces/{HOSTILE_TRACE.hex()}")
    assert page.title() != "owned"
    assert page.locator("main img, main b").count() == 0
    said = page.locator(".message.assistant pre").inner_text()
    assert said == HOSTILE
    assert page.locator("#waterfall td.name a").inner_text() == HOSTILE


def test_text_search_takes_from_the_projects_heavy_budget(seeded: Seeded, tmp_path: Path) -> None:
    limited = start_live(tmp_path / "limited" / "data", seeded.store,
                         heavy_rate_limit_per_second=0.01, heavy_rate_limit_burst=1)  # fmt: skip
    try:
        cookies = session(limited.url, seeded.read_key)
        search = [httpx.get(f"{limited.url}/review/calls?q=parcel", cookies=cookies, timeout=10)
                  for _ in range(2)]  # fmt: skip
        assert search[0].status_code == 200
        assert search[1].status_code == 429 and int(search[1].headers["Retry-After"]) >= 1
        assert "text searches" in search[1].text
        plain = httpx.get(f"{limited.url}/review/calls", cookies=cookies, timeout=10)
        assert plain.status_code == 200
    finally:
        limited.stop()
