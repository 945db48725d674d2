"""The web UI at /review: sign in with a key of a project; reviewers (review or admin keys) get
the queue, one item with its forms and agreement; every key, read keys too, gets the calls
explorer (`explorer.py`) and an overview for people without Grafana. Server-rendered (Jinja2)
with a little plain JavaScript for the keyboard and highlighting."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from driftline.detectors.references import nearest_answers
from driftline.detectors.tables import is_queued
from driftline.ingest.tables import other_answer
from driftline.review import overview, queue, tables
from driftline.review.agreement import Rating, agreement, reviewer_bias
from driftline.review.config import ReviewSettings
from driftline.review.feedback import check_targets, store_feedback
from driftline.review.judgements import Judgement, JudgementError, check_rubric, to_feedback
from driftline.review.sessions import Sessions
from driftline.store import Store
from driftline.store.errors import Conflict, InputError, NotFound
from driftline.store.keys import Principal, Role
from driftline.store.times import parse_time

COOKIE = "driftline_review"
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


class CrossSite(Exception):
    """A state-changing request another site's page made with the reviewer's cookie."""


def same_site(request: Request) -> None:
    """Refuse what a browser marks as cross-site (`Sec-Fetch-Site`), or sends from another
    origin, for every request that changes state; the cookie is SameSite=Strict as well."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    fetched_from = request.headers.get("sec-fetch-site")
    if fetched_from is not None and fetched_from not in ("same-origin", "none"):
        raise CrossSite(f"a {fetched_from} request cannot change review state")
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise CrossSite(f"requests from {origin} cannot change review state")


def json_body(request: Request) -> None:
    """The review API takes JSON only: a cross-site HTML form cannot send it without CORS."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise InputError("send the body as application/json")


router = APIRouter(
    prefix="/review", tags=["review"], include_in_schema=False, dependencies=[Depends(same_site)]
)


Charts = Callable[[Store, str, int], list[str]]
"""A later room's part of the overview: (store, project, days) → charts as SVG."""


@dataclass
class ReviewSite:
    """What the review pages need from the server that mounts them (`app.state.review`)."""

    store: Store
    settings: ReviewSettings
    check_key: Callable[[str], Principal | None]
    key_of: Callable[[str], Principal | None]  # a key id's principal; None once revoked
    sessions: Sessions
    limit: Callable[[str], float] = field(default=lambda _key_id: 0.0)  # seconds to wait
    # per project: the API's budget of text searches, so the UI is no way around it
    heavy: Callable[[str], float] = field(default=lambda _project: 0.0)
    charts: Sequence[Charts] = ()
    models: Callable[[Store, str], list[dict[str, Any]]] = field(default=lambda _s, _p: [])
    # per project: each online judge's agreement with the reviewers who audit it
    judges: Callable[[Store, str], list[dict[str, Any]]] = field(default=lambda _s, _p: [])
    # per project: the live A/B comparisons of model versions and their verdicts
    experiments: Callable[[Store, str], list[dict[str, Any]]] = field(default=lambda _s, _p: [])


def site(request: Request) -> ReviewSite:
    found: ReviewSite = request.app.state.review
    return found


class SignIn(Exception):
    """The request has no valid key of a project: pages go to the sign-in form, the API
    says 401."""


class Refused(Exception):
    """A signed-in request the site turns down: an error page, or JSON for the forms' API."""

    def __init__(
        self,
        status: int,
        message: str,
        principal: Principal | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.principal, self.headers = status, principal, headers or {}


def slow_down(wait: float, what: str = "this key") -> Refused:
    """429 for `wait` more seconds."""
    return Refused(429, f"rate limit exceeded for {what}; retry in {wait:.1f}s",
                   headers={"Retry-After": str(ceil(wait))})  # fmt: skip


def viewer(request: Request) -> Principal:
    """Whoever is signed in (a session cookie, or a read, review or admin key as a bearer
    token): what the explorer and the overview take."""
    rt = site(request)
    token = request.cookies.get(COOKIE)
    if token:
        key_id = rt.sessions.key_id(token)
        principal = rt.key_of(key_id) if key_id else None
    else:
        key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        principal = rt.check_key(key) if key else None
    if not _views(principal):
        raise SignIn
    assert principal is not None
    if wait := rt.limit(principal.key_id):
        raise slow_down(wait)
    return principal


def reviewer(request: Request) -> Principal:
    """The signed-in reviewer: a review (or admin) key's; a read key's session gets 403."""
    principal = viewer(request)
    if not reviews(principal):
        raise Refused(403, "reviewing needs a review key: a read key can explore calls and "
                      "traces only", principal)  # fmt: skip
    return principal


def _views(principal: Principal | None) -> bool:
    """A key that may sign in: a project's read, review or admin key (not an ingest key)."""
    return (
        principal is not None
        and principal.project is not None
        and (principal.role.allows(Role.READ) or principal.role.allows(Role.REVIEW))
    )


def reviews(principal: Principal) -> bool:
    """May judge calls: a review or admin key."""
    return principal.role.allows(Role.REVIEW)


Viewer = Annotated[Principal, Depends(viewer)]
Reviewer = Annotated[Principal, Depends(reviewer)]


def name_of(principal: Principal) -> str:
    return principal.name or principal.key_id


def page(
    request: Request, template: str, principal: Principal, status: int = 200, **context: Any
) -> HTMLResponse:
    me = {"me": name_of(principal), "project": principal.project, "reviews": reviews(principal)}
    return templates.TemplateResponse(request, template, {**me, **context}, status_code=status)


# -- signing in ------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, error: str = "", next: str = "/review") -> HTMLResponse:
    return templates.TemplateResponse(request, "login.html", {"error": error, "next": next})


@router.post("/login")
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode())
    key = (form.get("key") or [""])[0].strip()
    target = (form.get("next") or ["/review"])[0]
    target = target if target.startswith("/review") else "/review"
    rt = site(request)
    principal = rt.check_key(key) if key else None
    if not _views(principal):
        message = quote("that key is unknown, revoked, or not a read, review or admin key")
        return RedirectResponse(f"/review/login?error={message}&next={quote(target)}", 303)
    assert principal is not None
    if target == "/review" and not reviews(principal):  # a read key's home is the calls
        target = "/review/calls"
    response = RedirectResponse(target, 303)
    # Behind a TLS proxy the scheme is https once uvicorn trusts its X-Forwarded-Proto
    # (`forwarded_allow_ips`): the cookie is then sent over TLS only.
    response.set_cookie(COOKIE, rt.sessions.start(principal), max_age=round(rt.sessions.lifetime),
                        httponly=True, samesite="strict", path="/review",
                        secure=request.url.scheme == "https")  # fmt: skip
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    token = request.cookies.get(COOKIE)
    rt = site(request)
    key_id = rt.sessions.key_id(token) if token else None
    principal = rt.key_of(key_id) if key_id else None
    if token and principal is not None:
        rt.sessions.end(token, principal)
    response = RedirectResponse("/review/login", 303)
    response.delete_cookie(COOKIE, path="/review")
    return response


# -- pages -----------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def queue_page(
    request: Request,
    principal: Reviewer,
    reason: str | None = None,
    model: str | None = None,
    service: str | None = None,
    since: str | None = None,
    until: str | None = None,
    status: queue.Status = "todo",
) -> HTMLResponse:
    rt = site(request)
    filters = queue.QueueFilter(
        reason=reason or None, model=model or None, service=service or None,
        since_ns=parse_time(since or None, "since"), until_ns=parse_time(until or None, "until"),
        status=status,
    )  # fmt: skip
    assert principal.project is not None
    items = queue.items(rt.store, principal.project, name_of(principal),
                        rt.settings.reviews_per_item, filters)  # fmt: skip
    return page(request, "queue.html", principal, items=items, filters=filters,
                per_item=rt.settings.reviews_per_item)  # fmt: skip


@router.get("/items/{trace_id}/{span_id}", response_class=HTMLResponse)
def item_page(request: Request, principal: Reviewer, trace_id: str, span_id: str) -> HTMLResponse:
    rt = site(request)
    assert principal.project is not None
    found = queue.item(rt.store, principal.project, name_of(principal), trace_id, span_id)
    if found is None:
        raise NotFound(f"no queued call {trace_id}/{span_id} in project {principal.project!r}")
    return page(
        request, "item.html", principal, item=found,
        other=other_answer(rt.store, principal.project, found),
        nearest=nearest_answers(
            rt.store, principal.project, found["window_key"], found["trace_id"],
            found["span_id"], int(found["call_ms"]) * 1_000_000,
        ),
        rubric=rt.settings.rubric_for(principal.project),
        draft_json=script_json(found["draft"]),
        response_json=script_json(found["output_text"] or ""),
    )  # fmt: skip


@router.get("/agreement", response_class=HTMLResponse)
def agreement_page(request: Request, principal: Reviewer) -> HTMLResponse:
    rt, project = site(request), principal.project or ""
    ratings = review_ratings(rt.store, project)
    return page(
        request, "agreement.html", principal, criteria=agreement(ratings),
        bias=reviewer_bias(ratings), reviewers=sorted({r.reviewer for r in ratings}),
        judges=rt.judges(rt.store, project),
    )  # fmt: skip


@router.get("/overview", response_class=HTMLResponse)
def overview_page(
    request: Request, principal: Viewer, days: Annotated[int, Query(ge=1, le=90)] = 7
) -> HTMLResponse:
    rt = site(request)
    project = principal.project or ""
    charts = overview.charts(rt.store, project, days, rt.settings.reviews_per_item)
    charts += [chart for part in rt.charts for chart in part(rt.store, project, days)]
    models = rt.models(rt.store, project)
    return page(
        request, "overview.html", principal, charts=charts, days=days, models=models,
        experiments=rt.experiments(rt.store, project),
    )  # fmt: skip


# -- the forms' API --------------------------------------------------------------------------


@router.post("/api/items/{trace_id}/{span_id}", dependencies=[Depends(json_body)])
async def submit(
    request: Request, principal: Reviewer, trace_id: str, span_id: str
) -> dict[str, Any]:
    rt = site(request)
    project = principal.project or ""
    found = queue.item(rt.store, project, name_of(principal), trace_id, span_id)
    if found is None:
        raise NotFound(f"no queued call {trace_id}/{span_id} in project {project!r}")
    if found["mine"]:
        raise Conflict("you have already judged this call")
    try:
        judgement = Judgement.model_validate_json(await request.body())
        check_rubric(judgement, rt.settings.rubric_for(project))
        records = to_feedback(judgement, trace_id, span_id, found["output_text"] or "",
                              name_of(principal))  # fmt: skip
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise InputError("; ".join(problems)) from None
    except JudgementError as exc:
        raise InputError(str(exc)) from None
    check_targets(rt.store, project, records, batched=False)
    ids, _ = store_feedback(rt.store, project, records, "review")
    mark(request, principal, trace_id, span_id, "submitted", {})
    return {"review_id": records[0].review_id, "feedback_ids": ids}


@router.post("/api/items/{trace_id}/{span_id}/draft", dependencies=[Depends(json_body)])
async def save_draft(
    request: Request, principal: Reviewer, trace_id: str, span_id: str
) -> dict[str, str]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise InputError("the draft is not JSON") from None
    mark(request, principal, trace_id, span_id, "draft", body)
    return {"status": "draft"}


@router.post("/api/items/{trace_id}/{span_id}/skip", dependencies=[Depends(json_body)])
def skip(request: Request, principal: Reviewer, trace_id: str, span_id: str) -> dict[str, str]:
    mark(request, principal, trace_id, span_id, "skipped", {})
    return {"status": "skipped"}


def mark(
    request: Request, principal: Principal, trace_id: str, span_id: str, status: str, body: Any
) -> None:
    """Record this reviewer's draft, skip or submission of a call of their project."""
    store = site(request).store
    project = principal.project or ""
    if not is_queued(store, project, trace_id, span_id):
        raise NotFound(f"no queued call {trace_id}/{span_id} in project {project!r}")
    tables.save_mark(
        store, project, trace_id, span_id, name_of(principal), status, json.dumps(body)
    )


def review_ratings(store: Store, project: str) -> list[Rating]:
    """Reviewers' scores, and each label as applied or not, oldest first."""
    rows = tables.reviewer_scores(store, project)
    ratings = [Rating(r["item"], r["user_id"], r["name"], r["value_number"])
               for r in rows if r["kind"] == "numeric"]  # fmt: skip
    labels = sorted({r["value_string"] for r in rows if r["name"] == "label"})
    submitted: dict[tuple[str, str], set[str]] = {(r["item"], r["user_id"]): set() for r in rows}
    for r in rows:
        if r["name"] == "label":
            submitted[(r["item"], r["user_id"])].add(r["value_string"])
    for (item, user), applied in submitted.items():
        ratings += [Rating(item, user, f"label:{label}", label in applied) for label in labels]
    return ratings


# Inside a <script> element `</script`, `<!--` and `<script` change how HTML parses the rest of
# the page; JSON's \uXXXX escapes keep every such character text.
_SCRIPT_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element, whatever text it holds (answers come from models)."""
    return json.dumps(value).translate(_SCRIPT_ESCAPES)


def cross_site_handler(request: Request, exc: CrossSite) -> Response:
    return JSONResponse({"error": str(exc)}, 403)


def refused_handler(request: Request, exc: Refused) -> Response:
    if request.url.path.startswith("/review/api/"):
        return JSONResponse({"error": str(exc)}, exc.status, headers=exc.headers)
    context = {"code": exc.status, "message": str(exc)}
    if exc.principal is not None:
        response = page(request, "error.html", exc.principal, exc.status, **context)
    else:
        response = templates.TemplateResponse(request, "error.html", context, exc.status)
    response.headers.update(exc.headers)
    return response


def sign_in_handler(request: Request, exc: SignIn) -> Response:
    if request.url.path.startswith("/review/api/"):
        return JSONResponse({"error": "sign in with a review key"}, 401)
    asked = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/review/login?next={quote(asked)}", 303)
