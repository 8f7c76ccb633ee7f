"""A simulated buyer whose job no hub offers enough cards for, where half of it would fit,
splits it in two shards and sends each to the intraday auction as a need of its own."""

from __future__ import annotations

from exchange.adapters.inprocess_log import InProcessLog
from exchange.domain.messages import PlaceExclusiveGroup, exchange_order_id
from exchange.pipeline import Topics
from simulations.agents import HOUR_MS, Buyer, Context, Job, adders_for, symbol_at
from simulations.scenario import CARD, REGIONS
from simulations.view import Book, MarketView

START = 1_830_268_800_000
"""2028-01-01 00:00 CST."""
NOW = START + 13 * HOUR_MS + 20 * 60_000
"""13:20 CST: the day's hours trade continuously, the next intraday auction is at 14:00."""


def _market(cards_per_hub: int) -> Context:
    """Every hub offers `cards_per_hub` firm cards at 9.00 元 in every hour from 15:00 on."""
    view = MarketView(InProcessLog(), Topics.named("shards", 1, 1))
    for hour in range(15, 24):
        for region in REGIONS:
            view.books[symbol_at(CARD, region, START + hour * HOUR_MS)] = Book(
                asks={900: cards_per_hub}
            )
    return Context(NOW, START + 7 * 24 * HOUR_MS, START + 3 * 24 * HOUR_MS, 0, view, True, True)


def _job(cards: int) -> Job:
    """`cards` cards for 3 hours between 16:00 and 22:00, worth 30.00 元 a card-hour."""
    return Job(
        job_id="large-YRD-1.job1",
        buyer_id="large-YRD-1",
        kind="large",
        home="YRD",
        cards=cards,
        hours=3,
        arrival_ms=NOW - 20 * 60_000,
        earliest_ms=START + 16 * HOUR_MS,
        deadline_ms=START + 22 * HOUR_MS,
        value=3000,
        adders=adders_for("YRD", 100, 500),
        interruptible_ok=False,
    )


def _needs(job: Job, cards_per_hub: int) -> tuple[Buyer, list[PlaceExclusiveGroup]]:
    buyer = Buyer("large-YRD-1", "large", "Shanghai", True, [job], day_ahead=True)
    commands = buyer.act(_market(cards_per_hub))
    needs = [c for c in commands if isinstance(c, PlaceExclusiveGroup)]
    assert len(needs) == len(commands)
    return buyer, needs


def test_a_job_a_hub_can_hold_whole_goes_to_the_auction_as_one_need() -> None:
    job = _job(46)
    _, needs = _needs(job, cards_per_hub=50)
    assert [n.quantity for n in needs] == [46]
    assert job.status == "pending"
    # Its twelve cheapest alternatives: three-hour blocks in the eastern hubs, at its value
    # less each hub's latency cost.
    assert all(len(symbols) == 3 for symbols in needs[0].alternatives)
    assert set(needs[0].prices or []) == {3000, 2900}


def test_a_job_no_hub_can_hold_whole_goes_as_two_shards_of_half_its_cards() -> None:
    job = _job(47)
    buyer, needs = _needs(job, cards_per_hub=30)
    assert [n.quantity for n in needs] == [23, 24]
    assert job.status == "split"
    assert [s.job_id for s in buyer.shards] == ["large-YRD-1.job1.1", "large-YRD-1.job1.2"]
    assert all(s.status == "pending" and s.part_of is job for s in buyer.shards)
    # Every shard's order is the job's too, so the report finds its trades under the job.
    sent = [
        exchange_order_id("large-YRD-1", f"{n.order_id}.{k}")
        for n in needs
        for k in range(1, len(n.alternatives) + 1)
    ]
    assert job.orders == sent
    assert [o for s in buyer.shards for o in s.orders] == sent
    # Followed up as jobs of their own: nothing more is sent while their needs are open.
    assert buyer.act(_market(30)) == []


def test_a_job_not_even_half_of_which_fits_is_not_split() -> None:
    job = _job(47)
    _, needs = _needs(job, cards_per_hub=20)
    assert needs == []
    assert job.status == "active"


def test_a_job_of_less_than_two_servers_is_never_split() -> None:
    job = _job(15)
    buyer, needs = _needs(job, cards_per_hub=10)
    assert needs == []
    assert buyer.shards == []
