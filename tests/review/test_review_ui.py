"""The review UI in real headless Chromium: sign in, the queue, scoring with the keyboard, a
highlighted span, a correction and an A/B choice; two reviewers, their agreement; and what a
reviewer of another project cannot see."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import httpx
import numpy as np
import pyarrow as pa
import pytest

from driftline.detectors.embeddings import quantize
from driftline.finetune import registry
from driftline.finetune.ledger import StoreLedger
from driftline.store import Store, keys
from tests.conftest import wait_for
from tests.sdk.conftest import LiveCollector, start_live

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium")
DOCS = Path(__file__).parents[2] / "docs"

QUESTION = "What is the capital of France?"
WRONG = "The capital of France is Lyon, a city on the Rhône."
RIGHT = "The capital of France is Paris."
OTHER = "Paris is the capital of France; Lyon is its third-largest city."
RESET = "\nClick 'Forgot' 👍\r\nthen check your mail."  # a leading newline, an emoji, CRLF
CALLS = {  # span id -> (trace id, model, input, output)
    "a000000000000001": ("a" * 32, "bot-v2", QUESTION, WRONG),
    "a000000000000002": ("b" * 32, "bot-v1", QUESTION, OTHER),
    "a000000000000003": ("c" * 32, "bot-v2", "How do I reset my password?", RESET),
}


def seed(store: Store) -> None:
    now = time.time_ns()
    spans = list(CALLS)
    times = pa.array([now - i * 10**9 for i in range(len(spans))], pa.timestamp("ns", "UTC"))
    rows = [CALLS[s] for s in spans]
    store.insert_arrow(
        "llm_calls",
        pa.table(
            {
                "project_id": ["alpha"] * len(spans),
                "trace_id": [r[0] for r in rows],
                "span_id": spans,
                "start_time": times,
                "end_time": times,
                "service": ["support"] * len(spans),
                "response_model": [r[1] for r in rows],
                "input_text": [r[2] for r in rows],
                "input_messages": [
                    f'[{{"role":"user","parts":[{{"type":"text","content":"{r[2]}"}}]}}]'
                    for r in rows
                ],
                "output_text": [r[3] for r in rows],
            }
        ),
    )
    # The reference "bot" v1 holds the two other calls, embedded (3-d stand-in vectors).
    vectors = {spans[0]: [1.0, 0.2, 0.0], spans[1]: [0.9, 0.3, 0.0], spans[2]: [0.0, 0.1, 1.0]}
    store.insert_arrow(
        "call_vectors",
        pa.table(
            {
                "project_id": ["alpha"] * 3,
                "trace_id": [CALLS[s][0] for s in spans],
                "span_id": spans,
                "start_time": times,
                "model": ["stand-in"] * 3,
                "prompt_vector": quantize(np.array([vectors[s] for s in spans])),
                "response_vector": quantize(np.array([vectors[s] for s in spans])),
            }
        ),
    )
    store.insert_arrow(
        "reference_calls",
        pa.table(
            {
                "project_id": ["alpha"] * 2,
                "name": ["bot"] * 2,
                "version": pa.array([1, 1], pa.uint32()),
                "trace_id": [CALLS[s][0] for s in spans[1:]],
                "span_id": spans[1:],
            }
        ),
    )
    store.command(
        "INSERT INTO drift_references (project_id, name, version, selector, calls, first_call, "
        "last_call) VALUES ('alpha', 'bot', 1, '{}', 2, "
        "fromUnixTimestamp64Nano({first:Int64}, 'UTC'), "
        "fromUnixTimestamp64Nano({last:Int64}, 'UTC'))",
        {"first": now - 2 * 10**9, "last": now - 10**9},
    )
    queued = [spans[0], spans[2]]
    store.insert_arrow(
        "review_queue",
        pa.table(
            {
                "project_id": ["alpha"] * 2,
                "trace_id": [CALLS[s][0] for s in queued],
                "span_id": queued,
                "call_time": pa.array([now, now - 2 * 10**9], pa.timestamp("ns", "UTC")),
                "reasons": [["low_relevance", "novel"], []],
                "scores": pa.array(
                    [[("low_relevance", 0.31), ("novel", 0.002)], []],
                    pa.map_(pa.string(), pa.float64()),
                ),
                "thresholds": pa.array(
                    [[("low_relevance", 0.42), ("novel", 0.01)], []],
                    pa.map_(pa.string(), pa.float64()),
                ),
                "notes": pa.array(
                    [[("low_relevance", "cosine 0.31 to its prompt"), ("novel", "")], []],
                    pa.map_(pa.string(), pa.string()),
                ),
                "priority": [4.0, 0.0],
                "source": ["flag", "audit"],
                "window_key": ["bot@1/1-2"] * 2,
            }
        ),
    )


@pytest.fixture
def live(store: Store, tmp_path: Path) -> Iterator[LiveCollector]:
    seed(store)
    collector = start_live(tmp_path / "live" / "data", store)
    yield collector
    collector.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def sign_in(browser: Any, live: LiveCollector, key: str) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(live.url + "/review")
    assert "/review/login" in page.url  # not signed in yet
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    page.wait_for_url(live.url + "/review")
    return page


def select_text(page: Any, text: str) -> None:
    """Select `text` inside the response, as a reviewer dragging the mouse would."""
    page.evaluate(
        """(text) => {
            const node = document.getElementById('response').firstChild;
            const start = node.textContent.indexOf(text);
            const range = document.createRange();
            range.setStart(node, start);
            range.setEnd(node, start + text.length);
            const sel = window.getSelection();
            sel.removeAllRanges();
            sel.addRange(range);
        }""",
        text,
    )


def judge(page: Any, scores: str, pick: str, highlight: str | None, correction: str | None) -> None:
    page.locator("#queue tbody tr").first.wait_for()
    page.keyboard.press("Enter")  # opens the first (highest priority) call
    page.wait_for_selector("#response")
    for digit in scores:
        page.keyboard.press(digit)
    if highlight:
        select_text(page, highlight)
        page.keyboard.press("b")
        page.wait_for_selector("mark.bad")
    page.keyboard.press(pick)
    if correction is not None:
        page.fill("#correction", correction)
    page.locator("body").click(position={"x": 5, "y": 5})  # leave the text box
    page.keyboard.press("Control+Enter")
    page.wait_for_url(page.url.split("/review/")[0] + "/review")


def stored(store: Store, reviewer: str) -> dict[str, dict[str, Any]]:
    rows = store.query(
        "SELECT name, kind, value_number, value_string, details, review_id FROM feedback FINAL "
        "WHERE source = 'review' AND user_id = {r:String}",
        {"r": reviewer},
    )
    return {r["name"]: r for r in rows}


def test_two_reviewers_judge_with_the_keyboard(
    live: LiveCollector, store: Store, browser: Any, tmp_path: Path
) -> None:
    alice = keys.create_key(store, "alpha", "review", "alice")[1]
    bob = keys.create_key(store, "alpha", "review", "bob")[1]

    page = sign_in(browser, live, alice)
    rows = page.locator("#queue tbody tr")
    assert rows.count() == 2
    assert "low_relevance" in rows.first.inner_text()
    page.keyboard.press("Enter")
    page.wait_for_selector("#response")
    assert page.inner_text("#response") == WRONG
    assert OTHER in page.inner_text(".ab")  # the other answer to the same question
    why = page.inner_text(".why")
    assert "low_relevance score 0.31, threshold 0.42 · cosine 0.31 to its prompt" in why
    nearest = page.locator("#nearest li")  # the reference calls closest to this answer
    assert nearest.count() == 2 and OTHER in nearest.first.inner_text()
    DOCS.mkdir(exist_ok=True)
    page.go_back()
    judge(page, "425", "]", "Lyon", RIGHT)
    mine = stored(store, "alice")
    assert {k: mine[k]["value_number"] for k in ("accuracy", "helpfulness", "safety")} == {
        "accuracy": 4.0, "helpfulness": 2.0, "safety": 5.0,
    }  # fmt: skip
    assert mine["correction"]["value_string"] == RIGHT
    assert mine["preference"]["value_string"] == "b"
    start = WRONG.index("Lyon")
    marks = json.loads(mine["highlights"]["details"])["spans"]
    assert marks == [{"label": "bad", "start": start, "end": start + 4}]
    assert len({r["review_id"] for r in mine.values()}) == 1  # one submission
    # alice has judged it: her queue moves on; bob still sees it (2 reviews per call)
    assert page.locator("#queue tbody tr").count() == 1

    page_b = sign_in(browser, live, bob)
    judge(page_b, "525", "[", None, None)
    assert stored(store, "bob")["preference"]["value_string"] == "a"
    assert "correction" not in stored(store, "bob")  # unchanged answer: no correction

    page_b.goto(live.url + "/review/agreement")
    accuracy = page_b.locator('#agreement tr[data-criterion="accuracy"]')
    assert accuracy.locator("td").nth(2).inner_text() == "1"  # one call judged by both
    assert page_b.locator("#bias").inner_text().count("accuracy") == 2
    ledger = StoreLedger(store, "alpha")
    base = tmp_path / "models" / "current"
    base.mkdir(parents=True)
    (base / "config.json").write_text("{}")
    registry.baseline(ledger, base)
    page_b.goto(live.url + "/review/overview")
    assert page_b.locator("figure.chart").count() == 10  # with the fine-tunes' two curves
    assert page_b.locator("table.models tr.current td").first.inner_text() == "v1 (in service)"

    # The judgements as DPO rows, through `driftline export` against the running collector.
    admin = keys.create_key(store, "alpha", "admin")[1]
    out = tmp_path / "dpo.jsonl"
    ran = subprocess.run(
        [sys.executable, "-m", "driftline.cli", "export", "--format", "dpo", "--out",
         str(out), "--url", live.url, "--key", admin],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    snapshot_id = ran.stdout.strip()
    rows = [json.loads(line) for f in (out, tmp_path / "dpo.test.jsonl")
            for line in f.read_text().splitlines()]  # fmt: skip
    prompt = [{"role": "user", "content": QUESTION}]

    def pair(chosen: str, rejected: str) -> dict[str, Any]:
        return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}]}  # fmt: skip

    expected = [pair(RIGHT, WRONG), pair(OTHER, WRONG), pair(WRONG, OTHER)]
    assert sorted(rows, key=json.dumps) == sorted(expected, key=json.dumps)
    # One conversation: every row in the same split. The file loads as a datasets.Dataset.
    [full] = [f for f in (out, tmp_path / "dpo.test.jsonl") if f.read_text()]
    assert len(datasets.Dataset.from_json(str(full), cache_dir=str(tmp_path / "hf"))) == 3
    snapshot = httpx.get(f"{live.url}/api/datasets/{snapshot_id}", timeout=10,
                         headers={"Authorization": f"Bearer {admin}"}).json()  # fmt: skip
    assert snapshot["counts"]["sources"] == {"correction": 1, "pairwise": 2}
    assert snapshot["rows"] == 3


def test_item_page_screenshot_for_the_docs(
    live: LiveCollector, store: Store, browser: Any, tmp_path: Path
) -> None:
    """The README's picture of an item, taken in a temporary file; to replace the tracked one:
    `DRIFTLINE_DOCS_SCREENSHOT=1 .venv/bin/pytest tests/review/test_review_ui.py -k screenshot`."""
    page = sign_in(browser, live, keys.create_key(store, "alpha", "review", "alice")[1])
    page.keyboard.press("Enter")
    page.wait_for_selector("#response")
    for digit in "42":
        page.keyboard.press(digit)
    select_text(page, "Lyon, a city on the Rhône")
    page.keyboard.press("b")
    page.keyboard.press("]")
    shot = tmp_path / "review-item.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000 and shot.read_bytes().startswith(b"\x89PNG")
    if os.environ.get("DRIFTLINE_DOCS_SCREENSHOT"):
        shutil.copyfile(shot, DOCS / "review-item.png")


def signed_in(live: LiveCollector, key: str) -> dict[str, str]:
    """The session cookie signing in with `key` sets (the browser's part, without a browser)."""
    login = httpx.post(f"{live.url}/review/login", data={"key": key, "next": "/review"},
                       follow_redirects=False, timeout=10)  # fmt: skip
    assert login.status_code == 303 and login.headers["location"] == "/review"
    return {"driftline_review": login.cookies["driftline_review"]}


def test_a_reviewer_of_another_project_sees_nothing(live: LiveCollector, store: Store) -> None:
    beta = keys.create_key(store, "beta", "review", "eve")[1]
    cookies = signed_in(live, beta)
    queue = httpx.get(live.url + "/review", cookies=cookies, timeout=10)
    assert queue.status_code == 200 and "Nothing to review" in queue.text
    span = "a000000000000001"
    item = httpx.get(f"{live.url}/review/items/{'a' * 32}/{span}", cookies=cookies, timeout=10)
    assert item.status_code == 404
    judged = httpx.post(f"{live.url}/review/api/items/{'a' * 32}/{span}", cookies=cookies,
                        json={"scores": {"accuracy": 1}}, timeout=10)  # fmt: skip
    assert judged.status_code == 404
    ingest_key = keys.create_key(store, "alpha", "ingest")[1]
    login = httpx.post(f"{live.url}/review/login", data={"key": ingest_key},
                       follow_redirects=False, timeout=10)  # fmt: skip
    assert "error=" in login.headers["location"] and "driftline_review" not in login.cookies


def test_the_cookie_is_a_session_that_ends_not_the_key(live: LiveCollector, store: Store) -> None:
    key_id, key = keys.create_key(store, "alpha", "review", "alice")
    login = httpx.post(f"{live.url}/review/login", data={"key": key}, follow_redirects=False,
                       timeout=10)  # fmt: skip
    cookie = login.headers["set-cookie"]
    assert key not in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Max-Age=43200" in cookie  # review.session_hours, 12 by default
    assert "Secure" not in cookie  # plain http here; https (or a trusted proxy's) sets it
    session = {"driftline_review": login.cookies["driftline_review"]}
    [stored] = store.query("SELECT * FROM review_sessions FINAL")
    assert stored["key_id"] == key_id and login.cookies["driftline_review"] not in str(stored)

    def page(cookies: dict[str, str]) -> int:
        got = httpx.get(live.url + "/review", cookies=cookies, follow_redirects=False, timeout=10)
        return got.status_code

    assert page(session) == 200
    assert page({"driftline_review": key}) == 303  # a key is not a session
    assert page({"driftline_review": "x" * 5000}) == 303
    out = httpx.post(f"{live.url}/review/logout", cookies=session, follow_redirects=False,
                     timeout=10)  # fmt: skip
    assert out.status_code == 303 and page(session) == 303  # signed out: the token is dead

    again = signed_in(live, key)
    assert page(again) == 200
    keys.revoke_key(store, key_id)
    revoked = wait_for(lambda: page(again) == 303 or None, "a revoked key's session lived on")
    assert revoked


def test_review_requests_share_the_keys_rate_limit(tmp_path: Path, store: Store) -> None:
    seed(store)
    limited = start_live(tmp_path / "limited" / "data", store, rate_limit_per_second=1,
                         rate_limit_burst=3)  # fmt: skip
    try:
        key = keys.create_key(store, "alpha", "review", "alice")[1]
        cookies = signed_in(limited, key)
        codes = [httpx.get(limited.url + "/review", cookies=cookies, timeout=10)
                 for _ in range(6)]  # fmt: skip
        assert [c.status_code for c in codes[:3]] == [200, 200, 200]
        assert codes[-1].status_code == 429 and int(codes[-1].headers["Retry-After"]) >= 1
    finally:
        limited.stop()


@pytest.mark.parametrize(
    ("judgement", "problem"),
    [
        ({"scores": {"accuracy": 6}}, "scores.accuracy: 6 is outside 1-5"),
        ({"scores": {"charm": 3}}, "scores.charm: unknown criterion"),
        ({"labels": ["rude"]}, "labels: unknown label 'rude'"),
        ({"spans": [{"label": "bad", "start": 40, "end": 90}]}, "spans.0: end 90 is past the end"),
        ({"spans": [{"label": "meh", "start": 0, "end": 3}]}, "spans.0.label: unknown 'meh'"),
        ({}, "the judgement is empty"),
        ({"scores": {"accuracy": "high"}}, "scores.accuracy"),
    ],
)
def test_bad_judgements_get_400(
    live: LiveCollector, store: Store, judgement: dict[str, Any], problem: str
) -> None:
    key = keys.create_key(store, "alpha", "review", "alice")[1]
    answer = httpx.post(
        f"{live.url}/review/api/items/{'a' * 32}/a000000000000001",
        headers={"Authorization": f"Bearer {key}"}, json=judgement, timeout=10,
    )  # fmt: skip
    assert answer.status_code == 400 and problem in answer.json()["error"], answer.text
    assert stored(store, "alice") == {}


def test_drafts_come_back_and_skips_leave_the_queue(
    live: LiveCollector, store: Store, browser: Any
) -> None:
    key = keys.create_key(store, "alpha", "review", "alice")[1]
    item = f"{'a' * 32}/a000000000000001"
    draft = {"scores": {"accuracy": 2}, "labels": ["hallucination"], "correction": RIGHT,
             "spans": [{"label": "bad", "start": 25, "end": 29}]}  # fmt: skip
    saved = httpx.post(f"{live.url}/review/api/items/{item}/draft", json=draft, timeout=10,
                       headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert saved.status_code == 200
    page = sign_in(browser, live, key)
    page.goto(f"{live.url}/review/items/{item}")
    page.wait_for_selector("mark.bad")
    assert page.inner_text("mark.bad") == "Lyon"
    assert page.get_attribute('.criterion[data-criterion="accuracy"] [data-value="2"]',
                              "aria-pressed") == "true"  # fmt: skip
    assert page.is_checked('#labels input[value="hallucination"]')
    assert page.input_value("#correction") == RIGHT
    page.keyboard.press("s")  # skip
    page.wait_for_url(live.url + "/review")
    assert page.locator("#queue tbody tr[data-href]").count() == 1
    page.goto(live.url + "/review?status=skipped")
    assert page.locator("#queue tbody tr[data-href]").count() == 1


def test_offsets_count_characters_as_stored(
    live: LiveCollector, store: Store, browser: Any
) -> None:
    """A leading newline, an emoji (two UTF-16 units) and CRLF must not shift the marks."""
    key = keys.create_key(store, "alpha", "review", "alice")[1]
    page = sign_in(browser, live, key)
    page.goto(f"{live.url}/review/items/{'c' * 32}/a000000000000003")
    page.wait_for_selector("#response")
    select_text(page, "check")
    page.keyboard.press("g")
    page.keyboard.press("3")
    page.keyboard.press("Control+Enter")
    page.wait_for_url(live.url + "/review")
    mine = stored(store, "alice")
    start = RESET.index("check")
    marks = json.loads(mine["highlights"]["details"])["spans"]
    assert marks == [{"label": "good", "start": start, "end": start + 5}]
    assert "correction" not in mine  # the untouched correction box is not a correction
    again = httpx.post(
        f"{live.url}/review/api/items/{'c' * 32}/a000000000000003",
        headers={"Authorization": f"Bearer {key}"}, json={"scores": {"accuracy": 1}}, timeout=10,
    )  # fmt: skip
    assert again.status_code == 409 and "already judged" in again.json()["error"]


def test_an_answer_holding_markup_stays_text_in_the_item_page(
    live: LiveCollector, store: Store, browser: Any
) -> None:
    """A model's answer is embedded in the page as JSON inside a <script> element: `<!--<script`
    there would swallow the rest of the page, `</script>` would end the element early."""
    # Unclosed: the element's own </script> would then not end it, and the page would be
    # swallowed up to the next `-->` and </script>.
    hostile = "Sure!<!--<script> <b>x</b> & more"
    trace, span = "d" * 32, "a000000000000009"
    now = time.time_ns()
    store.command(
        "INSERT INTO llm_calls (project_id, trace_id, span_id, start_time, end_time, service, "
        "input_text, output_text) VALUES ('alpha', {t:String}, {s:String}, "
        "fromUnixTimestamp64Nano({now:Int64}, 'UTC'), fromUnixTimestamp64Nano({now:Int64}, 'UTC'), "
        "'support', 'Say hi', {out:String})",
        {"t": trace, "s": span, "now": now, "out": hostile},
    )
    store.command(
        "INSERT INTO review_queue (project_id, trace_id, span_id, call_time, priority, source, "
        "window_key) VALUES ('alpha', {t:String}, {s:String}, "
        "fromUnixTimestamp64Nano({now:Int64}, 'UTC'), 9, 'flag', 'bot@1/1-2')",
        {"t": trace, "s": span, "now": now},
    )
    page = sign_in(browser, live, keys.create_key(store, "alpha", "review", "mallory")[1])
    page.goto(f"{live.url}/review/items/{trace}/{span}")
    page.wait_for_selector("#response")
    assert page.title() != "owned"
    shown = page.evaluate("JSON.parse(document.getElementById('response-data').textContent)")
    assert shown == hostile
    assert page.evaluate("document.getElementById('draft-data') !== null")
    assert page.locator("#response").inner_text().startswith("Sure!<!--<script>")
    assert page.locator("#response b").count() == 0  # the answer's markup is not markup


def test_another_site_cannot_judge_or_sign_in_for_a_reviewer(
    live: LiveCollector, store: Store
) -> None:
    """Cross-site request forgery: a page elsewhere posting with the reviewer's credentials."""
    key = keys.create_key(store, "alpha", "review", "alice")[1]
    draft = f"{live.url}/review/api/items/{'a' * 32}/a000000000000001/draft"
    auth = {"Authorization": f"Bearer {key}"}
    for header in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                   {"Sec-Fetch-Site": "same-site"}):  # fmt: skip
        refused = httpx.post(draft, json={"scores": {"accuracy": 1}}, headers={**auth, **header})
        assert refused.status_code == 403, header
        assert "cannot change review state" in refused.json()["error"]
    form = httpx.post(draft, content=b'{"scores": {"accuracy": 1}}', headers={
        **auth, "content-type": "text/plain"})  # fmt: skip
    assert form.status_code == 400 and "application/json" in form.json()["error"]
    evil = {"Origin": "https://evil.example"}
    login = httpx.post(
        f"{live.url}/review/login", data={"key": key, "next": "/review"}, headers=evil,
        follow_redirects=False,
    )  # fmt: skip
    assert login.status_code == 403
    assert "driftline_review" not in login.headers.get("set-cookie", "")
    assert not store.query("SELECT * FROM review_marks")  # nothing was recorded
    same_origin = {**auth, "Origin": live.url, "Sec-Fetch-Site": "same-origin"}
    same = httpx.post(draft, json={"scores": {"accuracy": 1}}, headers=same_origin)
    assert same.status_code == 200
