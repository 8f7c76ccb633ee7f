"""The replay fold leaves the books, their book-change counts and the delivery desk exactly as
live matching does, although it builds none of the events live matching publishes.

A seeded market runs through the pure risk and matching stages in log order (as in
tests/test_bank.py): every kind of order, amends, cancels, the kill switch, blocks, operator
controls, price-band halts and their reopening auctions, expiries, gate closures, deliveries
and rolled listings. Its stored history is then folded by `ExchangeState`, as `cx replay` and
settlement do, and the result compared with the live stage; both then go on trading live and
must publish the same events (what a stage last published is not in its snapshot).
"""

from __future__ import annotations

import random
from typing import get_args

import orjson

from exchange.domain.catalogue import (
    ListingRule,
    MarketRules,
    default_catalogue,
    parse_symbol,
    to_utc_ms,
)
from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    ALL_CONTRACTS,
    AmendOrder,
    BookChanged,
    CancelAllOrders,
    CancelOrder,
    Command,
    ControlMarket,
    DepositCapacity,
    DepositFunds,
    Event,
    EventStamp,
    PlaceBlockOrder,
    PlaceOrder,
    decode_event,
    encode,
)
from exchange.domain.operators import OperatorCommand, OperatorSeal
from exchange.domain.risk import OUTCOME_TYPES, RiskStage
from settlement.bench import HISTORY_PARTITIONS, make_history
from settlement.replay import FOLDED_TYPES, ExchangeState

FAMILY = "H100-80G.GZ"
ROLLED = "H100-80G-INT.GZ"
STATIC = [f"{FAMILY}.20271201T00", f"{FAMILY}.20271201T01", "CPU.GZ.20271201T00"]
HOUR = 3_600_000
TRADED = [*STATIC, *(f"{ROLLED}.20271201T{hour:02}" for hour in range(2, 8))]
GATES = {symbol: to_utc_ms(parse_symbol(symbol).delivery_start) - HOUR for symbol in TRADED}
START = to_utc_ms(parse_symbol(STATIC[0]).delivery_start) - 2 * HOUR
RULES = MarketRules(
    band=400, bond_bps=1_000, fees=(("H100-80G", -10, 20),), delivery_window_ms=2 * HOUR
)
CATALOGUE = default_catalogue(RULES, [ListingRule((ROLLED,), 1)])
SEAL = OperatorSeal([b"the replay fold tests' operator key"])
ACCOUNTS = [f"a{n}" for n in range(8)]


class Market:
    """Risk and live matching in one process, in log order; `history` is what is stored."""

    def __init__(self) -> None:
        self.risk = RiskStage(CATALOGUE, SEAL)
        self.live = MarketStage(CATALOGUE)
        self.offset = 0
        self.ts = START
        self.history: list[Event] = []

    def decide(self, command: Command, pause: int) -> Event:
        if isinstance(command, get_args(OperatorCommand)):
            command = SEAL.sign(command)
        self.offset += 1
        self.ts += pause
        return self.risk.handle(command, EventStamp("commands", 0, self.offset, self.ts))

    def match(self, stage: MarketStage, decided: Event) -> list[Event]:
        return stage.handle(decided, EventStamp("orders", 0, self.offset, self.ts))

    def send(self, command: Command, pause: int = 1) -> None:
        decided = self.decide(command, pause)
        outputs = self.match(self.live, decided)
        self.feed_back(outputs)
        self.history += [decided, *outputs]

    def feed_back(self, outputs: list[Event]) -> None:
        """Fold matching's outcomes into risk, as the fills topic does."""
        fed_back = EventStamp("fed-back", 0, self.offset, self.ts)
        for event in outputs:
            if isinstance(event, OUTCOME_TYPES):
                # No fee concessions are granted here: folding an outcome decides none.
                assert not self.risk.apply_outcome(event, lambda _: True, fed_back)


def trade(market: Market, rng: random.Random, count: int) -> None:
    """`count` commands of every kind, with time passing through the delivery hours."""
    for account in ACCOUNTS:
        market.send(DepositFunds(deposit_id=f"f-{account}", account_id=account, amount=10**10))
        for symbol in TRADED:
            market.send(
                DepositCapacity(
                    deposit_id=f"c-{account}-{symbol}",
                    account_id=account,
                    symbol=symbol,
                    quantity=10**5,
                )
            )
    open_orders: list[tuple[str, str]] = []
    for n in range(count):
        # Every 250 commands 20 minutes pass: gate closures, deliveries, settlements.
        pause = HOUR // 3 if n % 250 == 249 else rng.randint(1, 3_000)
        account = rng.choice(ACCOUNTS)
        roll = rng.random()
        if roll < 0.15 and open_orders:
            order_id, owner = open_orders.pop(rng.randrange(len(open_orders)))
            market.send(CancelOrder(order_id=order_id, account_id=owner), pause)
        elif roll < 0.22 and open_orders:
            order_id, owner = rng.choice(open_orders)
            market.send(
                AmendOrder(
                    order_id=order_id,
                    account_id=owner,
                    price=rng.choice([None, 100 * rng.randint(15, 25)]),
                    quantity=rng.choice([None, rng.randint(1, 12)]),
                ),
                pause,
            )
        elif roll < 0.23:
            market.send(CancelAllOrders(account_id=account), pause)
        elif roll < 0.25:
            hour = rng.randint(0, 1)
            market.send(
                PlaceBlockOrder(
                    order_id=f"b{n}",
                    account_id=account,
                    symbols=[f"{ROLLED}.20271201T{h:02}" for h in (2 + hour, 3 + hour)],
                    side=rng.choice(["buy", "sell"]),
                    price=100 * rng.randint(17, 23),
                    quantity=rng.randint(1, 5),
                ),
                pause,
            )
        elif roll < 0.27:
            market.send(_control(rng), pause)
        else:
            order_id = f"o{n}"
            market.send(_order(rng, order_id, account, market.ts + pause), pause)
            open_orders.append((order_id, account))


def _order(rng: random.Random, order_id: str, account: str, now: int) -> PlaceOrder:
    tif = rng.choice(["GTC"] * 6 + ["IOC", "FOK", "GTD", "DAY"])
    kind = rng.random()
    # Mostly the hours still trading, some refused.
    trading = [symbol for symbol in TRADED if GATES[symbol] > now]
    return PlaceOrder(
        order_id=order_id,
        account_id=account,
        symbol=rng.choice(trading if trading and rng.random() < 0.95 else TRADED),
        side=rng.choice(["buy", "sell"]),
        price=100 * rng.randint(15, 25),
        quantity=rng.randint(1, 12),
        time_in_force=tif,
        expire_at=now + rng.randint(1, 600_000) if tif == "GTD" else None,
        order_type="market" if kind < 0.04 else "limit",
        all_or_none=0.04 <= kind < 0.1,
        min_quantity=rng.randint(1, 3) if 0.1 <= kind < 0.14 else 0,
        post_only=0.14 <= kind < 0.18,
        stp_group=rng.choice([None, None, "desk"]),
        stp_mode=rng.choice(["cancel_resting", "cancel_incoming", "cancel_both", "decrement"]),
    )


def _control(rng: random.Random) -> ControlMarket:
    action = rng.choice(
        ["halt", "resume", "resume", "set_band", "halt_market", "resume_market"] * 2
        + ["resume_market", "delist", "list", "list"]
    )
    symbol = ALL_CONTRACTS if action.endswith("_market") else rng.choice(TRADED)
    if action == "set_band" and rng.random() < 0.5:
        symbol = FAMILY
    band = rng.choice([0, 200, 500]) if action == "set_band" else None
    return ControlMarket(operator_id="op", action=action, symbol=symbol, band=band)


def fold(history: list[Event]) -> ExchangeState:
    """What `replay` rebuilds from these events stored in this order (all read by one
    matching partition, partition 0)."""
    state = ExchangeState(CATALOGUE, partitions=1)
    for position, event in enumerate(history, 1):
        data = event.model_dump_json() if event.type in FOLDED_TYPES else None  # type: ignore[attr-defined]
        state.apply_compact((position, event.type, event.ts, data, 0))  # type: ignore[attr-defined]
    return state


def _kinds(history: list[Event]) -> set[str]:
    return {event.type for event in history}  # type: ignore[attr-defined]


def test_the_fold_rebuilds_the_live_books_and_both_go_on_alike() -> None:
    market = Market()
    trade(market, random.Random(11), 3_000)
    kinds = _kinds(market.history)
    # The history reaches what could make the fold's books differ from live ones.
    assert {
        "TradeExecuted",
        "BookChanged",
        "OrderAmended",
        "OrderReduced",
        "AuctionCompleted",
        "ContractStateChanged",
        "DeliveryObligation",
        "DeliverySettled",
        "BlockAccepted",
        "ListingChanged",
    } <= kinds, kinds

    replayed = fold(market.history).markets[0]
    assert replayed.snapshot() == market.live.snapshot()
    assert replayed.state_hash() == market.live.state_hash()

    # Carried on live from the replayed state, the stage publishes what the live one does:
    # first an order in every book, each measured against what live matching last published
    # of it, then more of the market.
    rng = random.Random(12)
    touches = [
        PlaceOrder(
            order_id=f"touch{n}", account_id="a0", symbol=symbol, side="buy", price=100, quantity=1
        )
        for n, symbol in enumerate(sorted(market.live.books))
    ]
    later = [_order(rng, f"later{n}", rng.choice(ACCOUNTS), market.ts) for n in range(300)]
    for command in touches + later:
        decided = market.decide(command, 1)
        outputs = market.match(market.live, decided)
        assert market.match(replayed, decided) == outputs
        market.feed_back(outputs)
    assert replayed.state_hash() == market.live.state_hash()


class Published(Market):
    """A market that, after each command, checks the book changes published so far against
    every book's displayed depth."""

    def __init__(self) -> None:
        super().__init__()
        self.published: dict[str, tuple[dict[int, int], dict[int, int]]] = {}

    def send(self, command: Command, pause: int = 1) -> None:
        before = len(self.history)
        super().send(command, pause)
        for event in self.history[before:]:
            if isinstance(event, BookChanged):
                sides = self.published.setdefault(event.symbol, ({}, {}))
                for side, levels in zip(sides, (event.bids, event.asks), strict=True):
                    for price, quantity in levels:
                        if quantity:
                            side[price] = quantity
                        else:
                            del side[price]
        for symbol in self.live.books:
            bids, asks = self.live.engine.depth(symbol)
            assert self.published.get(symbol, ({}, {})) == (dict(bids), dict(asks)), symbol


def test_published_book_changes_always_add_up_to_the_displayed_depth() -> None:
    """Live matching publishes only the levels a command changed; applied in order, they
    give every book's displayed depth after each command."""
    trade(Published(), random.Random(31), 2_000)


def test_the_checkpoint_hash_renders_again_whatever_changed_since_the_last() -> None:
    # The accounts' and the desk's digests keep what they rendered for the last hash: hashed
    # every 250 events of a market whose resting orders fill, shrink and go, the state must
    # hash as a copy restored from its snapshot, which has rendered nothing before.
    catalogue = default_catalogue()
    state = ExchangeState(catalogue, partitions=HISTORY_PARTITIONS)
    for position, event in enumerate(make_history(3000, seed=5), start=1):
        state.apply_event(decode_event(encode(event)), position)
        if position % 250 == 0:
            restored = ExchangeState.restore(
                catalogue, orjson.loads(orjson.dumps(state.snapshot()))
            )
            assert state.state_hash() == restored.state_hash()
