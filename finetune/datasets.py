"""Reviewed feedback to training data: TRL preference and KTO rows, OpenAI preference JSONL,
Argilla records and Label Studio tasks, split by conversation and recorded as snapshots.

Every format but `label-studio` is JSON Lines, one row a line; `label-studio` is one JSON array
of tasks (a task a line), the file Label Studio imports. An export writes the train rows to `out`
and the test rows to `<out stem>.test<suffix>`, and records what it wrote (filters, counts, the
SHA-256 of the train bytes followed by the test bytes) in `dataset_snapshots`, so `load_snapshot`
can rebuild the same bytes later or say that the store has changed.

Feedback is read up to a cutoff on `ingested_at` (the snapshot's `until`), in `created_at, id`
order; rows come out in the order of the feedback that made them. Feedback names a call by trace
and span, by span alone, or by trace alone, which means the trace's last LLM call. A call goes to
the test split when `in_test(project, conversation_id or trace_id, test_fraction)`.

- `dpo`, `reward`: TRL preference rows with an explicit prompt (same rows for both trainers);
  plain mode hands over prompt and response texts as stored, with no separator or template.
- `openai-dpo`: always messages (OpenAI takes no plain prompts); `conversational` is ignored.
- `kto`: TRL unpaired preference rows.
- `argilla`: `rg.Record.to_dict()`-shaped records, one per judged call (`rg.Record.from_dict`
  reads a line). Fields `prompt` (ChatField messages, or text) and `response`; one question per
  feedback name (lowercased, other characters as `_`): RatingQuestion for scores, LabelQuestion
  for thumbs (`"true"`/`"false"`) and labels, TextQuestion for corrections, SpanQuestion (on
  `response`) for spans. Argilla wants user UUIDs: a reviewer's is uuid5 of their name.
- `label-studio`: tasks with `data` {prompt, response, ids; `messages` as Paragraphs items when
  conversational} and one annotation per reviewer whose results target `response`.

Pairwise choices have no per-call shape and are left out (and counted) in the last two.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from driftline.ingest.tables import calls_named
from driftline.review.tables import feedback_rows
from driftline.store import Store

FORMATS = ("dpo", "kto", "reward", "openai-dpo", "argilla", "label-studio")

Row = dict[str, Any]
Message = dict[str, str]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_REVIEWER_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://driftline.dev/reviewers")


class SnapshotError(ValueError):
    """A snapshot is unknown, or its rows no longer rebuild to the recorded bytes."""


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
            **times,
        )


@dataclass(frozen=True)
class Snapshot:
    """One recorded export."""

    id: str
    project: str
    format: str
    filters: dict[str, Any]
    counts: dict[str, Any]
    sha256: str
    rows: int
    created_at: datetime


@dataclass(frozen=True)
class _Call:
    """An LLM call as the rows need it: prompt (messages and plain), response, split key."""

    trace_id: str
    span_id: str
    messages: list[Message]
    plain: str
    output: str
    conversation_id: str
    model: str
    service: str

    @property
    def key(self) -> tuple[str, str]:
        return self.trace_id, self.span_id

    @property
    def split_key(self) -> str:
        return self.conversation_id or self.trace_id


@dataclass(frozen=True)
class _Feedback:
    """One feedback row; `index` is its place in `created_at, id` order."""

    index: int
    id: str
    trace_id: str
    span_id: str
    name: str
    kind: str
    number: float | None
    text: str
    user: str
    review_id: str
    details: dict[str, Any]


@dataclass
class _Tally:
    """What a build read, made and left out."""

    feedback: int = 0
    sources: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class _Candidate:
    """A row before dedupe and split, with where it came from."""

    order: tuple[int, int]
    call: _Call
    row: Row
    source: str
    identity: str  # rows with the same identity are duplicates


# --- reading the store -------------------------------------------------------------------


def _ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch."""
    return (_utc(moment) - _EPOCH) // timedelta(milliseconds=1)


def _utc(moment: datetime) -> datetime:
    """The moment in UTC (a naive one is taken as UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _utc_ms(moment: datetime) -> datetime:
    """The moment in UTC, cut to the milliseconds the store keeps."""
    moment = _utc(moment)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _read_feedback(store: Store, filters: ExportFilters) -> list[_Feedback]:
    """The project's feedback ingested by the cutoff, oldest first."""
    assert filters.until is not None
    since = _ms(filters.since) * 1_000_000 if filters.since is not None else None
    rows = feedback_rows(store, filters.project, _ms(filters.until) * 1_000_000, since)
    return [_feedback(i, row) for i, row in enumerate(rows)]


def _feedback(index: int, row: dict[str, Any]) -> _Feedback:
    """A feedback row from the store; unreadable details count as none."""
    try:
        details = json.loads(row["details"]) if row["details"] else {}
    except json.JSONDecodeError:
        details = {}
    return _Feedback(
        index=index,
        id=row["id"],
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        name=row["name"],
        kind=row["kind"],
        number=row["value_number"],
        text=row["value_string"],
        user=row["user_id"],
        review_id=row["review_id"],
        details=details if isinstance(details, dict) else {},
    )


def _pair_refs(fb: _Feedback) -> list[tuple[str, str]]:
    """The (trace, span) of responses a and b of a pairwise judgement."""
    refs = []
    for side in ("a", "b"):
        ref = fb.details.get(side)
        ref = ref if isinstance(ref, dict) else {}
        refs.append((str(ref.get("trace_id") or ""), str(ref.get("span_id") or "")))
    return refs


class _Calls:
    """The LLM calls that feedback names, looked up by trace and span."""

    def __init__(self, calls: Iterable[_Call]) -> None:
        self.by_key: dict[tuple[str, str], _Call] = {}
        self.by_span: dict[str, list[_Call]] = defaultdict(list)
        self.by_trace: dict[str, list[_Call]] = defaultdict(list)
        for call in calls:  # oldest first
            self.by_key[call.key] = call
            self.by_span[call.span_id].append(call)
            self.by_trace[call.trace_id].append(call)

    def find(self, trace_id: str, span_id: str) -> _Call | None:
        """The call; by trace alone, the trace's last LLM call."""
        if span_id and trace_id:
            return self.by_key.get((trace_id, span_id))
        if span_id:
            found = self.by_span.get(span_id)
            return found[0] if found else None
        found = self.by_trace.get(trace_id) if trace_id else None
        return found[-1] if found else None


def _read_calls(store: Store, project: str, feedback: list[_Feedback]) -> _Calls:
    """Every call that the feedback names."""
    ids: set[str] = set()
    for fb in feedback:
        ids.update((fb.trace_id, fb.span_id))
        if fb.kind == "pairwise":
            ids.update(i for ref in _pair_refs(fb) for i in ref)
    ids.discard("")
    if not ids:
        return _Calls([])
    rows = calls_named(store, project, sorted(ids))
    return _Calls(_call(row) for row in rows)


def _call(row: dict[str, Any]) -> _Call:
    """A call row from the store; the prompt falls back to `input_text` as one user turn."""
    messages = _messages(row["input_messages"])
    if not messages and row["input_text"]:
        messages = [{"role": "user", "content": row["input_text"]}]
    users = [m["content"] for m in messages if m["role"] == "user"]
    return _Call(
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        messages=messages,
        plain=row["input_text"] or "\n".join(users),
        output=row["output_text"],
        conversation_id=row["conversation_id"],
        model=row["response_model"],
        service=row["service"],
    )


def _messages(raw: str) -> list[Message]:
    """OTel GenAI input messages as `[{role, content}]`, text parts joined by newlines."""
    try:
        data = json.loads(raw) if raw else []
    except json.JSONDecodeError:
        return []
    out: list[Message] = []
    for message in data if isinstance(data, list) else []:
        if not isinstance(message, dict):
            continue
        parts = message.get("parts")
        if isinstance(parts, list):
            texts = [p["content"] for p in parts if _is_text(p)]
        else:
            content = message.get("content")
            texts = [content] if isinstance(content, str) else []
        if texts:
            out.append({"role": str(message.get("role") or "user"), "content": "\n".join(texts)})
    return out


def _is_text(part: Any) -> bool:
    """An OTel GenAI message part that holds text."""
    return (
        isinstance(part, dict)
        and part.get("type") == "text"
        and isinstance(part.get("content"), str)
    )


# --- building rows ---------------------------------------------------------------------


def _prompt(call: _Call, filters: ExportFilters) -> list[Message] | str:
    """The prompt as TRL takes it: messages (conversational) or text (plain)."""
    return call.messages if filters.conversational else call.plain


def _response(text: str, filters: ExportFilters) -> list[Message] | str:
    """A response as TRL takes it: one assistant message, or the text."""
    return [{"role": "assistant", "content": text}] if filters.conversational else text


def _identity(*parts: Any) -> str:
    """A canonical JSON key for dedupe."""
    return json.dumps(parts, ensure_ascii=False, sort_keys=True)


def _pairs(
    feedback: list[_Feedback], calls: _Calls, tally: _Tally
) -> list[tuple[tuple[int, int], _Call, str, str, str]]:
    """(order, prompt call, chosen, rejected, source) from corrections and pairwise choices."""
    pairs = []
    for fb in feedback:
        if fb.kind == "correction":
            call = calls.find(fb.trace_id, fb.span_id)
            if call is None:
                tally.skipped["call_not_found"] += 1
                continue
            pairs.append(((fb.index, 0), call, fb.text, call.output, "correction"))
        elif fb.kind == "pairwise":
            pair = _pairwise(fb, calls, tally)
            if pair is not None:
                pairs.append(((fb.index, 0), *pair, "pairwise"))
        elif fb.kind == "spans":
            tally.skipped["spans_without_pair"] += 1
        else:
            tally.skipped[f"unused_{fb.kind or 'unknown'}"] += 1
    return pairs


def _pairwise(fb: _Feedback, calls: _Calls, tally: _Tally) -> tuple[_Call, str, str] | None:
    """Call a (the prompt), the chosen and the rejected response of a pairwise choice."""
    if fb.text == "tie":
        tally.skipped["tie"] += 1
        return None
    if fb.text not in ("a", "b"):
        tally.skipped["invalid_choice"] += 1
        return None
    a, b = (calls.find(*ref) if any(ref) else None for ref in _pair_refs(fb))
    if a is None or b is None:
        tally.skipped["call_not_found"] += 1
        return None
    chosen, rejected = (a, b) if fb.text == "a" else (b, a)
    return a, chosen.output, rejected.output


def _preference_candidates(
    feedback: list[_Feedback], calls: _Calls, filters: ExportFilters, tally: _Tally, fmt: str
) -> list[_Candidate]:
    """TRL preference rows (dpo, reward) or OpenAI preference lines."""
    out = []
    for order, call, chosen, rejected, source in _pairs(feedback, calls, tally):
        if not _prompt(call, filters):
            tally.skipped["empty_prompt"] += 1
        elif not chosen.strip() or not rejected.strip():
            tally.skipped["empty_response"] += 1
        elif chosen == rejected:
            tally.skipped["same_response"] += 1
        else:
            row = _preference_row(fmt, call, chosen, rejected, filters)
            out.append(_Candidate(order, call, row, source, _identity(row)))
    return out


def _preference_row(fmt: str, call: _Call, chosen: str, rejected: str, f: ExportFilters) -> Row:
    """A TRL preference row (explicit prompt), or a line of OpenAI's preference file."""
    if fmt != "openai-dpo":
        return {
            "prompt": _prompt(call, f),
            "chosen": _response(chosen, f),
            "rejected": _response(rejected, f),
        }
    return {
        "input": {"messages": call.messages},
        "preferred_output": [{"role": "assistant", "content": chosen}],
        "non_preferred_output": [{"role": "assistant", "content": rejected}],
    }


def _kto_candidates(
    feedback: list[_Feedback], calls: _Calls, filters: ExportFilters, tally: _Tally, fmt: str
) -> list[_Candidate]:
    """KTO rows: thumbs, mean scores by the thresholds, and corrections."""
    labelled: list[tuple[tuple[int, int], _Call, str, bool, str]] = []
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    first: dict[tuple[str, str], tuple[int, _Call]] = {}
    for fb in feedback:
        if fb.kind not in ("boolean", "numeric", "correction"):
            tally.skipped[f"unused_{fb.kind or 'unknown'}"] += 1
            continue
        call = calls.find(fb.trace_id, fb.span_id)
        if call is None:
            tally.skipped["call_not_found"] += 1
        elif fb.number is None and fb.kind != "correction":
            tally.skipped["no_value"] += 1
        elif fb.kind == "boolean":
            labelled.append(((fb.index, 0), call, call.output, bool(fb.number), "boolean"))
        elif fb.kind == "numeric":
            assert fb.number is not None
            scores[call.key].append(fb.number)
            first.setdefault(call.key, (fb.index, call))
        elif fb.text == call.output:
            tally.skipped["same_response"] += 1
        else:
            labelled.append(((fb.index, 0), call, fb.text, True, "correction"))
            labelled.append(((fb.index, 1), call, call.output, False, "correction"))
    for key, values in scores.items():
        index, call = first[key]
        mean = sum(values) / len(values)
        if mean >= filters.kto_good or mean <= filters.kto_bad:
            labelled.append(((index, 0), call, call.output, mean >= filters.kto_good, "numeric"))
        else:
            tally.skipped["between_thresholds"] += 1
    out = []
    for order, call, completion, label, source in labelled:
        prompt = _prompt(call, filters)
        if not prompt:
            tally.skipped["empty_prompt"] += 1
        elif not completion.strip():
            tally.skipped["empty_response"] += 1
        else:
            row = {"prompt": prompt, "completion": _response(completion, filters), "label": label}
            out.append(_Candidate(order, call, row, source, _identity(row)))
    return out


def _drop_conflicts(candidates: list[_Candidate], tally: _Tally) -> list[_Candidate]:
    """Leave out every (prompt, completion) that is labelled both good and bad."""
    labels: dict[str, set[bool]] = defaultdict(set)
    for c in candidates:
        labels[_identity(c.row["prompt"], c.row["completion"])].add(c.row["label"])
    conflicted = {key for key, seen in labels.items() if len(seen) > 1}
    tally.skipped["conflict"] += len(conflicted)
    return [
        c for c in candidates if _identity(c.row["prompt"], c.row["completion"]) not in conflicted
    ]


def _per_call(
    feedback: list[_Feedback], calls: _Calls, tally: _Tally, fmt: str
) -> list[tuple[_Call, list[_Feedback]]]:
    """Each judged call with its feedback, in the order calls were first judged."""
    grouped: dict[tuple[str, str], tuple[_Call, list[_Feedback]]] = {}
    for fb in feedback:
        if fb.kind == "pairwise":
            tally.skipped[f"pairwise_not_in_{fmt.replace('-', '_')}"] += 1
            continue
        call = calls.find(fb.trace_id, fb.span_id)
        if call is None:
            tally.skipped["call_not_found"] += 1
            continue
        grouped.setdefault(call.key, (call, []))[1].append(fb)
    return list(grouped.values())


def _question(name: str) -> str:
    """A question name Argilla accepts: lowercase letters, digits, `_` and `-`."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in name)
    return cleaned.lower() or "feedback"


def _reviewer(fb: _Feedback) -> str:
    """Who judged: the user, else the review, else `anonymous`."""
    return fb.user or fb.review_id or "anonymous"


def _latest(feedback: list[_Feedback], tally: _Tally) -> list[_Feedback]:
    """One judgement per reviewer and question: the latest; earlier ones count as replaced."""
    latest: dict[tuple[str, str], _Feedback] = {}
    for fb in feedback:
        key = (_reviewer(fb), _question(fb.name))
        if key in latest:
            tally.skipped["replaced_by_later"] += 1
        latest[key] = fb
    return sorted(latest.values(), key=lambda fb: fb.index)


def _marks(fb: _Feedback) -> list[dict[str, Any]]:
    """The well-formed `{label, start, end}` marks of a spans judgement."""
    marks = fb.details.get("spans")
    return [
        m
        for m in (marks if isinstance(marks, list) else [])
        if isinstance(m, dict)
        and isinstance(m.get("label"), str)
        and isinstance(m.get("start"), int)
        and isinstance(m.get("end"), int)
    ]


def _number(value: float | None) -> int | float | None:
    """A score as an int when it is whole (rating questions take ints)."""
    return int(value) if value is not None and value.is_integer() else value


def _argilla_value(fb: _Feedback) -> Any:
    """The value an Argilla question of the feedback's kind holds."""
    if fb.kind == "numeric":
        return _number(fb.number)  # RatingQuestion
    if fb.kind == "boolean":
        return "true" if fb.number else "false"  # LabelQuestion
    if fb.kind == "spans":  # SpanQuestion
        return [{"label": m["label"], "start": m["start"], "end": m["end"]} for m in _marks(fb)]
    return fb.text  # LabelQuestion (categorical) or TextQuestion (correction)


def _argilla_candidates(
    feedback: list[_Feedback], calls: _Calls, filters: ExportFilters, tally: _Tally, fmt: str
) -> list[_Candidate]:
    """Argilla 2.x records (`rg.Record.to_dict` shape), one per judged call."""
    out = []
    for call, judged in _per_call(feedback, calls, tally, fmt):
        responses: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for fb in _latest(judged, tally):
            tally.sources[fb.kind] += 1
            reviewer = str(uuid.uuid5(_REVIEWER_NAMESPACE, _reviewer(fb)))
            responses[_question(fb.name)].append(
                {"value": _argilla_value(fb), "user_id": reviewer, "status": "submitted"}
            )
        row: Row = {
            "id": "-".join(call.key),
            "fields": {"prompt": _prompt(call, filters), "response": call.output},
            "metadata": _metadata(call),
            "suggestions": {},
            "responses": dict(responses),
            "vectors": {},
        }
        out.append(_Candidate((judged[0].index, 0), call, row, "", "-".join(call.key)))
    return out


def _metadata(call: _Call) -> dict[str, str]:
    """Where a record's call comes from."""
    return {
        "trace_id": call.trace_id,
        "span_id": call.span_id,
        "conversation_id": call.conversation_id,
        "model": call.model,
        "service": call.service,
    }


def _region_id(fb: _Feedback, index: int) -> str:
    """A stable 10-character Label Studio region id."""
    return hashlib.blake2b(f"{fb.id}:{index}".encode(), digest_size=5).hexdigest()


def _label_studio_results(fb: _Feedback, output: str) -> list[dict[str, Any]]:
    """Label Studio result items for one judgement of the response."""
    base = {"from_name": _question(fb.name), "to_name": "response"}
    if fb.kind == "spans":
        return [
            {
                "id": _region_id(fb, i),
                **base,
                "type": "labels",
                "value": {
                    "start": m["start"],
                    "end": m["end"],
                    "text": output[m["start"] : m["end"]],
                    "labels": [m["label"]],
                },
            }
            for i, m in enumerate(_marks(fb))
        ]
    value: dict[str, Any]
    if fb.kind == "numeric":
        kind, value = "rating", {"rating": _number(fb.number)}
    elif fb.kind == "correction":
        kind, value = "textarea", {"text": [fb.text]}
    else:
        kind, value = "choices", {"choices": [_argilla_value(fb)]}
    return [{"id": _region_id(fb, 0), **base, "type": kind, "value": value}]


def _label_studio_candidates(
    feedback: list[_Feedback], calls: _Calls, filters: ExportFilters, tally: _Tally, fmt: str
) -> list[_Candidate]:
    """Label Studio tasks, one per judged call, an annotation per reviewer."""
    out = []
    for call, judged in _per_call(feedback, calls, tally, fmt):
        by_reviewer: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for fb in _latest(judged, tally):
            tally.sources[fb.kind] += 1
            by_reviewer[_reviewer(fb)].extend(_label_studio_results(fb, call.output))
        data: dict[str, Any] = {"prompt": call.plain, "response": call.output}
        if filters.conversational:
            data["messages"] = [{"author": m["role"], "text": m["content"]} for m in call.messages]
        data.update(_metadata(call))
        row = {"data": data, "annotations": [{"result": r} for r in by_reviewer.values()]}
        out.append(_Candidate((judged[0].index, 0), call, row, "", "-".join(call.key)))
    return out


_Builder = Callable[[list[_Feedback], _Calls, ExportFilters, _Tally, str], list[_Candidate]]
_BUILDERS: dict[str, _Builder] = {
    "dpo": _preference_candidates,
    "reward": _preference_candidates,
    "openai-dpo": _preference_candidates,
    "kto": _kto_candidates,
    "argilla": _argilla_candidates,
    "label-studio": _label_studio_candidates,
}


def _dedupe(candidates: list[_Candidate], tally: _Tally) -> list[_Candidate]:
    """The candidates in feedback order, each identity once (the first)."""
    seen: set[str] = set()
    kept = []
    for c in sorted(candidates, key=lambda c: c.order):
        if c.identity in seen:
            tally.skipped["duplicate"] += 1
            continue
        seen.add(c.identity)
        kept.append(c)
    return kept


def in_test(project: str, key: str, fraction: float) -> bool:
    """Whether a conversation (or trace) is held out: blake2b of `project NUL key`, as a
    fraction of 2**64, below `fraction`."""
    digest = hashlib.blake2b(f"{project}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def _check(fmt: str, filters: ExportFilters) -> None:
    """Raise ValueError for an unknown format or filters out of range."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; use one of: {', '.join(FORMATS)}")
    if not 0 <= filters.test_fraction <= 1:
        raise ValueError(f"test_fraction must be between 0 and 1, not {filters.test_fraction}")
    if filters.kto_bad >= filters.kto_good:
        raise ValueError(f"kto_bad ({filters.kto_bad}) must be below kto_good ({filters.kto_good})")


def _resolved(filters: ExportFilters) -> ExportFilters:
    """The filters with times in UTC milliseconds and the cutoff fixed (now, if not given)."""
    return replace(
        filters,
        since=None if filters.since is None else _utc_ms(filters.since),
        until=_utc_ms(filters.until or datetime.now(UTC)),
    )


def build(
    store: Store, fmt: str, filters: ExportFilters
) -> tuple[list[Row], list[Row], dict[str, Any]]:
    """(train rows, test rows, counts) — deterministic for the same store contents and filters."""
    _check(fmt, filters)
    filters = _resolved(filters)
    tally = _Tally()
    feedback = _read_feedback(store, filters)
    tally.feedback = len(feedback)
    calls = _read_calls(store, filters.project, feedback)
    candidates = _dedupe(_BUILDERS[fmt](feedback, calls, filters, tally, fmt), tally)
    if fmt == "kto":
        candidates = _drop_conflicts(candidates, tally)
    train: list[Row] = []
    test: list[Row] = []
    for c in candidates:
        if c.source:
            tally.sources[c.source] += 1
        held_out = in_test(filters.project, c.call.split_key, filters.test_fraction)
        (test if held_out else train).append(c.row)
    counts = {
        "feedback": tally.feedback,
        "rows": {"train": len(train), "test": len(test)},
        "sources": dict(sorted(tally.sources.items())),
        "skipped": dict(sorted((k, v) for k, v in tally.skipped.items() if v)),
    }
    return train, test, counts


# --- files and snapshots ---------------------------------------------------------------


def _line(row: Row) -> str:
    """One row as compact JSON, non-ASCII kept."""
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def encode(fmt: str, rows: list[Row]) -> bytes:
    """The bytes of a file of rows: JSON Lines, or one JSON array (a task a line) for
    Label Studio."""
    if fmt == "label-studio":
        return ("[\n" + ",\n".join(_line(r) for r in rows) + "\n]\n" if rows else "[]\n").encode()
    return "".join(_line(r) + "\n" for r in rows).encode()


def held_out_path(out: Path) -> Path:
    """Where the test rows of an export to `out` go: `<stem>.test<suffix>`."""
    return out.with_name(f"{out.stem}.test{out.suffix}")


def _digest(train: bytes, test: bytes) -> str:
    """SHA-256 of the train bytes followed by the test bytes."""
    h = hashlib.sha256(train)
    h.update(test)
    return h.hexdigest()


def record(store: Store, fmt: str, filters: ExportFilters) -> tuple[Snapshot, bytes, bytes]:
    """Build the rows and record a dataset_snapshots row; return it with the train and test
    file bytes."""
    _check(fmt, filters)
    filters = _resolved(filters)
    train, test, counts = build(store, fmt, filters)
    train_bytes, test_bytes = encode(fmt, train), encode(fmt, test)
    snapshot = Snapshot(
        id=uuid.uuid4().hex,
        project=filters.project,
        format=fmt,
        filters=filters.to_json(),
        counts=counts,
        sha256=_digest(train_bytes, test_bytes),
        rows=len(train) + len(test),
        created_at=_utc_ms(datetime.now(UTC)),
    )
    store.insert_arrow("dataset_snapshots", _snapshot_table(snapshot))
    return snapshot, train_bytes, test_bytes


def export(store: Store, fmt: str, filters: ExportFilters, out: Path) -> Snapshot:
    """Write train rows to `out` and test rows to `<out stem>.test<suffix>`; record a
    dataset_snapshots row; return it."""
    snapshot, train, test = record(store, fmt, filters)
    write(out, train, test)
    return snapshot


def write(out: Path, train: bytes, test: bytes) -> None:
    """The train file at `out`, the test file beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(train)
    held_out_path(out).write_bytes(test)


def list_snapshots(store: Store, project: str, limit: int = 100) -> list[Snapshot]:
    """The project's snapshots, newest first."""
    rows = store.query(
        f"SELECT {_SNAPSHOT_COLUMNS} FROM dataset_snapshots FINAL WHERE project_id = {{p:String}} "
        "ORDER BY created_at DESC LIMIT {limit:UInt32}",
        {"p": project, "limit": limit},
    )
    return [_snapshot(row) for row in rows]


def _snapshot_table(s: Snapshot) -> pa.Table:
    """A snapshot as a one-row Arrow table for `dataset_snapshots`."""
    return pa.table(
        {
            "project_id": [s.project],
            "id": [s.id],
            "format": [s.format],
            "filters": [json.dumps(s.filters, sort_keys=True)],
            "counts": [json.dumps(s.counts, sort_keys=True)],
            "sha256": [s.sha256],
            "rows": pa.array([s.rows], pa.uint32()),
            "created_at": pa.array([s.created_at], pa.timestamp("ms", "UTC")),
        }
    )


_SNAPSHOT_COLUMNS = "id, project_id, format, filters, counts, sha256, rows, created_at"


def get_snapshot(store: Store, snapshot_id: str, project: str) -> Snapshot:
    """A recorded snapshot; SnapshotError if the project has none by that id."""
    rows = store.query(
        f"SELECT {_SNAPSHOT_COLUMNS} FROM dataset_snapshots FINAL "
        "WHERE project_id = {project:String} AND id = {id:String}",
        {"project": project, "id": snapshot_id},
    )
    if not rows:
        raise SnapshotError(f"no dataset snapshot {snapshot_id!r} in project {project!r}")
    return _snapshot(rows[0])


def _snapshot(row: dict[str, Any]) -> Snapshot:
    return Snapshot(
        id=row["id"],
        project=row["project_id"],
        format=row["format"],
        filters=json.loads(row["filters"]),
        counts=json.loads(row["counts"]),
        sha256=row["sha256"],
        rows=int(row["rows"]),
        created_at=_utc(row["created_at"]),
    )


def load_snapshot(
    store: Store, snapshot_id: str, project: str
) -> tuple[Snapshot, list[Row], list[Row]]:
    """Rebuild a snapshot's rows from the store with its recorded filters (cutoff included) and
    check the hash; raise SnapshotError if unknown or if the data changed."""
    snapshot = get_snapshot(store, snapshot_id, project)
    if snapshot.format not in FORMATS:
        raise SnapshotError(f"snapshot {snapshot_id!r} has unknown format {snapshot.format!r}")
    filters = ExportFilters.from_json(snapshot.filters)
    train, test, counts = build(store, snapshot.format, filters)
    found = _digest(encode(snapshot.format, train), encode(snapshot.format, test))
    if found != snapshot.sha256:
        raise SnapshotError(
            f"snapshot {snapshot_id!r} no longer rebuilds from the store: recorded sha256 "
            f"{snapshot.sha256} over {snapshot.rows} rows, rebuilt {found} over "
            f"{len(train) + len(test)} rows (recorded counts {snapshot.counts}, now {counts}); "
            "feedback or calls up to its cutoff changed since the export"
        )
    return snapshot, train, test


def held_out_scores(
    store: Store, filters: ExportFilters
) -> list[tuple[str, str, dict[str, float]]]:
    """(prompt, response, mean score per criterion) of every held-out call that people scored,
    read with a snapshot's filters: what an LLM judge must agree with to be trusted."""
    filters = _resolved(filters)
    feedback = [fb for fb in _read_feedback(store, filters) if fb.kind == "numeric"]
    calls = _read_calls(store, filters.project, feedback)
    scores: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    found: dict[tuple[str, str], _Call] = {}
    for fb in feedback:
        call = calls.find(fb.trace_id, fb.span_id)
        if call is None or fb.number is None:
            continue
        if in_test(filters.project, call.split_key, filters.test_fraction):
            scores[call.key][fb.name].append(fb.number)
            found[call.key] = call
    return [
        (
            found[key].plain,
            found[key].output,
            {name: sum(values) / len(values) for name, values in sorted(by_name.items())},
        )
        for key, by_name in scores.items()
    ]
