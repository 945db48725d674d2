"""An LLM judge: any OpenAI-compatible chat-completions endpoint, asked for a JSON object of
scores from 1 to 5, one per criterion. The fine-tune gate and the online evaluators use it."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

import httpx

from driftline.evaluators.config import EvaluatorSettings, JudgeEndpoint

PROMPT = """You grade an assistant's answer. Score each criterion from 1 (poor) to 5 (excellent).
Criteria: {criteria}.
Reply with only a JSON object mapping each criterion to an integer score.

Question:
{prompt}

Answer:
{response}"""
_PLACEHOLDER = re.compile(r"\{(criteria|prompt|response)\}")
_RETRIED = frozenset({429, 500, 502, 503, 504})
_MAX_WAIT_S = 30.0  # longest Retry-After honoured; past it, the call is given up


class JudgeError(RuntimeError):
    """The judge did not answer, or not with a score for every criterion. `reason`:
    `unavailable` (transport, 429/5xx after retries, other HTTP errors) or `malformed`."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Graded:
    scores: dict[str, float]
    prompt_tokens: int
    completion_tokens: int


class LLMJudge:
    """Scores (prompt, response) pairs on `criteria` by one chat completion each; 429 and 5xx
    answers are retried `max_retries` times, after `Retry-After` when given."""

    def __init__(
        self,
        endpoint: JudgeEndpoint,
        criteria: list[str],
        prompt: str = PROMPT,
        client: httpx.Client | None = None,
        max_retries: int = 0,
        sleep: float = 0.5,
    ) -> None:
        self.endpoint, self.criteria, self.prompt = endpoint, list(criteria), prompt
        self.client = client or httpx.Client(timeout=endpoint.timeout)
        self.max_retries, self.first_backoff = max_retries, sleep
        self.url = endpoint.url.rstrip("/") + "/chat/completions"

    def score(self, prompt: str, response: str) -> dict[str, float]:
        """The judge's score per criterion, 1 to 5."""
        return self.grade(prompt, response).scores

    def grade(self, prompt: str, response: str, criteria: list[str] | None = None) -> Graded:
        """The scores on `criteria` (default: the judge's) and the tokens the judge's answer
        reports (0 when it reports none)."""
        criteria = criteria or self.criteria
        values = {"criteria": ", ".join(criteria), "prompt": prompt, "response": response}
        # one pass, and only these three: a template may show JSON, a question may hold braces
        text = _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.prompt)
        body = {
            "model": self.endpoint.model,
            "temperature": 0,
            "messages": [{"role": "user", "content": text}],
        }
        reply = self._post(body)
        try:
            content = reply["choices"][0]["message"]["content"]
            usage = reply.get("usage") or {}
            tokens = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise JudgeError(
                f"judge at {self.url} answered no chat completion", "malformed"
            ) from None
        if not isinstance(content, str):
            raise JudgeError(f"judge at {self.url} answered no text", "malformed")
        return Graded(self._parse(content, criteria), *tokens)

    def _post(self, body: dict[str, object]) -> dict:
        key = self.endpoint.api_key.get_secret_value()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        backoff = self.first_backoff
        for attempt in range(self.max_retries + 1):
            try:
                answer = self.client.post(self.url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                failure = f"judge at {self.url} failed: {exc}"
                wait = backoff
            else:
                if answer.status_code < 400:
                    try:
                        found = answer.json()
                    except ValueError:
                        found = None
                    if not isinstance(found, dict):
                        raise JudgeError(f"judge at {self.url} answered no object", "malformed")
                    return found
                failure = f"judge at {self.url} failed: HTTP {answer.status_code}"
                if answer.status_code not in _RETRIED:
                    break
                wait = _retry_after(answer.headers.get("retry-after"), backoff)
            if attempt == self.max_retries or wait > _MAX_WAIT_S:
                break
            time.sleep(wait)
            backoff *= 2
        raise JudgeError(failure, "unavailable")

    def _parse(self, text: str, criteria: list[str]) -> dict[str, float]:
        """The first JSON object in the reply, checked for every criterion within 1..5."""
        found = re.search(r"\{.*\}", text, re.S)
        try:
            scores = json.loads(found.group(0)) if found else None
        except json.JSONDecodeError:
            scores = None
        if not isinstance(scores, dict):
            raise JudgeError(
                f"judge reply holds no JSON object of scores: {text[:200]!r}", "malformed"
            )
        out = {}
        for name in criteria:
            value = scores.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 5:
                raise JudgeError(
                    f"judge gave no score 1-5 for {name!r}: {text[:200]!r}", "malformed"
                )
            out[name] = float(value)
        return out


def _retry_after(header: str | None, default: float) -> float:
    """Seconds from a Retry-After header (a number of seconds), else `default`."""
    try:
        return max(float(header), 0.0) if header is not None else default
    except ValueError:
        return default


def evaluator_judge(settings: EvaluatorSettings, criteria: list[str]) -> LLMJudge:
    """The LLM judge of an `llm_judge` evaluator, on `criteria`."""
    assert settings.judge is not None  # EvaluatorSettings checks an llm_judge has one
    return LLMJudge(
        settings.judge, criteria, settings.prompt or PROMPT, max_retries=settings.max_retries
    )
