"""Label sets as Alertmanager sees them: fingerprints, matchers, and the `{a="b"}` form."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import re2

Labels = Mapping[str, str]

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_SEPARATOR = 0xFF
_MASK = 2**64 - 1


def fingerprint(labels: Labels) -> str:
    """FNV-1a over sorted `name 0xff value 0xff`, as Prometheus' `LabelSet.Fingerprint`."""
    digest = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name.encode(), labels[name].encode()):
            for byte in (*part, _SEPARATOR):
                digest = ((digest ^ byte) * _FNV_PRIME) & _MASK
    return f"{digest:016x}"


def render(labels: Labels) -> str:
    """`{a="1", b="2"}` sorted by name, as Alertmanager writes group keys."""
    inner = ", ".join(f"{name}={_quote(labels[name])}" for name in sorted(labels))
    return "{" + inner + "}"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


Op = Literal["=", "!=", "=~", "!~"]
# Matchers run over label values that spans set: RE2 (Alertmanager's engine too) takes linear
# time whatever the pattern and the value, where Python's `re` can backtrack for minutes.
_RE2 = re2.Options()
_RE2.log_errors = False
_MATCHER = re.compile(
    r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|[^"\s]*)\s*$'
)


class MatcherError(ValueError):
    """A matcher that cannot be parsed; the message shows the expected form."""


@dataclass(frozen=True)
class Matcher:
    name: str
    op: Op
    value: str

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~"):
            try:
                object.__setattr__(self, "_regex", re2.compile(self.value, options=_RE2))
            except re2.error as exc:
                problem = exc.args[0].decode() if isinstance(exc.args[0], bytes) else exc
                raise MatcherError(
                    f"{self.name}{self.op}: bad regular expression: {problem}"
                ) from None

    def matches(self, labels: Labels) -> bool:
        """A missing label matches as the empty string; regexes are anchored, as Alertmanager."""
        value = labels.get(self.name, "")
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        hit = self.__dict__["_regex"].fullmatch(value) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{_quote(self.value)}"

    def to_api(self) -> dict[str, Any]:
        """The Alertmanager v2 API form."""
        return {
            "name": self.name,
            "value": self.value,
            "isRegex": self.op in ("=~", "!~"),
            "isEqual": self.op in ("=", "=~"),
        }


def parse_matcher(text: str) -> Matcher:
    """`name="value"`, `name!="v"`, `name=~"re"`, `name!~"re"` (quotes optional)."""
    match = _MATCHER.match(text)
    if match is None:
        raise MatcherError(
            f'matcher {text!r} must look like name="value" (operators =, !=, =~, !~)'
        )
    name, op, raw = match.groups()
    value = raw[1:-1].encode().decode("unicode_escape") if raw.startswith('"') else raw
    return Matcher(name, op, value)  # type: ignore[arg-type]


def matches_all(matchers: list[Matcher], labels: Labels) -> bool:
    return all(m.matches(labels) for m in matchers)
