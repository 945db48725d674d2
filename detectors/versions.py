"""Per-version references: the first calls of each new `service.version` become the reference
that the version's later windows are compared with, so drift is measured per version.

A version of a service gets the reference `{service}@{version}` (`@{version}` for calls without
a service) with scope {service, version}, frozen from its first `calls` calls with an answer,
once it has that many (never a smaller one earlier). A version counts as having a reference when
one of that name exists or one whose scope is exactly that service and version (a hand-made
one); the reference table is the record, so passes and restarts never freeze a version twice.
Calls without a `service.version` get no per-version reference.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta

from driftline.detectors import tables
from driftline.detectors.references import (
    DriftReferenceError,
    Reference,
    create_reference,
    list_references,
)
from driftline.store import Store

log = logging.getLogger("driftline.detectors")

MAX_NAME = 128


def reference_name(service: str, version: str) -> str:
    """`{service}@{version}`; a name over 128 characters is cut and ends in a hash of the whole."""
    name = f"{service}@{version}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    return f"{name[: MAX_NAME - len(digest) - 1]}~{digest}"


def version_references(
    store: Store, calls: int, model: str, per_project: int, full: set[str]
) -> list[Reference]:
    """Freeze the reference of each service version with `calls` calls embedded by `model`,
    at most `per_project` per project (versions come from spans: a sender could make any
    number); projects at that cap are added to `full`."""
    # Only embedded calls count: a reference frozen ahead of an embedding backlog would wait.
    # A count may include a call embedded twice before a merge: create_reference (which reads
    # FINAL) then finds fewer than `calls` and the version waits for the next pass.
    candidates = tables.versions_with_calls(store, model, calls)
    if not candidates:
        return []
    existing = list_references(store)
    names = {(r.project, r.name) for r in existing}
    scopes = {
        (r.project, r.scope["service"], r.scope["version"])
        for r in existing
        if set(r.scope) == {"service", "version"}
    }
    count = Counter(project for project, _, _ in scopes)
    created = []
    for row in candidates:
        project, service, version = row["project"], row["service"], row["version"]
        name = reference_name(service, version)
        if (project, name) in names or (project, service, version) in scopes:
            continue
        if count[project] >= per_project:
            full.add(project)
            continue
        first = _moment(int(row["first_ns"]))
        try:
            reference = create_reference(
                store,
                project,
                name,
                {"service": service, "version": version},
                since=first,
                limit=calls,
                min_calls=calls,
            )
        except DriftReferenceError as exc:
            log.debug("no reference for %s of project %s yet: %s", name, project, exc)
            continue
        log.info(
            "new version %r of service %r in project %s: reference %s from its first %d calls "
            "(since %s)",
            version, service, project, name, reference.calls, first.isoformat(),
        )  # fmt: skip
        names.add((project, name))
        count[project] += 1
        created.append(reference)
    return created


def _moment(ns: int) -> datetime:
    """Microseconds, rounded down, so `start_time >= moment` still holds for the first call."""
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC) + timedelta(
        microseconds=ns % 1_000_000_000 // 1000
    )
