"""SDK settings: keyword arguments to `init`, else `DRIFTLINE_*` environment variables."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

Mask = Callable[[str], str]

DEFAULT_ENDPOINT = "http://127.0.0.1:4318"


class ConfigError(ValueError):
    """A setting has a value the SDK cannot use; the message names the setting."""


@dataclass(frozen=True)
class Config:
    endpoint: str = DEFAULT_ENDPOINT
    api_key: str | None = None
    service_name: str = "unknown_service"
    service_version: str | None = None
    environment: str | None = None
    sample_rate: float = 1.0
    capture_content: bool = True
    mask: Mask | None = None
    max_attribute_chars: int = 32_768
    max_queue_size: int = 8_192
    max_export_batch_size: int = 512
    schedule_delay: float = 1.0
    export_timeout: float = 10.0
    max_backlog_bytes: int = 16 * 1024 * 1024
    spool_dir: Path | None = None
    spool_max_bytes: int = 512 * 1024 * 1024
    compression: str | None = None
    flush_at_exit_timeout: float = 5.0
    propagate_to_threads: bool = True
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_url(self.endpoint)
        _check_range("sample_rate", self.sample_rate, 0.0, 1.0)
        for name in ("max_attribute_chars", "max_queue_size", "max_export_batch_size"):
            _check_range(name, getattr(self, name), 1, None)
        for name in ("max_backlog_bytes", "spool_max_bytes"):
            _check_range(name, getattr(self, name), 0, None)
        for name in ("schedule_delay", "export_timeout", "flush_at_exit_timeout"):
            _check_range(name, getattr(self, name), 0.0, None)
        if self.compression not in (None, "gzip"):
            raise ConfigError(f"compression must be 'gzip' or None, got {self.compression!r}")
        if self.mask is not None and not callable(self.mask):
            raise ConfigError(f"mask must be a callable str -> str, got {type(self.mask).__name__}")
        if not self.service_name:
            raise ConfigError("service_name must not be empty")


# Each setting's environment variable and how to read its text.
_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "endpoint": ("DRIFTLINE_ENDPOINT", str),
    "api_key": ("DRIFTLINE_API_KEY", str),
    "service_name": ("DRIFTLINE_SERVICE_NAME", str),
    "service_version": ("DRIFTLINE_SERVICE_VERSION", str),
    "environment": ("DRIFTLINE_ENVIRONMENT", str),
    "sample_rate": ("DRIFTLINE_SAMPLE_RATE", float),
    "capture_content": ("DRIFTLINE_CAPTURE_CONTENT", lambda v: _bool(v)),
    "max_attribute_chars": ("DRIFTLINE_MAX_ATTRIBUTE_CHARS", int),
    "max_queue_size": ("DRIFTLINE_MAX_QUEUE_SIZE", int),
    "max_export_batch_size": ("DRIFTLINE_MAX_EXPORT_BATCH_SIZE", int),
    "schedule_delay": ("DRIFTLINE_SCHEDULE_DELAY", float),
    "export_timeout": ("DRIFTLINE_EXPORT_TIMEOUT", float),
    "max_backlog_bytes": ("DRIFTLINE_MAX_BACKLOG_BYTES", int),
    "spool_dir": ("DRIFTLINE_SPOOL_DIR", Path),
    "spool_max_bytes": ("DRIFTLINE_SPOOL_MAX_BYTES", int),
    "compression": ("DRIFTLINE_COMPRESSION", lambda v: v or None),
    "flush_at_exit_timeout": ("DRIFTLINE_FLUSH_AT_EXIT_TIMEOUT", float),
    "propagate_to_threads": ("DRIFTLINE_PROPAGATE_TO_THREADS", lambda v: _bool(v)),
}
ENV_VARS = {name: var for name, (var, _) in _ENV.items()}


def load_config(overrides: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """Settings from `overrides` (init's keyword arguments, None = unset), else the environment."""
    environ = os.environ if environ is None else environ
    known = {f.name for f in fields(Config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for name, (var, parse) in _ENV.items():
        text = environ.get(var, "").strip()
        if text:
            try:
                values[name] = parse(text)
            except ValueError as exc:
                raise ConfigError(f"{var}={text!r} is not valid: {exc}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(values.get("spool_dir"), str):
        values["spool_dir"] = Path(values["spool_dir"])
    return Config(**values)


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true/false")


def _check_url(endpoint: str) -> None:
    if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"endpoint must be an http(s) URL, got {endpoint!r}")


def _check_range(name: str, value: Any, low: float, high: float | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if value != value or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be {bound}, got {value!r}")
