"""The risk stage: validates commands and holds funds or capacity before anything trades.

Pure and deterministic: it is a function of the commands topic alone (participants' commands
and the matching stage's fills and cancels fed back into the same partitions), so the order in
which it saw them is recorded by the log itself and a replay decides exactly the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, get_args

from exchange.domain import accounts as money
from exchange.domain.accounts import BPS, Accounts, OpenOrder, Owns
from exchange.domain.catalogue import (
    REGIONS,
    RESOURCE_CLASSES,
    Catalogue,
    ContractSpec,
    SymbolError,
    parse_family,
    parse_symbol,
    to_utc_ms,
)
from exchange.domain.messages import (
    ALL_CONTRACTS,
    MARKET_WIDE_ACTIONS,
    OPERATOR_ACTIONS,
    AccountLimitsSet,
    AmendOrder,
    AmendRejected,
    AmendRequested,
    ApproveGrant,
    Backing,
    BlockAccepted,
    CancelAllOrders,
    CancelAllRequested,
    CancelOrder,
    CancelRejected,
    CancelRequested,
    CapacityDeposited,
    CapacityWithdrawn,
    Command,
    CommandRejected,
    ConcessionGranted,
    ControlMarket,
    CreateProgramme,
    DeliveryRequested,
    DeliverySettled,
    DepositCapacity,
    DepositFunds,
    DepositRejected,
    DisputeDelivery,
    Event,
    EventStamp,
    FeeConceded,
    FundsDeposited,
    FundsWithdrawn,
    GrantApproved,
    GrantConcession,
    ListingChanged,
    MarketControlRejected,
    MarketControlRequested,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderReduced,
    OrderRejected,
    PlaceBlockOrder,
    PlaceOrder,
    ProgrammeCreated,
    RecallCapacity,
    RejectReason,
    ReportMetering,
    RequestRejected,
    ResolveDispute,
    SetAccountLimits,
    TradeExecuted,
    WithdrawCapacity,
    WithdrawFunds,
    exchange_order_id,
    scoped,
)
from exchange.domain.operators import OperatorCommand, OperatorSeal

Outcome = (
    TradeExecuted
    | OrderCancelled
    | OrderAmended
    | OrderReduced
    | AmendRejected
    | DeliverySettled
    | GrantApproved
    | ListingChanged
)
"""What matching feeds back to the risk stage: everything that moves a hold or a balance, and
the listings operators change (to every partition)."""
OUTCOME_TYPES = get_args(Outcome)

Request = (
    WithdrawFunds
    | WithdrawCapacity
    | ReportMetering
    | DisputeDelivery
    | ResolveDispute
    | RecallCapacity
    | CreateProgramme
    | ApproveGrant
    | GrantConcession
)
"""Commands answered with a `RequestRejected` when refused."""


def _own(_: str) -> bool:
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
class _Terms:
    """What acceptance decides about an order beyond what it asked for."""

    price: int
    backing: Backing = "capacity"
    bond_per_unit: int = 0
    voucher_reserved: int = 0
    voucher_rate_bps: int = 0
    voucher_related: list[str] = field(default_factory=list)


class RiskStage:
    """Accepts or rejects each command of the accounts in its partitions."""

    def __init__(
        self, catalogue: Catalogue, seal: OperatorSeal | None = None, partitions: int = 1
    ) -> None:
        self.catalogue = catalogue
        self.seal = seal
        """Verifies operator commands; without one, every operator command is refused."""
        self.partitions = partitions
        """How many commands partitions share the exchange's money ceiling, each its part."""
        self.money_in = 0
        """Fen this partition's decisions brought into the exchange, net (`money_brought_in`)."""
        self.accounts = Accounts(catalogue.rules, decides_concessions=True)
        self.delisted: dict[str, str] = {}
        """Contracts operators delisted, with who did it and why (for the rejection)."""
        self.operator_listed: set[str] = set()
        """Contracts operators listed that the catalogue does not list."""
        self.limits: dict[str, AccountLimits] = {}
        self._order_ids: dict[str, str] = {}
        """Every order accepted, by the exchange's id (`exchange_order_id`), with the account
        that placed it: a closed order of the account is then told apart from an id it never
        used (`order_not_open`). Orders accepted before ids were scoped by account are here by
        the id they were sent with, their exchange id then."""
        self._deposit_ids: set[str] = set()
        """`account/deposit_id` of the deposits credited (bare ids: credited before deposit
        ids were scoped by account)."""
        self._request_ids: set[str] = set()
        """`request_key` of the withdrawals and programme commands decided."""

    def handle(self, command: Command, stamp: EventStamp) -> Event:
        """Decide one command; the returned event goes to the orders topic."""
        decided = self._decide(command, stamp)
        self.money_in += money.money_brought_in(decided)
        return decided

    def _decide(self, command: Command, stamp: EventStamp) -> Event:
        if isinstance(command, PlaceOrder):
            return self._place(command, stamp)
        if isinstance(command, CancelOrder):
            return self._cancel(command, stamp)
        if isinstance(command, AmendOrder):
            return self._amend(command, stamp)
        if isinstance(command, ControlMarket):
            return self._control(command, stamp)
        if isinstance(command, CancelAllOrders):
            return self._cancel_all(command, stamp)
        if isinstance(command, PlaceBlockOrder):
            return self._block(command, stamp)
        if isinstance(command, DepositFunds | DepositCapacity):
            return self._deposit(command, stamp)
        if isinstance(command, SetAccountLimits):
            return self._set_limits(command, stamp)
        return self._request(command, stamp)

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

    def _not_listed(self, symbol: str, at_ms: int) -> tuple[RejectReason, str]:
        """Why `listed` is None for `symbol`."""
        why = self.delisted.get(symbol)
        if why is not None:
            return RejectReason.CONTRACT_DELISTED, why
        return RejectReason.UNKNOWN_CONTRACT, self.catalogue.why_not_listed(symbol, at_ms)

    def _over_limit(self, account_id: str, quantity: int, notional: int) -> str:
        """Why adding `quantity` units and `notional` fen of open orders would break the
        account's limits ("" if it would not)."""
        limits = self.limits.get(account_id)
        if limits is None:
            return ""
        # Only accounts an operator limited pay for this scan of the open orders.
        mine = [o for o in self.accounts.open_orders.values() if o.account_id == account_id]
        open_quantity = quantity + sum(o.remaining for o in mine)
        open_notional = notional + sum(o.price * o.remaining for o in mine)
        if limits.max_open_quantity is not None and open_quantity > limits.max_open_quantity:
            return (
                f"open orders of {account_id} would come to {open_quantity} units, over its "
                f"limit of {limits.max_open_quantity}"
            )
        if limits.max_open_notional is not None and open_notional > limits.max_open_notional:
            return (
                f"open orders of {account_id} would come to {open_notional} fen, over its "
                f"limit of {limits.max_open_notional}"
            )
        return ""

    def _past_ceiling(self, command: Command, order: money.OpenOrder | None = None) -> str:
        """Why accepting `command` would take an amount past the exchange's ceiling
        (`accounts.CEILING`; "" if it would not): the money brought into the exchange (each
        commands partition may bring in its equal share), an account's capacity in one
        contract, or an order's price x quantity (for an amend, of `order` as amended)."""
        if isinstance(command, DepositFunds | CreateProgramme | GrantConcession):
            if isinstance(command, DepositFunds):
                what, amount = "a deposit", command.amount
            else:
                kind = "programme" if isinstance(command, CreateProgramme) else "concession"
                what, amount = f"a {kind} budget", command.budget
            total = self.money_in + amount
            share = money.CEILING // self.partitions
            if total > share:
                return (
                    f"{what} of {amount} fen would take the money brought into the exchange "
                    f"through this risk partition to {total} fen, past its share of the "
                    f"exchange's ceiling ({share} of {money.CEILING} fen, over {self.partitions} "
                    "partitions)"
                )
        elif isinstance(command, DepositCapacity):
            held = self.accounts.capacity.get((command.account_id, command.symbol))
            total = command.quantity + (0 if held is None else held.available + held.held)
            if total > money.CEILING:
                return (
                    f"account {command.account_id} would hold {total} units of "
                    f"{command.symbol}, past the ceiling of {money.CEILING} units in one contract"
                )
        elif isinstance(command, PlaceOrder | PlaceBlockOrder | AmendOrder):
            if isinstance(command, AmendOrder):
                # What the amend leaves unchanged stays the order's.
                price = command.price or (0 if order is None else order.price)
                units = command.quantity or (0 if order is None else order.remaining)
            else:
                price = command.price
                units = command.quantity * (
                    len(command.symbols) if isinstance(command, PlaceBlockOrder) else 1
                )
            if price * units > money.CEILING:
                return (
                    f"an order of {units} units at {price} fen comes to {price * units} fen, "
                    f"past the ceiling of {money.CEILING} fen for one order"
                )
        return ""

    def _not_operator(self, command: OperatorCommand) -> str:
        """Why the command is not an operator's or programme administrator's ("" if its
        signature verifies)."""
        sender = (
            command.admin_id
            if isinstance(command, CreateProgramme | ApproveGrant)
            else (command.operator_id)
        )
        if self.seal is None:
            return "no operator key is configured: operator commands are refused"
        if not self.seal.verify(command):
            return (
                f"{command.type} from {sender!r} is not signed with the operator key: only the "
                "API may send operators' and programme administrators' commands"
            )
        return ""

    def _set_limits(self, command: SetAccountLimits, stamp: EventStamp) -> Event:
        forged = self._not_operator(command)
        if forged:
            return RequestRejected(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                request=command.type,
                request_id=command.account_id,
                account_id=command.operator_id,
                reason=RejectReason.NOT_OPERATOR,
                message=forged,
            )
        limits = AccountLimits(command.max_open_quantity, command.max_open_notional)
        if limits == AccountLimits(None, None):
            self.limits.pop(command.account_id, None)
        else:
            self.limits[command.account_id] = limits
        return AccountLimitsSet(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            operator_id=command.operator_id,
            account_id=command.account_id,
            max_open_quantity=command.max_open_quantity,
            max_open_notional=command.max_open_notional,
            reason=command.reason,
        )

    def _place(self, command: PlaceOrder, stamp: EventStamp) -> Event:
        order_id = exchange_order_id(command.account_id, command.order_id)
        terms, reason, message = self._check_order(command, order_id, stamp.ts)
        if reason is not None:
            return OrderRejected(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                order_id=order_id,
                account_id=command.account_id,
                symbol=command.symbol,
                side=command.side,
                price=command.price,
                quantity=command.quantity,
                client_order_id=command.client_order_id,
                reason=reason,
                message=message,
            )
        self._order_ids[order_id] = command.account_id
        accepted = OrderAccepted(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id=order_id,
            account_id=command.account_id,
            symbol=command.symbol,
            side=command.side,
            price=terms.price,
            quantity=command.quantity,
            client_order_id=command.client_order_id,
            time_in_force=command.time_in_force,
            expire_at=command.expire_at,
            order_type=command.order_type,
            min_quantity=command.min_quantity,
            all_or_none=command.all_or_none,
            post_only=command.post_only,
            stp_group=_own_group(command),
            stp_mode=command.stp_mode,
            backing=terms.backing,
            bond_per_unit=terms.bond_per_unit,
            voucher=command.voucher,
            voucher_reserved=terms.voucher_reserved,
            voucher_rate_bps=terms.voucher_rate_bps,
            voucher_related=terms.voucher_related,
            net_price=command.price if command.limit_basis == "net" else None,
        )
        self.accounts.apply(accepted, _own)
        return accepted

    def _check_order(
        self, command: PlaceOrder, order_id: str, at_ms: int
    ) -> tuple[_Terms, RejectReason | None, str]:
        terms = _Terms(command.price)
        contract = self.listed(command.symbol, at_ms)
        if contract is None:
            return (terms, *self._not_listed(command.symbol, at_ms))
        if command.price % contract.tick_size:
            return (
                terms,
                RejectReason.PRICE_NOT_ON_TICK,
                f"price {command.price} is not a multiple of the tick size "
                f"{contract.tick_size} fen of {command.symbol}",
            )
        if self._order_id_used(order_id, command.account_id, command.order_id):
            return (
                terms,
                RejectReason.DUPLICATE_ORDER_ID,
                f"order id {command.order_id!r} was used before by {command.account_id}",
            )
        if past := self._past_ceiling(command):
            return terms, RejectReason.CEILING_EXCEEDED, past
        over = self._over_limit(
            command.account_id, command.quantity, command.price * command.quantity
        )
        if over:
            return terms, RejectReason.ACCOUNT_LIMIT_EXCEEDED, over
        if command.side == "sell":
            if command.voucher is not None or command.limit_basis == "net":
                return terms, RejectReason.NOT_ELIGIBLE, "vouchers and net limits are for buys"
            return self._check_sell(command, terms)
        if command.voucher is None and command.limit_basis == "net":
            return terms, RejectReason.NOT_ELIGIBLE, "a net price limit needs a voucher programme"
        if command.voucher is not None:
            reason, message = self._reserve_voucher(command, at_ms, terms, contract.tick_size)
            if reason is not None:
                return terms, reason, message
        accounts = self.accounts
        if accounts.shortfall(
            command.account_id, command.symbol, "buy", terms.price, command.quantity
        ):
            needed = accounts.buy_hold(command.symbol, terms.price, command.quantity)
            available = accounts.available_cash(command.account_id)
            return (
                terms,
                RejectReason.INSUFFICIENT_FUNDS,
                f"order needs {needed} fen, account {command.account_id} has {available} fen "
                "available",
            )
        return terms, None, ""

    def _check_sell(
        self, command: PlaceOrder, terms: _Terms
    ) -> tuple[_Terms, RejectReason | None, str]:
        """Back a sell by deposited capacity (with its bond) or else by an entitlement."""
        accounts = self.accounts
        account, symbol, quantity = command.account_id, command.symbol, command.quantity
        if not accounts.shortfall(account, symbol, "sell", command.price, quantity):
            terms.bond_per_unit = accounts.bond_per_unit(command.price)
            bond = terms.bond_per_unit * quantity
            available = accounts.available_cash(account)
            if bond > available:
                return (
                    terms,
                    RejectReason.INSUFFICIENT_FUNDS,
                    f"selling {quantity} units of deposited capacity needs a delivery bond of "
                    f"{bond} fen, account {account} has {available} fen available",
                )
            return terms, None, ""
        entitlement = accounts.available_entitlement(account, symbol)
        if entitlement >= quantity:
            terms.backing = "entitlement"
            return terms, None, ""
        capacity = accounts.available_capacity(account, symbol)
        return (
            terms,
            RejectReason.INSUFFICIENT_CAPACITY,
            f"order sells {quantity} units of {symbol}, account {account} has {capacity} "
            f"available of deposited capacity and {entitlement} of entitlements to resell",
        )

    def _reserve_voucher(
        self, command: PlaceOrder, ts: int, terms: _Terms, tick: int
    ) -> tuple[RejectReason | None, str]:
        """The voucher part to reserve, and for a net limit the gross limit it allows."""
        assert command.voucher is not None
        grant = self.accounts.grants.get((command.voucher, command.account_id))
        if grant is None:
            return (
                RejectReason.NOT_ELIGIBLE,
                f"account {command.account_id} holds no grant of programme {command.voucher!r}",
            )
        why = grant.eligible(command.symbol, ts)
        if why:
            return RejectReason.NOT_ELIGIBLE, why
        if command.order_type != "limit":
            return RejectReason.NOT_ELIGIBLE, "a voucher applies to limit orders only"
        quantity = command.quantity
        price = command.price
        if command.limit_basis == "net":
            # The highest gross price on the tick whose cost after the voucher stays within
            # the net limit: cost less voucher only grows with the price, so bisect.
            low, high = command.price // tick, command.price * BPS // tick + 1
            while high - low > 1:
                middle = (low + high) // 2
                gross = middle * tick
                if (
                    gross * quantity - grant.voucher_for(gross * quantity)
                    <= command.price * quantity
                ):
                    low = middle
                else:
                    high = middle
            price = low * tick
        terms.price = price
        terms.voucher_reserved = grant.voucher_for(price * quantity)
        terms.voucher_rate_bps = grant.rate_bps
        terms.voucher_related = list(grant.related)
        return None, ""

    def _order_id_used(self, order_id: str, account_id: str, sent_as: str) -> bool:
        """Whether the account used the order id it sent as `sent_as` (the exchange's id
        `order_id`) before; also as the id itself, before ids were scoped by account (by this
        account, or by one a snapshot of that time did not record)."""
        return order_id in self._order_ids or self._order_ids.get(sent_as) in (account_id, "")

    def _open_order(self, account_id: str, order_id: str) -> OpenOrder | None:
        """The account's open order that a cancel or amend names, by the exchange's id or by
        the id the account placed it as."""
        orders = self.accounts.open_orders
        for candidate in (order_id, exchange_order_id(account_id, order_id)):
            order = orders.get(candidate)
            if order is not None and order.account_id == account_id:
                return order
        return None

    def _not_open(self, order_id: str, account_id: str) -> tuple[RejectReason, str]:
        """Why the account cannot change `order_id`, which names no open order of its own.

        Another account's order is refused as `not_order_owner` with the words of an unknown
        one, so the API can answer both alike and reveal nothing.
        """
        order = self.accounts.open_orders.get(order_id)
        owner = order.account_id if order is not None else self._order_ids.get(order_id)
        if owner == account_id or exchange_order_id(account_id, order_id) in self._order_ids:
            return (
                RejectReason.ORDER_NOT_OPEN,
                f"order {order_id!r} of account {account_id} has already filled, been "
                "cancelled or expired",
            )
        # No owner: never accepted, or accepted before owners were kept (see `restore`).
        reason = RejectReason.NOT_ORDER_OWNER if owner else RejectReason.UNKNOWN_ORDER
        return reason, f"account {account_id} has no open order {order_id!r}"

    def _cancel(self, command: CancelOrder, stamp: EventStamp) -> Event:
        order = self._open_order(command.account_id, command.order_id)
        if order is None:
            reason, message = self._not_open(command.order_id, command.account_id)
            return CancelRejected(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                order_id=command.order_id,
                account_id=command.account_id,
                reason=reason,
                message=message,
            )
        return CancelRequested(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id=order.order_id,
            account_id=order.account_id,
            # A block is routed by its first hour (its `symbol` is the family).
            symbol=order.hours[0] if order.hours else order.symbol,
        )

    def _amend(self, command: AmendOrder, stamp: EventStamp) -> Event:
        order = self._open_order(command.account_id, command.order_id)
        reason: RejectReason | None = None
        message = ""
        if order is None:
            reason, message = self._not_open(command.order_id, command.account_id)
        elif order.hours:
            reason = RejectReason.NOT_AMENDABLE
            message = "a block order cannot be amended: cancel it and place another"
        elif order.voucher is not None:
            reason = RejectReason.NOT_AMENDABLE
            message = "an order with a voucher reservation cannot be amended: cancel and replace it"
        elif order.bond_per_unit and (command.quantity or 0) > order.remaining:
            reason = RejectReason.NOT_AMENDABLE
            message = "a bonded sell cannot grow: place another order for the extra quantity"
        else:
            contract = self.catalogue.get(order.symbol)
            price = command.price or order.price
            quantity = command.quantity or order.remaining
            accounts = self.accounts
            needed = accounts.own_hold(order, price, quantity) - accounts.own_hold(
                order, order.price, order.remaining
            )
            extra = max(0, needed)
            over = self._over_limit(
                order.account_id,
                quantity - order.remaining,
                price * quantity - order.price * order.remaining,
            )
            if contract is not None and price % contract.tick_size:
                reason = RejectReason.PRICE_NOT_ON_TICK
                message = f"price {price} is not a multiple of the tick size {contract.tick_size}"
            elif past := self._past_ceiling(command, order):
                reason = RejectReason.CEILING_EXCEEDED
                message = past
            elif over:
                reason = RejectReason.ACCOUNT_LIMIT_EXCEEDED
                message = over
            elif extra and order.side == "buy":
                available = accounts.available_cash(order.account_id)
                if extra > available:
                    reason = RejectReason.INSUFFICIENT_FUNDS
                    message = f"amend needs {extra} fen more, {available} fen available"
            elif extra and order.backing == "entitlement":
                # An entitlement-backed sell holds no capacity: it cannot grow.
                reason = RejectReason.NOT_AMENDABLE
                message = "a resale cannot grow: place another order for the extra quantity"
            elif extra:
                available = accounts.available_capacity(order.account_id, order.symbol)
                if extra > available:
                    reason = RejectReason.INSUFFICIENT_CAPACITY
                    message = f"amend needs {extra} units more, {available} available"
        if reason is not None or order is None:
            return AmendRejected(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                order_id=command.order_id if order is None else order.order_id,
                account_id=command.account_id,
                reason=reason or RejectReason.UNKNOWN_ORDER,
                message=message,
            )
        requested = AmendRequested(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id=order.order_id,
            account_id=order.account_id,
            symbol=order.symbol,
            price=command.price,
            quantity=command.quantity,
            extra_hold=extra,
        )
        self.accounts.apply(requested, _own)
        return requested

    def _block(self, command: PlaceBlockOrder, stamp: EventStamp) -> Event:
        order_id = exchange_order_id(command.account_id, command.order_id)
        reason, message = self._check_block(command, order_id, stamp.ts)
        if reason is not None:
            return OrderRejected(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                order_id=order_id,
                account_id=command.account_id,
                symbol=command.symbols[0],
                side=command.side,
                price=command.price,
                quantity=command.quantity * len(command.symbols),
                reason=reason,
                message=message,
            )
        self._order_ids[order_id] = command.account_id
        accepted = BlockAccepted(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id=order_id,
            account_id=command.account_id,
            symbol=command.symbols[0],
            family=command.symbols[0].rsplit(".", 1)[0],
            symbols=command.symbols,
            side=command.side,
            price=command.price,
            quantity=command.quantity,
            stp_group=_own_group(command),
            stp_mode=command.stp_mode,
        )
        self.accounts.apply(accepted, _own)
        return accepted

    def _check_block(
        self, command: PlaceBlockOrder, order_id: str, at_ms: int
    ) -> tuple[RejectReason | None, str]:
        specs = [self.listed(s, at_ms) for s in command.symbols]
        missing = [s for s, spec in zip(command.symbols, specs, strict=True) if spec is None]
        if missing:
            return self._not_listed(missing[0], at_ms)
        listed = [spec for spec in specs if spec is not None]
        first = listed[0]
        consecutive = all(
            spec.family == first.family
            and spec.delivery_start == first.delivery_start + timedelta(hours=i)
            for i, spec in enumerate(listed)
        )
        if not consecutive:
            return (
                RejectReason.INVALID_BLOCK,
                "a block's contracts must be consecutive delivery hours of one family",
            )
        if command.price % first.tick_size:
            return (
                RejectReason.PRICE_NOT_ON_TICK,
                f"price {command.price} is not a multiple of the tick size {first.tick_size}",
            )
        if self._order_id_used(order_id, command.account_id, command.order_id):
            return (
                RejectReason.DUPLICATE_ORDER_ID,
                f"order id {command.order_id!r} was used before by {command.account_id}",
            )
        units = command.quantity * len(listed)
        over = self._over_limit(command.account_id, units, command.price * units)
        if over:
            return RejectReason.ACCOUNT_LIMIT_EXCEEDED, over
        if past := self._past_ceiling(command):
            return RejectReason.CEILING_EXCEEDED, past
        if command.side == "buy":
            needed = self.accounts.buy_hold(
                command.symbols[0], command.price, command.quantity * len(listed)
            )
            available = self.accounts.available_cash(command.account_id)
            if needed > available:
                return (
                    RejectReason.INSUFFICIENT_FUNDS,
                    f"block needs {needed} fen, account has {available} fen available",
                )
            return None, ""
        for symbol in command.symbols:
            available = self.accounts.available_capacity(command.account_id, symbol)
            if command.quantity > available:
                return (
                    RejectReason.INSUFFICIENT_CAPACITY,
                    f"block sells {command.quantity} units of {symbol}, {available} available",
                )
        return None, ""

    def _cancel_all(self, command: CancelAllOrders, stamp: EventStamp) -> Event:
        symbols = sorted(
            {
                o.hours[0] if o.hours else o.symbol
                for o in self.accounts.open_orders.values()
                if o.account_id == command.account_id
            }
        )
        if not symbols:
            return CancelRejected(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                order_id="*",
                account_id=command.account_id,
                reason=RejectReason.ORDER_NOT_OPEN,
                message=f"account {command.account_id} has no open orders",
            )
        return CancelAllRequested(
            event_id=stamp.next_id(), ts=stamp.ts, account_id=command.account_id, symbols=symbols
        )

    def _control(self, command: ControlMarket, stamp: EventStamp) -> Event:
        reason, message = self._check_control(command, stamp.ts)
        if reason is not None:
            return MarketControlRejected(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                operator_id=command.operator_id,
                action=command.action,
                symbol=command.symbol,
                reason=reason,
                message=message,
            )
        return MarketControlRequested(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            operator_id=command.operator_id,
            action=command.action,
            symbol=command.symbol,
            at=command.at,
            symbols=command.symbols,
            reason=command.reason,
            band=command.band,
        )

    def _check_control(self, command: ControlMarket, at_ms: int) -> tuple[RejectReason | None, str]:
        action, symbol = command.action, command.symbol
        if action in OPERATOR_ACTIONS:
            forged = self._not_operator(command)
            if forged:
                return RejectReason.NOT_OPERATOR, forged
        if action in MARKET_WIDE_ACTIONS:
            if symbol != ALL_CONTRACTS:
                return RejectReason.MALFORMED, f"{action} acts on every contract: symbol must be *"
            return None, ""
        if action == "list":
            # Matching decides whether the contract can be (re-)listed: it knows its books.
            try:
                parse_symbol(symbol)
            except SymbolError as error:
                return RejectReason.UNKNOWN_CONTRACT, str(error)
            return None, ""
        if action == "set_band":
            if command.band is None:
                return RejectReason.MALFORMED, "set_band needs a band (fen; 0: none)"
            if self.listed(symbol, at_ms) is not None:
                return None, ""
            try:
                parse_family(symbol)
            except SymbolError:
                return self._not_listed(symbol, at_ms)
            return None, ""
        unknown = [s for s in (symbol, *command.symbols) if self.listed(s, at_ms) is None]
        if unknown:
            return self._not_listed(unknown[0], at_ms)
        return None, ""

    def _deposit(self, command: DepositFunds | DepositCapacity, stamp: EventStamp) -> Event:
        key = scoped(command.account_id, command.deposit_id)
        if key in self._deposit_ids or command.deposit_id in self._deposit_ids:
            return self._deposit_rejected(
                command,
                stamp,
                RejectReason.DUPLICATE_DEPOSIT_ID,
                f"deposit id {command.deposit_id!r} was used before by {command.account_id}",
            )
        if past := self._past_ceiling(command):
            return self._deposit_rejected(command, stamp, RejectReason.CEILING_EXCEEDED, past)
        deposited: FundsDeposited | CapacityDeposited
        if isinstance(command, DepositFunds):
            deposited = FundsDeposited(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                deposit_id=command.deposit_id,
                account_id=command.account_id,
                amount=command.amount,
                currency=command.currency,
            )
        else:
            spec = self.listed(command.symbol, stamp.ts)
            if spec is None:
                return self._deposit_rejected(
                    command, stamp, *self._not_listed(command.symbol, stamp.ts)
                )
            if stamp.ts >= self.catalogue.retires_at(spec):
                # A static contract stays listed after its gate; capacity deposited then could
                # neither be sold nor withdrawn.
                return self._deposit_rejected(
                    command,
                    stamp,
                    RejectReason.GATE_CLOSED,
                    f"the gate of {command.symbol} has closed: capacity can no longer be "
                    "deposited into it",
                )
            deposited = CapacityDeposited(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                deposit_id=command.deposit_id,
                account_id=command.account_id,
                symbol=command.symbol,
                quantity=command.quantity,
            )
        self._deposit_ids.add(key)
        self.accounts.apply(deposited, _own)
        return deposited

    @staticmethod
    def _deposit_rejected(
        command: DepositFunds | DepositCapacity,
        stamp: EventStamp,
        reason: RejectReason,
        message: str,
    ) -> DepositRejected:
        return DepositRejected(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            deposit_id=command.deposit_id,
            account_id=command.account_id,
            reason=reason,
            message=message,
        )

    def _request(self, command: Request, stamp: EventStamp) -> Event:
        """Withdrawals, delivery reports and disputes, and voucher programme administration."""
        if isinstance(command, ResolveDispute | CreateProgramme | ApproveGrant | GrantConcession):
            forged = self._not_operator(command)
            if forged:
                return self._request_rejected(command, stamp, RejectReason.NOT_OPERATOR, forged)
        key = request_key(command)
        if key in self._request_ids or _legacy_request_key(command) in self._request_ids:
            return self._request_rejected(
                command,
                stamp,
                RejectReason.DUPLICATE_ID,
                f"{command.type} id {request_id(command)!r} was used before by "
                f"{requester(command)}",
            )
        if past := self._past_ceiling(command):
            return self._request_rejected(command, stamp, RejectReason.CEILING_EXCEEDED, past)
        decided = self._decide_request(command, stamp)
        if isinstance(decided, DeliveryRequested):
            # Matching decides it and may refuse it: its id is not spent here (a metering
            # report may be sent again; the delivery desk keeps recall ids).
            return decided
        if isinstance(decided, GrantApproved):
            # The enterprise's side is applied where its account lives, when matching feeds
            # the grant back (see `apply_outcome`).
            self.accounts.apply(decided, lambda key: key.startswith("programme:"))
        elif not isinstance(decided, RequestRejected):
            self.accounts.apply(decided, _own)
        if not isinstance(decided, RequestRejected):
            self._request_ids.add(key)
        return decided

    def _decide_request(self, command: Request, stamp: EventStamp) -> Event:
        if isinstance(command, WithdrawFunds):
            return self._withdraw_funds(command, stamp)
        if isinstance(command, WithdrawCapacity):
            return self._withdraw_capacity(command, stamp)
        if isinstance(command, CreateProgramme):
            return self._create_programme(command, stamp)
        if isinstance(command, ApproveGrant):
            return self._approve_grant(command, stamp)
        if isinstance(command, GrantConcession):
            return self._grant_concession(command, stamp)
        return self._delivery_request(command, stamp)

    def _grant_concession(self, command: GrantConcession, stamp: EventStamp) -> Event:
        if command.valid_until <= command.valid_from:
            return self._request_rejected(
                command,
                stamp,
                RejectReason.INVALID_PROGRAMME,
                "valid_until must come after valid_from",
            )
        return ConcessionGranted(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            **command.model_dump(exclude={"type", "v", "signature"}),
        )

    def _withdraw_funds(self, command: WithdrawFunds, stamp: EventStamp) -> Event:
        balance = self.accounts.cash.get(command.account_id)
        available = 0 if balance is None else balance.available
        if command.amount > available:
            held = 0 if balance is None else balance.held
            return self._request_rejected(
                command,
                stamp,
                RejectReason.INSUFFICIENT_FUNDS,
                f"withdrawal of {command.amount} fen exceeds the {available} fen available "
                f"(another {held} fen is held for open orders and cannot be withdrawn)",
            )
        return FundsWithdrawn(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            withdrawal_id=command.withdrawal_id,
            account_id=command.account_id,
            amount=command.amount,
            currency=command.currency,
        )

    def _withdraw_capacity(self, command: WithdrawCapacity, stamp: EventStamp) -> Event:
        contract = self.catalogue.get(command.symbol)
        if contract is None:
            return self._request_rejected(
                command,
                stamp,
                RejectReason.UNKNOWN_CONTRACT,
                f"contract {command.symbol!r} is not listed",
            )
        if stamp.ts >= self.catalogue.retires_at(contract):
            return self._request_rejected(
                command,
                stamp,
                RejectReason.GATE_CLOSED,
                f"the gate of {command.symbol} has closed: its capacity is due for delivery",
            )
        available = self.accounts.available_capacity(command.account_id, command.symbol)
        if command.quantity > available:
            return self._request_rejected(
                command,
                stamp,
                RejectReason.INSUFFICIENT_CAPACITY,
                f"withdrawal of {command.quantity} units of {command.symbol} exceeds the "
                f"{available} unsold units available",
            )
        return CapacityWithdrawn(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            withdrawal_id=command.withdrawal_id,
            account_id=command.account_id,
            symbol=command.symbol,
            quantity=command.quantity,
        )

    def _create_programme(self, command: CreateProgramme, stamp: EventStamp) -> Event:
        problem = ""
        if command.programme_id in self.accounts.programmes:
            problem = f"programme {command.programme_id!r} exists"
        elif command.valid_until <= command.valid_from:
            problem = "valid_until must come after valid_from"
        elif command.cap_per_enterprise > command.budget:
            problem = "the cap per enterprise exceeds the budget"
        elif unknown := [c for c in command.classes if c not in RESOURCE_CLASSES]:
            problem = f"unknown resource class {unknown[0]!r}"
        elif unknown := [r for r in command.regions if r not in REGIONS]:
            problem = f"unknown region {unknown[0]!r}"
        if problem:
            return self._request_rejected(command, stamp, RejectReason.INVALID_PROGRAMME, problem)
        return ProgrammeCreated(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            **command.model_dump(exclude={"type", "v", "signature"}),
        )

    def _approve_grant(self, command: ApproveGrant, stamp: EventStamp) -> Event:
        programme = self.accounts.programmes.get(command.programme_id)
        reason, problem = RejectReason.NOT_ELIGIBLE, ""
        if programme is None:
            reason, problem = (
                RejectReason.UNKNOWN_PROGRAMME,
                f"no programme {command.programme_id!r}",
            )
        elif command.admin_id != programme.admin_id:
            reason = RejectReason.NOT_PROGRAMME_ADMIN
            problem = f"programme {programme.programme_id} is administered by {programme.admin_id}"
        elif command.kind not in programme.kinds:
            problem = f"programme {programme.programme_id} is for {', '.join(programme.kinds)} only"
        elif programme.cities and command.city not in programme.cities:
            cities = ", ".join(programme.cities)
            problem = f"programme {programme.programme_id} is for enterprises of {cities}"
        elif not stamp.ts < programme.valid_until:
            problem = f"programme {programme.programme_id} has ended"
        elif (
            command.limit + programme.granted.get(command.account_id, 0)
            > programme.cap_per_enterprise
        ):
            problem = (
                f"grants to {command.account_id} would exceed the cap per enterprise of "
                f"{programme.cap_per_enterprise} fen"
            )
        elif command.limit > programme.unallocated:
            reason = RejectReason.BUDGET_EXHAUSTED
            problem = (
                f"programme {programme.programme_id} has {programme.unallocated} fen of budget "
                f"left to grant, the grant asks {command.limit}"
            )
        if programme is None or problem:
            return self._request_rejected(command, stamp, reason, problem)
        return GrantApproved(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            application_id=command.application_id,
            programme_id=programme.programme_id,
            admin_id=command.admin_id,
            account_id=command.account_id,
            limit=command.limit,
            kind=command.kind,
            city=command.city,
            related_accounts=command.related_accounts,
            rate_bps=programme.rate_bps,
            cap_per_contract=programme.cap_per_contract,
            classes=programme.classes,
            regions=programme.regions,
            valid_from=programme.valid_from,
            valid_until=programme.valid_until,
        )

    def _delivery_request(
        self,
        command: ReportMetering | DisputeDelivery | ResolveDispute | RecallCapacity,
        stamp: EventStamp,
    ) -> Event:
        if command.symbol not in self.catalogue:
            return self._request_rejected(
                command,
                stamp,
                RejectReason.UNKNOWN_CONTRACT,
                f"contract {command.symbol!r} is not listed",
            )
        if isinstance(command, RecallCapacity):
            refused = self._check_recall(command, stamp.ts)
            if refused is not None:
                return self._request_rejected(command, stamp, *refused)
            action, provider, buyer, delivered, reason = (
                "recall",
                command.account_id,
                "",
                command.quantity,
                command.reason,
            )
            account = command.account_id
        elif isinstance(command, ReportMetering):
            action, provider, buyer, delivered, reason = (
                "meter",
                command.account_id,
                command.buyer_id,
                command.delivered,
                "",
            )
            account = command.account_id
        elif isinstance(command, DisputeDelivery):
            action, provider, buyer, delivered, reason = (
                "dispute",
                command.provider_id,
                command.account_id,
                0,
                command.reason,
            )
            account = command.account_id
        else:
            action, provider, buyer, delivered, reason = (
                "resolve",
                command.provider_id,
                command.buyer_id,
                command.delivered,
                command.reason,
            )
            account = command.operator_id
        return DeliveryRequested(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            action=action,
            request_id=request_id(command),
            account_id=account,
            symbol=command.symbol,
            provider_id=provider,
            buyer_id=buyer,
            delivered=delivered,
            reason=reason,
        )

    def _check_recall(self, command: RecallCapacity, ts: int) -> tuple[RejectReason, str] | None:
        """Why a recall is refused here (the matching partition checks what was sold)."""
        contract = self.catalogue.get(command.symbol)
        assert contract is not None
        if contract.resource_class.firm_class is None:
            return (
                RejectReason.NOT_RECALLABLE,
                f"{command.symbol} is firm capacity: only interruptible (-INT) contracts may be "
                "recalled",
            )
        notice = self.catalogue.rules.recall_notice_ms
        if ts > to_utc_ms(contract.delivery_start) - notice:
            return (
                RejectReason.GATE_CLOSED,
                f"a recall of {command.symbol} needs {notice // 60_000} minutes' notice "
                "before its delivery hour",
            )
        return None

    @staticmethod
    def _request_rejected(
        command: Request, stamp: EventStamp, reason: RejectReason, message: str
    ) -> RequestRejected:
        return RequestRejected(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            request=command.type,
            request_id=request_id(command),
            account_id=requester(command),
            reason=reason,
            message=message,
        )

    def reject_malformed(self, source: str, message: str, stamp: EventStamp) -> CommandRejected:
        """Report a record that is not a valid command; it changes nothing."""
        return CommandRejected(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            reason=RejectReason.MALFORMED,
            message=message,
            source=source,
        )

    def apply_outcome(self, event: Outcome, owns: Owns, stamp: EventStamp) -> list[FeeConceded]:
        """Fold a fill, cancel, amend, delivery or grant fed back from matching into the
        balances it owns; returns the fee concessions it decided on the way, applied."""
        if isinstance(event, ListingChanged):
            self._listing_changed(event)
        elif isinstance(event, GrantApproved):
            # The programme's side was applied when this stage approved the grant.
            self.accounts.apply(event, lambda key: not key.startswith("programme:") and owns(key))
        else:
            self.accounts.apply(event, owns)
        due = self.accounts.concessions_due
        if not due:
            return []
        conceded = [
            FeeConceded(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                concession_id=d.concession_id,
                account_id=d.account_id,
                fee=d.fee,
                discount=d.discount,
                charged_in=d.charged_in,
                trade_id=d.trade_id,
            )
            for d in due
        ]
        due.clear()
        for event_conceded in conceded:
            self.accounts.apply(event_conceded, owns)
        return conceded

    def _listing_changed(self, event: ListingChanged) -> None:
        symbol = event.symbol
        if event.listed:
            self.delisted.pop(symbol, None)
            if self.catalogue.get(symbol) is None:
                self.operator_listed.add(symbol)
        else:
            self.operator_listed.discard(symbol)
            why = f": {event.reason}" if event.reason else ""
            self.delisted[symbol] = f"contract {symbol!r} was delisted by {event.operator_id}{why}"

    def state_hash(self) -> str:
        """SHA-256 of the stage's whole state in a canonical form."""
        hasher = hashlib.sha256()
        self.accounts.digest(hasher)
        for order_id, owner in sorted(self._order_ids.items()):
            # An owner restored from a snapshot of before owners were kept is "": such an
            # order hashes as it did then, so that snapshot still verifies.
            line = f"id|{order_id}|{owner}\n" if owner else f"id|{order_id}\n"
            hasher.update(line.encode())
        for deposit_id in sorted(self._deposit_ids):
            hasher.update(f"d|{deposit_id}\n".encode())
        for request_id in sorted(self._request_ids):
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
        return hasher.hexdigest()

    def snapshot(self) -> dict[str, Any]:
        """The stage's whole state, JSON-ready."""
        return {
            "accounts": self.accounts.snapshot(),
            "order_ids": dict(sorted(self._order_ids.items())),
            "deposit_ids": sorted(self._deposit_ids),
            "request_ids": sorted(self._request_ids),
            "delisted": dict(sorted(self.delisted.items())),
            "operator_listed": sorted(self.operator_listed),
            "limits": {
                account_id: [limits.max_open_quantity, limits.max_open_notional]
                for account_id, limits in sorted(self.limits.items())
            },
            "money_in": self.money_in,
        }

    @classmethod
    def restore(
        cls,
        catalogue: Catalogue,
        data: dict[str, Any],
        seal: OperatorSeal | None = None,
        partitions: int = 1,
    ) -> RiskStage:
        """The stage a snapshot describes."""
        stage = cls(catalogue, seal, partitions)
        stage.accounts = Accounts.restore(
            data["accounts"], catalogue.rules, decides_concessions=True
        )
        order_ids = data["order_ids"]
        # A snapshot of before owners were kept lists the ids alone.
        stage._order_ids = (
            dict(order_ids) if isinstance(order_ids, dict) else dict.fromkeys(order_ids, "")
        )
        stage._deposit_ids = set(data["deposit_ids"])
        stage._request_ids = set(data.get("request_ids", []))
        stage.delisted = dict(data.get("delisted", {}))
        stage.operator_listed = set(data.get("operator_listed", []))
        stage.limits = {
            account_id: AccountLimits(quantity, notional)
            for account_id, (quantity, notional) in data.get("limits", {}).items()
        }
        # A snapshot from before the ceiling has none: its hash then differs (the hash always
        # counts the money brought in), and the stage replays its partition from the start.
        stage.money_in = data.get("money_in", 0)
        return stage


def _own_group(command: PlaceOrder | PlaceBlockOrder) -> str | None:
    """The self-trade prevention group of an order in its account's scope (None: the account
    itself), so that no account can name another's orders as its own."""
    return None if command.stp_group is None else scoped(command.account_id, command.stp_group)


def request_key(command: Request) -> str:
    """What identifies a request among all requests: its type and its id in the scope of who
    sent it, so two participants' ids never meet. Operators' requests name objects of the
    whole exchange (a dispute, an account's concession): their ids alone."""
    if isinstance(command, ResolveDispute | GrantConcession):
        return f"{command.type}:{request_id(command)}"
    return f"{command.type}:{scoped(requester(command), request_id(command))}"


def _legacy_request_key(command: Request) -> str:
    """The key a request was known by before ids were scoped by their sender."""
    legacy_id = command.application_id if isinstance(command, ApproveGrant) else request_id(command)
    return f"{command.type}:{legacy_id}"


def request_id(command: Request) -> str:
    """The id a request is known by (a grant's: its application in the programme's scope)."""
    if isinstance(command, WithdrawFunds | WithdrawCapacity):
        return command.withdrawal_id
    if isinstance(command, ReportMetering):
        return command.report_id
    if isinstance(command, DisputeDelivery):
        return command.dispute_id
    if isinstance(command, RecallCapacity):
        return command.recall_id
    if isinstance(command, GrantConcession):
        return f"{command.concession_id}:{command.account_id}"
    if isinstance(command, ResolveDispute):
        return f"{command.symbol}:{command.provider_id}:{command.buyer_id}"
    if isinstance(command, ApproveGrant):
        return scoped(command.programme_id, command.application_id)
    return command.programme_id


def requester(command: Request) -> str:
    """Who sent a request: the account, operator or programme administrator."""
    if isinstance(command, ResolveDispute | GrantConcession):
        return command.operator_id
    if isinstance(command, CreateProgramme | ApproveGrant):
        return command.admin_id
    return command.account_id
