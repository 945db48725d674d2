"""A local HTTP server that answers like the OpenAI and Anthropic APIs, for SDK wrapper tests.

The real ``openai`` and ``anthropic`` clients, pointed at it with ``base_url``, parse its answers:
``POST /v1/chat/completions``, ``POST /v1/responses`` and ``POST /v1/messages``, each plain or
as a server-sent event stream (``"stream": true`` in the body). Answers are scripted with
:class:`Reply` through :meth:`FakeLLMServer.push`; every request is recorded.

    with FakeLLMServer() as srv:
        srv.push(Reply(text="Hi", finish_reason="length"))
        client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="k", max_retries=0)
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

JSON = dict[str, Any]
Events = Iterator[tuple[str | None, JSON | str, float]]  # (SSE event name, data, delay before)

OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


@dataclass
class Reply:
    """One scripted answer. ``finish_reason`` None means the provider's normal end:
    chat "stop", Responses status "completed", Anthropic "end_turn". Use "length" (chat),
    "incomplete" (Responses: incomplete_details max_output_tokens) or "max_tokens" (Anthropic)
    for a truncated answer. ``first_chunk_delay`` is waited before the first text delta of a
    stream (before the whole answer when not streamed); ``chunk_delay`` between text deltas."""

    text: str = "Hello there!"
    model: str | None = "gpt-4o-mini-2024-07-18"
    input_tokens: int = 12
    output_tokens: int = 5
    finish_reason: str | None = None
    chunk_delay: float = 0.0
    first_chunk_delay: float = 0.0
    status: int = 200
    error_body: JSON | None = None


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any  # the parsed JSON body, None when there was none or it was not JSON


@dataclass
class _Call:
    """A request being answered: its reply, its JSON body and the model to answer with."""

    reply: Reply
    body: JSON
    model: str
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def deltas(self) -> list[str]:
        """The text in word-sized pieces, each but the first with its leading whitespace."""
        pieces: list[str] = re.findall(r"\s*\S+(?:\s+$)?", self.reply.text)
        return pieces or ([self.reply.text] if self.reply.text else [])


def _id(prefix: str, n: int = 24) -> str:
    return prefix + secrets.token_hex(n // 2 + 1)[:n]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeLLMServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, OSError):
            self.fake._record_error(exc)


class FakeLLMServer:
    """The server: ``with FakeLLMServer() as srv`` or ``start()`` / ``close()``."""

    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Lock()
        self._replies: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._errors: list[BaseException] = []
        self._conns: set[socket.socket] = set()
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._started = False

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions raised while answering (broken connections are not errors)."""
        with self._lock:
            return list(self._errors)

    def push(self, *replies: Reply) -> None:
        """Queue answers for the next requests, in order; an empty queue answers ``Reply()``."""
        with self._lock:
            self._replies.extend(replies)

    def start(self) -> FakeLLMServer:
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def close(self) -> None:
        if self._started:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:  # wake handler threads still waiting on kept-alive connections
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _record(self, request: RecordedRequest, conn: socket.socket) -> None:
        with self._lock:
            self._requests.append(request)
            self._conns.add(conn)

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._replies.popleft() if self._replies else Reply()

    def _record_error(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = RecordedRequest("POST", self.path, headers, body)
        self.server.fake._record(request, self.connection)
        anthropic = path == "/v1/messages"
        if path not in ROUTES:
            return self._error(404, None, anthropic, f"Unknown path {path}")
        reply = self.server.fake._next_reply()
        if reply.status != 200:
            return self._error(reply.status, reply.error_body, anthropic, "Scripted error")
        data = body if isinstance(body, dict) else {}
        call = _Call(reply, data, reply.model or str(data.get("model") or "unknown-model"))
        plain, stream = ROUTES[path]
        if data.get("stream"):
            self._stream(stream(call), anthropic)
        else:
            time.sleep(reply.first_chunk_delay)
            self._json(200, plain(call), anthropic)

    def _request_id_header(self, anthropic: bool) -> None:
        if anthropic:
            self.send_header("request-id", _id("req_011C"))
        else:
            self.send_header("x-request-id", _id("req_", 32))

    def _json(self, status: int, payload: JSON, anthropic: bool) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._request_id_header(anthropic)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, body: JSON | None, anthropic: bool, message: str) -> None:
        if body is None and anthropic:
            kind = ANTHROPIC_ERRORS.get(status, "api_error")
            body = {"type": "error", "error": {"type": kind, "message": message}}
        elif body is None:
            kind, code = OPENAI_ERRORS.get(status, ("server_error", None))
            body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        self._json(status, body, anthropic)

    def _stream(self, events: Events, anthropic: bool) -> None:
        """Send (event name, data, delay before it) as SSE with chunked transfer encoding."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self._request_id_header(anthropic)
        self.end_headers()
        try:
            for name, data, delay in events:
                if delay > 0:
                    time.sleep(delay)
                text = data if isinstance(data, str) else json.dumps(data)
                frame = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
                chunk = frame.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True  # the client stopped reading


def _text_deltas(call: _Call) -> Iterator[tuple[str, float]]:
    """Each text piece with the delay to wait before sending it."""
    for i, piece in enumerate(call.deltas):
        yield piece, call.reply.first_chunk_delay if i == 0 else call.reply.chunk_delay


# --- OpenAI chat completions ------------------------------------------------------------------


def _chat_usage(r: Reply) -> JSON:
    return {
        "prompt_tokens": r.input_tokens,
        "completion_tokens": r.output_tokens,
        "total_tokens": r.input_tokens + r.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _chat_base(call: _Call, object_type: str) -> JSON:
    return {
        "id": _id("chatcmpl-", 29),
        "object": object_type,
        "created": call.created,
        "model": call.model,
        "service_tier": "default",
        "system_fingerprint": "fp_" + secrets.token_hex(5),
    }


def _chat(call: _Call) -> JSON:
    message: JSON = {
        "role": "assistant",
        "content": call.reply.text,
        "refusal": None,
        "annotations": [],
    }
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": call.reply.finish_reason or "stop",
    }
    return {
        **_chat_base(call, "chat.completion"),
        "choices": [choice],
        "usage": _chat_usage(call.reply),
    }


def _chat_stream(call: _Call) -> Events:
    base = _chat_base(call, "chat.completion.chunk")
    usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
    extra: JSON = {"usage": None} if usage else {}

    def chunk(delta: JSON, finish: str | None = None) -> JSON:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice], **extra}

    yield None, chunk({"role": "assistant", "content": "", "refusal": None}), 0.0
    for piece, delay in _text_deltas(call):
        yield None, chunk({"content": piece}), delay
    yield None, chunk({}, call.reply.finish_reason or "stop"), 0.0
    if usage:
        yield None, {**base, "choices": [], "usage": _chat_usage(call.reply)}, 0.0
    yield None, "[DONE]", 0.0


# --- OpenAI responses ---------------------------------------------------------------------------


def _response_parts(call: _Call) -> tuple[JSON, JSON, JSON]:
    """The (in-progress response, final response, final message item) of a call."""
    status = call.reply.finish_reason or "completed"
    b = call.body
    response: JSON = {
        "id": _id("resp_", 50),
        "object": "response",
        "created_at": call.created,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": b.get("instructions"),
        "max_output_tokens": b.get("max_output_tokens"),
        "model": call.model,
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": b.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": b.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": b.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": b.get("metadata") or {},
    }
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": call.reply.text}
    item_status = "completed" if status == "completed" else "incomplete"
    item = {
        "id": _id("msg_", 50),
        "type": "message",
        "status": item_status,
        "content": [part],
        "role": "assistant",
    }
    usage = {
        "input_tokens": call.reply.input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": call.reply.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": call.reply.input_tokens + call.reply.output_tokens,
    }
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    final = {
        **response,
        "status": status,
        "incomplete_details": incomplete,
        "output": [item],
        "usage": usage,
    }
    return response, final, item


def _response(call: _Call) -> JSON:
    return _response_parts(call)[1]


def _response_stream(call: _Call) -> Events:
    response, final, item = _response_parts(call)
    seq = iter(range(1_000_000))
    where = {"item_id": item["id"], "output_index": 0, "content_index": 0}

    def event(kind: str, delay: float = 0.0, **data: Any) -> tuple[str, JSON, float]:
        return kind, {"type": kind, "sequence_number": next(seq), **data}, delay

    empty_part = {**item["content"][0], "text": ""}
    yield event("response.created", response=response)
    yield event("response.in_progress", response=response)
    yield event(
        "response.output_item.added",
        output_index=0,
        item={**item, "status": "in_progress", "content": []},
    )
    yield event("response.content_part.added", **where, part=empty_part)
    for piece, delay in _text_deltas(call):
        yield event("response.output_text.delta", delay, **where, delta=piece, logprobs=[])
    yield event("response.output_text.done", **where, text=call.reply.text, logprobs=[])
    yield event("response.content_part.done", **where, part=item["content"][0])
    yield event("response.output_item.done", output_index=0, item=item)
    end = {"completed": "response.completed", "incomplete": "response.incomplete"}
    yield event(end.get(final["status"], "response.failed"), response=final)


# --- Anthropic messages -------------------------------------------------------------------------


def _message_base(call: _Call) -> JSON:
    return {
        "id": _id("msg_01", 22),
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }


def _anthropic_usage(input_tokens: int, output_tokens: int) -> JSON:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _message(call: _Call) -> JSON:
    return {
        **_message_base(call),
        "content": [{"type": "text", "text": call.reply.text}],
        "stop_reason": call.reply.finish_reason or "end_turn",
        "usage": _anthropic_usage(call.reply.input_tokens, call.reply.output_tokens),
    }


def _message_stream(call: _Call) -> Events:
    def event(kind: str, delay: float = 0.0, **data: Any) -> tuple[str, JSON, float]:
        return kind, {"type": kind, **data}, delay

    start = {**_message_base(call), "usage": _anthropic_usage(call.reply.input_tokens, 1)}
    yield event("message_start", message=start)
    yield event("content_block_start", index=0, content_block={"type": "text", "text": ""})
    yield event("ping")
    for piece, delay in _text_deltas(call):
        yield event(
            "content_block_delta", delay, index=0, delta={"type": "text_delta", "text": piece}
        )
    yield event("content_block_stop", index=0)
    stop = {"stop_reason": call.reply.finish_reason or "end_turn", "stop_sequence": None}
    yield event("message_delta", delta=stop, usage={"output_tokens": call.reply.output_tokens})
    yield event("message_stop")


ROUTES: dict[str, tuple[Callable[[_Call], JSON], Callable[[_Call], Events]]] = {
    "/v1/chat/completions": (_chat, _chat_stream),
    "/v1/responses": (_response, _response_stream),
    "/v1/messages": (_message, _message_stream),
}


def main() -> None:
    """Serve default replies until interrupted: `python -m tests.sdk.llm_server --port 8011`."""
    import argparse

    parser = argparse.ArgumentParser(description="A local stand-in for the OpenAI/Anthropic APIs")
    parser.add_argument("--port", type=int, default=8011)
    port = parser.parse_args().port
    with FakeLLMServer(port) as server:
        print(f"answering on {server.base_url} (OpenAI base_url: {server.base_url}/v1)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
