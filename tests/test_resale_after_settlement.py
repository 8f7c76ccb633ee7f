"""A resale of what settled: once a holder's delivery obligation settled (a token bundle's
dispute resolved in its period, a provider's recall of an hour), its resting resales of the
settled units are cancelled (`obligation_settled`, the held entitlement released), one that
risk approved before it learned of the settlement is refused by matching, and a new one by
risk, each with that reason; nothing is paid twice and no buyer is left owed by no one.

The loop of tests/test_bank.py (risk, matching with its delivery desk, a settlement-style
journal) runs them; amounts are checked to the fen.
"""

from __future__ import annotations

import hashlib
import json

from exchange.domain.accounts import Accounts
from exchange.domain.catalogue import MarketRules, default_catalogue
from exchange.domain.delivery import DeliveryDesk
from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    CancelReason,
    DeliveryObligation,
    DeliverySettled,
    DepositCapacity,
    DisputeDelivery,
    Event,
    EventStamp,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    PlaceOrder,
    RecallCapacity,
    RejectReason,
    ResolveDispute,
    TradeExecuted,
    exchange_order_id,
)
from exchange.domain.risk import OUTCOME_TYPES, RiskStage
from tests.test_bank import INT, SEAL, Bank, funds
from tests.test_token_bundles import (
    BUNDLE,
    DAY,
    END,
    HOUR,
    LISTING,
    START,
    _wire,
    buy,
    meter,
    sell,
)

# The outside tester's terms: no maker fee, a 0.1% taker fee, a 10% bond.
RULES = MarketRules(bond_bps=1_000, fees=(("TOK-QWEN", 0, 10),), delivery_window_ms=2 * HOUR)


def _bank() -> Bank:
    bank = Bank(RULES)
    _wire(bank, RULES)
    return bank


def _held_and_resold(bank: Bank) -> None:
    """p1 asks 100 million tokens at 5.00 元; b1 buys 10 (50.00 元, a 5 fen taker fee), uses
    1,250,000 tokens of them in the period (6.25 元 paid to p1), and b2 is funded."""
    for account in ("p1", "b1", "b2"):
        bank.send(funds(account, 100_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=BUNDLE, quantity=100))
    bank.send(sell("s1", "p1", 500, 100))
    bank.send(buy("b1", "b1", 500, 10))
    bank.send(meter("m1", 1_250_000), START + DAY)


def _dispute_and_resolve(bank: Bank, at: int) -> list[Event]:
    bank.send(
        DisputeDelivery(
            dispute_id="dp1", account_id="b1", symbol=BUNDLE, provider_id="p1", reason="用量不符"
        ),
        at,
    )
    resolve = ResolveDispute(
        operator_id="ops", symbol=BUNDLE, provider_id="p1", buyer_id="b1", delivered=1_000_000,
        reason="x",
    )  # fmt: skip
    return bank.send(resolve, at + 1)


def _arrives_late(bank: Bank, accepted: Event, at: int) -> list[Event]:
    """Matching reads an order risk approved earlier (before risk learned of a settlement)."""
    bank.offset += 1
    out = [accepted, *bank.market.handle(accepted, EventStamp("o", 0, bank.offset, at))]
    fed_back = EventStamp("f", 0, bank.offset, at)
    for event in out:
        bank.ledger.apply(event)
        if isinstance(event, OUTCOME_TYPES) and event.event_id.startswith("o:"):
            bank.risk.apply_outcome(event, lambda _: True, fed_back)
    bank.events.extend(out)
    return out


def _settled_b1(events: list[Event]) -> DeliverySettled:
    (settled,) = [e for e in events if isinstance(e, DeliverySettled)]
    # 5,000 escrowed, 625 paid as metered (5,000 x 1,250,000 // 10,000,000); the resolution
    # finds fewer tokens than metered, so nothing more is paid and 4,375 is refunded.
    assert (settled.buyer_id, settled.quantity, settled.used, settled.paid, settled.refund) == (
        "b1", 10, 1_250_000, 0, 4_375,
    )  # fmt: skip
    assert (settled.bond, settled.penalty) == (500, 0)
    return settled


def _b2_buys_and_the_period_ends(bank: Bank, at: int) -> None:
    """b2 bids 92 at 6.00 元: only p1's 90 at 5.00 元 trade; nothing of b1's."""
    bought = bank.send(buy("b2", "b2", 600, 92), at)
    trades = [(t.seller_id, t.price, t.quantity) for t in bought if isinstance(t, TradeExecuted)]
    assert trades == [("p1", 500, 90)]
    owed = [(o.buyer_id, o.quantity) for o in bought if isinstance(o, DeliveryObligation)]
    assert owed == [("b2", 90)]
    assert bank.ledger.positions[("b2", BUNDLE)] == 90
    assert bank.ledger.ledger[f"escrow:{BUNDLE}"] == 45_000
    # 45,000 paid in, a 45 fen taker fee; 2 x 600 (+1 fen of most fee) held for the rest.
    assert bank.cash("b2") == 100_000 - 45_000 - 45
    # The period ends; its book closed at the gate before its last hour (b2's rest expired);
    # b2's obligation settles with nothing used: all 45,000 back and p1's bond with it.
    ended = bank.tick(END + 3 * HOUR)
    assert [(s.buyer_id, s.refund) for s in ended if isinstance(s, DeliverySettled)] == [
        ("b2", 45_000)
    ]
    assert bank.cash("b1") == 100_000 - 5_000 - 5 + 4_375
    assert bank.cash("b2") == 100_000 - 45
    # p1: 625 drawn down, every bond back (it posted 50 a unit sold).
    assert bank.cash("p1") == 100_000 + 625
    assert bank.ledger.ledger.get(f"escrow:{BUNDLE}", 0) == 0
    assert bank.ledger.ledger.get("bond:p1", 0) == 0
    assert bank.ledger.ledger["fees"] == 5 + 45
    assert bank.ledger.trial_balance() == 0
    for account in ("b1", "b2"):
        assert bank.ledger.positions[(account, BUNDLE)] == 0
        assert bank.risk.accounts.positions[(account, BUNDLE)] == 0
        assert bank.risk.accounts.resale_held.get((account, BUNDLE), 0) == 0
        assert bank.ledger.resale_held.get((account, BUNDLE), 0) == 0


def _replays_to_the_live_state(bank: Bank) -> None:
    """The stage replayed from its inputs, and the money rules folding every event, end as the
    live stage and ledger did."""
    replica = MarketStage(default_catalogue(RULES, [LISTING]), replica=True)
    inputs = [e for e in bank.events if e.event_id.startswith("c:")]
    for position, event in enumerate(inputs):
        replica.replay(event, EventStamp("replay", 0, position, event.ts))
    assert replica.state_hash() == bank.market.state_hash()
    live_desk = bank.market.delivery
    for desk in (live_desk, replica.delivery, DeliveryDesk.restore(RULES, live_desk.snapshot())):
        _indexes_follow_the_desk(desk)
    fold = Accounts(RULES, journal=True)
    for event in bank.events:
        fold.apply(event)
    live, folded = hashlib.sha256(), hashlib.sha256()
    bank.ledger.digest(live)
    fold.digest(folded)
    assert folded.hexdigest() == live.hexdigest()


def _indexes_follow_the_desk(desk: DeliveryDesk) -> None:
    """The desk's indexes of resales by seller and of bundle obligations by holder say what
    a scan of its open sells and draw-downs says: kept where those change, rebuilt on restore."""
    resales: dict[tuple[str, str], set[str]] = {}
    for order_id, (from_capacity, _, _, account, symbol) in desk.sells.items():
        if not from_capacity:
            resales.setdefault((symbol, account), set()).add(order_id)
    assert desk._resales == resales
    bundle_keys: dict[tuple[str, str], set[tuple[str, str, str]]] = {}
    for key in desk.drawdowns:
        bundle_keys.setdefault((key[0], key[2]), set()).add(key)
    assert desk._bundle_keys == bundle_keys


def test_a_resting_resale_is_cancelled_when_a_dispute_settles_the_bundle() -> None:
    bank = _bank()
    _held_and_resold(bank)
    resale = bank.send(sell("r1", "b1", 600, 8), START + DAY + 1)[0]
    assert isinstance(resale, OrderAccepted)
    assert resale.backing == "entitlement"
    assert bank.risk.accounts.resale_held[("b1", BUNDLE)] == 8

    resolved = _dispute_and_resolve(bank, START + DAY + 2)
    _settled_b1(resolved)
    cancelled = [e for e in resolved if isinstance(e, OrderCancelled)]
    assert [(c.order_id, c.remaining, c.reason) for c in cancelled] == [
        (resale.order_id, 8, CancelReason.OBLIGATION_SETTLED)
    ]
    # The cancel comes after the settlement, and releases the held entitlement.
    assert resolved.index(cancelled[0]) > resolved.index(_settled_b1(resolved))
    assert bank.risk.accounts.resale_held.get(("b1", BUNDLE), 0) == 0
    assert bank.market.books[BUNDLE].orders.get(resale.order_id) is None
    assert bank.cash("b1") == 100_000 - 5_000 - 5 + 4_375

    # A new resale is refused by risk, saying why, holding nothing.
    again = bank.send(sell("r2", "b1", 600, 1), START + DAY + 3)[0]
    assert isinstance(again, OrderRejected)
    assert again.reason is RejectReason.OBLIGATION_SETTLED
    assert "settled when its dispute was resolved" in again.message
    assert bank.risk.accounts.resale_held.get(("b1", BUNDLE), 0) == 0

    _b2_buys_and_the_period_ends(bank, START + DAY + 4)
    _replays_to_the_live_state(bank)


def test_a_resale_risk_approved_before_the_settlement_is_refused_by_matching() -> None:
    bank = _bank()
    _held_and_resold(bank)
    # Risk approves b1's resale, and the resolution reaches matching before it does.
    bank.offset += 1
    approved = bank.risk.handle(
        sell("r1", "b1", 600, 8), EventStamp("c", 0, bank.offset, START + DAY + 1)
    )
    assert isinstance(approved, OrderAccepted)
    _settled_b1(_dispute_and_resolve(bank, START + DAY + 2))

    late = _arrives_late(bank, approved, START + DAY + 3)
    refused = [e for e in late if isinstance(e, OrderCancelled)]
    assert [(c.order_id, c.remaining, c.reason) for c in refused] == [
        (approved.order_id, 8, CancelReason.OBLIGATION_SETTLED)
    ]
    assert not [e for e in late if isinstance(e, TradeExecuted)]
    assert bank.risk.accounts.resale_held.get(("b1", BUNDLE), 0) == 0
    assert bank.ledger.resale_held.get(("b1", BUNDLE), 0) == 0

    _b2_buys_and_the_period_ends(bank, START + DAY + 4)
    _replays_to_the_live_state(bank)


def test_a_top_up_after_the_settlement_may_be_resold_and_only_it() -> None:
    bank = _bank()
    _held_and_resold(bank)
    _settled_b1(_dispute_and_resolve(bank, START + DAY + 2))
    # b1 buys 3 more in the period: a new obligation, which it may resell, but no more.
    bank.send(buy("b1-more", "b1", 500, 3), START + DAY + 3)
    assert bank.risk.accounts.positions[("b1", BUNDLE)] == 3
    beyond = bank.send(sell("r2", "b1", 600, 4), START + DAY + 4)[0]
    assert isinstance(beyond, OrderRejected)
    assert beyond.reason is RejectReason.OBLIGATION_SETTLED
    resale = bank.send(sell("r3", "b1", 600, 3), START + DAY + 5)[0]
    assert isinstance(resale, OrderAccepted)
    moved = bank.send(buy("b2", "b2", 600, 3), START + DAY + 6)
    assert [(t.seller_id, t.quantity) for t in moved if isinstance(t, TradeExecuted)] == [("p1", 3)]
    # p1's ask at 5.00 元 came first; b1's resale still rests, covered by its top-up.
    assert bank.market.books[BUNDLE].orders[resale.order_id].remaining == 3
    _replays_to_the_live_state(bank)


def test_a_resale_racing_a_recall_of_the_hour_is_refused_and_nothing_is_paid_twice() -> None:
    bank = Bank()
    bank.send(funds("p1", 10_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=INT, quantity=5))
    bank.send(funds("b1", 10_000))
    bank.send(funds("b2", 10_000))
    hour = {"symbol": INT, "price": 600, "quantity": 5}
    bank.send(PlaceOrder(order_id="s1", account_id="p1", side="sell", **hour))
    bank.send(PlaceOrder(order_id="o-b1", account_id="b1", side="buy", **hour))
    # b1's resale is approved; the provider's recall reaches matching first and takes b1's 5
    # units, none of which it saw offered.
    bank.offset += 1
    approved = bank.risk.handle(
        PlaceOrder(order_id="r1", account_id="b1", symbol=INT, side="sell", price=700, quantity=5),
        EventStamp("c", 0, bank.offset, bank.ts + 1),
    )
    assert isinstance(approved, OrderAccepted)
    recalled = bank.send(RecallCapacity(recall_id="rc", account_id="p1", symbol=INT, quantity=5))
    assert [(s.buyer_id, s.quantity, s.refund, s.penalty) for s in recalled
            if isinstance(s, DeliverySettled)] == [("b1", 5, 3_000, 300)]  # fmt: skip
    late = _arrives_late(bank, approved, bank.ts + 1)
    assert [(c.order_id, c.reason) for c in late if isinstance(c, OrderCancelled)] == [
        (approved.order_id, CancelReason.OBLIGATION_SETTLED)
    ]
    # b2's bid finds nothing to buy: b1 is not paid again for what was refunded.
    bought = bank.send(PlaceOrder(order_id="o-b2", account_id="b2", side="buy", **hour))
    assert not [t for t in bought if isinstance(t, TradeExecuted)]
    assert bank.cash("b1") == 10_000 - 3_000 + 3_000 + 300
    assert bank.cash("p1") == 10_000 - 300
    assert bank.cash("b2") == 10_000
    assert bank.ledger.positions[("b1", INT)] == 0
    assert bank.ledger.positions.get(("b2", INT), 0) == 0
    assert bank.risk.accounts.resale_held.get(("b1", INT), 0) == 0
    assert bank.ledger.ledger.get(f"escrow:{INT}", 0) == 0
    assert bank.ledger.trial_balance() == 0


def test_a_stage_and_risk_restored_from_snapshots_cancel_and_refuse_as_the_live_ones() -> None:
    bank = _bank()
    _held_and_resold(bank)
    bank.send(sell("r1", "b1", 600, 8), START + DAY + 1)
    market_snapshot, taken_at = bank.market.snapshot(), len(bank.events)
    _dispute_and_resolve(bank, START + DAY + 2)
    risk_snapshot = bank.risk.snapshot()
    refused = bank.send(sell("r2", "b1", 600, 1), START + DAY + 3)[0]
    assert isinstance(refused, OrderRejected)

    # Matching restored before the resolution cancels the resting resale at it, as live.
    catalogue = default_catalogue(RULES, [LISTING])
    restored = MarketStage.restore(catalogue, json.loads(json.dumps(market_snapshot)))
    cancels = []
    for position, event in enumerate(bank.events[taken_at:]):
        if event.event_id.startswith("c:"):
            out = restored.handle(event, EventStamp("o", 0, position, event.ts))
            cancels += [(c.order_id, c.reason) for c in out if isinstance(c, OrderCancelled)]
    assert cancels == [(exchange_order_id("b1", "r1"), CancelReason.OBLIGATION_SETTLED)]
    assert restored.state_hash() == bank.market.state_hash()

    # Risk restored after it refuses a new resale with the same reason.
    risk = RiskStage.restore(catalogue, json.loads(json.dumps(risk_snapshot)), SEAL)
    again = risk.handle(sell("r3", "b1", 600, 1), EventStamp("c", 0, 10_000, START + DAY + 3))
    assert isinstance(again, OrderRejected)
    assert (again.reason, again.message) == (refused.reason, refused.message)


def test_only_the_resales_beyond_what_the_holder_still_holds_are_cancelled_newest_first() -> None:
    bank = _bank()
    for account in ("p1", "p2", "b1", "b2"):
        bank.send(funds(account, 100_000))
    for provider in ("p1", "p2"):
        deposit = DepositCapacity(
            deposit_id=f"c-{provider}", account_id=provider, symbol=BUNDLE, quantity=5
        )
        bank.send(deposit)
        bank.send(sell(f"s-{provider}", provider, 500, 5))
    # b1 holds 5 from each provider, and offers 4 and then 3 of its 10 for resale.
    bank.send(buy("b1", "b1", 500, 10))
    bank.tick(START)
    first = bank.send(sell("r1", "b1", 600, 4), START + DAY)[0]
    second = bank.send(sell("r2", "b1", 600, 3), START + DAY + 1)[0]
    bank.send(
        DisputeDelivery(
            dispute_id="dp1", account_id="b1", symbol=BUNDLE, provider_id="p1", reason="用量不符"
        ),
        START + DAY + 2,
    )
    resolve = ResolveDispute(
        operator_id="ops", symbol=BUNDLE, provider_id="p1", buyer_id="b1", delivered=0
    )
    resolved = bank.send(resolve, START + DAY + 3)
    # p1's 5 settled (all refunded); p2's 5 still cover the first offer, not both.
    assert [(s.provider_id, s.refund) for s in resolved if isinstance(s, DeliverySettled)] == [
        ("p1", 2_500)
    ]
    cancelled = [e for e in resolved if isinstance(e, OrderCancelled)]
    assert [(c.order_id, c.remaining, c.reason) for c in cancelled] == [
        (second.order_id, 3, CancelReason.OBLIGATION_SETTLED)
    ]
    assert bank.risk.accounts.resale_held[("b1", BUNDLE)] == 4
    # The first offer trades, moving 4 of p2's units to b2 with their escrow.
    bought = bank.send(buy("b2", "b2", 600, 4), START + DAY + 4)
    assert [(t.seller_id, t.quantity) for t in bought if isinstance(t, TradeExecuted)] == [
        ("b1", 4)
    ]
    owed = [(o.provider_id, o.buyer_id, o.quantity, o.amount) for o in bought
            if isinstance(o, DeliveryObligation)]  # fmt: skip
    assert owed == [("p2", "b2", 4, 2_000)]
    assert isinstance(first, OrderAccepted)
    # b1: paid 5,000 in two trades (a 2 fen fee on each), 2,500 refunded, 2,400 for its
    # resale (a maker's, no fee).
    assert bank.cash("b1") == 100_000 - 5_004 + 2_500 + 2_400
    # b2: 2,400 into escrow and a 2 fen fee.
    assert bank.cash("b2") == 100_000 - 2_402
    assert bank.ledger.positions[("b1", BUNDLE)] == 1
    assert bank.ledger.positions[("b2", BUNDLE)] == 4
    assert bank.ledger.trial_balance() == 0
    _replays_to_the_live_state(bank)
