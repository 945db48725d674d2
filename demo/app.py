"""The demo's app, run as its own process the way a user's app runs: a package helper that
answers questions about Debian packages with an OpenAI-compatible model, recorded with the
driftline SDK (`@observe` and the wrapped OpenAI client).

    python -m driftline.demo.app --model-url URL --calls 100 --mix games=0.6,mail=0.4 --seed 1

Endpoint and ingest key come from DRIFTLINE_ENDPOINT and DRIFTLINE_API_KEY; progress goes to
stdout as JSON lines ({"sent": n, "failed": k}), the last one when every span is flushed.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import openai

from driftline import sdk
from driftline.demo.corpus import SERVICE, Corpus, load

SYSTEM = "You answer questions about Debian packages."


class Helper:
    """The app: one traced agent call per question, with its lookup step inside."""

    def __init__(self, client: openai.OpenAI, corpus: Corpus, model: str) -> None:
        self.client, self.corpus, self.model = client, corpus, model

    @sdk.observe(as_type="retrieval", name="lookup")
    def lookup(self, question: str) -> str:
        """The package the question names, as the app's own catalogue knows it."""
        package = self.corpus.find(question)
        return package.name if package else ""

    @sdk.observe(as_type="agent", name=SERVICE)
    def answer(self, question: str) -> str:
        self.lookup(question)
        reply = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        )
        return reply.choices[0].message.content or ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-url", required=True, help="the model server's OpenAI base URL")
    parser.add_argument("--model", default="debian-helper")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--mix", required=True, help="section=weight,... of the questions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    mix = {k: float(v) for k, v in (item.split("=") for item in args.mix.split(","))}

    sdk.init(service_name=SERVICE, schedule_delay=0.2)
    client = sdk.wrap(
        openai.OpenAI(base_url=args.model_url, api_key="unused", max_retries=0, timeout=30)
    )
    corpus = load()
    helper = Helper(client, corpus, args.model)
    questions = corpus.questions(mix, args.calls, args.seed)
    # One question at a time: the detectors' windows assume calls arrive in the order they
    # started, which overlapping calls of different lengths would not keep.
    sent = failed = 0
    for question in questions:
        try:
            helper.answer(question)
        except openai.OpenAIError:
            failed += 1
        sent += 1
        if sent % 25 == 0:
            report(sent=sent, failed=failed)
    flushed = sdk.flush(timeout=30)
    report(sent=sent, failed=failed, flushed=flushed, dropped=sdk.stats())
    sdk.shutdown()


def report(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


if __name__ == "__main__":
    main()
