"""A participant's synchronous HTTP, every answer checked against the documentation."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

PROBLEM = "application/problem+json"


class Documented:
    """The statuses `/openapi.json` documents for each operation."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._operations: list[tuple[str, re.Pattern[str], frozenset[int]]] = []
        for path, item in document["paths"].items():
            pattern = re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", path) + "$")
            for method, operation in item.items():
                statuses = frozenset(int(s) for s in operation.get("responses", {}) if s.isdigit())
                self._operations.append((method.upper(), pattern, statuses))
        # Exact paths before templated ones: /v1/orders before /v1/orders/{order_id}.
        self._operations.sort(key=lambda op: op[1].pattern.count("[^/]+"))

    def statuses(self, method: str, path: str) -> frozenset[int] | None:
        """The documented statuses of the operation serving `path`, or None if none does."""
        for documented_method, pattern, statuses in self._operations:
            if documented_method == method and pattern.match(path):
                return statuses
        return None


@dataclass
class Answer:
    """One HTTP answer, already checked against the documentation."""

    status: int
    body: Any
    headers: httpx.Headers

    @property
    def problem(self) -> str | None:
        """The problem code of an error answer (`/problems/CODE`), else None."""
        if self.status < 400 or not isinstance(self.body, dict):
            return None
        return str(self.body.get("type", "")).removeprefix("/problems/")

    @property
    def replayed(self) -> bool:
        """The answer is a kept first answer given back to a retry."""
        return self.headers.get("idempotent-replayed") == "true"


class Participant:
    """Sends requests with one API key (or none) and checks each answer as it comes."""

    def __init__(self, base_url: str, documented: Documented, statuses: Counter[int]) -> None:
        self.base_url = base_url
        self.documented = documented
        self.statuses = statuses
        self.client = httpx.Client(base_url=base_url, timeout=60.0)

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()

    def request(
        self,
        method: str,
        path: str,
        key: str | None,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """Send one request; fail unless the answer is documented, and a problem on error."""
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        response = self.client.request(method, path, json=json, params=params, headers=sent)
        self.statuses[response.status_code] += 1
        where = f"{method} {path} {json!r} -> {response.status_code} {response.text[:500]}"
        assert response.status_code < 500, f"server error: {where}"
        documented = self.documented.statuses(method, path)
        assert documented is not None, f"undocumented operation: {where}"
        assert response.status_code in documented, (
            f"status {response.status_code} is not documented ({sorted(documented)}): {where}"
        )
        body: Any = None
        if response.status_code != 204 and response.content:
            content_type = response.headers.get("content-type", "")
            if response.status_code >= 400:
                assert content_type.startswith(PROBLEM), f"an error that is no problem: {where}"
            body = response.json() if "json" in content_type else response.text
        if response.status_code >= 400:
            assert isinstance(body, dict), f"an error without a body: {where}"
            assert isinstance(body.get("type"), str), f"a problem without a type: {where}"
            assert body.get("status") == response.status_code, f"problem status: {where}"
            assert isinstance(body.get("detail"), str), f"a problem without detail: {where}"
        return Answer(response.status_code, body, response.headers)
