"""Silences API: mute alerts matching every matcher for a while, list and expire silences."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from driftline.alerts.durations import parse_duration
from driftline.alerts.labels import Matcher
from driftline.alerts.silences import SilenceError, Silences, parse_matchers
from driftline.alerts.timestamps import parse_rfc3339
from driftline.api.auth import AdminKey, ReadKey
from driftline.api.runtime import ApiError, runtime

router = APIRouter(prefix="/api", tags=["alerts"])


class ApiMatcher(BaseModel):
    """Alertmanager's matcher object."""

    model_config = ConfigDict(extra="forbid")
    name: str
    value: str
    isRegex: bool = False
    isEqual: bool = True

    def text(self) -> str:
        op = ("=" if self.isEqual else "!") + ("~" if self.isRegex else "")
        op = "!=" if op == "!" else op
        return str(Matcher(self.name, op, self.value))  # type: ignore[arg-type]


class NewSilence(BaseModel):
    """A silence: matchers as `name="value"` strings or Alertmanager objects; an end or a
    duration (`2h`)."""

    model_config = ConfigDict(extra="forbid")
    matchers: list[str | ApiMatcher] = Field(min_length=1)
    startsAt: str | None = None
    endsAt: str | None = None
    duration: str | None = None
    createdBy: str = Field(min_length=1, max_length=200)
    comment: str = Field(min_length=1, max_length=2000)


@router.post("/silences", status_code=201, summary="Silence alerts matching every matcher")
def post_silence(request: Request, principal: AdminKey, body: NewSilence) -> dict[str, Any]:
    assert principal.project is not None
    now = time.time()
    try:
        starts = parse_rfc3339(body.startsAt) if body.startsAt else now
        if (body.endsAt is None) == (body.duration is None):
            raise SilenceError("give exactly one of endsAt or duration")
        ends = (
            parse_rfc3339(body.endsAt)
            if body.endsAt
            else starts + parse_duration(body.duration or "")
        )
        matchers = parse_matchers([m if isinstance(m, str) else m.text() for m in body.matchers])
        silence = Silences(runtime(request).store).create(
            principal.project, matchers, starts, ends, body.createdBy, body.comment, now
        )
    except (SilenceError, ValueError) as exc:
        raise ApiError(400, str(exc)) from None
    return silence.to_api(now)


@router.get("/silences", summary="Silences, newest first")
def get_silences(request: Request, principal: ReadKey) -> dict[str, Any]:
    now = time.time()
    return {
        "items": [s.to_api(now) for s in Silences(runtime(request).store).list(principal.project)]
    }


@router.delete("/silences/{silence_id}", summary="Expire a silence now")
def delete_silence(request: Request, principal: AdminKey, silence_id: str) -> dict[str, Any]:
    assert principal.project is not None
    now = time.time()
    silence = Silences(runtime(request).store).expire(principal.project, silence_id, now)
    if silence is None:
        raise ApiError(404, f"no silence {silence_id!r} in project {principal.project!r}")
    return silence.to_api(now)
