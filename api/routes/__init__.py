"""The API's routers, one per resource, in the order the app includes them."""

from __future__ import annotations

from fastapi import APIRouter

from driftline.api.routes import (
    alerts,
    calls,
    datasets,
    drift,
    evaluators,
    feedback,
    health,
    ingest,
    keys,
    metrics,
    models,
    notifications,
    references,
    retrain_jobs,
    review_queue,
    runs,
    signals,
    silences,
    traces,
)

ROUTERS: tuple[APIRouter, ...] = tuple(
    module.router
    for module in (
        ingest,
        calls,
        traces,
        signals,
        feedback,
        references,
        drift,
        evaluators,
        review_queue,
        alerts,
        silences,
        notifications,
        retrain_jobs,
        datasets,
        models,
        runs,
        keys,
        health,
        metrics,
    )
)
