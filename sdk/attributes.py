"""Attribute names the SDK writes: OTel GenAI semantic conventions, plus a few of driftline's."""

from __future__ import annotations

import re

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_STREAM = "gen_ai.request.stream"
AGENT_NAME = "gen_ai.agent.name"
TOOL_NAME = "gen_ai.tool.name"
CONVERSATION_ID = "gen_ai.conversation.id"
ERROR_TYPE = "error.type"
# OpenInference names for a step's input and output; the collector reads them as messages.
INPUT_VALUE = "input.value"
OUTPUT_VALUE = "output.value"
OBSERVATION_TYPE = "driftline.observation.type"
# Seconds from the request to the first streamed chunk (no GenAI span attribute exists yet).
TIME_TO_FIRST_TOKEN = "driftline.response.time_to_first_token"

# Attributes that carry what users and models said: masked, and dropped without capture_content.
CONTENT_KEYS = frozenset(
    {
        INPUT_MESSAGES,
        OUTPUT_MESSAGES,
        SYSTEM_INSTRUCTIONS,
        INPUT_VALUE,
        OUTPUT_VALUE,
        "gen_ai.prompt",
        "gen_ai.completion",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
    }
)
INDEXED_CONTENT = re.compile(
    r"^(gen_ai\.(prompt|completion)\.\d+\.content|llm\.(input|output)_messages\.\d+\.message\.content)$"
)


def is_content(key: str) -> bool:
    return key in CONTENT_KEYS or (
        key.startswith(("gen_ai.", "llm.")) and bool(INDEXED_CONTENT.match(key))
    )
