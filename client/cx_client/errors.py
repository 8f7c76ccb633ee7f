"""Errors: every refusal of the API is an RFC 9457 problem with a stable code."""

from __future__ import annotations

from typing import Any


class ExchangeError(Exception):
    """Base of the client's errors."""


class ProblemError(ExchangeError):
    """The API answered with a problem: `code` is stable (e.g. `insufficient_funds`)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        self.type: str = str(body.get("type", "about:blank"))
        self.title: str = str(body.get("title", ""))
        self.detail: str = str(body.get("detail", ""))
        super().__init__(f"{status} {self.code}: {self.detail}")

    @property
    def code(self) -> str:
        """The last part of `type`: `/problems/insufficient_funds` -> `insufficient_funds`."""
        return self.type.rsplit("/", 1)[-1]


class Unauthorized(ProblemError):
    """401: no key, or an unknown or revoked one."""


class Forbidden(ProblemError):
    """403: the key's role or account may not do this."""


class NotFound(ProblemError):
    """404: no such contract, order, account or key."""


class RateLimited(ProblemError):
    """429: over the key's request budget; retry after `retry_after` seconds."""

    def __init__(self, status: int, body: dict[str, Any], retry_after: float) -> None:
        super().__init__(status, body)
        self.retry_after = retry_after


def problem_error(status: int, body: dict[str, Any], retry_after: float | None) -> ProblemError:
    """The most specific error for a problem answer."""
    if status == 429:
        return RateLimited(status, body, retry_after if retry_after is not None else 1.0)
    kinds: dict[int, type[ProblemError]] = {401: Unauthorized, 403: Forbidden, 404: NotFound}
    return kinds.get(status, ProblemError)(status, body)
