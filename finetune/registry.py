"""The model registry: versions v1, v2, ... of one project's model, each a folder on disk with a
status. The current model is the version promoted last; a rollback marks it `rolled_back`, so
the one promoted before it is current again."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from driftline.finetune.ledger import Ledger, ModelVersion, VersionError


def current(ledger: Ledger) -> ModelVersion | None:
    """The version in service: promoted most recently and not rolled back."""
    return in_service(ledger.versions())


def in_service(versions: Iterable[ModelVersion]) -> ModelVersion | None:
    """Of one project's versions, the one promoted most recently and not rolled back."""
    promoted = [v for v in versions if v.status == "promoted"]
    return max(promoted, key=lambda v: v.updated_at) if promoted else None


def find(ledger: Ledger, name_or_path: str) -> ModelVersion | None:
    """A version by its name (`v3`) or by its folder."""
    try:
        target: str | None = _resolved(name_or_path)
    except (ValueError, OSError, RuntimeError):  # no path: a NUL byte, `~nobody`, a link loop
        target = None
    for v in ledger.versions():
        if v.version == name_or_path or v.path == target:
            return v
    return None


def get(ledger: Ledger, name: str) -> ModelVersion:
    """A version by name or folder; VersionError naming the known ones if there is none."""
    found = find(ledger, name)
    if found is None:
        known = ", ".join(v.version for v in ledger.versions()) or "none yet"
        raise VersionError(f"no model version {name!r} in project {ledger.project!r} ({known})")
    return found


def register(
    ledger: Ledger, path: str | Path, status: str = "candidate", **fields: Any
) -> ModelVersion:
    """Record a model folder as the next version (or return the version it already is)."""
    folder = _resolved(str(path))
    existing = find(ledger, folder)
    if existing is not None:
        return existing
    number = 1 + max((_number(v.version) for v in ledger.versions()), default=0)
    version = ModelVersion(
        project=ledger.project, version=f"v{number}", path=folder, status=status, **fields
    )
    ledger.save_version(version)
    return version


def baseline(ledger: Ledger, path: str | Path) -> ModelVersion:
    """The version of the model a candidate starts from; a folder the registry does not know
    yet is registered, as the model in service when none is."""
    return find(ledger, str(path)) or register(
        ledger, path, status="promoted" if current(ledger) is None else "candidate"
    )


def check_judgeable(version: ModelVersion) -> None:
    """Raise VersionError for a version that has been in service."""
    if version.status not in ("candidate", "rejected"):
        raise VersionError(
            f"{version.version} is {version.status.replace('_', ' ')}; the gate judges new "
            "candidates (train one, or register a copy of the folder)"
        )


def record_verdict(ledger: Ledger, version: ModelVersion, verdict: dict[str, Any]) -> ModelVersion:
    """Record the gate's verdict: a candidate that passed stays a candidate until promoted; one
    that did not is rejected. Versions once in service are not judged again (a new verdict
    would make a rolled-back or older version look freshly promoted)."""
    check_judgeable(version)
    version.verdict = verdict
    if version.status == "candidate" and not verdict.get("promote"):
        version.status = "rejected"
    ledger.save_version(version)
    return version


def promote(ledger: Ledger, name: str, force: bool = False) -> ModelVersion:
    """Make a version current: one the gate passed, or one in service before (a rollback's
    undo); `force` overrides a missing or failed verdict."""
    version = get(ledger, name)
    if not (Path(version.path) / "config.json").is_file():
        raise VersionError(f"{version.version}: {version.path} holds no model (no config.json)")
    passed = bool(version.verdict.get("promote"))
    if version.status == "rejected" and not force:
        reasons = "; ".join(version.verdict.get("reasons", [])) or "no reason recorded"
        raise VersionError(f"{version.version} was rejected by the gate ({reasons}); --force")
    if version.status == "candidate" and not passed and not force:
        raise VersionError(f"{version.version} has not passed the gate; run it, or --force")
    version.status = "promoted"
    ledger.save_version(version)
    return version


def rollback(ledger: Ledger) -> tuple[ModelVersion, ModelVersion]:
    """Take the current version out of service; return (rolled back, now current)."""
    now = current(ledger)
    if now is None:
        raise VersionError(f"project {ledger.project!r} has no promoted model to roll back")
    earlier = [v for v in ledger.versions() if v.status == "promoted" and v.version != now.version]
    if not earlier:
        raise VersionError(f"{now.version} is the only promoted version: nothing to roll back to")
    now.status = "rolled_back"
    ledger.save_version(now)
    back = current(ledger)
    assert back is not None
    return now, back


def _number(version: str) -> int:
    return int(version[1:]) if version[1:].isdigit() else 0


def confined(path: str, root: Path) -> str:
    """`path` resolved (links followed), if it lies inside `root`; else VersionError."""
    try:
        folder, top = Path(_resolved(path)), Path(_resolved(str(root)))
    except (ValueError, OSError, RuntimeError) as exc:  # a NUL byte, a loop of links
        raise VersionError(f"path {path!r} is not a folder path: {exc}") from None
    if not folder.is_relative_to(top):
        raise VersionError(
            f"path {path!r} is outside the models root {top} (finetune.models_root): "
            "model folders are registered from there only"
        )
    return str(folder)


def _resolved(path: str) -> str:
    """A folder as the registry keeps it: absolute, resolved."""
    return str(Path(path).expanduser().resolve())
