"""The platform's discount pool: the platform's share of a grant holder's bill, beside the
government's voucher, worked to the fen."""

from __future__ import annotations

from exchange.domain.messages import (
    DepositCapacity,
    DiscountPoolFunded,
    Event,
    FundDiscountPool,
    GrantApproved,
    PlaceOrder,
    PlatformDiscounted,
    RejectReason,
    RequestRejected,
    TradeExecuted,
)
from tests.test_bank import SYM, _digest, funds
from tests.test_vouchers import FREE, VoucherBank, programme, subsidised


def pool(budget: int = 500, discount_bps: int = 1_000, pool_id: str = "p-2027") -> FundDiscountPool:
    return FundDiscountPool(
        pool_id=pool_id,
        operator_id="ops",
        programme_id="hz",
        discount_bps=discount_bps,
        budget=budget,
    )


def refused(events: list[Event]) -> RequestRejected:
    first = events[0]
    assert isinstance(first, RequestRejected), first
    return first


def pooled_market(budget: int = 500) -> VoucherBank:
    """Hangzhou's programme at 30%, a pool of `budget` fen discounting 10%, and b1's grant of
    1,000 fen, approved after the pool: b1's part of the pool is 1,000 x 10/30 = 333 fen."""
    bank = VoucherBank(FREE)
    bank.send(programme())
    funded = bank.send(pool(budget))
    assert isinstance(funded[0], DiscountPoolFunded)
    bank.grant("b1", 1_000)
    bank.send(funds("b1", 10_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=SYM, quantity=20))
    bank.send(PlaceOrder(order_id="s1", account_id="p1", symbol=SYM, side="sell", price=1_000,
                         quantity=20))  # fmt: skip
    return bank


def test_a_grant_carries_its_part_of_the_pool_and_each_purchase_is_discounted_from_it() -> None:
    bank = pooled_market()
    (approved,) = bank.of(GrantApproved)
    assert (approved.discount_limit, approved.discount_bps) == (333, 1_000)
    assert bank.ledger.ledger["pool:hz"] == 500 - 333
    assert bank.ledger.programmes["hz"].pool_unallocated == 167

    # 2 units at 1,000: the voucher pays 30% (600), the platform 10% (200), the firm 1,200.
    bank.send(subsidised("o1", 2))
    (discounted,) = bank.of(PlatformDiscounted)
    assert (discounted.amount, discounted.discount, discounted.account_id) == (2_000, 200, "b1")
    assert bank.cash("b1") == 10_000 - 2_000 + 600 + 200
    # 2 more: 10% is 200 but only 133 of b1's part is left.
    bank.send(subsidised("o2", 2))
    assert [d.discount for d in bank.of(PlatformDiscounted)] == [200, 133]
    assert bank.cash("b1") == 10_000 - 4_000 + 1_000 + 200 + 133
    assert bank.ledger.grants[("hz", "b1")].discount_remaining == 0
    assert bank.risk.accounts.grants[("hz", "b1")].discount_remaining == 0
    assert bank.ledger.ledger.get("discount:hz:b1", 0) == 0
    assert bank.ledger.ledger["platform"] == -500
    assert bank.ledger.trial_balance() == 0
    # A third purchase gets the voucher's remaining 0 and no discount: nothing is left.
    bank.send(subsidised("o3", 1))
    assert len(bank.of(PlatformDiscounted)) == 2


def test_settlement_spends_the_pool_as_risk_did_whichever_partition_it_reads_first() -> None:
    bank = pooled_market()
    bank.send(subsidised("o1", 2))
    bank.send(subsidised("o2", 2))
    buyer_partition = (PlatformDiscounted,)
    late = [e for e in bank.events if isinstance(e, buyer_partition)]
    early = [e for e in bank.events if not isinstance(e, buyer_partition)]
    assert _digest(early + late) == _digest(bank.events)


def test_a_pool_that_is_empty_gives_a_grant_nothing_and_the_grant_keeps_its_old_bytes() -> None:
    bank = VoucherBank(FREE)
    bank.send(programme())
    bank.grant("b1", 1_000)
    (approved,) = bank.of(GrantApproved)
    assert b"discount" not in approved.model_dump_json().encode()
    assert approved.discount_limit == 0
    assert not bank.of(TradeExecuted)


def test_bad_pools_are_refused_with_the_reason_and_change_nothing() -> None:
    bank = VoucherBank(FREE)
    unknown = refused(bank.send(pool()))
    assert unknown.reason == RejectReason.UNKNOWN_PROGRAMME
    bank.send(programme())
    too_much = refused(bank.send(pool(discount_bps=7_001)))
    assert too_much.reason == RejectReason.INVALID_PROGRAMME
    assert "at most 7000 bps" in too_much.message
    bank.send(pool())
    other_rate = refused(bank.send(pool(discount_bps=500, pool_id="p-2")))
    assert "funding again adds to it at that rate" in other_rate.message
    again = refused(bank.send(pool()))
    assert again.reason == RejectReason.DUPLICATE_ID
    topped_up = bank.send(pool(pool_id="p-3"))
    assert isinstance(topped_up[0], DiscountPoolFunded)
    assert bank.ledger.programmes["hz"].pool_unallocated == 1_000
    assert bank.ledger.ledger["platform"] == -1_000
    assert bank.risk.state.money_in == 10_000 + 1_000
