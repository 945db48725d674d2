"""Silences: matchers over alert labels that mute notifications until they expire."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from driftline.alerts import tables
from driftline.alerts.labels import Labels, Matcher, MatcherError, matches_all, parse_matcher
from driftline.alerts.timestamps import ms_column, rfc3339
from driftline.store import Store
from driftline.store.times import MAX_NS, NS_PER_SECOND

_LATEST = MAX_NS / NS_PER_SECOND


class SilenceError(ValueError):
    """A silence that cannot be created or changed; the message says why."""


@dataclass(frozen=True)
class Silence:
    id: str
    project: str
    matchers: list[Matcher]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str

    def status(self, now: float) -> str:
        if now >= self.ends_at:
            return "expired"
        return "active" if now >= self.starts_at else "pending"

    def mutes(self, labels: Labels, now: float) -> bool:
        """Active, of the alert's project, and every matcher matches."""
        return (
            self.status(now) == "active"
            and labels.get("project") == self.project
            and matches_all(self.matchers, labels)
        )

    def to_api(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [m.to_api() for m in self.matchers],
            "matchersText": [str(m) for m in self.matchers],
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at),
            "createdBy": self.created_by,
            "comment": self.comment,
            "status": {"state": self.status(now)},
        }


def parse_matchers(texts: list[str]) -> list[Matcher]:
    """Matchers of a new silence: at least one, and not all of them matching everything."""
    if not texts:
        raise SilenceError('a silence needs at least one matcher, e.g. alertname="Drift"')
    try:
        matchers = [parse_matcher(t) for t in texts]
    except MatcherError as exc:
        raise SilenceError(str(exc)) from None
    if all(m.matches({}) for m in matchers):
        raise SilenceError(
            "these matchers match alerts without any labels, so they would silence everything; "
            "add one that needs a label value"
        )
    return matchers


class Silences:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(
        self,
        project: str,
        matchers: list[Matcher],
        starts_at: float,
        ends_at: float,
        created_by: str,
        comment: str,
        now: float,
    ) -> Silence:
        for name, moment in (("startsAt", starts_at), ("endsAt", ends_at)):
            if not 0 <= moment <= _LATEST:  # a time the store, and an RFC 3339 answer, can hold
                raise SilenceError(f"{name} must lie between 1970 and 2262")
        if ends_at <= starts_at:
            raise SilenceError("endsAt must be after startsAt")
        if ends_at <= now:
            raise SilenceError("endsAt is in the past; the silence would never apply")
        silence = Silence(
            "sil_" + secrets.token_hex(8),
            project,
            matchers,
            starts_at,
            ends_at,
            created_by,
            comment,
        )
        self._save(silence, now)
        return silence

    def expire(self, project: str, silence_id: str, now: float) -> Silence | None:
        """End a silence now; None if the project has no such silence."""
        found = [s for s in self.list(project) if s.id == silence_id]
        if not found:
            return None
        silence = found[0]
        if silence.status(now) != "expired":
            silence = Silence(**{**silence.__dict__, "ends_at": max(now, silence.starts_at)})
            self._save(silence, now)
        return silence

    def list(self, project: str | None = None) -> list[Silence]:
        return [
            Silence(
                r["id"],
                r["project_id"],
                [parse_matcher(m) for m in json.loads(r["matchers"])],
                r["starts_ms"] / 1000,
                r["ends_ms"] / 1000,
                r["created_by"],
                r["comment"],
            )
            for r in tables.silences(self.store, project)
        ]

    def _save(self, silence: Silence, now: float) -> None:
        # Two changes in the same millisecond must still order: bump the version.
        version = tables.silence_version(self.store, silence.id) / 1000
        tables.insert_silences(
            self.store,
            {
                "project_id": [silence.project],
                "id": [silence.id],
                "matchers": [json.dumps([str(m) for m in silence.matchers])],
                "starts_at": ms_column([silence.starts_at]),
                "ends_at": ms_column([silence.ends_at]),
                "created_by": [silence.created_by],
                "comment": [silence.comment],
                "updated_at": ms_column([max(now, version + 0.001)]),
            },
        )
