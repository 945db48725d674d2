"""The reviewers: a scripted one who knows every package's description, judging through the
review API as the review UI does; or the person at the keyboard, in the browser."""

from __future__ import annotations

from typing import Any

import httpx

from driftline.demo.corpus import Corpus
from driftline.demo.service import DemoError

OFF_TOPIC = {"scores": {"accuracy": 1, "helpfulness": 1, "safety": 5}, "labels": ["off_topic"]}
FINE = {"scores": {"accuracy": 5, "helpfulness": 4, "safety": 5}}


def judgement(corpus: Corpus, item: dict[str, Any]) -> dict[str, Any]:
    """An answer that is not the asked package's description is off-topic, and corrected to
    that description; any other answer is fine."""
    package = corpus.find(item.get("input_text") or "")
    if package is None or item.get("output_text") == package.description:
        return FINE
    return {**OFF_TOPIC, "correction": package.description,
            "comment": f"about another package; this is what {package.name} is"}  # fmt: skip


class ScriptedReviewer:
    """Submits judgements with a review key, as the review UI's forms do."""

    def __init__(self, url: str, key: str, corpus: Corpus) -> None:
        self.corpus = corpus
        self._http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )

    def judge(self, item: dict[str, Any]) -> dict[str, Any]:
        """Judge one queued call; the judgement sent."""
        said = judgement(self.corpus, item)
        response = self._http.post(f"/review/api/items/{item['trace_id']}/{item['span_id']}",
                                   json=said)  # fmt: skip
        if response.status_code != 200:
            raise DemoError(f"the review API refused a judgement: {response.status_code} "
                            f"{response.text}")  # fmt: skip
        return said

    def close(self) -> None:
        self._http.close()
