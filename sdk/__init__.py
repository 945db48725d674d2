"""driftline's SDK: what an app imports to record its LLM calls and its users' feedback.

    from driftline.sdk import init, observe, wrap, feedback, current_trace_id, choose_version
    init(service_name="support-bot")      # endpoint and key from DRIFTLINE_ENDPOINT / _API_KEY
    client = wrap(openai.OpenAI())

Depends on OpenTelemetry only. Nothing here raises into the app or waits on the network.
"""

from driftline.sdk.client import flush, init, shutdown, stats
from driftline.sdk.config import Config, ConfigError
from driftline.sdk.experiments import choose_version
from driftline.sdk.feedback import current_span_id, current_trace_id, feedback
from driftline.sdk.instrument import wrap
from driftline.sdk.masking import (
    compose,
    default_mask,
    mask_api_keys,
    mask_card_numbers,
    mask_emails,
    mask_phone_numbers,
)
from driftline.sdk.observe import observe

__all__ = [
    "Config",
    "ConfigError",
    "choose_version",
    "compose",
    "current_span_id",
    "current_trace_id",
    "default_mask",
    "feedback",
    "flush",
    "init",
    "mask_api_keys",
    "mask_card_numbers",
    "mask_emails",
    "mask_phone_numbers",
    "observe",
    "shutdown",
    "stats",
    "wrap",
]
