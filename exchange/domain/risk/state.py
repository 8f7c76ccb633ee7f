"""What one risk partition knows, shared by the handlers of every family of commands, with
its snapshot and state hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from exchange.domain.accounts import Accounts
from exchange.domain.catalogue import Catalogue, ContractSpec, parse_symbol
from exchange.domain.enterprises import Application, Enterprise, VoucherPolicy
from exchange.domain.messages import (
    ApproveGrant,
    CreateProgramme,
    RejectApplication,
    RejectReason,
    RequestApplicationInfo,
)
from exchange.domain.operators import OperatorCommand, OperatorSeal


def own(_: str) -> bool:
    """Whose balances a decision moves: only the deciding partition's own accounts, which are
    all the accounts of the commands it decides; the exchange's ledger accounts (escrow, fees,
    external) are kept by settlement alone."""
    return True


@dataclass(frozen=True, slots=True)
class AccountLimits:
    """What an operator allows one account's open orders to add up to (None: no limit)."""

    max_open_quantity: int | None
    max_open_notional: int | None


@dataclass(slots=True)
class RiskState:
    """The state of the accounts of one risk partition: what every handler reads and moves."""

    catalogue: Catalogue
    seal: OperatorSeal | None
    """Verifies operator commands; without one, every operator command is refused."""
    partitions: int
    """How many commands partitions share the exchange's money ceiling, each its part."""
    accounts: Accounts
    money_in: int = 0
    """Fen this partition's decisions brought into the exchange, net (`money_brought_in`)."""
    delisted: dict[str, str] = field(default_factory=dict)
    """Contracts operators delisted, with who did it and why (for the rejection)."""
    operator_listed: set[str] = field(default_factory=set)
    """Contracts operators listed that the catalogue does not list."""
    limits: dict[str, AccountLimits] = field(default_factory=dict)
    order_ids: dict[str, str] = field(default_factory=dict)
    """Every order accepted, by the exchange's id (`exchange_order_id`), with the account
    that placed it: a closed order of the account is then told apart from an id it never
    used (`order_not_open`). Orders accepted before ids were scoped by account are here by
    the id they were sent with, their exchange id then."""
    deposit_ids: set[str] = field(default_factory=set)
    """`account/deposit_id` of the deposits credited (bare ids: credited before deposit
    ids were scoped by account)."""
    request_ids: set[str] = field(default_factory=set)
    """`request_key` of the withdrawals and programme commands decided."""
    enterprises: dict[str, Enterprise] = field(default_factory=dict)
    """Every registered enterprise, by account: the registry's partition decides them, every
    other partition learns of them from matching."""
    voucher_policy: VoucherPolicy | None = None
    """The operator's voucher policy (None: the market rules')."""
    applications: dict[str, Application] = field(default_factory=dict)
    """Applications for grants of the programmes this partition owns, by `PROGRAMME/ID`."""

    def policy(self) -> VoucherPolicy:
        """The voucher policy in force."""
        return self.voucher_policy or VoucherPolicy.default(self.catalogue.rules)

    def holder_of(self, uscc: str) -> str | None:
        """The account that registered a unified social credit code, if any."""
        return next((e.account_id for e in self.enterprises.values() if e.uscc == uscc), None)

    @classmethod
    def empty(cls, catalogue: Catalogue, seal: OperatorSeal | None, partitions: int) -> RiskState:
        """The state of a partition that has decided nothing yet."""
        return cls(catalogue, seal, partitions, Accounts(catalogue.rules, decides_concessions=True))

    def listed(self, symbol: str, at_ms: int) -> ContractSpec | None:
        """The contract if it is listed at log time `at_ms`: by the catalogue and not delisted,
        or listed by an operator and not yet at its gate closure."""
        if symbol in self.delisted:
            return None
        spec = self.catalogue.listed(symbol, at_ms)
        if spec is None and symbol in self.operator_listed:
            spec = parse_symbol(symbol)
            if at_ms >= self.catalogue.retires_at(spec):
                return None
        return spec

    def not_listed(self, symbol: str, at_ms: int) -> tuple[RejectReason, str]:
        """Why `listed` is None for `symbol`."""
        why = self.delisted.get(symbol)
        if why is not None:
            return RejectReason.CONTRACT_DELISTED, why
        if self.strip_cascaded(symbol, at_ms):
            return RejectReason.CONTRACT_CLOSED, self.catalogue.why_not_listed(symbol, at_ms)
        return RejectReason.UNKNOWN_CONTRACT, self.catalogue.why_not_listed(symbol, at_ms)

    def strip_cascaded(self, symbol: str, at_ms: int) -> bool:
        """Whether `symbol` is a strip of the catalogue whose cascade time has come: it is
        retired, its positions are in its hourly contracts."""
        spec = self.catalogue.get(symbol)
        return spec is not None and spec.is_strip and at_ms >= self.catalogue.cascades_at(spec)

    def not_operator(self, command: OperatorCommand) -> str:
        """Why the command is not an operator's or programme administrator's ("" if its
        signature verifies)."""
        sender = (
            command.admin_id
            if isinstance(
                command,
                CreateProgramme | ApproveGrant | RequestApplicationInfo | RejectApplication,
            )
            else command.operator_id
        )
        if self.seal is None:
            return "no operator key is configured: operator commands are refused"
        if not self.seal.verify(command):
            return (
                f"{command.type} from {sender!r} is not signed with the operator key: only the "
                "API may send operators' and programme administrators' commands"
            )
        return ""

    def state_hash(self) -> str:
        """SHA-256 of the whole state in a canonical form."""
        hasher = hashlib.sha256()
        self.accounts.digest(hasher)
        for order_id, owner in sorted(self.order_ids.items()):
            # An owner restored from a snapshot of before owners were kept is "": such an
            # order hashes as it did then, so that snapshot still verifies.
            line = f"id|{order_id}|{owner}\n" if owner else f"id|{order_id}\n"
            hasher.update(line.encode())
        for deposit_id in sorted(self.deposit_ids):
            hasher.update(f"d|{deposit_id}\n".encode())
        for request_id in sorted(self.request_ids):
            hasher.update(f"q|{request_id}\n".encode())
        for symbol in sorted(self.delisted):
            hasher.update(f"delisted|{symbol}|{self.delisted[symbol]}\n".encode())
        for symbol in sorted(self.operator_listed):
            hasher.update(f"listed|{symbol}\n".encode())
        for account_id in sorted(self.limits):
            limits = self.limits[account_id]
            hasher.update(
                f"limits|{account_id}|{limits.max_open_quantity}|{limits.max_open_notional}\n".encode()
            )
        hasher.update(f"money_in|{self.money_in}\n".encode())
        # Written only when there are any, so a state without them hashes as it did before.
        for account_id in sorted(self.enterprises):
            hasher.update(f"e|{self.enterprises[account_id].entry()}\n".encode())
        for key in sorted(self.applications):
            hasher.update(f"app|{self.applications[key].entry()}\n".encode())
        if self.voucher_policy is not None:
            hasher.update(f"policy|{self.voucher_policy.entry()}\n".encode())
        return hasher.hexdigest()

    def snapshot(self) -> dict[str, Any]:
        """The whole state, JSON-ready."""
        return {
            "accounts": self.accounts.snapshot(),
            "order_ids": dict(sorted(self.order_ids.items())),
            "deposit_ids": sorted(self.deposit_ids),
            "request_ids": sorted(self.request_ids),
            "delisted": dict(sorted(self.delisted.items())),
            "operator_listed": sorted(self.operator_listed),
            "limits": {
                account_id: [limits.max_open_quantity, limits.max_open_notional]
                for account_id, limits in sorted(self.limits.items())
            },
            "money_in": self.money_in,
            "enterprises": [e.entry() for _, e in sorted(self.enterprises.items())],
            "applications": [a.entry() for _, a in sorted(self.applications.items())],
            "voucher_policy": None if self.voucher_policy is None else self.voucher_policy.entry(),
        }

    @classmethod
    def restore(
        cls,
        catalogue: Catalogue,
        data: dict[str, Any],
        seal: OperatorSeal | None,
        partitions: int,
    ) -> RiskState:
        """The state a snapshot describes."""
        order_ids = data["order_ids"]
        return cls(
            catalogue,
            seal,
            partitions,
            Accounts.restore(data["accounts"], catalogue.rules, decides_concessions=True),
            # A snapshot from before the ceiling has none: its hash then differs (the hash
            # always counts the money brought in), and the stage replays its partition from
            # the start.
            money_in=data.get("money_in", 0),
            delisted=dict(data.get("delisted", {})),
            operator_listed=set(data.get("operator_listed", [])),
            limits={
                account_id: AccountLimits(quantity, notional)
                for account_id, (quantity, notional) in data.get("limits", {}).items()
            },
            # A snapshot of before owners were kept lists the ids alone.
            order_ids=(
                dict(order_ids) if isinstance(order_ids, dict) else dict.fromkeys(order_ids, "")
            ),
            deposit_ids=set(data["deposit_ids"]),
            request_ids=set(data.get("request_ids", [])),
            enterprises={e[0]: Enterprise(*e) for e in data.get("enterprises", [])},
            applications={f"{a[1]}/{a[0]}": Application(*a) for a in data.get("applications", [])},
            voucher_policy=_policy_from(data.get("voucher_policy")),
        )


def _policy_from(entry: list[Any] | None) -> VoucherPolicy | None:
    if entry is None:
        return None
    max_rate_bps, max_cap, kinds, cities = entry
    return VoucherPolicy(max_rate_bps, max_cap, tuple(kinds), tuple(cities))
