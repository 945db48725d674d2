"""Settings: command-line flags, then `DRIFTLINE_*` environment variables, then a TOML file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from driftline.alerts.config import AlertSettings
from driftline.detectors.config import DetectorSettings
from driftline.evaluators.config import (
    EvaluationSettings,
    EvaluatorSettings,
    ExperimentSettings,
    check_names,
)
from driftline.finetune.config import FinetuneSettings
from driftline.ingest.pricing import Price
from driftline.review.config import ReviewSettings
from driftline.store import env

if TYPE_CHECKING:
    from driftline.store.embedded import EngineLimits

MiB = 1024 * 1024
# Days each table keeps its rows (0 = forever). Feedback is training data: kept by default.
_RETENTION_DEFAULTS = {
    "llm_calls": 90,
    "spans": 30,
    "feedback": 0,
    "otel_metrics": 30,
    "otel_logs": 30,
}


class ConfigError(ValueError):
    """A setting is missing, unknown or out of range; the message names it."""


class PriceSetting(BaseModel):
    model_config = {"extra": "forbid"}
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)

    def price(self) -> Price:
        return Price(self.input_per_mtok, self.output_per_mtok)


class Settings(BaseSettings):
    """Every setting of `driftline serve`; each is also `DRIFTLINE_<NAME>` and a TOML key."""

    model_config = SettingsConfigDict(
        env_prefix=env.PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    data: Path = Field(env.DEFAULT_DATA, description="data folder (embedded store, log)")
    clickhouse_url: str | None = Field(None, description="ClickHouse server instead of embedded")
    ack: Literal["log", "store"] | None = Field(
        None,
        description="when a span export is acknowledged: 'log' (fsynced in the local write-ahead "
        "log; the embedded store's only mode) or 'store' (the ClickHouse server confirmed the "
        "insert; no local state). Unset: 'store' on a server, else 'log'",
    )
    insert_quorum: int | Literal["auto"] = Field(
        0,
        description="ack = 'store' on replicated tables: replicas that must have an insert "
        "before it is confirmed (0 = the one written to; 'auto' = a majority)",
    )
    host: str = env.DEFAULT_HOST
    port: int = Field(env.DEFAULT_PORT, ge=1, le=65535)
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="proxies whose X-Forwarded-Proto/For are trusted (comma-separated, or *): "
        "behind a TLS proxy the review cookie is then Secure",
    )
    max_body_bytes: int = Field(16 * MiB, ge=1024, description="largest request body accepted")
    max_decompressed_bytes: int = Field(64 * MiB, ge=1024)
    max_concurrent_requests: int = Field(
        64, ge=1, description="connections served at once (bounds memory); more get 503"
    )
    # Memory: what one collector holds, by bytes (docs/deploy.md, "Memory").
    max_inflight_body_bytes: int = Field(
        64 * MiB,
        ge=64 * 1024,
        description="request bodies held at once, all requests together, as received plus as "
        "inflated; past it 503 with Retry-After",
    )
    store_memory_bytes: int = Field(
        1024 * MiB, ge=64 * MiB, description="embedded ClickHouse: all queries and merges at once"
    )
    store_query_memory_bytes: int = Field(
        512 * MiB, ge=16 * MiB, description="embedded ClickHouse: one query or insert"
    )
    store_cache_bytes: int = Field(
        64 * MiB, ge=0, description="embedded ClickHouse: mark, index and condition caches"
    )
    store_background_threads: int = Field(
        2, ge=1, le=64, description="embedded ClickHouse: merges and mutations at once"
    )
    metrics_token_file: Path | None = Field(
        None, description="a file holding the bearer token /metrics requires; unset: open"
    )
    rate_limit_per_second: float = Field(500.0, ge=0, description="requests per key; 0 = off")
    rate_limit_burst: int = Field(1000, ge=1)
    heavy_rate_limit_per_second: float = Field(
        1.0, ge=0, description="per project: text searches, dataset exports and rebuilds; 0 = off"
    )
    heavy_rate_limit_burst: int = Field(10, ge=1)
    wal_budget_bytes: int = Field(2048 * MiB, ge=MiB, description="unstored backlog allowed")
    wal_segment_bytes: int = Field(64 * MiB, ge=64 * 1024)
    writer_batch_bytes: int = Field(
        12 * MiB, ge=1024, description="log records decoded and stored at once; memory follows it"
    )
    writer_flush_interval: float = Field(0.1, ge=0, le=10)
    retention_days: dict[str, int] = Field(default_factory=lambda: dict(_RETENTION_DEFAULTS))
    prices: dict[str, PriceSetting] = Field(default_factory=dict)
    key_cache_seconds: float = Field(5.0, ge=0, description="how long a checked key is trusted")
    max_label_series: int = Field(1000, ge=10, description="series per metric per project")
    detectors: DetectorSettings = DetectorSettings.model_validate({})
    alerts: AlertSettings = AlertSettings.model_validate({})
    review: ReviewSettings = ReviewSettings.model_validate({})
    finetune: FinetuneSettings = FinetuneSettings.model_validate({})
    evaluation: EvaluationSettings = EvaluationSettings.model_validate({})
    experiments: ExperimentSettings = ExperimentSettings.model_validate({})
    evaluators: dict[str, EvaluatorSettings] = Field(
        default_factory=dict, description="online evaluators by name ([evaluators.NAME])"
    )

    @field_validator("evaluators")
    @classmethod
    def _evaluator_names(
        cls, value: dict[str, EvaluatorSettings], info: ValidationInfo
    ) -> dict[str, EvaluatorSettings]:
        finetune = info.data.get("finetune")
        wanted = finetune.gate.evaluator if finetune is not None else None
        if wanted is not None and (wanted not in value or value[wanted].kind != "llm_judge"):
            judges = sorted(n for n, c in value.items() if c.kind == "llm_judge") or ["none"]
            raise ValueError(
                f"finetune.gate.evaluator = {wanted!r} names no llm_judge evaluator; "
                f"the judges configured: {', '.join(judges)}"
            )
        return check_names(value)

    @field_validator("max_inflight_body_bytes")
    @classmethod
    def _a_body_fits(cls, value: int, info: ValidationInfo) -> int:
        largest = info.data.get("max_body_bytes")
        if largest is not None and value < largest:
            raise ValueError(
                f"must be at least max_body_bytes ({largest}): a body that large could never "
                "be read"
            )
        return value

    @field_validator("store_query_memory_bytes")
    @classmethod
    def _a_query_fits(cls, value: int, info: ValidationInfo) -> int:
        total = info.data.get("store_memory_bytes")
        if total is not None and value > total:
            raise ValueError(f"must be at most store_memory_bytes ({total})")
        return value

    @field_validator("ack")
    @classmethod
    def _store_ack_needs_a_server(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value == "store" and not info.data.get("clickhouse_url"):
            raise ValueError(
                "'store' needs clickhouse_url: the embedded store is in this process, so the "
                "write-ahead log is what makes an acknowledged span durable; use 'log'"
            )
        return value

    @field_validator("insert_quorum")
    @classmethod
    def _quorum_not_negative(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be 0 (off), a number of replicas, or 'auto'")
        return value

    def engine_limits(self) -> EngineLimits:
        """The embedded ClickHouse's bounds (chDB is imported only when a store is opened)."""
        from driftline.store.embedded import EngineLimits

        return EngineLimits(
            memory_bytes=self.store_memory_bytes,
            query_memory_bytes=self.store_query_memory_bytes,
            cache_bytes=self.store_cache_bytes,
            background_threads=self.store_background_threads,
        )

    @field_validator("retention_days")
    @classmethod
    def _known_tables(cls, value: dict[str, int]) -> dict[str, int]:
        for table, days in value.items():
            if table not in _RETENTION_DEFAULTS:
                known = ", ".join(_RETENTION_DEFAULTS)
                raise ValueError(f"unknown table {table!r}; retention is set for {known}")
            if days < 0:
                raise ValueError(f"{table}: days must be >= 0 (0 keeps rows forever)")
        return {**_RETENTION_DEFAULTS, **value}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Flags that were given override the environment, which overrides the file."""
    path = config_file or (Path(os.environ[env.CONFIG]) if os.environ.get(env.CONFIG) else None)
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")

    class FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    try:
        return FromFile(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    except ValueError as exc:  # a TOML syntax error
        raise ConfigError(f"config file {path}: {exc}") from None


# Settings whose values are credentials, or may hold them (a URL's user:password).
_SECRET = re.compile(r"key|secret|token|password|url", re.I)


def _describe(exc: ValidationError, path: Path | None) -> str:
    problems = []
    for error in exc.errors():
        name = ".".join(str(p) for p in error["loc"])
        shown = "a hidden value" if _SECRET.search(name) else repr(_redacted(error.get("input")))
        problems.append(f"{name}: {error['msg']} (got {shown})")
    origin = f" (flags, DRIFTLINE_* environment, {path})" if path else ""
    return f"invalid settings{origin}: " + "; ".join(problems)


def _redacted(value: Any) -> Any:
    """A setting's input as an error may show it: credentials inside it replaced."""
    if isinstance(value, dict):
        return {k: "***" if _SECRET.search(str(k)) else _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value
