"""An LLM judge for the eval gate: any OpenAI-compatible chat-completions endpoint, asked for a
JSON object of rubric scores; the gate trusts it only where it agrees with people."""

from __future__ import annotations

import json
import re

import httpx

from driftline.finetune.config import JudgeSettings

_PROMPT = """You grade an assistant's answer. Score each criterion from 1 (poor) to 5 (excellent).
Criteria: {criteria}.
Reply with only a JSON object mapping each criterion to an integer score.

Question:
{prompt}

Answer:
{response}"""


class JudgeError(RuntimeError):
    """The judge did not answer, or not with a score for every criterion."""


class LLMJudge:
    """Scores (prompt, response) pairs on the rubric's criteria by one chat completion each."""

    def __init__(self, settings: JudgeSettings, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self.criteria = list(settings.criteria)
        self.client = client or httpx.Client(timeout=settings.timeout)

    def score(self, prompt: str, response: str) -> dict[str, float]:
        """The judge's score per criterion, 1 to 5."""
        body = {
            "model": self.settings.model,
            "temperature": 0,
            "messages": [
                {
                    "role": "user",
                    "content": _PROMPT.format(
                        criteria=", ".join(self.criteria), prompt=prompt, response=response
                    ),
                }
            ],
        }
        headers = (
            {"Authorization": f"Bearer {key}"}
            if (key := self.settings.api_key.get_secret_value())
            else {}
        )
        url = self.settings.url.rstrip("/") + "/chat/completions"
        try:
            answer = self.client.post(url, json=body, headers=headers)
            answer.raise_for_status()
            text = answer.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise JudgeError(f"judge at {url} failed: {exc}") from None
        return self._parse(text)

    def _parse(self, text: str) -> dict[str, float]:
        """The first JSON object in the reply, checked for every criterion within 1..5."""
        found = re.search(r"\{.*\}", text, re.S)
        try:
            scores = json.loads(found.group(0)) if found else None
        except json.JSONDecodeError:
            scores = None
        if not isinstance(scores, dict):
            raise JudgeError(f"judge reply holds no JSON object of scores: {text[:200]!r}")
        out = {}
        for name in self.criteria:
            value = scores.get(name)
            if not isinstance(value, int | float) or not 1 <= value <= 5:
                raise JudgeError(f"judge gave no score 1-5 for {name!r}: {text[:200]!r}")
            out[name] = float(value)
        return out
