"""A small support bot instrumented with driftline: retrieval, an agent step, OpenAI calls
(plain and streamed) and thumbs feedback, all sent to `driftline serve`.

    export DRIFTLINE_ENDPOINT=http://127.0.0.1:4318 DRIFTLINE_API_KEY=<ingest key>
    export OPENAI_API_KEY=...            # or, with no key: a local stand-in for the API
    python -m tests.sdk.llm_server --port 8011 &
    export OPENAI_BASE_URL=http://127.0.0.1:8011/v1 OPENAI_API_KEY=unused
    python examples/support_bot.py --questions 20

Stop the collector while it runs: the bot answers exactly as before. With
`DRIFTLINE_SPOOL_DIR` set, the spans it could not send arrive once the collector is back.
"""

from __future__ import annotations

import argparse
import random
import time

import openai
from openai.types.chat import ChatCompletionMessageParam

from driftline import sdk
from driftline.sdk import observe

FAQ = {
    "password": "Reset it from Settings > Security > Reset password; the link lasts one hour.",
    "invoice": "Invoices are under Billing > History, downloadable as PDF.",
    "refund": "Refunds go back to the original card within 5 to 10 business days.",
    "export": "Settings > Data > Export writes a ZIP of all your records.",
}
QUESTIONS = [
    "How do I reset my password?",
    "Where can I find last month's invoice?",
    "When will my refund arrive?",
    "How can I export my data?",
]


@observe(as_type="retrieval")
def retrieve(question: str) -> list[str]:
    words = question.lower()
    return [text for topic, text in FAQ.items() if topic in words] or list(FAQ.values())[:2]


@observe(as_type="agent", name="support-bot")
def answer(client: openai.OpenAI, model: str, question: str, stream: bool) -> str:
    context = "\n".join(retrieve(question))
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": f"Answer from this help text only:\n{context}"},
        {"role": "user", "content": question},
    ]
    if not stream:
        reply = client.chat.completions.create(model=model, messages=messages)
        return reply.choices[0].message.content or ""
    chunks = client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@observe(name="handle-question")
def handle(client: openai.OpenAI, model: str, question: str, stream: bool) -> tuple[str, str]:
    """One user request: its trace id (for feedback later) and the answer."""
    return sdk.current_trace_id() or "", answer(client, model, question, stream)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between questions")
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--stream-every", type=int, default=2, help="stream every Nth answer")
    args = parser.parse_args()

    sdk.init(service_name="support-bot", service_version="1.0.0")
    client = sdk.wrap(openai.OpenAI(max_retries=1))
    for i in range(args.questions):
        question = QUESTIONS[i % len(QUESTIONS)]
        trace_id, text = handle(client, args.model, question, i % args.stream_every == 0)
        print(f"{i + 1:>3} {trace_id} {question!r} -> {text!r}", flush=True)
        if random.random() < 0.5:  # the UI's thumbs buttons
            sdk.feedback(trace_id, "thumbs", random.random() < 0.8, user=f"user-{i % 7}")
        time.sleep(args.interval)
    sdk.flush(timeout=5)
    print("driftline:", sdk.stats(), flush=True)


if __name__ == "__main__":
    main()
