"""Settings from arguments and DRIFTLINE_* variables; the built-in maskers."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline import sdk
from driftline.sdk.config import ENV_VARS, ConfigError, load_config


def test_environment_fills_what_arguments_leave_unset() -> None:
    env = {
        "DRIFTLINE_ENDPOINT": "https://collector.example:4318",
        "DRIFTLINE_API_KEY": "dl_ingest_x",
        "DRIFTLINE_SERVICE_NAME": "bot",
        "DRIFTLINE_SAMPLE_RATE": "0.25",
        "DRIFTLINE_CAPTURE_CONTENT": "false",
        "DRIFTLINE_SPOOL_DIR": "/var/spool/dl",
        "DRIFTLINE_MAX_QUEUE_SIZE": "100",
    }
    config = load_config({"service_name": "from-arg", "sample_rate": None}, env)
    assert config.endpoint == "https://collector.example:4318"
    assert config.api_key == "dl_ingest_x"
    assert config.service_name == "from-arg"
    assert config.sample_rate == 0.25
    assert config.capture_content is False
    assert config.spool_dir == Path("/var/spool/dl")
    assert config.max_queue_size == 100


def test_every_setting_with_an_env_var_is_a_config_field() -> None:
    assert set(ENV_VARS) <= set(sdk.Config.__dataclass_fields__)
    assert all(v.startswith("DRIFTLINE_") for v in ENV_VARS.values())


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"DRIFTLINE_SAMPLE_RATE": "half"}, "DRIFTLINE_SAMPLE_RATE='half' is not valid"),
        ({"DRIFTLINE_SAMPLE_RATE": "1.5"}, "sample_rate must be between"),
        ({"DRIFTLINE_CAPTURE_CONTENT": "maybe"}, "expected true/false"),
        ({"DRIFTLINE_MAX_QUEUE_SIZE": "0"}, "max_queue_size must be >= 1"),
        ({"DRIFTLINE_ENDPOINT": "collector:4318"}, "endpoint must be an http(s) URL"),
        ({"DRIFTLINE_COMPRESSION": "zstd"}, "compression must be 'gzip'"),
    ],
)
def test_bad_settings_name_the_setting(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({}, env)
    assert problem in str(caught.value)


def test_mask_must_be_callable() -> None:
    with pytest.raises(ConfigError, match="mask must be a callable"):
        load_config({"mask": "emails"}, {})


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("write to ann.lee+bot@mail.example.co.uk today", "write to <email> today"),
        ("call +44 20 7946 0958 or (415) 555-0100", "call <phone> or <phone>"),
        ("card 4111 1111 1111 1111 ok", "card <card> ok"),
        ("order 4111 1111 1111 1112 stays", "order 4111 1111 1111 1112 stays"),  # not Luhn
        ("key sk-proj-Abcdefghijklmnopqrstuvwxyz0123", "key <api-key>"),
        ("key sk-ant-api03-abcdefghijklmnopqrstuvwxyz_-12", "key <api-key>"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc.def", "Authorization: Bearer <api-key>"),
        (
            "AKIAIOSFODNN7EXAMPLE and ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "<api-key> and <api-key>",
        ),
        ("in 2024 we sold 12 items for 3.50", "in 2024 we sold 12 items for 3.50"),
    ],
)
def test_default_mask(text: str, masked: str) -> None:
    assert sdk.default_mask(text) == masked


def test_compose_applies_in_order() -> None:
    mask = sdk.compose(sdk.mask_emails, str.upper)
    assert mask("mail a@b.io") == "MAIL <EMAIL>"
