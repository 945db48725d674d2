"""The `[alerts]` section of driftline's settings (TOML), also `DRIFTLINE_ALERTS__<NAME>`."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class OutboxSettings(BaseModel):
    model_config = {"extra": "forbid"}

    tick_seconds: float = Field(1.0, gt=0, le=60, description="how often due messages are sent")
    workers: int = Field(8, ge=1, le=64, description="deliveries in flight at once")
    backoff_initial: float = Field(1.0, gt=0, description="first retry delay, seconds")
    backoff_max: float = Field(300.0, gt=0, description="longest retry delay, seconds")
    give_up_after: float = Field(
        86400.0, gt=0, description="seconds after which an undelivered message is dead-lettered"
    )


class AlertSettings(BaseModel):
    model_config = {"extra": "forbid"}

    enabled: bool = Field(True, description="evaluate rules inside `driftline serve`")
    rules_file: Path | None = Field(None, description="rules YAML; no file, no alerts")
    evaluation_interval: float = Field(15.0, gt=0, description="seconds between evaluations")
    max_alerts_per_rule: int = Field(
        100, ge=1, description="per project: alerts one rule keeps (label values come from spans)"
    )
    resend_delay: float = Field(
        60.0, gt=0, description="how often firing alerts are re-pushed to Alertmanager"
    )
    external_url: str | None = Field(
        None, description="driftline's address in links; default http://<host>:<port>"
    )
    outbox: OutboxSettings = OutboxSettings.model_validate({})
