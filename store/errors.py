"""Errors every room raises for what a caller sent; the API turns them into HTTP answers."""

from __future__ import annotations


class InputError(ValueError):
    """Input we refuse; the message names what is wrong and how to fix it (HTTP 400)."""

    status = 400


class NotFound(InputError):
    """The thing asked for does not exist in the caller's project (HTTP 404)."""

    status = 404


class Conflict(InputError):
    """The request contradicts what is stored (HTTP 409)."""

    status = 409
