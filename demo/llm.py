"""A stand-in for an OpenAI-compatible model server (`POST /v1/chat/completions`) that answers
a question about a Debian package with the package's description. `drift()` degrades it as a
bad model update would: some answers collapse onto a few canned descriptions of font packages,
and some calls are slow."""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from driftline.demo.corpus import OFF_TOPIC, Corpus
from driftline.demo.local_http import LocalServer, Server

MODEL = "debian-helper-1"


CANNED = 6  # the degraded model's off-topic answers: this many font packages' descriptions


@dataclass(frozen=True)
class Behaviour:
    off_topic: float = 0.0  # share of answers that are one of the CANNED ones
    slow: float = 0.0  # share of calls that take `slow_seconds`
    seconds: tuple[float, float] = (0.01, 0.03)
    slow_seconds: tuple[float, float] = (0.2, 0.5)


HEALTHY = Behaviour()
DRIFTED = Behaviour(off_topic=0.2, slow=0.3)


class StandInModel(LocalServer):
    """The server, in a thread of this process: `with StandInModel(corpus) as model`."""

    def __init__(self, corpus: Corpus, seed: int = 0) -> None:
        super().__init__(_Handler)
        self.corpus = corpus
        self.behaviour = HEALTHY
        self.off_topic = 0
        self._rng = random.Random(seed)
        self._canned = self._rng.sample(corpus.section(OFF_TOPIC), CANNED)
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as `base_url`."""
        return f"http://127.0.0.1:{self.port}/v1"

    def drift(self, behaviour: Behaviour = DRIFTED) -> None:
        self.behaviour = behaviour

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        """A chat completion for a request body, after the behaviour's delay."""
        question = next(
            (str(m.get("content")) for m in reversed(body.get("messages") or [])
             if m.get("role") == "user"),
            "",
        )  # fmt: skip
        package = self.corpus.find(question)
        with self._lock:
            b = self.behaviour
            slow = self._rng.random() < b.slow
            delay = self._rng.uniform(*(b.slow_seconds if slow else b.seconds))
            if package is None or self._rng.random() < b.off_topic:
                package = self._rng.choice(self._canned)
                self.off_topic += 1
        time.sleep(delay)
        text = package.description
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        completion_tokens = len(text.split())
        return {
            "id": "chatcmpl-" + secrets.token_hex(12),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw)
            ok = self.path.split("?")[0] == "/v1/chat/completions" and "messages" in body
        except ValueError:
            ok = False
        if ok:
            self._send(200, self.server.owner.reply(body))
        else:
            error = {"message": f"POST /v1/chat/completions with messages, not {self.path}"}
            self._send(404, {"error": {**error, "type": "invalid_request_error"}})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the demo shows what the model did through driftline instead."""
