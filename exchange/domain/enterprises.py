"""Enterprises' registered identities, their applications for voucher grants, and the
platform's voucher policy: what the risk stage decides programmes and applications against."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from exchange.domain.catalogue import CHINA_STANDARD_TIME, MarketRules

REGISTRY_KEY = "registry:enterprises"
"""The commands-topic key of registrations and the voucher policy: one partition decides them
all, so a unified social credit code is held by one account at most."""

OPEN = ("pending", "info_requested")
"""Statuses of an application still waiting for the administrator or the applicant."""


@dataclass(frozen=True, slots=True)
class Enterprise:
    """The enterprise an account registered."""

    account_id: str
    name: str
    uscc: str
    kind: str
    city: str
    registered_ts: int

    def entry(self) -> list[Any]:
        """JSON-ready, in a fixed order (snapshots and the state hash)."""
        return [self.account_id, self.name, self.uscc, self.kind, self.city, self.registered_ts]


@dataclass(slots=True)
class Application:
    """An enterprise's application for a grant, kept by the programme's partition."""

    application_id: str
    programme_id: str
    account_id: str
    amount: int
    kind: str
    city: str
    status: str = "pending"
    """pending, info_requested, approved or rejected."""
    uscc: str = ""
    """The enterprise's unified social credit code when it applied: duplicates and the cap per
    enterprise count by it, whichever account the code is registered to."""

    def entry(self) -> list[Any]:
        """JSON-ready, in a fixed order (snapshots and the state hash)."""
        return [
            self.application_id, self.programme_id, self.account_id, self.amount, self.kind,
            self.city, self.status, self.uscc,
        ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class VoucherPolicy:
    """The platform's ceilings on every programme."""

    max_rate_bps: int
    max_cap_per_enterprise: int
    kinds: tuple[str, ...]
    cities: tuple[str, ...] = field(default=())
    """Cities programmes may cover (empty: any)."""

    @classmethod
    def default(cls, rules: MarketRules) -> VoucherPolicy:
        """The policy of the market rules, until an operator sets one."""
        return cls(
            rules.voucher_max_rate_bps,
            rules.voucher_max_cap_per_enterprise,
            rules.voucher_kinds,
            rules.voucher_cities,
        )

    def entry(self) -> list[Any]:
        """JSON-ready, in a fixed order (snapshots and the state hash)."""
        return [self.max_rate_bps, self.max_cap_per_enterprise, list(self.kinds), list(self.cities)]

    def excess(
        self, rate_bps: int, cap_per_enterprise: int, kinds: list[str], cities: list[str]
    ) -> str:
        """How a programme's terms go past the policy ("" if they do not)."""
        if rate_bps > self.max_rate_bps:
            return (
                f"rate_bps {rate_bps} is above the highest voucher share of {self.max_rate_bps} bps"
            )
        if cap_per_enterprise > self.max_cap_per_enterprise:
            return (
                f"cap_per_enterprise {cap_per_enterprise} fen is above the highest of "
                f"{self.max_cap_per_enterprise} fen"
            )
        if excluded := [k for k in kinds if k not in self.kinds]:
            return (
                f"kind {excluded[0]!r} is not eligible: the policy covers {', '.join(self.kinds)}"
            )
        if self.cities and not cities:
            return f"a programme must name its cities: the policy covers {', '.join(self.cities)}"
        if self.cities and (outside := [c for c in cities if c not in self.cities]):
            return (
                f"city {outside[0]!r} is not eligible: the policy covers {', '.join(self.cities)}"
            )
        return ""


def cst_year(at_ms: int) -> int:
    """The calendar year, in China Standard Time, of log time `at_ms`."""
    return datetime.fromtimestamp(at_ms // 1000, CHINA_STANDARD_TIME).year
