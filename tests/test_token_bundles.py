"""Token bundles drawn down by use: a day, week or month of a token class, bought in millions
of tokens, allocated at the period's start, paid to the provider as it meters tokens used
(cumulative rounding, so the parts add up to the fen), the unused rest refunded when the
delivery window after the period ends, the provider's bond returned without penalty.

The loop of tests/test_bank.py (risk, matching with its delivery desk, a settlement-style
journal) runs them, with the token family listed for a month ahead.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction

from exchange.domain.accounts import Accounts, Balance
from exchange.domain.catalogue import (
    ListingRule,
    MarketRules,
    cst_iso,
    default_catalogue,
    parse_symbol,
    to_utc_ms,
)
from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    BundleDrawn,
    CancelOrder,
    CancelReason,
    ControlMarket,
    DeliveryDisputed,
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
    RejectReason,
    ReportMetering,
    RequestRejected,
    ResolveDispute,
    TradeExecuted,
)
from exchange.domain.risk import OUTCOME_TYPES, RiskStage
from exchange.domain.token_basis import TOKEN_BASIS
from tests.test_bank import SEAL, Bank, funds, sealed
from tests.test_vouchers import VoucherBank, programme

BUNDLE = "TOK-QWEN.YRD.M202712"
START = to_utc_ms(parse_symbol(BUNDLE).delivery_start)
END = to_utc_ms(parse_symbol(BUNDLE).delivery_end)
DAY = 24 * 3_600_000
HOUR = 3_600_000
RULES = MarketRules(bond_bps=1_000, fees=(("TOK-QWEN", -10, 20),), delivery_window_ms=2 * HOUR)
LISTING = ListingRule(("TOK-QWEN.YRD",), 2, 40)


def _wire(bank: Bank, rules: MarketRules) -> None:
    catalogue = default_catalogue(rules, [LISTING])
    bank.risk = RiskStage(catalogue, SEAL)
    bank.market = MarketStage(catalogue)
    bank.ledger = Accounts(rules, journal=True)
    bank.ts = START - 20 * DAY


def bundle_bank(rules: MarketRules = RULES) -> Bank:
    bank = Bank(rules)
    _wire(bank, rules)
    return bank


def sell(order_id: str, account: str, price: int, quantity: int) -> PlaceOrder:
    return PlaceOrder(
        order_id=order_id, account_id=account, symbol=BUNDLE, side="sell", price=price,
        quantity=quantity,
    )  # fmt: skip


def buy(order_id: str, account: str, price: int, quantity: int, **voucher: str) -> PlaceOrder:
    return PlaceOrder.model_validate(
        {
            "order_id": order_id, "account_id": account, "symbol": BUNDLE, "side": "buy",
            "price": price, "quantity": quantity, **voucher,
        }
    )  # fmt: skip


def meter(report_id: str, tokens: int, buyer: str = "b1") -> ReportMetering:
    return ReportMetering(
        report_id=report_id, account_id="p1", symbol=BUNDLE, buyer_id=buyer, delivered=tokens
    )


def answer(events: list[Event]) -> Event:
    """The delivery desk's answer to a metering report (after risk passed it on)."""
    return next(e for e in events if isinstance(e, BundleDrawn | RequestRejected))


def tick(bank: Bank, at: int) -> list[Event]:
    return bank.send(ControlMarket(operator_id="clock", action="tick", symbol=BUNDLE), at)


def provider_and_buyer(bank: Bank) -> None:
    bank.send(funds("p1", 100_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=BUNDLE, quantity=100))
    bank.send(funds("b1", 100_000))
    ask = bank.send(sell("s1", "p1", 1_234, 100))[0]
    # 10% of 12.34 元 per million tokens: 124 fen of bond per unit (rounded up).
    assert isinstance(ask, OrderAccepted)
    assert ask.bond_per_unit == 124


def test_a_month_drawn_down_by_daily_reports_is_partly_refunded_to_the_fen() -> None:
    bank = bundle_bank()
    provider_and_buyer(bank)
    bank.send(buy("b1", "b1", 1_234, 30))
    # 30 million tokens at 12.34 元: 370.20 元 escrowed, a 0.2% taker fee of 74 fen.
    assert bank.ledger.ledger[f"escrow:{BUNDLE}"] == 37_020
    assert bank.cash("b1") == 100_000 - 37_020 - 74

    started = tick(bank, START)
    obligations = [e for e in started if isinstance(e, DeliveryObligation)]
    assert [(o.quantity, o.amount, o.bond, o.fee, o.window_ends) for o in obligations] == [
        (30, 37_020, 3_720, -37, END + 2 * HOUR)
    ]

    # 30 daily reports of 700,001 tokens: each pays the rise of 37,020 x used // 30,000,000.
    paid: list[int] = []
    for day in range(30):
        drawn = answer(bank.send(meter(f"d{day}", 700_001), START + day * DAY + 23 * HOUR))
        assert isinstance(drawn, BundleDrawn), drawn
        paid.append(drawn.paid)
        used = 700_001 * (day + 1)
        assert drawn.used == used
        assert sum(paid) == 37_020 * used // 30_000_000
    assert sum(paid) == 25_914  # 21,000,030 tokens of 30 million
    assert paid[:3] == [863, 864, 864]
    fees = [e.fee for e in bank.of(BundleDrawn)]
    assert sum(fees) == -37 * 21_000_030 // 30_000_000 == -26
    # The provider was paid as it metered: its bond is still posted.
    assert bank.cash("p1") == 100_000 - 3_720 + 25_914 + 26
    assert bank.ledger.ledger["bond:p1"] == 3_720

    # Nothing settles until the delivery window after the period has passed.
    assert not [e for e in tick(bank, END + 2 * HOUR) if isinstance(e, DeliverySettled)]
    settled = [e for e in tick(bank, END + 2 * HOUR + 1) if isinstance(e, DeliverySettled)]
    assert [(s.quantity, s.used, s.paid, s.fee, s.refund, s.bond, s.penalty) for s in settled] == [
        (30, 21_000_030, 0, 0, 37_020 - 25_914, 3_720, 0)
    ]
    assert bank.cash("b1") == 100_000 - 37_020 - 74 + 11_106
    assert bank.cash("p1") == 100_000 + 25_914 + 26
    assert bank.ledger.ledger.get(f"escrow:{BUNDLE}", 0) == 0
    assert bank.ledger.ledger.get("bond:p1", 0) == 0
    assert bank.ledger.positions.get(("b1", BUNDLE), 0) == 0
    assert bank.ledger.trial_balance() == 0
    # The bundle's book is dropped once its period has ended.
    assert BUNDLE not in bank.market.books


def test_a_top_up_in_the_period_becomes_deliverable_at_once() -> None:
    bank = bundle_bank()
    provider_and_buyer(bank)
    bank.send(buy("b1", "b1", 1_234, 10))
    tick(bank, START)
    drawn = answer(bank.send(meter("m1", 9_000_000), START + DAY))
    assert isinstance(drawn, BundleDrawn)
    assert drawn.paid == 11_106
    # Past 10 million: refused until the holder tops up.
    refused = answer(bank.send(meter("m2", 2_000_000), START + DAY + 1))
    assert isinstance(refused, RequestRejected)
    assert refused.reason is RejectReason.METERING_EXCEEDS_BUNDLE

    topped = bank.send(buy("b2", "b1", 1_234, 5), START + 2 * DAY)
    assert [
        (o.quantity, o.amount, o.bond) for o in topped if isinstance(o, DeliveryObligation)
    ] == [(5, 6_170, 620)]
    drawn = answer(bank.send(meter("m2", 2_000_000), START + 2 * DAY + 1))
    # 18,510 x 11,000,000 // 15,000,000 = 13,574 paid so far.
    assert isinstance(drawn, BundleDrawn)
    assert drawn.paid == 13_574 - 11_106
    settled = [e for e in tick(bank, END + 3 * HOUR) if isinstance(e, DeliverySettled)]
    assert [(s.quantity, s.refund, s.bond, s.penalty) for s in settled] == [
        (15, 18_510 - 13_574, 1_860, 0)
    ]
    assert bank.ledger.trial_balance() == 0


def test_a_resale_before_the_period_and_in_it_moves_the_bundle() -> None:
    bank = bundle_bank()
    provider_and_buyer(bank)
    bank.send(funds("b2", 100_000))
    bank.send(buy("b1", "b1", 1_234, 10))
    # Resales below the provider's ask, so they trade first.
    bank.send(sell("r1", "b1", 1_200, 2))
    bank.send(buy("b2", "b2", 1_200, 2))
    started = tick(bank, START)
    assert [
        (o.buyer_id, o.quantity, o.amount) for o in started if isinstance(o, DeliveryObligation)
    ] == [("b1", 8, 9_872), ("b2", 2, 2_468)]
    bank.send(meter("m1", 3_500_000), START + DAY)
    # In the period: only whole unused millions move, at the obligation's own price.
    bank.send(sell("r2", "b1", 1_200, 4), START + DAY + 1)
    moved = bank.send(buy("b3", "b2", 1_200, 4), START + DAY + 2)
    assert [
        (o.buyer_id, o.quantity, o.amount, o.bond)
        for o in moved
        if isinstance(o, DeliveryObligation)
    ] == [("b2", 4, 4_936, 496)]
    refused = answer(bank.send(meter("m2", 600_000), START + DAY + 3))
    assert isinstance(refused, RequestRejected)
    assert refused.reason is RejectReason.METERING_EXCEEDS_BUNDLE
    settled = {e.buyer_id: e for e in tick(bank, END + 3 * HOUR) if isinstance(e, DeliverySettled)}
    assert (settled["b1"].quantity, settled["b1"].refund) == (4, 4_936 - 4_319)
    assert (settled["b2"].quantity, settled["b2"].refund) == (6, 7_404)
    assert bank.ledger.positions.get(("b1", BUNDLE), 0) == 0
    assert bank.ledger.positions.get(("b2", BUNDLE), 0) == 0
    assert bank.ledger.trial_balance() == 0


def test_errors_are_specific_and_change_nothing() -> None:
    bank = bundle_bank()
    provider_and_buyer(bank)
    bank.send(buy("b1", "b1", 1_234, 10))

    def refused(command: ReportMetering, at: int, reason: RejectReason) -> str:
        # The log's clock moves on; the delivery desk and the money do not.
        before = (bank.market.delivery.snapshot(), dict(bank.ledger.ledger))
        refusal = answer(bank.send(command, at))
        assert isinstance(refusal, RequestRejected), refusal
        assert refusal.reason is reason, refusal.message
        assert refusal.request == "ReportMetering"
        assert (bank.market.delivery.snapshot(), dict(bank.ledger.ledger)) == before
        return refusal.message

    early = refused(meter("early", 1), START - 1, RejectReason.BUNDLE_NOT_STARTED)
    # Times a person reads are China Standard Time, not log milliseconds.
    assert f"period's start at {cst_iso(START)}:" in early
    assert cst_iso(START).endswith("+08:00")
    tick(bank, START)
    refused(meter("m1", 10_000_001), START + 1, RejectReason.METERING_EXCEEDS_BUNDLE)
    assert isinstance(answer(bank.send(meter("m1", 1_000_000), START + 2)), BundleDrawn)
    refused(meter("m1", 1_000_000), START + 3, RejectReason.DUPLICATE_ID)
    refused(meter("m2", 9_000_001), START + 4, RejectReason.METERING_EXCEEDS_BUNDLE)
    refused(meter("m3", 1, buyer="b9"), START + 5, RejectReason.NO_OBLIGATION)
    tick(bank, END)  # the book closes, the provider's ask expires
    late = refused(meter("late", 1), END, RejectReason.BUNDLE_PERIOD_OVER)
    assert f"period ended at {cst_iso(END)}:" in late
    refused(meter("later", 1), END + HOUR, RejectReason.BUNDLE_PERIOD_OVER)


def test_a_voucher_on_a_bundle_returns_its_share_of_the_unused_tokens() -> None:
    bank = VoucherBank(RULES)
    _wire(bank, RULES)
    bank.send(programme(classes=["TOK-QWEN"], regions=["YRD"], valid_until=END + 365 * DAY))
    bank.grant("b1", 1_000)
    bank.send(funds("b1", 100_000))
    bank.send(funds("p1", 100_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=BUNDLE, quantity=10))
    bank.send(sell("s1", "p1", 1_000, 10))
    bank.send(buy("b1", "b1", 1_000, 2, voucher="hz"))
    # 30% of 20 元 is 6 元, at the per-contract cap of 600: the buyer pays 14 元 and the fee.
    grant = bank.ledger.grants[("hz", "b1")]
    assert (grant.remaining, grant.committed) == (400, 600)
    assert bank.cash("b1") == 100_000 - 1_400 - 4

    tick(bank, START)
    bank.send(meter("m1", 500_001), START + DAY)
    drawn = bank.of(BundleDrawn)
    assert [(d.used, d.paid) for d in drawn] == [(500_001, 500)]
    settled = [e for e in tick(bank, END + 3 * HOUR) if isinstance(e, DeliverySettled)]
    # 1,499,999 of 2,000,000 tokens unused: 1,500 of the escrow refunded, of which the
    # voucher's 600 x 1,499,999 // 2,000,000 = 449 returns to the grant.
    assert [(s.refund, s.used) for s in settled] == [(1_500, 500_001)]
    grant = bank.ledger.grants[("hz", "b1")]
    assert (grant.remaining, grant.committed, grant.clawed_back) == (849, 151, 449)
    assert bank.cash("b1") == 100_000 - 1_400 - 4 + 1_500 - 449
    assert bank.ledger.trial_balance() == 0


def test_replay_and_a_snapshot_reproduce_the_live_state() -> None:
    bank = bundle_bank()
    provider_and_buyer(bank)
    bank.send(buy("b1", "b1", 1_234, 30))
    tick(bank, START)
    for day in range(3):
        bank.send(meter(f"d{day}", 1_234_567), START + day * DAY + HOUR)
    snapshot = bank.market.snapshot()
    mid_hash = bank.market.state_hash()
    taken_at = len(bank.events)
    bank.send(buy("b2", "b1", 1_234, 2), START + 4 * DAY)
    bank.send(meter("d9", 7), START + 5 * DAY)
    tick(bank, END + 3 * HOUR)
    live = bank.market.state_hash()

    # The stage replayed from its stored inputs (the events topic's records) ends the same.
    catalogue = default_catalogue(RULES, [LISTING])
    replica = MarketStage(catalogue, replica=True)
    inputs = [e for e in bank.events if e.event_id.startswith("c:")]
    for position, event in enumerate(inputs):
        replica.replay(event, EventStamp("replay", 0, position, event.ts))
    assert replica.state_hash() == live

    # Restored from the snapshot in the period, and fed the inputs after it, it ends the same.
    restored = MarketStage.restore(catalogue, snapshot)
    assert restored.state_hash() == mid_hash
    assert restored.delivery.snapshot()["drawdowns"]
    for position, event in enumerate(bank.events[taken_at:]):
        if event.event_id.startswith("c:"):
            restored.handle(event, EventStamp("o", 0, position, event.ts))
    assert restored.state_hash() == live

    # The settlement fold of every event reproduces the live ledger, to the fen.
    fold = Accounts(RULES, journal=True)
    for event in bank.events:
        fold.apply(event)
    assert fold.trial_balance() == 0
    live_digest, fold_digest = hashlib.sha256(), hashlib.sha256()
    bank.ledger.digest(live_digest)
    fold.digest(fold_digest)
    assert fold_digest.hexdigest() == live_digest.hexdigest()
    assert fold.cash["p1"] == bank.ledger.cash["p1"] != Balance()
    assert [e for e in bank.events if isinstance(e, TradeExecuted)]


def test_a_disputed_bundle_settles_at_the_tokens_an_operator_finds_used() -> None:
    bank = bundle_bank()
    provider_and_buyer(bank)
    bank.send(buy("b1", "b1", 1_234, 10))
    tick(bank, START)
    bank.send(meter("m1", 2_000_000), START + DAY)
    disputed = bank.send(
        DisputeDelivery(
            dispute_id="x1", account_id="b1", symbol=BUNDLE, provider_id="p1", reason="padded"
        ),
        START + DAY + 1,
    )
    assert any(isinstance(e, DeliveryDisputed) for e in disputed)
    frozen = answer(bank.send(meter("m2", 1), START + DAY + 2))
    assert isinstance(frozen, RequestRejected)
    assert frozen.reason is RejectReason.DELIVERY_WINDOW_CLOSED
    # Nothing settles by itself while disputed, even after the window.
    assert not [e for e in tick(bank, END + 3 * HOUR) if isinstance(e, DeliverySettled)]
    beyond = answer(bank.send(resolve(10_000_001), END + 3 * HOUR + 1))
    assert isinstance(beyond, RequestRejected)
    assert beyond.reason is RejectReason.METERING_EXCEEDS_BUNDLE
    settled = [
        e for e in bank.send(resolve(2_500_000), END + 4 * HOUR) if isinstance(e, DeliverySettled)
    ]
    # 12,340 x 2,500,000 // 10,000,000 = 3,085 in all: 2,468 paid as metered, 617 now.
    assert [(s.used, s.paid, s.refund, s.bond, s.penalty, s.resolved_by) for s in settled] == [
        (2_500_000, 617, 12_340 - 3_085, 1_240, 0, "ops")
    ]
    assert bank.ledger.trial_balance() == 0


def resolve(tokens: int) -> ResolveDispute:
    return ResolveDispute(
        operator_id="ops", symbol=BUNDLE, provider_id="p1", buyer_id="b1", delivered=tokens
    )


def test_the_token_basis_states_its_sources_and_compares_prices_per_character() -> None:
    qwen, deepseek, glm = (TOKEN_BASIS.models[c] for c in ("TOK-QWEN", "TOK-DEEPSEEK", "TOK-GLM"))
    assert (qwen.tokens_per_character, deepseek.tokens_per_character) == (1, Fraction(3, 5))
    assert glm.tokens_per_character is None
    assert all(m.source and m.url.startswith("https://") for m in (qwen, deepseek, glm))
    # 8 元 per million DeepSeek tokens is 4.80 元 per million characters; Qwen's 6 元 is 6 元.
    assert TOKEN_BASIS.price_per_million_characters(800, "TOK-DEEPSEEK") == 480
    assert TOKEN_BASIS.price_per_million_characters(600, "TOK-QWEN") == 600
    assert TOKEN_BASIS.price_per_million_characters(600, "TOK-GLM") is None
    assert TOKEN_BASIS.price_per_million_characters(600, "H100-80G") is None


def test_drawn_units_cannot_be_resold_nor_offered_units_drawn() -> None:
    bank = bundle_bank()
    provider_and_buyer(bank)
    bank.send(funds("b2", 100_000))
    bank.send(buy("b1", "b1", 1_234, 10))
    tick(bank, START)
    bank.send(meter("m1", 6_000_001), START + DAY)
    # 6,000,001 tokens draw into 7 whole millions: 3 may be resold, not 4.
    refused = bank.send(sell("r1", "b1", 1_200, 4), START + DAY + 1)[0]
    assert isinstance(refused, OrderRejected)
    assert refused.reason is RejectReason.INSUFFICIENT_CAPACITY
    assert isinstance(bank.send(sell("r2", "b1", 1_200, 3), START + DAY + 2)[0], OrderAccepted)
    # While 3 are offered, metering may not draw into them.
    offered = answer(bank.send(meter("m2", 999_999), START + DAY + 3))
    assert isinstance(offered, BundleDrawn)
    into = answer(bank.send(meter("m3", 1), START + DAY + 4))
    assert isinstance(into, RequestRejected)
    assert into.reason is RejectReason.BUNDLE_OFFERED_FOR_RESALE
    bank.send(CancelOrder(order_id="r2", account_id="b1"), START + DAY + 5)
    assert isinstance(answer(bank.send(meter("m3", 1), START + DAY + 6)), BundleDrawn)


class StaleRiskBank(Bank):
    """Risk that has not yet learned of the draw-downs (fed back after a resale arrives)."""

    def send(self, command, at=None):  # type: ignore[no-untyped-def]
        command = sealed(command)
        self.ts = self.ts + 1 if at is None else at
        self.offset += 1
        decided = self.risk.handle(command, EventStamp("c", 0, self.offset, self.ts))
        out = [decided, *self.market.handle(decided, EventStamp("o", 0, self.offset, self.ts))]
        fed_back = EventStamp("f", 0, self.offset, self.ts)
        for event in list(out):
            self.ledger.apply(event)
            if isinstance(event, BundleDrawn):
                continue
            if isinstance(event, OUTCOME_TYPES) and event.event_id.startswith("o:"):
                for conceded in self.risk.apply_outcome(event, lambda _: True, fed_back):
                    self.ledger.apply(conceded)
                    out.append(conceded)
        self.events.extend(out)
        return out


def test_a_resale_that_raced_a_draw_down_into_its_units_is_refused() -> None:
    """Risk approves a resale before it learns of a report that drew into the units offered:
    matching, which sequences both, refuses it (`bundle_tokens_used`) and risk releases the
    hold; a resale of the one unit still unused trades, and moves no tokens to its buyer."""
    bank = StaleRiskBank(RULES)
    _wire(bank, RULES)
    provider_and_buyer(bank)
    bank.send(funds("b2", 100_000))
    bank.send(buy("b1", "b1", 1_234, 10))
    tick(bank, START)
    bank.send(meter("m1", 8_500_000), START + DAY)  # 9 whole millions drawn into: 10,489 paid
    raced = bank.send(sell("r1", "b1", 1_200, 2), START + DAY + 1)
    assert isinstance(raced[0], OrderAccepted)
    refused = [(c.remaining, c.reason) for c in raced if isinstance(c, OrderCancelled)]
    assert refused == [(2, CancelReason.BUNDLE_TOKENS_USED)]
    assert not [e for e in raced if isinstance(e, TradeExecuted)]
    assert bank.risk.accounts.resale_held.get(("b1", BUNDLE), 0) == 0
    assert bank.ledger.resale_held.get(("b1", BUNDLE), 0) == 0

    bank.send(sell("r2", "b1", 1_200, 1), START + DAY + 2)
    moved = bank.send(buy("b2", "b2", 1_200, 2), START + DAY + 3)
    assert [(t.seller_id, t.quantity) for t in moved if isinstance(t, TradeExecuted)] == [("b1", 1)]
    owed = [(o.buyer_id, o.quantity, o.amount) for o in moved if isinstance(o, DeliveryObligation)]
    assert owed == [("b2", 1, 1_234)]
    drawdowns = bank.market.delivery.drawdowns
    assert (drawdowns[(BUNDLE, "p1", "b2")].used, drawdowns[(BUNDLE, "p1", "b2")].paid) == (0, 0)
    assert drawdowns[(BUNDLE, "p1", "b1")].paid == 10_489
    settled = {e.buyer_id: e for e in tick(bank, END + 3 * HOUR) if isinstance(e, DeliverySettled)}
    # b1's 9 units: 11,106 escrowed, 10,489 paid as metered, 617 back; b2's unit all back.
    assert (settled["b1"].quantity, settled["b1"].used, settled["b1"].refund) == (9, 8_500_000, 617)
    assert (settled["b2"].quantity, settled["b2"].used, settled["b2"].refund) == (1, 0, 1_234)
    assert bank.ledger.ledger.get(f"escrow:{BUNDLE}", 0) == 0
    assert bank.ledger.trial_balance() == 0


def test_a_resale_moves_another_provider_s_unused_unit_before_a_drawn_one() -> None:
    """A holder of one million from each of two providers, p1's used up, resells the one it
    has unused: p2's unit moves to the buyer, not p1's, whose tokens were used and paid for
    (the buyer paid full price for it, and the holder's risk still counted it drawn)."""
    bank = bundle_bank()
    for provider in ("p1", "p2"):
        bank.send(funds(provider, 100_000))
        deposit = DepositCapacity(deposit_id="c", account_id=provider, symbol=BUNDLE, quantity=1)
        bank.send(deposit)
        bank.send(sell("s", provider, 1_000, 1))
    bank.send(funds("b1", 100_000))
    bank.send(funds("b2", 100_000))
    bank.send(buy("b1", "b1", 1_000, 2))
    tick(bank, START)
    assert isinstance(answer(bank.send(meter("m1", 1_000_000), START + DAY)), BundleDrawn)
    assert isinstance(bank.send(sell("r1", "b1", 1_000, 1), START + DAY + 1)[0], OrderAccepted)
    moved = bank.send(buy("b2", "b2", 1_000, 1), START + DAY + 2)
    owed = [
        (o.provider_id, o.buyer_id, o.quantity) for o in moved if isinstance(o, DeliveryObligation)
    ]
    assert owed == [("p2", "b2", 1)]
    drawdowns = bank.market.delivery.drawdowns
    assert drawdowns[(BUNDLE, "p1", "b1")].used == 1_000_000
    assert drawdowns[(BUNDLE, "p2", "b2")].used == 0
    # b1 holds only p1's used unit now: nothing more to resell.
    again = bank.send(sell("r2", "b1", 1_000, 1), START + DAY + 3)[0]
    assert isinstance(again, OrderRejected)
    assert again.reason is RejectReason.INSUFFICIENT_CAPACITY
    settled = {
        (e.provider_id, e.buyer_id): (e.quantity, e.used, e.refund)
        for e in tick(bank, END + 3 * HOUR)
        if isinstance(e, DeliverySettled)
    }
    # p1 was paid all of b1's unit; b2's unit from p2 is unused, all 1,000 back.
    assert settled[("p1", "b1")] == (1, 1_000_000, 0)
    assert settled[("p2", "b2")] == (1, 0, 1_000)
    assert bank.ledger.ledger.get(f"escrow:{BUNDLE}", 0) == 0
    assert bank.ledger.trial_balance() == 0
