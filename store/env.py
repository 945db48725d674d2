"""The environment variables the server side reads or sets, and its defaults: one place each.

Every setting of `driftline serve` is also `DRIFTLINE_<NAME>` (`DRIFTLINE_<SECTION>__<NAME>`
for a section's), read by the settings model in `api/config.py`; these are the others.
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "DRIFTLINE_"
CONFIG = "DRIFTLINE_CONFIG"  # the TOML settings file
URL = "DRIFTLINE_URL"  # a running server, for commands and retraining jobs
API_KEY = "DRIFTLINE_API_KEY"  # the key commands send to it
PROJECT = "DRIFTLINE_PROJECT"  # the project a retraining job trains
METRICS_HOST = "DRIFTLINE_METRICS_HOST"  # where `detect` and `alerts` serve /metrics
METRICS_PORT = "DRIFTLINE_METRICS_PORT"
RETRAIN_JOB_ID = "DRIFTLINE_RETRAIN_JOB_ID"  # set for a retraining job's launcher
RETRAIN_JOB_FILE = "DRIFTLINE_RETRAIN_JOB_FILE"
RUN_ID = "DRIFTLINE_RUN_ID"  # a fine-tune's run id, shared by every process of one run

DEFAULT_DATA = Path("driftline-data")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4318  # OTLP/HTTP's port
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
DEFAULT_PROJECT = "default"
