"""What every request passes before a route reads its body: a key the store knows, for the
routes that take one, a size cap, checked as the body streams in, and its share of the byte
budget all bodies held at once share (`api/budget.py`).

FastAPI reads and parses a body model before it runs the route's dependencies, so the key check
in `auth.require` alone would let anyone make the server buffer and parse a body of any size.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from driftline.api.auth import CHALLENGE, MISSING_KEY, UNKNOWN_KEY, presented_key
from driftline.api.budget import HOLD, BodiesBusy, BodyBudget, BodyHold, BodyOverBudget
from driftline.api.routes.ingest import OTLP_PATHS
from driftline.store.keys import Principal

KiB = 1024
# Caps by path prefix, the first that matches; other paths get the server's max_body_bytes.
# OTLP (/v1/traces) and feedback batches are the large bodies; admin, review and sign-in
# requests are a few fields (a review's correction is at most 100,000 characters).
SMALL_BODIES = (
    ("/review/login", 4 * KiB),
    ("/api/admin/", 64 * KiB),
    ("/review/", 1024 * KiB),
    ("/api/silences", 64 * KiB),
    ("/api/models", 256 * KiB),
    ("/api/finetune-runs", 256 * KiB),
    ("/api/datasets", 64 * KiB),
    ("/api/references", 64 * KiB),
)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# OTLP ingest checks its key before reading and bounds its body itself, answering in OTLP's shape;
# it takes from the request's budget hold itself too.
_OWN_GATE = OTLP_PATHS


class BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing passes it on rather than calling it a 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"body passes the limit of {limit} bytes for this route")


class RequestGate:
    """ASGI middleware: 401 before any byte of the body is read when an API route's key is
    missing or unknown, 413 as soon as a body passes its route's cap, 503 with Retry-After while
    the bodies held fill the budget (before a byte is read, when the body's length is declared).
    """

    def __init__(
        self,
        app: ASGIApp,
        check_key: Callable[[str], Principal | None],
        max_body_bytes: int,
        budget: BodyBudget | None = None,
    ) -> None:
        self.app, self.check_key, self.max_body_bytes = app, check_key, max_body_bytes
        self.budget = budget or BodyBudget(max_body_bytes)

    def cap(self, path: str) -> int:
        small = (n for prefix, n in SMALL_BODIES if path.startswith(prefix))
        return next(small, self.max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hold = self.budget.hold()
        scope[HOLD] = hold
        try:
            if scope["path"] in _OWN_GATE:
                await self.app(scope, receive, send)
            else:
                await self._gated(scope, receive, send, hold)
        finally:
            hold.release()  # the answer is sent: the body is no longer held

    async def _gated(self, scope: Scope, receive: Receive, send: Send, hold: BodyHold) -> None:
        path, headers = scope["path"], Headers(scope=scope)
        limit = self.cap(path)
        refusal = self._refusal(scope["method"], path, headers, limit)
        if refusal is None:
            refusal = _take_declared(headers, hold)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)  # the app's handler answers 413, nothing kept
            hold.take(received - hold.held)  # past what was declared (or chunked): 503 or 413
            return message

        await self.app(scope, bounded, send)

    def _refusal(self, method: str, path: str, headers: Headers, limit: int) -> JSONResponse | None:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return JSONResponse(
                {"error": f"body of {declared} bytes passes the limit of {limit} bytes"}, 413
            )
        if method not in _BODY_METHODS or not path.startswith("/api/"):
            return None
        key = presented_key(headers)
        if key is None:
            return JSONResponse({"error": MISSING_KEY}, 401, headers=CHALLENGE)
        if self.check_key(key) is None:
            return JSONResponse({"error": UNKNOWN_KEY}, 401, headers=CHALLENGE)
        return None


def _take_declared(headers: Headers, hold: BodyHold) -> JSONResponse | None:
    """Take a declared body's length before a byte of it is read; the refusal if it does not fit."""
    declared = headers.get("content-length", "")
    try:
        hold.take(int(declared) if declared.isdigit() else 0)
    except (BodiesBusy, BodyOverBudget) as exc:
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)
    return None
