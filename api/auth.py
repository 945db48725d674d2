"""FastAPI dependencies that turn a bearer key into a Principal, or refuse the request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import Headers

from driftline.api.ratelimit import retry_after
from driftline.api.runtime import ApiError, runtime
from driftline.store.keys import Principal, Role

PROJECT_HEADER = "x-driftline-project"


MISSING_KEY = "missing API key: send 'Authorization: Bearer <key>'"
UNKNOWN_KEY = "API key is unknown, malformed or revoked"
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def presented_key(headers: Headers) -> str | None:
    """The key a request carries: `Authorization: Bearer <key>`, else `x-api-key`."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key", "").strip() or None


def _bearer(request: Request) -> str:
    key = presented_key(request.headers)
    if key is None:
        raise ApiError(401, MISSING_KEY, CHALLENGE)
    return key


def require(
    *roles: Role, project_scoped: bool = True, heavy: bool = False
) -> Callable[[Request], Principal]:
    """A dependency admitting keys with one of `roles` (admin keys pass every role check);
    `heavy` routes also take from their project's budget of expensive requests."""
    needed = " or ".join(f"a {role.value}" for role in roles)

    def dependency(request: Request) -> Principal:
        rt = runtime(request)
        principal = rt.keys.check(_bearer(request))
        if principal is None:
            raise ApiError(401, UNKNOWN_KEY, CHALLENGE)
        if not any(principal.role.allows(role) for role in roles):
            raise ApiError(
                403, f"a {principal.role.value} key cannot do this; it needs {needed} key"
            )
        if project_scoped and principal.project is None:
            raise ApiError(403, "the operator token manages keys only; use a project key")
        for asked in (request.headers.get(PROJECT_HEADER), request.query_params.get("project")):
            if asked and principal.project is not None and asked != principal.project:
                raise ApiError(
                    403, f"this key belongs to project {principal.project!r}, not {asked!r}"
                )
        wait = rt.limiter.acquire(principal.key_id)
        if wait:
            rt.metrics.requests_rejected.labels("rate_limited").inc()
            raise ApiError(
                429, "rate limit exceeded for this key", {"Retry-After": retry_after(wait)}
            )
        if heavy:
            charge_heavy(request, principal)
        return principal

    return dependency


def charge_heavy(request: Request, principal: Principal) -> None:
    """Take one of the project's expensive requests (a full-text search, a dataset export or
    rebuild), or answer 429: they scan what cheap ones do not, and keys are per project."""
    rt = runtime(request)
    wait = rt.heavy_limiter.acquire(principal.project or principal.key_id)
    if wait:
        rt.metrics.requests_rejected.labels("rate_limited").inc()
        raise ApiError(
            429,
            "this project's searches and dataset exports are over their rate limit "
            "(heavy_rate_limit_per_second)",
            {"Retry-After": retry_after(wait)},
        )


IngestKey = Annotated[Principal, Depends(require(Role.INGEST))]
ReadKey = Annotated[Principal, Depends(require(Role.READ))]
FeedbackKey = Annotated[Principal, Depends(require(Role.INGEST, Role.REVIEW))]
"""An app's ingest key (feedback labelled `sdk` or `api`) or a reviewer's key (`review`)."""
AdminKey = Annotated[Principal, Depends(require(Role.ADMIN))]
HeavyReadKey = Annotated[Principal, Depends(require(Role.READ, heavy=True))]
HeavyAdminKey = Annotated[Principal, Depends(require(Role.ADMIN, heavy=True))]
OperatorKey = Annotated[Principal, Depends(require(Role.ADMIN, project_scoped=False))]
"""An admin key of any project, or the operator token: what key management takes."""
