"""Maskers: functions str -> str that hide personal data and secrets before spans leave the app.

Pass one to `init(mask=...)`; `compose` chains several. `default_mask` applies all built-ins.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Mask = Callable[[str], str]

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# International or national numbers with at least 9 digits, optionally grouped.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){2,4}(?!\w)"
)
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_API_KEY = re.compile(
    r"\b(?:sk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic
    r"|(?:ghp|gho|ghu|ghs|github_pat)_[A-Za-z0-9_]{20,}"  # GitHub
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|AIza[0-9A-Za-z_-]{35}"  # Google
    r"|dl_[a-z]+_[A-Za-z0-9_-]{20,})"  # driftline keys
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{16,}")


def mask_emails(text: str) -> str:
    return _EMAIL.sub("<email>", text)


def mask_phone_numbers(text: str) -> str:
    return _PHONE.sub(_phone, text)


def mask_card_numbers(text: str) -> str:
    """Replace digit runs that pass the Luhn check (so order ids and dates stay)."""
    return _CARD.sub(lambda m: "<card>" if _luhn(m.group()) else m.group(), text)


def mask_api_keys(text: str) -> str:
    return _BEARER.sub(r"\1<api-key>", _API_KEY.sub("<api-key>", text))


def compose(*masks: Mask) -> Mask:
    """One masker applying each of `masks` in order."""

    def masked(text: str) -> str:
        for mask in masks:
            text = mask(text)
        return text

    return masked


# Keys first, so a key that contains digit runs is not half-masked as a phone number.
default_mask = compose(mask_api_keys, mask_emails, mask_card_numbers, mask_phone_numbers)


def _phone(match: re.Match[str]) -> str:
    digits = sum(c.isdigit() for c in match.group())
    return "<phone>" if 9 <= digits <= 15 else match.group()


def _luhn(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0
