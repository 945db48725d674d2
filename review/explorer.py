"""The calls explorer at /review/calls and /review/traces/{id}: the filters of `GET /api/calls`
with a summary of the range, and a trace as a waterfall with each LLM call's conversation,
figures, feedback and flags. Any key that may sign in (read keys too) sees its project's."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from driftline.detectors.tables import queued_in_trace
from driftline.ingest.cursor import next_page, position
from driftline.ingest.tables import CallFilter, call_summary, list_calls, trace
from driftline.review.conversation import messages
from driftline.review.feedback import JUDGE_AUDIT, FeedbackFilter, read_feedback
from driftline.review.waterfall import waterfall
from driftline.review.web import Refused, Viewer, page, same_site, site, slow_down
from driftline.store.errors import InputError
from driftline.store.times import NS_PER_SECOND, from_ns, now_ns, parse_time

router = APIRouter(
    prefix="/review", tags=["review"], include_in_schema=False, dependencies=[Depends(same_site)]
)

# The ranges offered when no `since` is given; every list and summary is bounded by one.
LAST = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_FEEDBACK_SHOWN = 1000


@router.get("/calls", response_class=HTMLResponse)
def calls_page(
    request: Request,
    principal: Viewer,
    last: Literal["1h", "24h", "7d", "30d"] = "24h",
    since: str = "",
    until: str = "",
    model: str = "",
    service: str = "",
    operation: str = "",
    status: Literal["", "ok", "error", "unset"] = "",
    q: Annotated[str, Query(max_length=500)] = "",
    cursor: str = "",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> HTMLResponse:
    rt, project = site(request), principal.project or ""
    form = {"last": last, "since": since, "until": until, "model": model, "service": service,
            "operation": operation, "status": status, "q": q}  # fmt: skip
    try:
        until_ns = parse_time(until, "until")
        since_ns = parse_time(since, "since")
        after = position(cursor) if cursor else None
    except InputError as exc:
        return page(request, "calls.html", principal, 400, form=form, error=str(exc), calls=[])
    if since_ns is None:
        since_ns = max((until_ns or now_ns()) - LAST[last] * NS_PER_SECOND, 0)
    selected = CallFilter(since_ns, until_ns, model or None, service or None, operation or None,
                       status or None, q or None)  # fmt: skip
    if q and (wait := rt.heavy(project)):  # a scan of the texts, as in GET /api/calls
        raise slow_down(wait, "this project's text searches")
    calls, next_cursor = next_page(list_calls(rt.store, project, selected, limit + 1, after), limit)
    # Later pages keep the range the first one resolved, not one sliding with the clock.
    fixed = {**form, "since": from_ns(since_ns).isoformat(), "limit": limit}
    query = {k: v for k, v in fixed.items() if v and k != "last"}
    return page(
        request, "calls.html", principal, form=form, calls=calls, paged=bool(cursor),
        summary=call_summary(rt.store, project, selected), since_shown=fixed["since"],
        first_page="?" + urlencode(query),
        next_page="?" + urlencode({**query, "cursor": next_cursor}) if next_cursor else None,
    )  # fmt: skip


@router.get("/traces/{trace_id}", response_class=HTMLResponse)
def trace_page(request: Request, principal: Viewer, trace_id: str) -> HTMLResponse:
    rt, project = site(request), principal.project or ""
    trace_id = trace_id.lower()
    spans = trace(rt.store, project, trace_id) if _TRACE_ID.match(trace_id) else []
    if not spans:
        raise Refused(404, f"no trace {trace_id} in project {project!r}", principal)
    feedback = [
        {**row, "shown": _judgement(row)}
        for row in read_feedback(rt.store, project, FeedbackFilter(trace_id), _FEEDBACK_SHOWN)
    ]
    queued = queued_in_trace(rt.store, project, trace_id)
    blind = {k for k, q in queued.items() if JUDGE_AUDIT in q["reasons"]}
    feedback = [f for f in feedback if not (f["source"] == "judge" and f["span_id"] in blind)]
    calls = {
        s["span_id"]: {
            "input": messages(s["input_messages"], s["input_text"]),
            "output": messages(s["output_messages"], s["output_text"], "assistant"),
            "feedback": [f for f in feedback if f["span_id"] == s["span_id"]],
            "queued": queued.get(s["span_id"]),
        }
        for s in spans
        if s["type"] == "llm_call"
    }
    bars, total_ms = waterfall(spans)
    llm = [s for s in spans if s["type"] == "llm_call"]
    return page(
        request, "trace.html", principal, trace_id=trace_id, bars=bars, total_ms=total_ms,
        calls=calls, trace_feedback=[f for f in feedback if f["span_id"] not in calls],
        figures={
            "start": spans[0]["start_time"], "spans": len(spans), "calls": len(llm),
            "errors": sum(bar.error for bar in bars),
            "tokens": sum(s["total_tokens"] for s in llm),
            "cost_usd": sum(s["cost_usd"] for s in llm),
            "services": sorted({s["service"] for s in spans if s["service"]}),
        },
    )  # fmt: skip


def _judgement(row: dict[str, Any]) -> str:
    """A feedback row's judgement in a few words, whatever its shape."""
    if row["kind"] == "boolean":
        return "yes" if row["value"] else "no"
    if row["kind"] == "numeric":
        return f"{row['value']:g}"
    if row["kind"] == "pairwise":
        return f"chose {row['choice']} (a: {row['a']['span_id']}, b: {row['b']['span_id']})"
    if row["kind"] == "spans":
        return "; ".join(f"{m['label']} [{m['start']}, {m['end']})" for m in row["spans"])
    if row["kind"] == "correction":
        return str(row["correction"])
    return str(row.get("value", ""))
