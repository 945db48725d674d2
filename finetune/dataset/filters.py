"""What an export reads and how it splits and labels the rows; times as the store keeps them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ExportFilters:
    """What goes into an export, and how it is split and labelled."""

    project: str
    since: datetime | None = None  # feedback created_at >= since
    until: datetime | None = None  # feedback ingested_at <= until (default: now at export)
    test_fraction: float = 0.1  # share of conversations held out
    kto_good: float = 4.0  # mean score >= this -> KTO label True
    kto_bad: float = 2.0  # mean score <= this -> KTO label False; between: left out
    conversational: bool = True  # TRL conversational rows (messages) vs plain strings
    app_feedback: bool = False  # the apps' feedback too (thumbs, app scores), not only reviewers'

    def to_json(self) -> dict[str, Any]:
        """The filters as recorded in a snapshot (times as ISO 8601, UTC, milliseconds)."""
        data = asdict(self)
        for key in ("since", "until"):
            moment = data[key]
            data[key] = None if moment is None else moment.isoformat(timespec="milliseconds")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportFilters:
        """Filters back from a snapshot's record."""
        times = {
            key: None if data.get(key) is None else datetime.fromisoformat(data[key])
            for key in ("since", "until")
        }
        return cls(
            project=str(data["project"]),
            test_fraction=float(data["test_fraction"]),
            kto_good=float(data["kto_good"]),
            kto_bad=float(data["kto_bad"]),
            conversational=bool(data["conversational"]),
            # Snapshots recorded before the trust boundary read every source.
            app_feedback=bool(data.get("app_feedback", True)),
            **times,
        )

    def resolved(self) -> ExportFilters:
        """The filters with times in UTC milliseconds and the cutoff fixed (now, if not given)."""
        return replace(
            self,
            since=None if self.since is None else utc_ms(self.since),
            until=utc_ms(self.until or datetime.now(UTC)),
        )


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch."""
    return (utc(moment) - _EPOCH) // timedelta(milliseconds=1)


def utc(moment: datetime) -> datetime:
    """The moment in UTC (a naive one is taken as UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def utc_ms(moment: datetime) -> datetime:
    """The moment in UTC, cut to the milliseconds the store keeps."""
    moment = utc(moment)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
