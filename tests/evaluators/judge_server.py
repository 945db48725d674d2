"""A local judge that speaks the chat-completions wire format, scripted by the test: scores
from the answer's text, 429s with Retry-After, 5xx, slow answers, malformed replies."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# What the judge does for one request: (status, headers, body, seconds to wait first).
Reply = tuple[int, dict[str, str], bytes, float]


def completion(content: str, prompt_tokens: int = 100, completion_tokens: int = 10) -> Reply:
    body = {
        "id": "chatcmpl-1", "object": "chat.completion", "model": "grader",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }  # fmt: skip
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode(), 0.0


def scores(**values: int) -> Reply:
    return completion(json.dumps(values))


class JudgeServer:
    """Answers each request with `script(prompt, n)` (n: the request's number, from 0)."""

    def __init__(self, script: Callable[[str, int], Reply]) -> None:
        self.script, self.prompts, self.in_flight, self.most_in_flight = script, [], 0, 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.path == "/v1/chat/completions" and body["model"] == "grader"
                prompt = body["messages"][0]["content"]
                with outer._lock:
                    n = len(outer.prompts)
                    outer.prompts.append(prompt)
                    outer.in_flight += 1
                    outer.most_in_flight = max(outer.most_in_flight, outer.in_flight)
                try:
                    status, headers, data, delay = outer.script(prompt, n)
                    time.sleep(delay)
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with outer._lock:
                        outer.in_flight -= 1

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
