"""Delivery: from positions at the delivery hour to metered, settled obligations.

The matching partition of a contract family sees every order and trade of its contracts, so it
acts as the clearing house for their delivery:
- It records what each provider sold from deposited capacity (units, the escrowed payment, the
  bond behind them, the provider's fee) and every account's net entitlement (bought less
  resold).
- When the contract's delivery hour starts, it allocates the providers' units to the holders,
  both in account order, into obligations provider -> holder, splitting each provider's escrow,
  bond and fee over its obligations in proportion to units (cumulative rounding, so the parts
  add up exactly).
- Providers report metering (units delivered to each holder) and holders may dispute, until the
  delivery window ends (`MarketRules.delivery_window_ms` after the hour). An undisputed
  obligation then settles at its metered units (none reported: nothing delivered); a disputed
  one settles when an operator resolves it.
- Settling pays the provider the delivered share of the escrow less that share of its fee, and
  returns its bond less the penalty; the holder gets the undelivered share of the escrow (its
  refund) and the undelivered share of the bond (the penalty).

Pure and deterministic: a function of the orders topic, like the books.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from exchange.domain.accounts import BPS, Fees, Hasher
from exchange.domain.catalogue import MarketRules, parse_symbol, strip_hours, to_utc_ms
from exchange.domain.messages import (
    BlockAccepted,
    CapacityRecalled,
    DeliveryDisputed,
    DeliveryObligation,
    DeliveryRequested,
    DeliverySettled,
    Event,
    EventStamp,
    MeteringReported,
    OrderAccepted,
    RejectReason,
    RequestRejected,
    StripCascaded,
    StripPosition,
    scoped,
    split_over_hours,
)
from matching import outputs as mo

HOUR_MS = 60 * 60_000


@dataclass(slots=True)
class Provision:
    """What one provider sold of one contract from deposited capacity."""

    units: int = 0
    amount: int = 0
    bond: int = 0
    fee: int = 0


@dataclass(slots=True)
class Obligation:
    """Units a provider owes one holder, with their escrow, bond and fee shares."""

    quantity: int
    amount: int
    bond: int
    fee: int
    window_ends: int
    delivered: int | None = None
    disputed: bool = False


ObligationKey = tuple[str, str, str]
"""(symbol, provider, buyer)"""


class DeliveryDesk:
    """Provisions, entitlements and obligations of the contracts of one matching partition."""

    def __init__(self, rules: MarketRules) -> None:
        self.rules = rules
        self.fees = Fees(rules)
        self.sells: dict[str, list[Any]] = {}
        """Open sells: order id -> [backed by capacity, bond per unit, open quantity, account,
        symbol]."""
        self.provisions: dict[str, dict[str, Provision]] = {}
        self.holdings: dict[str, dict[str, int]] = {}
        self.obligations: dict[ObligationKey, Obligation] = {}
        self.recalls: set[str] = set()
        """`provider/recall_id` of the recalls done (bare ids: done before recall ids were
        scoped by provider): a recall sent again is refused, not done twice."""
        self._due: list[tuple[int, str, str, str]] = []
        """(window end, symbol, provider, buyer) of unsettled obligations, a heap."""
        self.cascaded: set[str] = set()
        """The strips that became positions in their hours (`StripCascades`)."""

    # What happens in the books ---------------------------------------------------------------

    def observe(
        self, event: Event | None, outputs: list[mo.Output], stamp: EventStamp
    ) -> list[Event]:
        """Record an input of the partition (None: a record that only moves the log time) and
        what matching made of it, as the engine reported it (so the stage's replay, which
        builds no events, leaves the desk as live processing does); returns the delivery
        events they cause (obligations, metering, settlements, refusals)."""
        if isinstance(event, OrderAccepted) and event.side == "sell":
            self.sells[event.order_id] = [
                event.backing == "capacity",
                event.bond_per_unit,
                event.quantity,
                event.account_id,
                event.symbol,
            ]
        elif isinstance(event, BlockAccepted) and event.side == "sell":
            total = event.quantity * len(event.symbols)
            self.sells[event.order_id] = [
                True,
                event.bond_per_unit,
                total,
                event.account_id,
                event.family,
            ]
        caused: list[Event] = []
        if isinstance(event, DeliveryRequested) and event.action == "recall":
            caused.extend(self._recall(event, stamp))
        elif isinstance(event, DeliveryRequested):
            caused.append(self._request(event, stamp))
        for output in outputs:
            match output:
                case (mo.ACCEPTED, _, _):
                    # The most frequent output, and nothing to record: matched first.
                    pass
                case (mo.TRADE, *_):
                    self._trade(output)
                case (mo.REJECTED | mo.CANCELLED | mo.EXPIRED, _, order_id, *_):
                    # The order rests no longer: its sell, if any, is no longer open.
                    self.sells.pop(order_id, None)
                case (mo.REDUCED | mo.AMENDED, _, order_id, _, _, _, remaining, _):
                    # The order rests with less.
                    self._shrink(order_id, remaining)
                case (mo.STATE, symbol, mo.CLOSED | mo.DELIVERED, _) if strip_hours(symbol) > 1:
                    caused.extend(StripCascades.of(self).at_close(symbol, stamp))
                case (mo.STATE, symbol, mo.DELIVERED, _):
                    caused.extend(self._allocate(symbol, stamp))
        caused.extend(self._settle_due(stamp))
        return caused

    def _shrink(self, order_id: str, remaining: int) -> None:
        sell = self.sells.get(order_id)
        if sell is not None:
            if remaining:
                sell[2] = remaining
            else:
                del self.sells[order_id]

    def _trade(self, trade: mo.Trade) -> None:
        _, symbol, _, price, quantity, taker, maker, taker_account, maker_account, side = trade
        # An auction trade (no aggressor) names the buy order as its taker.
        taker_buys = side != "sell"
        buyer_id = taker_account if taker_buys else maker_account
        seller_id = maker_account if taker_buys else taker_account
        sell_order_id = maker if taker_buys else taker
        holdings = self.holdings.setdefault(symbol, {})
        holdings[buyer_id] = holdings.get(buyer_id, 0) + quantity
        sell = self.sells.get(sell_order_id)
        from_capacity, bond_per_unit = (True, 0) if sell is None else (sell[0], sell[1])
        if from_capacity:
            provision = self.provisions.setdefault(symbol, {}).setdefault(seller_id, Provision())
            amount = price * quantity * strip_hours(symbol)
            provision.units += quantity
            provision.amount += amount
            provision.bond += bond_per_unit * quantity
            provision.fee += self.fees.fee(symbol, amount, side, "sell")
        else:
            holdings[seller_id] -= quantity
        if sell is not None:
            sell[2] -= quantity
            if not sell[2]:
                del self.sells[sell_order_id]

    def _allocate(self, symbol: str, stamp: EventStamp) -> list[Event]:
        """Turn a contract's provisions and holdings into obligations at its delivery hour."""
        provisions = self.provisions.pop(symbol, {})
        holders = [(a, q) for a, q in sorted(self.holdings.pop(symbol, {}).items()) if q > 0]
        start = to_utc_ms(parse_symbol(symbol).delivery_start)
        window_ends = start + HOUR_MS + self.rules.delivery_window_ms
        events: list[Event] = []
        holder = 0
        left = holders[0][1] if holders else 0
        for provider_id in sorted(provisions):
            provision = provisions[provider_id]
            allocated = 0
            shares: tuple[int, ...] = (0, 0, 0)
            while allocated < provision.units and holder < len(holders):
                quantity = min(left, provision.units - allocated)
                allocated += quantity
                cumulative = tuple(
                    total * allocated // provision.units
                    for total in (provision.amount, provision.bond, provision.fee)
                )
                amount, bond, fee = (
                    now - then for now, then in zip(cumulative, shares, strict=True)
                )
                shares = cumulative
                buyer_id = holders[holder][0]
                obligation = Obligation(quantity, amount, bond, fee, window_ends)
                self.obligations[(symbol, provider_id, buyer_id)] = obligation
                heapq.heappush(self._due, (window_ends, symbol, provider_id, buyer_id))
                events.append(
                    DeliveryObligation(
                        event_id=stamp.next_id(),
                        ts=stamp.ts,
                        symbol=symbol,
                        provider_id=provider_id,
                        buyer_id=buyer_id,
                        quantity=quantity,
                        amount=amount,
                        bond=bond,
                        fee=fee,
                        window_ends=window_ends,
                    )
                )
                left -= quantity
                if not left:
                    holder += 1
                    left = holders[holder][1] if holder < len(holders) else 0
        return events

    # Recalls ----------------------------------------------------------------------------------

    def _recall(self, request: DeliveryRequested, stamp: EventStamp) -> list[Event]:
        """Take back sold units of a recallable deposit: each holder, in account order, is
        refunded its share of the escrow and compensated out of the provider's bond."""
        symbol, provider_id, quantity = request.symbol, request.provider_id, request.delivered
        key = scoped(provider_id, request.request_id)
        if key in self.recalls or request.request_id in self.recalls:
            return [
                _refused(
                    request,
                    stamp,
                    RejectReason.DUPLICATE_ID,
                    f"recall id {request.request_id!r} was used before",
                )
            ]
        provision = self.provisions.get(symbol, {}).get(provider_id)
        sold = 0 if provision is None else provision.units
        if provision is None or quantity > sold:
            return [
                _refused(
                    request,
                    stamp,
                    RejectReason.RECALL_EXCEEDS_SOLD,
                    f"a recall of {quantity} units exceeds the {sold} {provider_id} sold of "
                    f"{symbol}",
                )
            ]
        offered: dict[str, int] = {}
        for from_capacity, _, remaining, account, sell_symbol in self.sells.values():
            if not from_capacity and sell_symbol == symbol:
                offered[account] = offered.get(account, 0) + remaining
        holdings = self.holdings.get(symbol, {})
        free = [
            (account, held - offered.get(account, 0))
            for account, held in sorted(holdings.items())
            if held > offered.get(account, 0)
        ]
        if quantity > sum(units for _, units in free):
            return [
                _refused(
                    request,
                    stamp,
                    RejectReason.RECALL_EXCEEDS_SOLD,
                    f"only {sum(u for _, u in free)} units of {symbol} are held and not offered "
                    "for resale: recall at most that many now",
                )
            ]
        self.recalls.add(key)
        # The recalled units' shares of the escrow and the bond; their fee is never charged.
        amount = provision.amount * quantity // provision.units
        bond = provision.bond * quantity // provision.units
        provision.fee -= provision.fee * quantity // provision.units
        provision.units -= quantity
        provision.amount -= amount
        provision.bond -= bond
        events: list[Event] = [
            CapacityRecalled(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                recall_id=request.request_id,
                symbol=symbol,
                provider_id=provider_id,
                quantity=quantity,
                reason=request.reason,
            )
        ]
        recalled = 0
        shares: tuple[int, ...] = (0, 0)
        compensation_bps = self.rules.recall_compensation_bps
        for buyer_id, units in free:
            if recalled == quantity:
                break
            share = min(units, quantity - recalled)
            recalled += share
            cumulative = (amount * recalled // quantity, bond * recalled // quantity)
            refund, behind = (now - then for now, then in zip(cumulative, shares, strict=True))
            shares = cumulative
            holdings[buyer_id] -= share
            events.append(
                DeliverySettled(
                    event_id=stamp.next_id(),
                    ts=stamp.ts,
                    symbol=symbol,
                    provider_id=provider_id,
                    buyer_id=buyer_id,
                    quantity=share,
                    delivered=0,
                    paid=0,
                    fee=0,
                    refund=refund,
                    bond=behind,
                    penalty=min(behind, refund * compensation_bps // BPS),
                    reason=f"recalled: {request.reason}" if request.reason else "recalled",
                    recall_id=request.request_id,
                )
            )
        return events

    # Metering, disputes and settlement --------------------------------------------------------

    def _request(self, request: DeliveryRequested, stamp: EventStamp) -> Event:
        key = (request.symbol, request.provider_id, request.buyer_id)
        obligation = self.obligations.get(key)
        if obligation is None:
            return _refused(
                request,
                stamp,
                RejectReason.NO_OBLIGATION,
                f"{request.provider_id} owes {request.buyer_id} nothing in {request.symbol} "
                "(obligations exist from the delivery hour until they settle)",
            )
        if request.action == "resolve":
            if not obligation.disputed:
                return _refused(
                    request, stamp, RejectReason.NOT_DISPUTED, "that delivery is not disputed"
                )
            if request.delivered > obligation.quantity:
                return _exceeds(request, obligation, stamp)
            return self._settle(key, request.delivered, stamp, request.account_id, request.reason)
        if stamp.ts > obligation.window_ends or obligation.disputed:
            return _refused(
                request,
                stamp,
                RejectReason.DELIVERY_WINDOW_CLOSED,
                "the delivery is disputed and awaits an operator"
                if obligation.disputed
                else f"metering and disputes closed at {obligation.window_ends} (log time, ms)",
            )
        if request.action == "meter":
            if request.delivered > obligation.quantity:
                return _exceeds(request, obligation, stamp)
            obligation.delivered = request.delivered
            return MeteringReported(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                report_id=request.request_id,
                symbol=request.symbol,
                provider_id=request.provider_id,
                buyer_id=request.buyer_id,
                delivered=request.delivered,
            )
        obligation.disputed = True
        return DeliveryDisputed(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            dispute_id=request.request_id,
            symbol=request.symbol,
            provider_id=request.provider_id,
            buyer_id=request.buyer_id,
            reason=request.reason,
        )

    def due(self, ts: int) -> bool:
        """Whether a settlement falls due at log time `ts`."""
        return bool(self._due) and self._due[0][0] < ts

    def _settle_due(self, stamp: EventStamp) -> list[Event]:
        settled: list[Event] = []
        while self._due and self._due[0][0] < stamp.ts:
            _, symbol, provider_id, buyer_id = heapq.heappop(self._due)
            key = (symbol, provider_id, buyer_id)
            obligation = self.obligations.get(key)
            if obligation is None or obligation.disputed:
                continue
            settled.append(self._settle(key, obligation.delivered or 0, stamp, None, ""))
        return settled

    def _settle(
        self,
        key: ObligationKey,
        delivered: int,
        stamp: EventStamp,
        resolved_by: str | None,
        reason: str,
    ) -> DeliverySettled:
        obligation = self.obligations.pop(key)
        symbol, provider_id, buyer_id = key
        quantity = obligation.quantity
        paid = obligation.amount * delivered // quantity
        kept_bond = obligation.bond * delivered // quantity
        return DeliverySettled(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            symbol=symbol,
            provider_id=provider_id,
            buyer_id=buyer_id,
            quantity=quantity,
            delivered=delivered,
            paid=paid,
            fee=obligation.fee * delivered // quantity,
            refund=obligation.amount - paid,
            bond=obligation.bond,
            penalty=obligation.bond - kept_bond,
            resolved_by=resolved_by,
            reason=reason,
        )

    # State ------------------------------------------------------------------------------------

    def digest(self, hasher: Hasher) -> None:
        """Feed a canonical rendering of the desk's state to `hasher`."""
        hasher.update(repr(self.snapshot()).encode())

    def snapshot(self) -> dict[str, Any]:
        """The desk's state, JSON-ready, in a canonical order."""
        return {
            "sells": sorted([order_id, *sell] for order_id, sell in self.sells.items()),
            "provisions": sorted(
                [symbol, provider, p.units, p.amount, p.bond, p.fee]
                for symbol, by_provider in self.provisions.items()
                for provider, p in by_provider.items()
            ),
            "holdings": sorted(
                [symbol, account, quantity]
                for symbol, by_account in self.holdings.items()
                for account, quantity in by_account.items()
            ),
            "obligations": sorted(
                [*key, o.quantity, o.amount, o.bond, o.fee, o.window_ends, o.delivered, o.disputed]
                for key, o in self.obligations.items()
            ),
            "recalls": sorted(self.recalls),
            # Only once a strip cascaded: the snapshots and hashes of markets without strips
            # keep their bytes.
            **({"cascaded": sorted(self.cascaded)} if self.cascaded else {}),
        }

    @classmethod
    def restore(cls, rules: MarketRules, data: dict[str, Any]) -> DeliveryDesk:
        """The desk a snapshot describes."""
        desk = cls(rules)
        desk.sells = {entry[0]: list(entry[1:]) for entry in data["sells"]}
        desk.recalls = set(data.get("recalls", []))
        desk.cascaded = set(data.get("cascaded", []))
        for symbol, provider, *figures in data["provisions"]:
            desk.provisions.setdefault(symbol, {})[provider] = Provision(*figures)
        for symbol, account, quantity in data["holdings"]:
            desk.holdings.setdefault(symbol, {})[account] = quantity
        for symbol, provider, buyer, *figures in data["obligations"]:
            obligation = Obligation(*figures)
            desk.obligations[(symbol, provider, buyer)] = obligation
            if not obligation.disputed:
                heapq.heappush(desk._due, (obligation.window_ends, symbol, provider, buyer))
        return desk


class StripCascades:
    """The cascade of strips into their hourly contracts, on the desk's provisions and
    holdings (docs/DESIGN.md, "Strips and the cascade").

    A strip's book closes when its first hour lists (the catalogue's `cascades_at`); the
    engine expires its resting orders, then reports the close, and at that close the desk
    turns the strip's positions into positions in each hour: a holder's entitlement of q into
    q in every hour, a provider's sale of u units into a provision of u in every hour with its
    escrow, bond and fee split over the hours by cumulative rounding. One `StripCascaded` says
    so; risk and settlement fold it (escrow moves from the strip to its hours, deposited
    capacity left unsold becomes capacity in each hour). A strip an operator delists before
    then cascades at once, and cannot be listed again (`MarketStage`)."""

    __slots__ = ("desk",)

    def __init__(self, desk: DeliveryDesk) -> None:
        self.desk = desk

    @classmethod
    def of(cls, desk: DeliveryDesk) -> StripCascades:
        return cls(desk)

    def at_close(self, symbol: str, stamp: EventStamp) -> list[Event]:
        """The cascade a strip's close causes: at its cascade time, or when an operator delists
        it before (its positions go to its hours at once, never stranded); once only."""
        if symbol in self.desk.cascaded:
            return []
        return [self.cascade(symbol, stamp)]

    def cascade(self, symbol: str, stamp: EventStamp) -> Event:
        """Turn the strip's provisions and holdings into positions in its hours."""
        desk = self.desk
        if symbol in desk.cascaded:
            raise StripAlreadyCascadedError(symbol)
        desk.cascaded.add(symbol)
        hours = [spec.symbol for spec in parse_symbol(symbol).hours()]
        provisions = desk.provisions.pop(symbol, {})
        holders = [
            StripPosition(account_id=account, units=units)
            for account, units in sorted(desk.holdings.pop(symbol, {}).items())
            if units > 0
        ]
        escrow = [0] * len(hours)
        for provider_id, provision in sorted(provisions.items()):
            splits = zip(
                *(
                    split_over_hours(total, len(hours))
                    for total in (provision.amount, provision.bond, provision.fee)
                ),
                strict=True,
            )
            for index, (hour, (amount, bond, fee)) in enumerate(zip(hours, splits, strict=True)):
                part = desk.provisions.setdefault(hour, {}).setdefault(provider_id, Provision())
                part.units += provision.units
                part.amount += amount
                part.bond += bond
                part.fee += fee
                escrow[index] += amount
        for holder in holders:
            for hour in hours:
                held = desk.holdings.setdefault(hour, {})
                held[holder.account_id] = held.get(holder.account_id, 0) + holder.units
        return StripCascaded(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            symbol=symbol,
            hours=hours,
            holders=holders,
            providers=[
                StripPosition(
                    account_id=provider_id, units=p.units, amount=p.amount, bond=p.bond, fee=p.fee
                )
                for provider_id, p in sorted(provisions.items())
                if p.units
            ],
            escrow=escrow,
        )


class StripAlreadyCascadedError(RuntimeError):
    """A strip was to cascade a second time: its positions already moved to its hours."""

    def __init__(self, symbol: str) -> None:
        super().__init__(f"strip {symbol!r} already cascaded into its hourly contracts")
        self.symbol = symbol


def _refused(
    request: DeliveryRequested, stamp: EventStamp, reason: RejectReason, message: str
) -> RequestRejected:
    kinds = {
        "meter": "ReportMetering",
        "dispute": "DisputeDelivery",
        "resolve": "ResolveDispute",
        "recall": "RecallCapacity",
    }
    return RequestRejected(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        request=kinds[request.action],
        request_id=request.request_id,
        account_id=request.account_id,
        reason=reason,
        message=message,
    )


def _exceeds(
    request: DeliveryRequested, obligation: Obligation, stamp: EventStamp
) -> RequestRejected:
    return _refused(
        request,
        stamp,
        RejectReason.METERING_EXCEEDS_OBLIGATION,
        f"{request.delivered} units delivered is more than the {obligation.quantity} "
        f"{request.provider_id} sold to {request.buyer_id} in {request.symbol}",
    )
