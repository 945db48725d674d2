"""The one HTTP client of the command line: a driftline server's API with a key, JSON in and
out, and its errors as typed exceptions (click prints their message)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click
import httpx

from driftline.api.auth import PROJECT_HEADER
from driftline.cli.local import read_control
from driftline.store import env

F = TypeVar("F", bound=Callable[..., Any])


def server_options(key_help: str, key_required: bool = False) -> Callable[[F], F]:
    """--url and --key: the running server a command talks to, and the key it sends."""

    def decorate(func: F) -> F:
        func = click.option(
            "--key", envvar=env.API_KEY, required=key_required, default=None,
            help=f"{key_help} [env {env.API_KEY}]",
        )(func)  # fmt: skip
        return click.option(
            "--url", envvar=env.URL, default=None,
            help=f"a running server [env {env.URL}; default: the local `driftline serve`, "
            f"else {env.DEFAULT_URL}]",
        )(func)  # fmt: skip

    return decorate


class Unreachable(click.ClickException):
    """No answer from the server."""


class ServerError(click.ClickException):
    """The server refused the request; `status` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class NotFound(ServerError):
    """The server has no such thing (HTTP 404)."""


class Client:
    """A driftline server's API, called with one key."""

    def __init__(self, url: str, key: str, timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {key}"}
        # A retraining job names its project: the server then refuses a key of any other.
        if project := os.environ.get(env.PROJECT):
            headers[PROJECT_HEADER] = project
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    @classmethod
    def local(cls, url: str | None, key: str) -> Client:
        """`url`, or the server `driftline serve` runs on ./driftline-data, or the default."""
        found = url or (read_control(env.DEFAULT_DATA) or {}).get("url") or env.DEFAULT_URL
        return cls(found, key)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def bytes(self, method: str, path: str, **kwargs: Any) -> bytes:
        return self._send(method, path, **kwargs).content

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach the driftline server at {self.url}: {exc}") from None
        if response.status_code < 400:
            return response
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        error = NotFound if response.status_code == 404 else ServerError
        raise error(response.status_code, message)
