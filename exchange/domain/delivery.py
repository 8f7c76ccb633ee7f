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

A token bundle (a day, week or month of a token class, `ContractSpec.is_bundle`) is
delivered by draw-down instead (see "Token bundles" below and docs/DESIGN.md): allocated at its
period's start, paid as the provider meters tokens used, its unused rest refunded (and the bond
behind it returned) when the delivery window after the period ends.

Pure and deterministic: a function of the orders topic, like the books.
"""

from __future__ import annotations

import functools
import heapq
from dataclasses import dataclass, field
from typing import Any, cast

from mypy_extensions import mypyc_attr

from exchange.domain.accounts import BPS, TOKENS_PER_UNIT, Fees, Hasher
from exchange.domain.catalogue import (
    UNIT_CARD_HOUR,
    UNIT_CORE_HOUR,
    MarketRules,
    SymbolError,
    cst_iso,
    parse_symbol,
    strip_hours,
    to_utc_ms,
)
from exchange.domain.messages import (
    BlockAccepted,
    BundleDrawn,
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


@dataclass(slots=True)
class Drawdown:
    """What a token bundle's obligation has drawn down and paid so far."""

    used: int = 0
    """Tokens metered, in all."""
    paid: int = 0
    """Escrow paid to the provider for them (cumulative rounding of the amount)."""
    fee: int = 0
    """The provider's fee charged on them (cumulative rounding of the obligation's fee)."""
    reports: list[str] = field(default_factory=list)
    """The metering reports' ids: each draws down once (a report sent again is refused)."""


@functools.lru_cache(maxsize=4096)
def bundle_period(symbol: str) -> tuple[int, int] | None:
    """A token bundle's period (start, end) in log time (ms); None for any other contract."""
    if symbol[-3:-2] == "T":
        # An hour (`...YYYYMMDDTHH`), the most frequent by far: no need to parse it.
        return None
    try:
        spec = parse_symbol(symbol)
    except SymbolError:
        return None
    if not spec.is_bundle:
        return None
    return to_utc_ms(spec.delivery_start), to_utc_ms(spec.delivery_end)


class DeliveryDesk:
    """Provisions, entitlements and obligations of the contracts of one matching partition."""

    def __init__(self, rules: MarketRules) -> None:
        self.rules = rules
        self.fees = Fees(rules)
        self.sells: dict[str, list[Any]] = {}
        """Open sells: order id -> [backed by capacity, bond per unit, open quantity, account,
        symbol]."""
        self._sells_rendered: dict[str, tuple[list[Any], str]] = {}
        """Each open sell as `digest` last rendered it: (a copy of it then, its text)."""
        self._resales: dict[tuple[str, str], set[str]] = {}
        """(symbol, account) -> the ids of its open sells that resell what it holds: derived
        from `sells`, so a resale's check reads the seller's own, not every open sell."""
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
        self.drawdowns: dict[ObligationKey, Drawdown] = {}
        """The draw-down of each token bundle's obligation, until it settles."""
        self._bundle_keys: dict[tuple[str, str], set[ObligationKey]] = {}
        """(symbol, holder) -> the keys of the holder's obligations in that bundle (those in
        `drawdowns`): derived, so a resale in a bundle's period reads the holder's own."""
        self.bundles_started: dict[str, int] = {}
        """Token bundles allocated at their period's start -> the period's end: their trades
        (top-ups, resales) change obligations at once, until the period ends."""
        self._bundle_starts: list[tuple[int, str]] = []
        """(period start, symbol) of bundles traded but not yet allocated, a heap."""
        self._bundle_ends: list[tuple[int, str]] = []
        """(period end, symbol) of the started bundles, a heap."""

    # What happens in the books ---------------------------------------------------------------

    def observe(
        self, event: Event | None, outputs: list[mo.Output], stamp: EventStamp
    ) -> list[Event]:
        """Record an input of the partition (None: a record that only moves the log time) and
        what matching made of it, as the engine reported it (so the stage's replay, which
        builds no events, leaves the desk as live processing does); returns the delivery
        events they cause (obligations, metering, settlements, refusals)."""
        if isinstance(event, OrderAccepted) and event.side == "sell":
            self._open_sell(
                event.order_id,
                [
                    event.backing == "capacity",
                    event.bond_per_unit,
                    event.quantity,
                    event.account_id,
                    event.symbol,
                ],
            )
        elif isinstance(event, BlockAccepted) and event.side == "sell":
            total = event.quantity * len(event.symbols)
            self._open_sell(
                event.order_id,
                [True, event.bond_per_unit, total, event.account_id, event.family],
            )
        # Token bundles and settlements due are rare beside orders: their heaps are looked
        # at before anything is called (matching and a replay observe every order).
        # (`_bundles_pending`, written out: this runs for every order.)
        pending = self._bundle_starts or self._bundle_ends
        caused: list[Event] = self._start_bundles(stamp) if pending else []
        if isinstance(event, DeliveryRequested) and event.action == "recall":
            caused.extend(self._recall(event, stamp))
        elif isinstance(event, DeliveryRequested):
            caused.append(self._request(event, stamp))
        for output in outputs:
            # The two most frequent outputs are told by their kind alone, cheaper than a
            # sequence pattern: an accepted order (nothing to record) and a trade.
            kind = output[0]
            if kind == mo.ACCEPTED:
                continue
            if kind == mo.TRADE:
                trade = cast(mo.Trade, output)
                if trade[1] in self.bundles_started:
                    caused.extend(self._bundle_trade(trade, stamp))
                else:
                    self._trade(trade)
                    self._await_bundle_start(trade[1])
                continue
            match output:
                case (mo.REJECTED | mo.CANCELLED | mo.EXPIRED, _, order_id, *_):
                    # The order rests no longer: its sell, if any, is no longer open.
                    self._close_sell(order_id)
                case (mo.REDUCED | mo.AMENDED, _, order_id, _, _, _, remaining, _):
                    # The order rests with less.
                    self._shrink(order_id, remaining)
                case (mo.STATE, symbol, mo.CLOSED | mo.DELIVERED, _) if strip_hours(symbol) > 1:
                    caused.extend(StripCascades.of(self).at_close(symbol, stamp))
                case (mo.STATE, symbol, mo.DELIVERED, _) if bundle_period(symbol) is None:
                    caused.extend(self._allocate(symbol, stamp))
        if self._bundle_starts or self._bundle_ends:
            caused.extend(self._start_bundles(stamp))
        if self._due:
            caused.extend(self._settle_due(stamp))
        return caused

    # Resales: only of what the seller still holds ------------------------------------------

    def resale_cover(self, symbol: str, holder: str) -> int:
        """The units of `symbol` the holder still holds to resell: its entitlement before
        delivery (an hour's, a strip's, a bundle's before its period), the units of its
        obligations in a bundle's period, drawn into or not (`resale_unused` leaves those
        out). What settled (a dispute resolved, a recall) is in neither."""
        held = self.holdings.get(symbol, {}).get(holder, 0)
        if symbol in self.bundles_started:
            obligations = self.obligations
            held += sum(
                obligations[key].quantity for key in self._bundle_keys.get((symbol, holder), ())
            )
        return held

    def resale_unused(self, symbol: str, holder: str) -> int:
        """The units of a started token bundle the holder may offer for resale: the whole
        units of its obligations there that no token was drawn into (a million begun is a unit
        used, as risk counts it). Risk approves a resale on the draw-downs it has learned of;
        the desk sees every report of the family in log order, so a resale that arrives after
        a report drew into what it offers is refused by this."""
        obligations, drawdowns = self.obligations, self.drawdowns
        return sum(
            obligations[key].quantity + drawdowns[key].used // -TOKENS_PER_UNIT
            for key in self._bundle_keys.get((symbol, holder), ())
        )

    def resales(self, symbol: str, holder: str) -> dict[str, int]:
        """The holder's resting resales of `symbol`: order id -> open quantity."""
        sells = self.sells
        return {
            order_id: sells[order_id][2] for order_id in self._resales.get((symbol, holder), ())
        }

    def _open_sell(self, order_id: str, sell: list[Any]) -> None:
        self.sells[order_id] = sell
        if not sell[0]:
            self._resales.setdefault((sell[4], sell[3]), set()).add(order_id)

    def _close_sell(self, order_id: str) -> None:
        sell = self.sells.pop(order_id, None)
        if sell is not None and not sell[0]:
            key = (sell[4], sell[3])
            resales = self._resales[key]
            resales.discard(order_id)
            if not resales:
                del self._resales[key]

    def _shrink(self, order_id: str, remaining: int) -> None:
        sell = self.sells.get(order_id)
        if sell is not None:
            if remaining:
                sell[2] = remaining
            else:
                self._close_sell(order_id)

    def _trade(self, trade: mo.Trade) -> None:
        _, symbol, _, price, quantity, taker, maker, taker_account, maker_account, side = trade
        # An auction trade (no aggressor) names the buy order as its taker.
        taker_buys = side != "sell"
        buyer_id = taker_account if taker_buys else maker_account
        seller_id = maker_account if taker_buys else taker_account
        sell_order_id = maker if taker_buys else taker
        # Looked up before they are made: every trade comes here, and `setdefault` would
        # build an empty dict each time.
        holdings = self.holdings.get(symbol)
        if holdings is None:
            holdings = self.holdings[symbol] = {}
        holdings[buyer_id] = holdings.get(buyer_id, 0) + quantity
        sell = self.sells.get(sell_order_id)
        from_capacity, bond_per_unit = (True, 0) if sell is None else (sell[0], sell[1])
        if from_capacity:
            providers = self.provisions.get(symbol)
            if providers is None:
                providers = self.provisions[symbol] = {}
            provision = providers.get(seller_id)
            if provision is None:
                provision = providers[seller_id] = Provision()
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
                self._close_sell(sell_order_id)

    def _allocate(
        self, symbol: str, stamp: EventStamp, moved_from: str | None = None
    ) -> list[Event]:
        """Turn a contract's provisions and holdings into obligations at its delivery hour
        (a bundle's: at its period's start, each saying its units are newly owed, `moved_from`
        "")."""
        provisions = self.provisions.pop(symbol, {})
        holders = [(a, q) for a, q in sorted(self.holdings.pop(symbol, {}).items()) if q > 0]
        # The window opens at the end of the last hour delivered: an hour's, a bundle's period's.
        end = to_utc_ms(parse_symbol(symbol).delivery_end)
        window_ends = end + self.rules.delivery_window_ms
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
                key = (symbol, provider_id, holders[holder][0])
                obligation = Obligation(quantity, amount, bond, fee, window_ends)
                self.obligations[key] = obligation
                heapq.heappush(self._due, (window_ends, *key))
                events.append(
                    _obligation(key, obligation, quantity, amount, bond, fee, stamp, moved_from)
                )
                left -= quantity
                if not left:
                    holder += 1
                    left = holders[holder][1] if holder < len(holders) else 0
        return events

    # Recalls ----------------------------------------------------------------------------------

    def _recall_beyond_sold(self, symbol: str, provider_id: str, quantity: int, sold: int) -> str:
        """Why a recall of more than the provider sold is refused, Chinese first: what it sold,
        and what it only offers for sale (its capacity's open asks), which a recall never takes:
        the provider cancels those asks and withdraws the capacity instead."""
        offered = sum(
            remaining
            for from_capacity, _, remaining, account, sell_symbol in self.sells.values()
            if from_capacity and account == provider_id and sell_symbol == symbol
        )
        unit = _unit_zh(symbol)
        chinese = f"召回 {quantity} {unit}超过 {provider_id} 已售出的 {sold} {unit} {symbol}"
        english = (
            f"a recall of {quantity} units exceeds the {sold} units of {symbol} {provider_id} sold"
        )
        if offered:
            chinese += f", 另有 {offered} {unit}挂单待售、尚未售出, 不能召回: 请撤单后提取"
            english += (
                f"; its {offered} units offered for sale and not sold are not recalled: cancel "
                "the sell order and withdraw them"
            )
        return f"{chinese} {english}"

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
        if symbol in self.cascaded:
            hours = parse_symbol(symbol).hours()
            return [
                _refused(
                    request,
                    stamp,
                    RejectReason.CONTRACT_CLOSED,
                    f"{symbol} cascaded into its hourly contracts {hours[0].symbol} to "
                    f"{hours[-1].symbol}: what {provider_id} sold of it is recalled by the hour",
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
                    self._recall_beyond_sold(symbol, provider_id, quantity, sold),
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
        recallable = sum(units for _, units in free)
        if quantity > recallable:
            unit = _unit_zh(symbol)
            return [
                _refused(
                    request,
                    stamp,
                    RejectReason.RECALL_EXCEEDS_SOLD,
                    f"{symbol} 已售出的 {sold} {unit}中只有 {recallable} {unit}仍由买方持有且未挂出"
                    f"转售, 本次最多召回这些 of the {sold} units of {symbol} sold, only "
                    f"{recallable} are held and not offered for resale: recall at most that many "
                    "now",
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
        if request.action == "meter" and bundle_period(request.symbol) is not None:
            return self._draw_down(request, stamp)
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
            if key in self.drawdowns:
                if request.delivered > obligation.quantity * TOKENS_PER_UNIT:
                    return _resolution_exceeds_bundle(
                        request, obligation, self.drawdowns[key], stamp
                    )
            elif request.delivered > obligation.quantity:
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
        return (bool(self._due) and self._due[0][0] < ts) or (
            bool(self._bundle_starts) and self._bundle_starts[0][0] <= ts
        )

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
        if key in self.drawdowns:
            return self._settle_bundle(key, delivered, stamp, resolved_by, reason)
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

    # Token bundles ----------------------------------------------------------------------------

    def _await_bundle_start(self, symbol: str) -> None:
        """Note a token bundle traded before its period: its units are allocated at the start."""
        period = bundle_period(symbol)
        if period is not None and not any(s == symbol for _, s in self._bundle_starts):
            heapq.heappush(self._bundle_starts, (period[0], symbol))

    def _bundles_pending(self) -> bool:
        """Whether a bundle awaits its period's start or end (`_start_bundles` has work)."""
        return bool(self._bundle_starts or self._bundle_ends)

    def _start_bundles(self, stamp: EventStamp) -> list[Event]:
        """Allocate the bundles whose period has started into obligations (as an hour's at its
        start), each with a draw-down; forget started bundles whose period has ended."""
        events: list[Event] = []
        starts = self._bundle_starts
        while starts and starts[0][0] <= stamp.ts:
            _, symbol = heapq.heappop(starts)
            events += self._allocate(symbol, stamp, moved_from="")
            for key in self.obligations:
                if key[0] == symbol and key not in self.drawdowns:
                    self._start_drawdown(key)
            self.bundles_started[symbol] = _period(symbol)[1]
            heapq.heappush(self._bundle_ends, (_period(symbol)[1], symbol))
        ends = self._bundle_ends
        while ends and ends[0][0] <= stamp.ts:
            del self.bundles_started[heapq.heappop(ends)[1]]
        return events

    def _bundle_trade(self, trade: mo.Trade, stamp: EventStamp) -> list[Event]:
        """A trade of a bundle in its period: a top-up from a provider's capacity is owed to
        the buyer at once; a resale moves unused units of the seller's obligations to it."""
        _, symbol, _, price, quantity, taker, maker, taker_account, maker_account, side = trade
        taker_buys = side != "sell"
        buyer_id = taker_account if taker_buys else maker_account
        seller_id = maker_account if taker_buys else taker_account
        sell_order_id = maker if taker_buys else taker
        sell = self.sells.get(sell_order_id)
        from_capacity, bond_per_unit = (True, 0) if sell is None else (sell[0], sell[1])
        if sell is not None:
            sell[2] -= quantity
            if not sell[2]:
                self._close_sell(sell_order_id)
        if from_capacity:
            amount = price * quantity
            fee = self.fees.fee(symbol, amount, side, "sell")
            key = (symbol, seller_id, buyer_id)
            return [self._owe(key, quantity, amount, bond_per_unit * quantity, fee, stamp, "")]
        events: list[Event] = []
        left = quantity
        keys = sorted(self._bundle_keys.get((symbol, seller_id), ()))
        obligations, drawdowns = self.obligations, self.drawdowns
        # The units no token was drawn into move first, from each of the seller's obligations
        # (its providers' in account order), so a resale of unused units never hands its buyer
        # another provider's drawn ones; drawn units move only in a history from before
        # matching refused a resale of them (`resale_unused`).
        for unused_only in (True, False):
            for key in keys:
                if not left:
                    break
                movable = obligations[key].quantity
                if unused_only:
                    movable += drawdowns[key].used // -TOKENS_PER_UNIT
                moved = min(left, movable)
                if moved > 0:
                    left -= moved
                    events.append(self._move(key, buyer_id, moved, stamp))
        return events

    def _move(
        self, key: ObligationKey, buyer_id: str, moved: int, stamp: EventStamp
    ) -> DeliveryObligation:
        """Move `moved` units of a holder's bundle obligation to a buyer, with their shares of
        the escrow, bond and fee. Unused units move first; risk lets a holder resell only units
        not drawn into, the desk draws none into units offered for resale, and matching refuses
        a resale that a draw-down risk had not yet learned of reached first (`resale_unused`),
        so no drawn tokens move now. A history from before that refusal may hold such a
        resale: its drawn tokens move with what was paid for them, nothing lost."""
        obligation, drawn = self.obligations[key], self.drawdowns[key]
        quantity = obligation.quantity
        amount = obligation.amount * moved // quantity
        bond = obligation.bond * moved // quantity
        fee = obligation.fee * moved // quantity
        used = max(0, drawn.used - (quantity - moved) * TOKENS_PER_UNIT)
        paid = drawn.paid * used // drawn.used if used else 0
        fee_paid = drawn.fee * used // drawn.used if used else 0
        obligation.quantity -= moved
        obligation.amount -= amount
        obligation.bond -= bond
        obligation.fee -= fee
        drawn.used -= used
        drawn.paid -= paid
        drawn.fee -= fee_paid
        target = (key[0], key[1], buyer_id)
        owed = self._owe(target, moved, amount, bond, fee, stamp, key[2])
        taken = self.drawdowns[target]
        taken.used += used
        taken.paid += paid
        taken.fee += fee_paid
        return owed

    def _owe(
        self,
        key: ObligationKey,
        quantity: int,
        amount: int,
        bond: int,
        fee: int,
        stamp: EventStamp,
        moved_from: str,
    ) -> DeliveryObligation:
        """Add units to a bundle's obligation (a new one if the pair had none), moved out of
        the obligation of holder `moved_from` ("": newly owed)."""
        obligation = self.obligations.get(key)
        if obligation is None:
            window_ends = _period(key[0])[1] + self.rules.delivery_window_ms
            obligation = Obligation(0, 0, 0, 0, window_ends)
            self.obligations[key] = obligation
            self._start_drawdown(key)
            heapq.heappush(self._due, (window_ends, *key))
        obligation.quantity += quantity
        obligation.amount += amount
        obligation.bond += bond
        obligation.fee += fee
        return _obligation(key, obligation, quantity, amount, bond, fee, stamp, moved_from)

    def _start_drawdown(self, key: ObligationKey) -> None:
        self.drawdowns[key] = Drawdown()
        self._bundle_keys.setdefault((key[0], key[2]), set()).add(key)

    def _draw_down(self, request: DeliveryRequested, stamp: EventStamp) -> Event:
        """A provider's metering of a bundle: `delivered` tokens more used, paid at once."""
        start, end = _period(request.symbol)
        if stamp.ts < start:
            return _refused(
                request,
                stamp,
                RejectReason.BUNDLE_NOT_STARTED,
                f"{request.symbol} is drawn down from its period's start at {cst_iso(start)}: "
                "nothing is owed before it",
            )
        if stamp.ts >= end:
            return _refused(
                request,
                stamp,
                RejectReason.BUNDLE_PERIOD_OVER,
                f"{request.symbol}'s period ended at {cst_iso(end)}: tokens used after it are "
                "not drawn from it",
            )
        key = (request.symbol, request.provider_id, request.buyer_id)
        obligation = self.obligations.get(key)
        if obligation is None:
            return _refused(
                request,
                stamp,
                RejectReason.NO_OBLIGATION,
                f"{request.provider_id} owes {request.buyer_id} nothing in {request.symbol}",
            )
        drawn = self.drawdowns[key]
        if obligation.disputed:
            return _refused(
                request,
                stamp,
                RejectReason.DELIVERY_WINDOW_CLOSED,
                "the delivery is disputed and awaits an operator",
            )
        if request.request_id in drawn.reports:
            return _refused(
                request,
                stamp,
                RejectReason.DUPLICATE_ID,
                f"metering report {request.request_id!r} was drawn down already",
            )
        used = drawn.used + request.delivered
        if used > obligation.quantity * TOKENS_PER_UNIT:
            return _exceeds_bundle(request, obligation, drawn, stamp)
        offered, movable = self._offered_and_movable(key, used)
        if movable < offered:
            return _refused(
                request,
                stamp,
                RejectReason.BUNDLE_OFFERED_FOR_RESALE,
                f"{request.buyer_id} offers {offered} million of {request.symbol} for resale: "
                f"{request.delivered} tokens more would draw into them (the holder cancels the "
                "resale, or it trades, before they are used)",
            )
        paid, fee = _drawn_shares(obligation, drawn, used)
        drawn.used = used
        drawn.paid += paid
        drawn.fee += fee
        drawn.reports.append(request.request_id)
        return BundleDrawn(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            report_id=request.request_id,
            symbol=request.symbol,
            provider_id=request.provider_id,
            buyer_id=request.buyer_id,
            tokens=request.delivered,
            used=used,
            paid=paid,
            fee=fee,
        )

    def _offered_and_movable(self, key: ObligationKey, used: int) -> tuple[int, int]:
        """The units the holder of `key` offers for resale in its bundle, and the whole units
        of its obligations there not drawn into, were `key` drawn to `used` tokens."""
        symbol, _, holder = key
        offered = sum(self.resales(symbol, holder).values())
        movable = 0
        for other in self._bundle_keys.get((symbol, holder), ()):
            drawn = used if other == key else self.drawdowns[other].used
            movable += self.obligations[other].quantity + drawn // -TOKENS_PER_UNIT
        return offered, movable

    def _settle_bundle(
        self,
        key: ObligationKey,
        used: int,
        stamp: EventStamp,
        resolved_by: str | None,
        reason: str,
    ) -> DeliverySettled:
        """Settle a bundle's obligation after its period and window: the unused escrow back to
        the holder, the whole bond back to the provider (unused is the holder's choice, no
        failure to deliver), and what a resolution found used beyond the metered paid."""
        obligation = self.obligations.pop(key)
        drawn = self.drawdowns.pop(key)
        holder_keys = self._bundle_keys[(key[0], key[2])]
        holder_keys.discard(key)
        if not holder_keys:
            del self._bundle_keys[(key[0], key[2])]
        used = max(used, drawn.used)
        paid, fee = _drawn_shares(obligation, drawn, used)
        symbol, provider_id, buyer_id = key
        return DeliverySettled(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            symbol=symbol,
            provider_id=provider_id,
            buyer_id=buyer_id,
            quantity=obligation.quantity,
            delivered=used // TOKENS_PER_UNIT,
            paid=paid,
            fee=fee,
            refund=obligation.amount - drawn.paid - paid,
            bond=obligation.bond,
            penalty=0,
            resolved_by=resolved_by,
            reason=reason,
            used=used,
        )

    # State ------------------------------------------------------------------------------------

    def digest(self, hasher: Hasher) -> None:
        """Feed a canonical rendering of the desk's state to `hasher`: the `repr` of its
        snapshot, each open sell's part rendered again only once the sell changed (most stay
        as they were from one hash to the next, and rendering them was most of its cost)."""
        parts = [text for _, _, text in self.rendered_sells()]
        rest = repr(self.snapshot_without_sells())
        hasher.update(f"{{'sells': [{', '.join(parts)}], {rest[1:]}".encode())

    def rendered_sells(self) -> list[tuple[str, list[Any], str]]:
        """Each open sell as (order id, its figures, the `repr` of its snapshot entry), by
        order id; an entry is rendered again only if the sell changed since the last call."""
        rendered = self._sells_rendered
        current: dict[str, tuple[list[Any], str]] = {}
        sells = self.sells
        parts = []
        for order_id in sorted(sells):
            sell = sells[order_id]
            known = rendered.get(order_id)
            if known is None or known[0] != sell:
                known = (list(sell), repr([order_id, *sell]))
            current[order_id] = known
            parts.append((order_id, known[0], known[1]))
        self._sells_rendered = current
        return parts

    def snapshot(self) -> dict[str, Any]:
        """The desk's state, JSON-ready, in a canonical order."""
        # Sorted by order id alone, which is unique: the same order as sorting the rows.
        sells = self.sells
        return {
            "sells": [[order_id, *sells[order_id]] for order_id in sorted(sells)],
            **self.snapshot_without_sells(),
        }

    def snapshot_without_sells(self) -> dict[str, Any]:
        """`snapshot` but its first entry, the open sells (`rendered_sells`)."""
        return {
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
            # Token bundles' state only once there is some, so older states hash as before.
            **self._bundles_snapshot(),
        }

    def _bundles_snapshot(self) -> dict[str, Any]:
        if not self.drawdowns and not self.bundles_started:
            return {}
        return {
            "drawdowns": sorted(
                [*key, d.used, d.paid, d.fee, sorted(d.reports)]
                for key, d in self.drawdowns.items()
            ),
            "bundles_started": sorted(self.bundles_started.items()),
        }

    @classmethod
    def restore(cls, rules: MarketRules, data: dict[str, Any]) -> DeliveryDesk:
        """The desk a snapshot describes."""
        desk = cls(rules)
        for order_id, *sell in data["sells"]:
            desk._open_sell(order_id, sell)
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
        for symbol, provider, buyer, used, paid, fee, reports in data.get("drawdowns", []):
            key = (symbol, provider, buyer)
            desk._start_drawdown(key)
            desk.drawdowns[key] = Drawdown(used, paid, fee, list(reports))
        desk.bundles_started = dict(data.get("bundles_started", []))
        desk._bundle_ends = sorted((end, symbol) for symbol, end in desk.bundles_started.items())
        for symbol in {*desk.provisions, *desk.holdings}:
            if symbol not in desk.bundles_started:
                desk._await_bundle_start(symbol)
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


# An exception: mypyc compiles no native class derived from a built-in one.
@mypyc_attr(native_class=False)
class StripAlreadyCascadedError(RuntimeError):
    """A strip was to cascade a second time: its positions already moved to its hours."""

    def __init__(self, symbol: str) -> None:
        super().__init__(f"strip {symbol!r} already cascaded into its hourly contracts")
        self.symbol = symbol


def _unit_zh(symbol: str) -> str:
    """The unit a person reads a contract's quantity in: 卡时 (card-hours) or 核时 (core-hours)."""
    try:
        unit = parse_symbol(symbol).resource_class.unit
    except SymbolError:
        return "单位"
    return {UNIT_CARD_HOUR: "卡时", UNIT_CORE_HOUR: "核时"}.get(unit, "单位")


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


def _obligation(
    key: ObligationKey,
    obligation: Obligation,
    quantity: int,
    amount: int,
    bond: int,
    fee: int,
    stamp: EventStamp,
    moved_from: str | None,
) -> DeliveryObligation:
    """The event of units (and their escrow, bond and fee) an obligation owes: all of it at an
    hour's allocation, what a bundle's allocation or trade adds to it in its period, saying
    where a bundle's units came from (`DeliveryObligation.moved_from`)."""
    symbol, provider_id, buyer_id = key
    return DeliveryObligation(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        symbol=symbol,
        provider_id=provider_id,
        buyer_id=buyer_id,
        quantity=quantity,
        amount=amount,
        bond=bond,
        fee=fee,
        window_ends=obligation.window_ends,
        moved_from=moved_from,
    )


def _period(symbol: str) -> tuple[int, int]:
    period = bundle_period(symbol)
    assert period is not None, symbol
    return period


def _resolution_exceeds_bundle(
    request: DeliveryRequested, obligation: Obligation, drawn: Drawdown, stamp: EventStamp
) -> RequestRejected:
    """A resolution finds the tokens used in all, not more of them: its figure is compared
    with the bundle as it stands, and said so."""
    bought = obligation.quantity * TOKENS_PER_UNIT
    return _refused(
        request,
        stamp,
        RejectReason.METERING_EXCEEDS_BUNDLE,
        f"裁定的总用量 {request.delivered} tokens 超过所购的 {bought} tokens "
        f"({obligation.quantity} 百万 tokens, 已用 {drawn.used}): the resolution's "
        f"{request.delivered} tokens used in all are beyond the {bought} tokens "
        f"({obligation.quantity} million) {request.buyer_id} bought of {request.symbol} from "
        f"{request.provider_id}, {drawn.used} of them drawn down so far",
    )


def _drawn_shares(obligation: Obligation, drawn: Drawdown, used: int) -> tuple[int, int]:
    """What a bundle's provider is paid, and charged in fees, for its use rising to `used`
    tokens: the cumulative shares less what was already paid (never less than nothing: a
    top-up at a lower price lowers the average, but what was paid stays paid)."""
    tokens = obligation.quantity * TOKENS_PER_UNIT
    if not tokens:
        # Every unit was resold in the period: nothing is left to pay for.
        return 0, 0
    paid = max(0, obligation.amount * used // tokens - drawn.paid)
    fee = obligation.fee * used // tokens - drawn.fee
    return paid, fee


def _exceeds_bundle(
    request: DeliveryRequested, obligation: Obligation, drawn: Drawdown, stamp: EventStamp
) -> RequestRejected:
    bought = obligation.quantity * TOKENS_PER_UNIT
    return _refused(
        request,
        stamp,
        RejectReason.METERING_EXCEEDS_BUNDLE,
        f"{request.delivered} tokens more would draw {request.buyer_id}'s bundle of "
        f"{request.symbol} from {request.provider_id} to {drawn.used + request.delivered}, "
        f"beyond the {bought} tokens ({obligation.quantity} million) bought",
    )
