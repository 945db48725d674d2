"""The byte budget every request body takes from while the server holds it.

Memory follows bytes, not requests: 64 requests of 16 MiB is a gigabyte, 64 of 4 KiB nothing.
So a body takes from one `BodyBudget` (`max_inflight_body_bytes`) as it arrives, and so do the
bytes a route inflates from it (gzip); a request the budget cannot take now is refused with 503
and `Retry-After` before anything of it is acknowledged, and a request gives its share back when
its answer has been sent. `RequestGate` makes each request's `BodyHold`; routes that read or
inflate their body themselves (OTLP ingest) take from it through `hold_of(request)`.
"""

from __future__ import annotations

import threading

from starlette.exceptions import HTTPException
from starlette.requests import Request

HOLD = "driftline.body_hold"  # where a request's BodyHold is kept in its ASGI scope
RETRY_WHEN_BUSY = "1"  # seconds: bodies are held for milliseconds to a second


class BodiesBusy(HTTPException):
    """Other requests' bodies fill the budget now: 503, the client retries shortly.

    An HTTPException, so FastAPI's body parsing passes it on rather than calling it a 400."""

    def __init__(self, wanted: int, budget: int) -> None:
        super().__init__(
            503,
            f"the server holds as many request bodies as it may (max_inflight_body_bytes = "
            f"{budget}) and cannot take {wanted} bytes more now; retry shortly",
            {"Retry-After": RETRY_WHEN_BUSY},
        )


class BodyOverBudget(HTTPException):
    """One request alone needs more than the whole budget: it can never be taken (413)."""

    def __init__(self, needed: int, budget: int) -> None:
        super().__init__(
            413,
            f"this request needs {needed} bytes for its body, more than the server holds for "
            f"all bodies together (max_inflight_body_bytes = {budget})",
        )


class BodyBudget:
    """At most `capacity` bytes of request bodies held at once, all requests together."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def hold(self) -> BodyHold:
        return BodyHold(self)

    def _take(self, hold: BodyHold, n: int) -> None:
        with self._lock:
            if hold.held + n > self.capacity:
                raise BodyOverBudget(hold.held + n, self.capacity)
            if self._used + n > self.capacity:
                raise BodiesBusy(n, self.capacity)
            self._used += n
            hold.held += n

    def _give(self, n: int) -> None:
        with self._lock:
            self._used -= n


class BodyHold:
    """One request's share of the budget. `take` may be called from a worker thread (a route
    inflating off the event loop); `release` once, when the request is over."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget, self.held = budget, 0

    def take(self, n: int) -> None:
        """Hold `n` more bytes, or raise BodiesBusy (503) or BodyOverBudget (413)."""
        if n > 0:
            self.budget._take(self, n)

    def release(self) -> None:
        held, self.held = self.held, 0
        self.budget._give(held)


def hold_of(request: Request) -> BodyHold:
    """The request's hold, made by RequestGate (a hold of its own budget, never refusing, for
    an app built without the gate)."""
    hold = request.scope.get(HOLD)
    if isinstance(hold, BodyHold):
        return hold
    return BodyBudget(2**62).hold()
