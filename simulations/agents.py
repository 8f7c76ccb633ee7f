"""The participants of a simulated market and how each decides what to send.

Every agent turns what it sees (`MarketView`: the published books, its own orders and
obligations) and the log time into commands; it never reaches into the exchange's stages. Each
draws from its own `random.Random`, seeded from the run's seed and its id, so adding an agent
does not change what the others draw.

- `Provider`: a data centre in an eastern hub (busy by day, idle at night) or a western hub
  (idle most of the time, cheaper power). It deposits its idle cards hour by hour as they are
  listed, firm or recallable (`-INT`), asks a markup over its marginal cost that falls in steps
  as delivery nears, may recall unsold recallable hours, and meters what it delivered.
- `Buyer`: an SME, one-person company or larger firm with jobs (cards x consecutive hours
  between an earliest start and a deadline, worth `value` a card-hour, less a latency cost
  outside its home hub). Direct buyers trade their home hub only: a block order for a
  multi-hour job, a limit order for a one-hour job, either with their voucher if they hold a
  grant. Planner buyers state the need and let `exchange.domain.planner.plan` pick the cheapest
  region and start hour from the live asks after their voucher, as `api/needs.py` does, then
  send its block (with the voucher where the grant covers it).

With a day-ahead auction (`DAY_AHEAD_GATE`), a day's contracts collect orders until 12:00 CST
the day before, when one auction clears the whole day; then they trade continuously. Providers
offer every idle hour of a day still to be auctioned at its cost (the auction pays each hour's
uniform clearing price, so asking the cost is what serves them best); what the auction leaves
rests at that ask. A buyer whose job cannot start in the hours already trading but can in a
day still to be auctioned (any buyer: direct and planner alike) states it as an exclusive
group (`PlaceExclusiveGroup`): the job's cheapest alternatives (region x class x start hour
inside that day, by the asks in the books plus the latency cost) at its value, with its
voucher. A job the auction did not fill, and every job that can start in the hours already
trading, trades continuously as without the auction, over those hours only. A job no hub
offers enough cards for at a price it is worth, where half of it would be, goes to the auction
as two shards of half its cards, each a need of its own.
- `Reseller`: buys western hours a day or two ahead when they are cheap against the last trade
  and resells them nearer delivery (a sell backed by the entitlement), as many of an hour as
  the hours it held to their gate showed would resell.
- `Administrator`: creates a city's voucher programme and approves grants as its enterprises
  apply, until the budget is granted out.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from exchange.domain.accounts import Grant
from exchange.domain.catalogue import (
    CHINA_STANDARD_TIME,
    INTRADAY_GUARD_MS,
    RESOURCE_CLASSES,
    ContractSpec,
    MarketRules,
    cst_day_start_ms,
    parse_symbol,
    to_utc_ms,
)
from exchange.domain.messages import (
    MAX_ALTERNATIVES,
    AmendOrder,
    ApplyForGrant,
    ApproveGrant,
    CancelOrder,
    Command,
    CreateProgramme,
    DepositCapacity,
    DepositFunds,
    PlaceBlockOrder,
    PlaceExclusiveGroup,
    PlaceOrder,
    RegisterEnterprise,
    ReportMetering,
    WithdrawCapacity,
    exchange_order_id,
)
from exchange.domain.performance import STANDARD
from exchange.domain.planner import CARDS, Need, RegionChoice, VoucherOf, plan
from exchange.domain.uscc import with_check_character
from simulations.scenario import CARD, EAST, INTERRUPTIBLE, REGIONS, WEST, Programme
from simulations.view import MarketView, OrderState

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
TICK = RESOURCE_CLASSES[CARD].tick_size
GATE_MS = HOUR_MS
"""Trading in an hour closes an hour before it (the exchange's default gate closure)."""

# Share of a fleet idle at each hour of the day (China Standard Time). Eastern hubs serve their
# own customers by day; western hubs sell to the east and are idle most of the time.
_IDLE_EAST = (0.75,) * 7 + (0.4, 0.3) + (0.08,) * 10 + (0.3, 0.4, 0.5) + (0.65,) * 2
_IDLE_WEST = (0.85,) * 9 + (0.7,) * 9 + (0.8,) * 6
IDLE_SHARE = {"east": _IDLE_EAST, "west": _IDLE_WEST}

# An ask's markup over cost, as a share of the provider's opening markup, by hours to
# delivery: patient far out, close to cost near the gate (steps, so a provider amends each
# order a few times rather than every hour).
_MARKUP_STEPS = ((24, 1.0), (12, 0.6), (6, 0.35), (3, 0.15), (0, 0.03))
INTERRUPTIBLE_DISCOUNT = 0.85
"""Recallable capacity asks this share of the firm ask (never below cost)."""
CASH_PER_PROVIDER = 2_000_000_000
"""Enough cash behind any provider's delivery bonds (20 million CNY)."""
DAY_AHEAD_GATE = "12:00"
"""The day-ahead auction's gate of a day's contracts: 12:00 CST the day before
(`CX_DAY_AHEAD_GATE`)."""
DAY_AHEAD_GATE_MS = 12 * HOUR_MS
INTRADAY_AUCTION_HOURS = 1
"""Hours between intraday auctions in a run with them (`CX_INTRADAY_AUCTION_HOURS`)."""
LOT = 8
"""The most a reseller buys of one hour in one region at a time."""
SERVER_CARDS = 8
"""Cards in one server: the smallest shard a job is split into, so only a job of at least two
servers' cards can be split."""


def symbol_at(resource_class: str, region: str, start_ms: int) -> str:
    """The contract of `resource_class` in `region` delivered in the hour starting at `start_ms`."""
    start = datetime(1970, 1, 1, tzinfo=CHINA_STANDARD_TIME) + timedelta(
        milliseconds=start_ms + 8 * HOUR_MS
    )
    return ContractSpec(RESOURCE_CLASSES[resource_class], region, start).symbol


def hour_of_day(start_ms: int) -> int:
    """The hour of the day (China Standard Time) of a delivery start."""
    return (start_ms - cst_day_start_ms(start_ms)) // HOUR_MS


def on_tick(price: float, up: bool) -> int:
    """A price in fen rounded onto the card's tick (up or down), at least one tick."""
    ticks = math.ceil(price / TICK) if up else math.floor(price / TICK)
    return max(TICK, ticks * TICK)


def tradable(start_ms: int, now_ms: int) -> bool:
    """Whether an hour's gate is still open at `now_ms`."""
    return start_ms - GATE_MS > now_ms


class Ids:
    """Order and request ids: the agent's account and a counter, the same in every run."""

    def __init__(self, account_id: str) -> None:
        self._account_id = account_id
        self._count = 0

    def next(self) -> str:
        """A fresh id."""
        self._count += 1
        return f"{self._account_id}.{self._count}"

    def order(self) -> tuple[str, str]:
        """A fresh order id to send, and the exchange's id of the order sent with it: what
        its events, and so the market view, know it by."""
        name = self.next()
        return name, exchange_order_id(self._account_id, name)


@dataclass
class Context:
    """What every agent may know besides the market: the clock and the run's horizon."""

    now_ms: int
    end_ms: int
    """No job or deposit reaches past this delivery time."""
    listed_until_ms: int
    """Deliveries before this are listed now (the rolling horizon)."""
    day: int
    view: MarketView
    day_ahead: bool = False
    """Whether the exchange runs a day-ahead auction at `DAY_AHEAD_GATE`."""
    intraday: bool = False
    """Whether it runs an intraday auction every `INTRADAY_AUCTION_HOURS` too."""

    def next_intraday(self) -> int:
        """The log time of the next intraday auction, on the exchange's schedule."""
        rules = MarketRules(intraday_every_ms=INTRADAY_AUCTION_HOURS * HOUR_MS)
        following = rules.intraday_auction_after(self.now_ms)
        if following is None:
            raise ValueError("intraday auctions have no schedule")
        return following

    def auction_ahead(self, start_ms: int) -> bool:
        """Whether the hour starting at `start_ms` is in a day whose day-ahead auction is
        still to come (so its contracts collect orders and do not trade yet)."""
        gate = cst_day_start_ms(start_ms) - DAY_MS + DAY_AHEAD_GATE_MS
        return self.day_ahead and gate > self.now_ms

    def trading(self, start_ms: int, hours: int = 1) -> bool:
        """Whether `hours` hours from `start_ms` all trade continuously now (tradable and
        none awaiting a day-ahead auction)."""
        last = start_ms + (hours - 1) * HOUR_MS
        return tradable(start_ms, self.now_ms) and not self.auction_ahead(last)


# Providers -------------------------------------------------------------------------------------


@dataclass
class SellOrder:
    """A provider's ask for one hour."""

    symbol: str
    start_ms: int
    interruptible: bool


class Provider:
    """A data centre that deposits its idle cards and sells them around its cost."""

    def __init__(
        self,
        account_id: str,
        region: str,
        profile: str,
        cards: int,
        cost: int,
        interruptible_share: float,
        recall_probability: float,
        markup: float,
        rng: random.Random,
    ) -> None:
        self.account_id = account_id
        self.region = region
        self.profile = profile
        self.cards = cards
        self.cost = cost
        self.interruptible_share = interruptible_share
        self.recall_probability = recall_probability
        self.markup = markup
        self.rng = rng
        self.ids = Ids(account_id)
        self.deposited_until_ms = 0
        self.sells: dict[str, SellOrder] = {}
        self.recalled: list[str] = []
        """Cancelled recallable asks whose capacity is withdrawn next hour."""
        self.read_obligations = 0
        self.unmetered: list[tuple[str, str, int, int]] = []
        """(symbol, buyer, quantity, delivery start) owed and not yet metered."""

    def ask(self, start_ms: int, now_ms: int, interruptible: bool) -> int:
        """The ask for an hour at `now_ms`: the markup step for its distance to delivery."""
        hours_out = (start_ms - now_ms) / HOUR_MS
        step = next(share for above, share in _MARKUP_STEPS if hours_out > above)
        price = self.cost * (1 + self.markup * step)
        if interruptible:
            price = max(self.cost, price * INTERRUPTIBLE_DISCOUNT)
        return on_tick(price, up=True)

    def idle_cards(self, start_ms: int, fleet_factor: float) -> int:
        """Cards idle in an hour: the profile's share of the fleet, give or take a tenth."""
        share = IDLE_SHARE[self.profile][hour_of_day(start_ms)]
        return round(self.cards * fleet_factor * share * self.rng.uniform(0.9, 1.1))

    def act(self, ctx: Context, fleet_factor: float, delivered_share: float) -> list[Command]:
        """Meter, recall, reprice, then deposit and offer the hours newly listed."""
        commands: list[Command] = []
        commands += self._meter(ctx, delivered_share)
        commands += self._withdraw_recalled(ctx)
        commands += self._reprice_and_recall(ctx)
        commands += self._deposit_new_hours(ctx, fleet_factor)
        return commands

    def _meter(self, ctx: Context, delivered_share: float) -> list[Command]:
        obligations = ctx.view.obligations
        for obligation in obligations[self.read_obligations :]:
            if obligation.provider_id == self.account_id:
                start = to_utc_ms(parse_symbol(obligation.symbol).delivery_start)
                self.unmetered.append(
                    (obligation.symbol, obligation.buyer_id, obligation.quantity, start)
                )
        self.read_obligations = len(obligations)
        # The view reads partitions in no fixed order: meter in one, so the log is the same.
        self.unmetered.sort(key=lambda owed: (owed[3], owed[0], owed[1]))
        commands: list[Command] = []
        waiting = []
        for symbol, buyer, quantity, start in self.unmetered:
            if start + HOUR_MS > ctx.now_ms:
                waiting.append((symbol, buyer, quantity, start))
                continue
            commands.append(
                ReportMetering(
                    report_id=self.ids.next(),
                    account_id=self.account_id,
                    symbol=symbol,
                    buyer_id=buyer,
                    delivered=math.floor(quantity * delivered_share),
                )
            )
        self.unmetered = waiting
        return commands

    def _withdraw_recalled(self, ctx: Context) -> list[Command]:
        commands: list[Command] = []
        for order_id in self.recalled:
            state = ctx.view.orders.get(order_id)
            sell = self.sells.pop(order_id)
            if state is not None and state.remaining > 0 and tradable(sell.start_ms, ctx.now_ms):
                commands.append(
                    WithdrawCapacity(
                        withdrawal_id=self.ids.next(),
                        account_id=self.account_id,
                        symbol=sell.symbol,
                        quantity=state.remaining,
                    )
                )
        self.recalled = []
        return commands

    def _reprice_and_recall(self, ctx: Context) -> list[Command]:
        commands: list[Command] = []
        for order_id, sell in list(self.sells.items()):
            state = ctx.view.orders.get(order_id)
            if state is None or not state.open or not tradable(sell.start_ms, ctx.now_ms):
                del self.sells[order_id]
                continue
            hours_out = (sell.start_ms - ctx.now_ms) // HOUR_MS
            if (
                sell.interruptible
                and hours_out == 4
                and self.rng.random() < self.recall_probability
            ):
                # The provider's own customers want the cards back: take the unsold rest.
                commands.append(CancelOrder(order_id=order_id, account_id=self.account_id))
                self.recalled.append(order_id)
                continue
            price = self.ask(sell.start_ms, ctx.now_ms, sell.interruptible)
            if price < state.price:
                commands.append(
                    AmendOrder(order_id=order_id, account_id=self.account_id, price=price)
                )
        return commands

    def _deposit_new_hours(self, ctx: Context, fleet_factor: float) -> list[Command]:
        commands: list[Command] = []
        first = max(self.deposited_until_ms, ctx.now_ms + 2 * HOUR_MS - ctx.now_ms % HOUR_MS)
        last = min(ctx.listed_until_ms, ctx.end_ms)
        for start in range(first, last, HOUR_MS):
            idle = self.idle_cards(start, fleet_factor)
            recallable = round(idle * self.interruptible_share)
            for resource_class, quantity in (
                (CARD, idle - recallable),
                (INTERRUPTIBLE, recallable),
            ):
                if quantity <= 0:
                    continue
                symbol = symbol_at(resource_class, self.region, start)
                interruptible = resource_class == INTERRUPTIBLE
                auctioned = ctx.auction_ahead(start)
                price = (
                    on_tick(self.cost, up=True)
                    if auctioned
                    else self.ask(start, ctx.now_ms, interruptible)
                )
                name, order_id = self.ids.order()
                commands.append(
                    DepositCapacity(
                        deposit_id=self.ids.next(),
                        account_id=self.account_id,
                        symbol=symbol,
                        quantity=quantity,
                    )
                )
                commands.append(
                    PlaceOrder(
                        order_id=name,
                        account_id=self.account_id,
                        symbol=symbol,
                        side="sell",
                        price=price,
                        quantity=quantity,
                        day_ahead=auctioned,
                    )
                )
                self.sells[order_id] = SellOrder(symbol, start, interruptible)
        self.deposited_until_ms = max(self.deposited_until_ms, last)
        return commands


# Buyers ----------------------------------------------------------------------------------------


@dataclass
class Job:
    """Work a buyer needs done: `cards` cards for `hours` consecutive hours in its window."""

    job_id: str
    buyer_id: str
    kind: str
    home: str
    cards: int
    hours: int
    arrival_ms: int
    earliest_ms: int
    deadline_ms: int
    value: int
    """Fen a delivered card-hour is worth, before latency costs."""
    adders: dict[str, int]
    """Latency cost per card-hour by region (0 at home)."""
    interruptible_ok: bool
    status: str = "waiting"
    """waiting (not arrived), active, pending (orders out), done, lost, or split (its
    shards trade for it)."""
    live: list[str] = field(default_factory=list)
    """The orders of the current try."""
    orders: list[str] = field(default_factory=list)
    """Every order the job ever placed, its shards' included: how the report finds its
    trades."""
    part_of: Job | None = None
    """The job this one is a shard of."""

    def send(self, order_id: str) -> None:
        """Record an order of the current try (of the job it is a shard of too)."""
        self.live.append(order_id)
        job: Job | None = self
        while job is not None:
            job.orders.append(order_id)
            job = job.part_of

    def splittable(self) -> bool:
        """Whether each half of its cards fills at least a server."""
        return self.cards >= 2 * SERVER_CARDS

    def shards(self) -> list[Job]:
        """The job as two jobs of half its cards each, in the same window at the same value,
        each to be placed on its own."""
        first = self.cards // 2
        return [
            replace(
                self,
                job_id=f"{self.job_id}.{n}",
                cards=cards,
                status="active",
                live=[],
                orders=[],
                part_of=self,
            )
            for n, cards in ((1, first), (2, self.cards - first))
        ]

    def starts(self, now_ms: int) -> list[int]:
        """Start hours still tradable that fit the window, earliest first."""
        first = max(self.earliest_ms, now_ms + GATE_MS + HOUR_MS - now_ms % HOUR_MS)
        return list(range(first, self.deadline_ms - self.hours * HOUR_MS + 1, HOUR_MS))

    def patience(self, now_ms: int) -> float:
        """Share of its value the buyer will pay now: 0.8 on arrival, all of it at the end."""
        last = self.deadline_ms - self.hours * HOUR_MS - 2 * GATE_MS
        span = max(1, last - self.arrival_ms)
        return 0.8 + 0.2 * min(1.0, max(0.0, (now_ms - self.arrival_ms) / span))


class Buyer:
    """An enterprise with jobs, trading directly or through the planner."""

    def __init__(
        self,
        account_id: str,
        kind: str,
        city: str,
        planner: bool,
        jobs: list[Job],
        day_ahead: bool = False,
    ) -> None:
        self.account_id = account_id
        self.kind = kind
        self.city = city
        self.planner = planner
        self.jobs = jobs
        self.day_ahead = day_ahead
        self.ids = Ids(account_id)
        self.voucher: str | None = None
        """The programme this buyer holds a grant of, once the exchange approved it."""
        self.groups: dict[str, str] = {}
        """Job id -> the exchange's id of the exclusive group it went to an auction with."""
        self.shards: list[Job] = []
        """Shards of jobs no hub could hold whole, followed up as jobs of their own."""

    def cash_needed(self) -> int:
        """Enough cash for every job at full value, with room for a block's rounding; with a
        day-ahead auction, for every job held once per alternative until its auction."""
        cash = sum(j.value * j.cards * j.hours for j in self.jobs) * 5 // 4
        return cash * (MAX_ALTERNATIVES if self.day_ahead else 1) + 1_000_000

    def act(self, ctx: Context) -> list[Command]:
        """Follow up every job that has arrived and is not finished."""
        commands: list[Command] = []
        self.voucher = ctx.view.grants.get(self.account_id)
        for job in [*self.jobs, *self.shards]:
            if job.status == "waiting" and job.arrival_ms <= ctx.now_ms:
                job.status = "active"
            if job.status == "pending":
                self._follow_up(job, ctx)
            if job.status == "active":
                commands += self._place(job, ctx)
        return commands

    def _follow_up(self, job: Job, ctx: Context) -> None:
        group = self.groups.get(job.job_id)
        refused = ctx.view.orders.get(group) if group is not None else None
        if refused is not None and refused.rejected:
            # The risk stage refused the whole need: none of its alternatives was accepted.
            job.live = []
            job.status = "active"
            return
        states = [ctx.view.orders.get(order_id) for order_id in job.live]
        if any(s is None or s.open for s in states):
            return
        job.live = []
        job.status = "done" if any(s.filled for s in states if s is not None) else "active"

    def _place(self, job: Job, ctx: Context) -> list[Command]:
        starts = job.starts(ctx.now_ms)
        if not starts:
            job.status = "lost"
            return []
        if ctx.day_ahead:
            # A job that fits a day still to be auctioned goes to that auction first (once),
            # where its every alternative competes with every other job's at once; otherwise,
            # or if the auction did not fill it, it trades continuously in the hours open.
            auctioned = self._to_auction(job, ctx)
            if not auctioned and job.status == "active":
                auctioned = self._to_session(job, ctx)
            if auctioned or job.status == "split":
                return auctioned
            starts = [s for s in starts if ctx.trading(s, job.hours)]
            if not starts:
                return []
        if self.planner:
            return self._plan(job, ctx)
        start = starts[0]
        symbols = [symbol_at(CARD, job.home, start + i * HOUR_MS) for i in range(job.hours)]
        if job.hours > 1:
            price = on_tick(job.value * job.patience(ctx.now_ms), up=False)
            return self._send_block(job, symbols, price, job.cards, self.voucher)
        # Limit orders rest until their hour's gate: the buyer bids its full value.
        commands: list[Command] = []
        for symbol in symbols:
            name, order_id = self.ids.order()
            commands.append(
                PlaceOrder(
                    order_id=name,
                    account_id=self.account_id,
                    symbol=symbol,
                    side="buy",
                    price=on_tick(job.value, up=False),
                    quantity=job.cards,
                    voucher=self.voucher,
                    limit_basis="net" if self.voucher else "gross",
                )
            )
            job.send(order_id)
        job.status = "pending"
        return commands

    def _plan(self, job: Job, ctx: Context) -> list[Command]:
        classes = (CARD, INTERRUPTIBLE) if job.interruptible_ok else (CARD,)
        willing = job.value * job.patience(ctx.now_ms)
        need = Need(
            unit=CARDS,
            quantity=job.cards,
            hours=job.hours,
            earliest_start_ms=job.starts(ctx.now_ms)[0],
            deadline_ms=job.deadline_ms,
            regions=tuple(RegionChoice(r, job.adders[r]) for r in REGIONS),
            max_total=math.floor(willing * job.cards * job.hours),
            classes=classes,
        )
        contracts = [
            spec
            for spec in planner_contracts(ctx)
            if spec.resource_class.code in classes and ctx.trading(to_utc_ms(spec.delivery_start))
        ]
        asks = {spec.symbol: ctx.view.asks(spec.symbol) for spec in contracts}
        grant = ctx.view.grant_terms.get(self.account_id)
        voucher_of = None if grant is None else _voucher_of(grant, ctx.now_ms)
        result = plan(need, contracts, asks, STANDARD, voucher_of)
        chosen = result.chosen
        # The planner ranks by cost plus latency; the buyer only takes a plan worth its price.
        if chosen is None or chosen.limit_price is None or chosen.ranked_total is None:
            return []
        if chosen.ranked_total > willing * job.cards * job.hours:
            return []
        # The block carries the voucher where the plan found the grant covers it.
        voucher = None if chosen.voucher is None else self.voucher
        return self._send_block(job, list(chosen.symbols), chosen.limit_price, job.cards, voucher)

    def _to_auction(self, job: Job, ctx: Context) -> list[Command]:
        """The job as an exclusive group in the next day-ahead auction whose day holds a start
        of it: its cheapest alternatives there, each at the job's value less its latency cost
        (none if it went to one before, or no alternative is worth its value)."""
        if job.job_id in self.groups:
            return []
        starts = [s for s in job.starts(ctx.now_ms) if ctx.auction_ahead(s)]
        days = [cst_day_start_ms(s) for s in starts if _within_day(s, job.hours)]
        if not days:
            return []
        day = min(days)
        in_day = [s for s in starts if cst_day_start_ms(s) == day and _within_day(s, job.hours)]
        return self._group(job, in_day, ctx)

    def _to_session(self, job: Job, ctx: Context) -> list[Command]:
        """With intraday auctions, the job as an exclusive group in the next one: its
        cheapest alternatives among the starts trading continuously whose gate closes late
        enough for that auction, in the day of the earliest (again after each auction that
        did not fill it, while starts remain)."""
        if not ctx.intraday:
            return []
        closing_after = ctx.next_intraday() + INTRADAY_GUARD_MS
        starts = [
            s
            for s in job.starts(ctx.now_ms)
            if ctx.trading(s, job.hours)
            and s - GATE_MS >= closing_after
            and _within_day(s, job.hours)
        ]
        if not starts:
            return []
        day = cst_day_start_ms(starts[0])
        return self._group(job, [s for s in starts if cst_day_start_ms(s) == day], ctx)

    def _group(self, job: Job, starts: list[int], ctx: Context) -> list[Command]:
        """The exclusive group of the job's cheapest alternatives among `starts`, each at the
        job's value less its latency cost (none if no alternative is worth its value). A job
        no hub and class offers enough cards for at a price it is worth, where half of it
        would be, is split in two shards that go to the auction as needs of their own (data-
        parallel work runs as well on two clusters as on one; the exchange's blocks hold one
        contract each, so one need cannot span two hubs)."""
        options = _cheapest_alternatives(job, starts, ctx.view)
        if not options and job.splittable():
            shards = job.shards()
            if _cheapest_alternatives(shards[0], starts, ctx.view):
                job.status = "split"
                self.shards += shards
                commands: list[Command] = []
                for shard in shards:
                    commands += self._group(shard, starts, ctx)
                return commands
        priced = [(symbols, on_tick(job.value - adder, up=False)) for symbols, adder in options]
        alternatives = [symbols for symbols, price in priced if price > 0]
        prices = [price for _, price in priced if price > 0]
        if not alternatives:
            return []
        grant = ctx.view.grant_terms.get(self.account_id)
        covered = grant is not None and not any(
            grant.eligible(symbols[0], ctx.now_ms) for symbols in alternatives
        )
        name, group_id = self.ids.order()
        self.groups[job.job_id] = group_id
        for n in range(1, len(alternatives) + 1):
            job.send(exchange_order_id(self.account_id, f"{name}.{n}"))
        job.status = "pending"
        return [
            PlaceExclusiveGroup(
                order_id=name,
                account_id=self.account_id,
                alternatives=alternatives,
                price=max(prices),
                quantity=job.cards,
                voucher=self.voucher if covered else None,
                prices=prices,
            )
        ]

    def _send_block(
        self, job: Job, symbols: list[str], price: int, cards: int, voucher: str | None
    ) -> list[Command]:
        name, order_id = self.ids.order()
        job.send(order_id)
        job.status = "pending"
        return [
            PlaceBlockOrder(
                order_id=name,
                account_id=self.account_id,
                symbols=symbols,
                side="buy",
                price=price,
                quantity=cards,
                voucher=voucher,
            )
        ]


def _within_day(start_ms: int, hours: int) -> bool:
    """Whether `hours` hours from `start_ms` end in the day they start (a day-ahead block's
    hours are all of one day)."""
    return cst_day_start_ms(start_ms + (hours - 1) * HOUR_MS) == cst_day_start_ms(start_ms)


def depth_price(levels: list[tuple[int, int]], quantity: int) -> float | None:
    """The average price of the cheapest `quantity` units of ask levels, or None if they
    hold fewer."""
    left, paid = quantity, 0
    for price, available in levels:
        take = min(left, available)
        paid += take * price
        left -= take
        if not left:
            return paid / quantity
    return None


def _cheapest_alternatives(
    job: Job, starts: list[int], view: MarketView
) -> list[tuple[list[str], int]]:
    """Up to MAX_ALTERNATIVES blocks of the job (region x class x start among `starts`) with
    the latency cost of each, cheapest first by the asks resting for the job's cards each hour
    plus the latency cost, each expected to cost no more than the job's value."""
    classes = (CARD, INTERRUPTIBLE) if job.interruptible_ok else (CARD,)
    ranked: list[tuple[float, int, str, str, list[str]]] = []
    for region in REGIONS:
        adder = job.adders[region]
        for resource_class in classes:
            hourly: dict[int, float | None] = {}
            for start in starts:
                symbols = [
                    symbol_at(resource_class, region, start + i * HOUR_MS) for i in range(job.hours)
                ]
                prices = []
                for i, symbol in enumerate(symbols):
                    hour = start + i * HOUR_MS
                    if hour not in hourly:
                        hourly[hour] = depth_price(view.asks(symbol), job.cards)
                    prices.append(hourly[hour])
                if any(p is None for p in prices):
                    continue
                expected = sum(p for p in prices if p is not None) / job.hours + adder
                if expected <= job.value:
                    ranked.append((expected, start, region, resource_class, symbols))
    ranked.sort(key=lambda option: option[:4])
    return [(option[4], job.adders[option[2]]) for option in ranked[:MAX_ALTERNATIVES]]


def _voucher_of(grant: Grant, now_ms: int) -> VoucherOf:
    """The planner's view of a grant: what it would pay of a block it covers if placed at log
    time `now_ms`, as the risk stage reserves it (from the grant's limit: the risk stage
    decides what is left)."""

    def voucher_of(first: ContractSpec, cost: int, hours: int) -> int | None:
        if grant.eligible(first.symbol, now_ms):
            return None
        return grant.voucher_for(cost, hours)

    return voucher_of


_PLANNER_CACHE: dict[int, list[ContractSpec]] = {}


def planner_contracts(ctx: Context) -> list[ContractSpec]:
    """The simulated families' hours listed now (the contracts a need is planned over)."""
    key = ctx.now_ms
    cached = _PLANNER_CACHE.get(key)
    if cached is None:
        _PLANNER_CACHE.clear()
        cached = []
        first = ctx.now_ms - ctx.now_ms % HOUR_MS + HOUR_MS
        for start in range(first, ctx.listed_until_ms, HOUR_MS):
            if not tradable(start, ctx.now_ms):
                continue
            for resource_class in (CARD, INTERRUPTIBLE):
                for region in REGIONS:
                    symbol = symbol_at(resource_class, region, start)
                    cached.append(parse_symbol(symbol))
        _PLANNER_CACHE[key] = cached
    return cached


# Resellers -------------------------------------------------------------------------------------


@dataclass
class Holding:
    """Hours a reseller bought, and its resale order."""

    symbol: str
    start_ms: int
    cost: int
    """Fen per unit paid."""
    buy_order: str
    sell_order: str | None = None


class Reseller:
    """Buys western hours ahead when cheap and resells them closer to delivery."""

    def __init__(
        self,
        account_id: str,
        budget: int,
        discount: float,
        margin: float,
        list_price: dict[str, int],
    ) -> None:
        self.account_id = account_id
        self.budget = budget
        self.discount = discount
        self.margin = margin
        self.list_price = list_price
        self.ids = Ids(account_id)
        self.holdings: list[Holding] = []
        self.spent_past = 0
        """Fen paid for hours whose gate has closed."""
        self.earned_past = 0
        """Fen their resales brought in before the gate."""
        self.hours_closed = 0
        """Hours it held to their gate (bought some units of)."""
        self.units_resold = 0
        """Units of those hours it resold before the gate."""

    def act(self, ctx: Context) -> list[Command]:
        """Resell what it bought, then buy more if the asks are cheap."""
        commands = self._resell(ctx)
        commands += self._buy(ctx)
        return commands

    def units_per_hour(self) -> int:
        """The most it buys of one hour, sized by what the market has shown it will take: one
        unit until hours it held have reached their gate (it does not know yet what resells),
        then, while those hours earned back what they cost, twice what it resold of an hour
        on average (to find out whether more would sell), at most a lot; one unit (to keep
        learning the market) once they have not. A reseller left holding hours no job wants
        pays for capacity nobody runs on, and buys less."""
        if not self.hours_closed or self.earned_past < self.spent_past:
            return 1
        return max(1, min(LOT, 2 * self.units_resold // self.hours_closed))

    def _tied_up(self, ctx: Context) -> int:
        total = 0
        for holding in self.holdings:
            if tradable(holding.start_ms, ctx.now_ms):
                bought = ctx.view.orders.get(holding.buy_order)
                total += holding.cost * (bought.filled if bought else 0)
        return total

    def _buy(self, ctx: Context) -> list[Command]:
        commands: list[Command] = []
        spend = self.budget - self._tied_up(ctx)
        first = ctx.now_ms - ctx.now_ms % HOUR_MS + 20 * HOUR_MS
        for start in range(first, min(first + 24 * HOUR_MS, ctx.end_ms), HOUR_MS):
            if ctx.auction_ahead(start):
                continue
            for region in WEST:
                symbol = symbol_at(CARD, region, start)
                levels = ctx.view.asks(symbol)
                if not levels:
                    continue
                price, quantity = levels[0]
                reference = ctx.view.last_price.get(
                    f"{CARD}.{region}", self.list_price[region] * 6 // 10
                )
                units = min(quantity, self.units_per_hour(), spend // price)
                if price > reference * (1 - self.discount) or units <= 0:
                    continue
                name, order_id = self.ids.order()
                commands.append(
                    PlaceOrder(
                        order_id=name,
                        account_id=self.account_id,
                        symbol=symbol,
                        side="buy",
                        price=price,
                        quantity=units,
                        time_in_force="IOC",
                    )
                )
                spend -= price * units
                self.holdings.append(Holding(symbol, start, price, order_id))
        return commands

    def _resell(self, ctx: Context) -> list[Command]:
        commands: list[Command] = []
        kept = []
        for holding in self.holdings:
            bought = ctx.view.orders.get(holding.buy_order)
            if not tradable(holding.start_ms, ctx.now_ms):
                self._close(holding, bought, ctx)
                continue
            kept.append(holding)
            if bought is None or not bought.filled:
                continue
            hours_out = (holding.start_ms - ctx.now_ms) / HOUR_MS
            # Ask a margin at first; near the gate, sell at cost, then below it, rather than
            # hold hours the reseller cannot use.
            share = 1 + self.margin if hours_out > 6 else 1.0 if hours_out > 3 else 0.9
            price = on_tick(holding.cost * share, up=True)
            if holding.sell_order is None:
                name, holding.sell_order = self.ids.order()
                commands.append(
                    PlaceOrder(
                        order_id=name,
                        account_id=self.account_id,
                        symbol=holding.symbol,
                        side="sell",
                        price=price,
                        quantity=bought.filled,
                    )
                )
                continue
            sold = ctx.view.orders.get(holding.sell_order)
            if sold is not None and sold.open and price < sold.price:
                commands.append(
                    AmendOrder(order_id=holding.sell_order, account_id=self.account_id, price=price)
                )
        self.holdings = kept
        return commands

    def _close(self, holding: Holding, bought: OrderState | None, ctx: Context) -> None:
        """Count a holding whose gate has closed: what it cost and what its resale brought."""
        if bought is None or not bought.filled:
            return
        sold = ctx.view.orders.get(holding.sell_order) if holding.sell_order else None
        self.spent_past += bought.paid
        self.earned_past += sold.paid if sold is not None else 0
        self.hours_closed += 1
        self.units_resold += sold.filled if sold is not None else 0


# Voucher programmes ----------------------------------------------------------------------------


class Administrator:
    """A city's programme office: creates the programme, then approves each eligible
    enterprise's application (for the cap per enterprise) when its first job arrives; the
    exchange refuses grants once the budget is granted out."""

    def __init__(self, programme: Programme, valid_from: int, valid_until: int) -> None:
        self.programme = programme
        self.account_id = f"admin-{programme.programme_id}"
        self.valid_from = valid_from
        self.valid_until = valid_until
        self.applied: set[str] = set()
        self.created = False

    def eligible(self, buyer: Buyer) -> bool:
        """Whether the buyer's kind and city qualify."""
        return buyer.kind in self.programme.kinds and buyer.city == self.programme.city

    def act(self, ctx: Context, buyers: list[Buyer]) -> list[Command]:
        """Create the programme once; grant to eligible buyers whose first job has arrived."""
        p = self.programme
        commands: list[Command] = []
        if not self.created:
            self.created = True
            commands.append(
                CreateProgramme(
                    programme_id=p.programme_id,
                    admin_id=self.account_id,
                    issuer=p.issuer,
                    budget=p.budget,
                    rate_bps=p.rate_bps,
                    cap_per_contract=p.cap_per_contract,
                    cap_per_enterprise=p.cap_per_enterprise,
                    kinds=list(p.kinds),
                    cities=[p.city],
                    valid_from=self.valid_from,
                    valid_until=self.valid_until,
                )
            )
        for buyer in buyers:
            if buyer.account_id in self.applied or not self.eligible(buyer):
                continue
            first = min(job.arrival_ms for job in buyer.jobs) if buyer.jobs else None
            if first is None or first > ctx.now_ms + HOUR_MS:
                continue
            self.applied.add(buyer.account_id)
            application_id = f"{p.programme_id}.{buyer.account_id}"
            # The enterprise applies for the cap and the office approves at once: both in the
            # programme's partition, in this order.
            commands.append(
                ApplyForGrant(
                    application_id=application_id,
                    account_id=buyer.account_id,
                    programme_id=p.programme_id,
                    amount=p.cap_per_enterprise,
                    intended_use="jobs of the week",
                )
            )
            commands.append(
                ApproveGrant(
                    application_id=application_id,
                    programme_id=p.programme_id,
                    admin_id=self.account_id,
                    limit=p.cap_per_enterprise,
                )
            )
        return commands


def funding(
    buyers: list[Buyer], providers: list[Provider], resellers: list[Reseller]
) -> list[Command]:
    """Every agent's opening cash: buyers for their jobs, providers for bonds, resellers'
    budget; and each buyer's enterprise registered, for its applications."""
    commands: list[Command] = [
        RegisterEnterprise(
            account_id=b.account_id,
            name=f"{b.account_id} enterprise",
            uscc=_uscc_of(n),
            kind=b.kind,
            city=b.city,
        )
        for n, b in enumerate(buyers)
    ]
    accounts = [(b.account_id, b.cash_needed()) for b in buyers]
    accounts += [(p.account_id, CASH_PER_PROVIDER) for p in providers]
    accounts += [(r.account_id, r.budget) for r in resellers]
    for account_id, amount in accounts:
        commands.append(
            DepositFunds(deposit_id=f"{account_id}.cash", account_id=account_id, amount=amount)
        )
    return commands


def _uscc_of(n: int) -> str:
    """A valid unified social credit code, the `n`th of the simulation's enterprises."""
    return with_check_character(f"91330100{n:09d}")


def adders_for(home: str, near: int, far: int) -> dict[str, int]:
    """Latency cost per card-hour of each region for a buyer at `home`."""
    adders = {}
    for region in REGIONS:
        if region == home:
            adders[region] = 0
        elif (region in EAST) == (home in EAST):
            adders[region] = near
        else:
            adders[region] = far
    return adders
