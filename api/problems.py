"""RFC 9457 problem details: every error is application/problem+json with a stable `type`.

`type` is `/problems/<code>`: the codes of the exchange's own rejections (`insufficient_funds`,
`price_not_on_tick`, ... see docs/WIRE_FORMAT.md) and the API's (`unauthorized`, `forbidden`,
`rate-limited`, ... see docs/API.md). `title` is the code in words, Chinese first where the
supermarket page words it; `detail` says the specifics.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from settlement.statements import in_yuan

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
DATABASE_RETRY_AFTER_S = 5
"""What a 503 for an unavailable database asks the client to wait, in seconds."""


WORDS = Path(__file__).parent / "web" / "i18n"
"""The supermarket page's words, Chinese (`zh-CN.json`) and English (`en.json`)."""


def page_words(section: str) -> dict[str, str]:
    """What the page calls each code of one section of its words, Chinese then English: the
    page and the API say the same."""
    chinese = json.loads((WORDS / "zh-CN.json").read_text(encoding="utf-8"))[section]
    english = json.loads((WORDS / "en.json").read_text(encoding="utf-8"))[section]
    return {code: f"{text} {english.get(code, _words(code))}" for code, text in chinese.items()}


def _problem_titles() -> dict[str, str]:
    """The title of each problem the page words (every reason the exchange rejects with among
    them), Chinese then English."""
    return page_words("problem")


def _words(kind: str) -> str:
    return kind.replace("-", " ").replace("_", " ")


PROBLEM_TITLES = _problem_titles()


def chinese_words(section: str) -> dict[str, str]:
    """The page's Chinese words of one section (`problem`, `role`, ...), by code."""
    words: dict[str, str] = json.loads((WORDS / "zh-CN.json").read_text(encoding="utf-8"))[section]
    return words


_CHINESE_WORDS = chinese_words("problem")
_CHINESE = re.compile(r"[\u4e00-\u9fff]")


def chinese_first(kind: str, detail: str) -> str:
    """`detail` of a refusal worded in English only (the exchange's event messages are), led
    by the Chinese words of its code; a detail that already has Chinese is as it was."""
    chinese = _CHINESE_WORDS.get(kind)
    if chinese is None or _CHINESE.search(detail):
        return detail
    return f"{chinese}: {detail}"


def problem_title(kind: str) -> str:
    """A problem's title: Chinese then English where the page words its code, else the code
    in words."""
    return PROBLEM_TITLES.get(kind) or _words(kind)


class Problem(Exception):
    """An error answered as problem+json with a stable type."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class ProblemDetail(BaseModel):
    """An RFC 9457 problem: `type` is stable and machine-readable, `detail` is for people."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "/problems/insufficient_funds",
                    "title": "资金不足 insufficient funds",
                    "status": 422,
                    "detail": "order needs 108.00 元, account buyer-1 has 100.00 元 available",
                    "order_id": "o-5c2b1f0e9a7d4c3b2a19f8e7d6c5b4a392817f6e",
                }
            ]
        },
    )

    type: str
    title: str
    status: int
    detail: str


def problem_response(
    status: int,
    kind: str,
    detail: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A problem+json response."""
    body = {
        "type": f"/problems/{kind}",
        "title": problem_title(kind),
        "status": status,
        "detail": in_yuan(detail),
        **(extra or {}),
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


class DatabaseUnavailable(Exception):
    """The database cannot be asked now (it was unreachable a moment ago)."""


def database_unavailable(error: BaseException) -> bool:
    """True if `error` says the database cannot be reached or used now, rather than that a
    query is wrong: refused or dropped connections, timeouts, a pool with no connection to
    give, SQLite's busy lock. Such a request may succeed if retried."""
    if isinstance(error, DatabaseUnavailable | OSError | OperationalError | InterfaceError):
        return True  # OSError: asyncpg's refused connections and timeouts are not wrapped
    if isinstance(error, PoolTimeoutError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


_HTTP_KINDS = {
    400: "malformed-body",  # FastAPI could not parse the body (bad UTF-8, nesting too deep)
    404: "not-found",
    405: "method-not-allowed",
}


def install_handlers(app: FastAPI) -> None:
    """Answer every error of the app as problem+json."""

    @app.exception_handler(Problem)
    async def _problem(_: Request, error: Problem) -> JSONResponse:
        return problem_response(error.status, error.kind, error.detail, error.extra, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or "body", "message": e["msg"]}
            for e in error.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem_response(422, "invalid-request", detail, {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = _HTTP_KINDS.get(error.status_code, "http-error")
        return problem_response(
            error.status_code, kind, str(error.detail), headers=getattr(error, "headers", None)
        )

    async def _unavailable(request: Request, error: Exception) -> JSONResponse:
        if not database_unavailable(error):
            raise error  # a real fault: the catch-all below answers 500 and logs it
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        log.warning("%s: database unavailable: %s", request.url.path, first_line)
        return database_unavailable_response()

    for kind in (SQLAlchemyError, OSError, DatabaseUnavailable):
        app.add_exception_handler(kind, _unavailable)

    # Starlette answers anything else with a plain-text 500 (and logs the traceback after
    # this handler answers): answer it as a problem too.
    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        return problem_response(
            500,
            "internal-error",
            "the exchange failed to answer this request; the fault is logged. Whether the "
            "request took effect is unknown: check before retrying one that is not idempotent",
        )


def database_unavailable_response() -> JSONResponse:
    """503 for a request that needs the database while it cannot be reached."""
    return problem_response(
        503,
        "database-unavailable",
        "the event store's database cannot be reached now; retry later. Placing orders "
        "needs only the log and works meanwhile for keys verified recently",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problem statuses an endpoint may answer."""
    described = {
        401: "No key, or a key that is unknown or revoked (`unauthorized`)",
        403: "The key's role or account may not do this (`forbidden`, `account-mismatch`)",
        404: "No such contract, order, account or key",
        409: "The request conflicts with the current state",
        422: "The request is invalid or the exchange rejected it (see `type`)",
        429: "Over the key's request budget (`rate-limited`); see Retry-After",
    }
    return {
        status: {"model": ProblemDetail, "description": described[status], "content": {PROBLEM: {}}}
        for status in statuses
    }


def document_problems(document: dict[str, Any]) -> None:
    """Describe every error response as what it is: problem+json with the ProblemDetail schema.

    FastAPI would document its own 422 as `application/json` HTTPValidationError, and a
    `responses` model under `application/json`; the API answers both as problem+json.
    """
    content = {PROBLEM: {"schema": {"$ref": "#/components/schemas/ProblemDetail"}}}
    for item in document.get("paths", {}).values():
        for spec in item.values():
            if not isinstance(spec, dict):
                continue
            responses = spec.setdefault("responses", {})
            responses.setdefault(
                "422",
                {
                    "description": "A query parameter the operation does not take "
                    "(`unknown-parameter`), or one given twice (`repeated-parameter`)"
                },
            )
            responses.setdefault(
                "503",
                {
                    "description": "The database cannot be reached now "
                    "(`database-unavailable`); see Retry-After"
                },
            )
            if "requestBody" in spec:
                responses.setdefault(
                    "400",
                    {"description": "The body is not JSON the API can read (`malformed-body`)"},
                )
                responses.setdefault(
                    "413", {"description": "The body is over 1 MB (`body-too-large`)"}
                )
            for status, response in responses.items():
                if str(status).startswith(("4", "5")):
                    response["content"] = content
                    if response.get("description") == "Validation Error":
                        response["description"] = (
                            "The request is invalid (`invalid-request`) or refused (see `type`)"
                        )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    if "ProblemDetail" not in schemas:
        schemas["ProblemDetail"] = ProblemDetail.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )


def amend_openapi(app: FastAPI, *edits: Callable[[dict[str, Any]], None]) -> None:
    """Apply `edits` to the OpenAPI document FastAPI generates, once, when it is first asked."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = app.openapi_schema
        if document is None:
            document = build()
            for edit in edits:
                edit(document)
            app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


MAX_BODY_BYTES = 1_000_000
"""The largest request body the API reads; an order or a deposit is a few hundred bytes."""


class BodyLimit:
    """Refuses a request body over MAX_BODY_BYTES with 413 before reading it all."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "type": "/problems/body-too-large",
                "title": problem_title("body-too-large"),
                "status": 413,
                "detail": f"请求体超过 {self.limit} 字节 the request body is over "
                f"{self.limit} bytes",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    """A streamed body went over the limit."""


def duplicate_key(text: str | bytes) -> str | None:
    """The first key some object of the JSON `text` names twice; None if none does, or if
    `text` is not JSON at all (the reader of the JSON answers that)."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, value in pairs:
            if key in found:
                raise _DuplicateKey(key)
            found[key] = value
        return found

    try:
        json.loads(text, object_pairs_hook=unique)
    except _DuplicateKey as duplicate:
        return duplicate.key
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
        return None
    return None


class _DuplicateKey(Exception):
    """An object of a JSON text names a key twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def duplicate_key_detail(key: str) -> str:
    """What a refusal of a JSON text with a repeated key says."""
    return (
        f"the key {key!r} appears twice in one object: JSON with a repeated key is refused, "
        "not read as its last value"
    )


def _is_json(content_type: bytes | None) -> bool:
    """True for the bodies FastAPI reads as JSON: no content type, application/json and
    application/*+json."""
    if not content_type:
        return True
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


class RefuseDuplicateKeys:
    """Refuses with 422 `duplicate-key` a JSON body in which an object names a key twice.

    A JSON reader keeps the last of `{"quantity": 1, "quantity": 2}` and another might keep the
    first: the API refuses the ambiguity rather than guess. Sits inside RefuseNul, which hands
    on the body in one message.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body, last = await _whole_body(receive)
        content_type = dict(scope.get("headers") or []).get(b"content-type")
        key = duplicate_key(body) if body and _is_json(content_type) else None
        if key is not None:
            detail = duplicate_key_detail(key)
            await problem_response(422, "duplicate-key", detail, {"key": key})(scope, receive, send)
            return
        await self.app(scope, _replaying(body, last, receive), send)


async def _whole_body(receive: Receive) -> tuple[bytes, Message]:
    """The request body read whole, and the last message read (the disconnect that cut the
    body short, if one did)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks), message


def _replaying(body: bytes, last: Message, receive: Receive) -> Receive:
    """A receive that hands the app the whole body as one message (or the disconnect that cut
    it short), then what comes next."""
    pending: list[Message] = [
        {"type": "http.request", "body": body, "more_body": False}
        if last["type"] == "http.request"
        else last
    ]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
"""A JSON escape of NUL (an odd run of backslashes, then u0000), not a literal backslash-u0000."""


class RefuseNul:
    """Refuses with 422 a request whose path, query or JSON body holds NUL (U+0000).

    PostgreSQL cannot store NUL in text or JSON, so such a string would fail deep inside (a
    500, or an event settlement could never store); no field of the API needs one. The body is
    read whole first (inside BodyLimit, so at most MAX_BODY_BYTES), then handed on.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        if "\x00" in scope.get("path", "") or b"\x00" in query or b"%00" in query:
            await self._refuse(send)
            return
        body, last = await _whole_body(receive)
        if _NUL_ESCAPE.search(body):
            await self._refuse(send)
            return
        await self.app(scope, _replaying(body, last, receive), send)

    async def _refuse(self, send: Send) -> None:
        response = problem_response(
            422, "invalid-request", "text in a request may not contain NUL (U+0000)"
        )
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await send({"type": "http.response.body", "body": response.body})
