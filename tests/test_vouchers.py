"""Compute vouchers: worked examples to the fen for each cap that can bind, and property tests.

The voucher part of a buyer's fill is the least of the programme's rate of the amount paid,
what is left of the per-order cap, and what is left of the enterprise's grant; grants are carved
out of the programme's budget, so the budget binds when a grant is approved.
"""

from __future__ import annotations

import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.domain.accounts import Accounts, Balance
from exchange.domain.catalogue import MarketRules
from exchange.domain.enterprises import REGISTRY_KEY
from exchange.domain.messages import (
    ApplyForGrant,
    ApproveGrant,
    CancelOrder,
    CreateProgramme,
    DepositCapacity,
    EnterpriseRegistered,
    Event,
    EventStamp,
    GrantApproved,
    GrantConcession,
    OrderAccepted,
    OrderRejected,
    PlaceOrder,
    RegisterEnterprise,
    RejectApplication,
    RejectReason,
    ReportMetering,
    RequestRejected,
    SetVoucherPolicy,
    exchange_order_id,
)
from exchange.domain.risk import OUTCOME_TYPES, RiskStage
from exchange.domain.uscc import with_check_character
from tests.test_bank import DELIVERY, HOUR, SEAL, SYM, Bank, funds, sealed

FREE = MarketRules()
YEAR_MS = 365 * 24 * HOUR


class VoucherBank(Bank):
    """The bank loop, feeding approved grants back to risk as matching does."""

    def send(self, command, at=None):  # type: ignore[no-untyped-def,override]
        command = sealed(command)
        self.ts = self.ts + 1 if at is None else at
        self.offset += 1
        decided = self.risk.handle(command, EventStamp("c", 0, self.offset, self.ts))
        out: list[Event] = [
            decided,
            *self.market.handle(decided, EventStamp("o", 0, self.offset, self.ts)),
        ]
        stamp = EventStamp("f", 0, self.offset, self.ts)
        for event in list(out):
            self.ledger.apply(event)
            fed_back = isinstance(event, OUTCOME_TYPES) and event.event_id.startswith("o:")
            if fed_back or isinstance(event, GrantApproved):
                for conceded in self.risk.apply_outcome(event, lambda _: True, stamp):
                    self.ledger.apply(conceded)
                    out.append(conceded)
        self.events.extend(out)
        return out

    def apply(self, account: str, amount: int, application_id: str = "") -> list[Event]:
        """Register `account` as a Hangzhou SME (once) and apply to programme hz."""
        if account not in self.risk.state.enterprises:
            self.send(enterprise(account))
        return self.send(
            ApplyForGrant(
                application_id=application_id or f"app-{account}-{amount}",
                account_id=account,
                programme_id="hz",
                amount=amount,
                intended_use="inference",
            )
        )

    def grant(self, account: str, limit: int, related: list[str] | None = None) -> list[Event]:
        """Apply for `limit` as `account` and approve it."""
        self.apply(account, limit)
        return self.send(grant(account, limit, related))


def enterprise(account: str, kind: str = "sme", city: str = "hangzhou") -> RegisterEnterprise:
    """A registration with a valid code of its own for each account."""
    serial = f"{int(hashlib.sha256(account.encode()).hexdigest(), 16) % 10**9:09d}"
    return RegisterEnterprise.model_validate(
        {
            "account_id": account,
            "name": f"{account} 科技有限公司",
            "uscc": with_check_character(f"91330100{serial}"),
            "kind": kind,
            "city": city,
        }
    )


def programme(budget: int = 10_000, cap: int = 600, **terms: object) -> CreateProgramme:
    fields: dict[str, object] = {
        "programme_id": "hz",
        "admin_id": "hz-admin",
        "issuer": "Hangzhou",
        "budget": budget,
        "rate_bps": 3_000,
        "cap_per_contract": cap,
        "cap_per_enterprise": 5_000,
        "classes": ["H100-80G"],
        "regions": ["GZ"],
        "valid_from": 0,
        "valid_until": DELIVERY + YEAR_MS,
    }
    fields.update(terms)
    return CreateProgramme.model_validate(fields)


def grant(account: str, limit: int, related: list[str] | None = None) -> ApproveGrant:
    """The approval of `account`'s application for `limit` (`VoucherBank.apply`)."""
    return ApproveGrant(
        application_id=f"app-{account}-{limit}",
        programme_id="hz",
        admin_id="hz-admin",
        limit=limit,
        related_accounts=related or [],
    )


def subsidised(
    order_id: str, quantity: int, price: int = 1_000, basis: str = "gross"
) -> PlaceOrder:
    return PlaceOrder.model_validate(
        {
            "order_id": order_id,
            "account_id": "b1",
            "symbol": SYM,
            "side": "buy",
            "price": price,
            "quantity": quantity,
            "voucher": "hz",
            "limit_basis": basis,
        }
    )


def market(related: list[str] | None = None, limit: int = 1_000) -> VoucherBank:
    bank = VoucherBank(FREE)
    bank.send(programme())
    bank.grant("b1", limit, related)
    bank.send(funds("b1", 10_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=SYM, quantity=20))
    bank.send(
        PlaceOrder(
            order_id="s1", account_id="p1", symbol=SYM, side="sell", price=1_000, quantity=20
        )
    )
    return bank


def accepted(events: list[Event]) -> OrderAccepted:
    first = events[0]
    assert isinstance(first, OrderAccepted), first
    return first


def test_the_rate_binds_then_the_per_contract_cap_then_the_grant() -> None:
    bank = market()
    g = bank.ledger.grants[("hz", "b1")]

    # 30% of 1,000 is 300: under the cap (600) and the grant (1,000).
    assert accepted(bank.send(subsidised("o1", 1))).voucher_reserved == 300
    assert bank.cash("b1") == 10_000 - 700
    assert (g.remaining, g.reserved, g.committed) == (700, 0, 300)

    # 30% of 3,000 is 900: the cap of 600 per contract binds.
    assert accepted(bank.send(subsidised("o2", 3))).voucher_reserved == 600
    assert bank.cash("b1") == 10_000 - 700 - 2_400

    # 30% of 1,000 is 300, the cap 600: only 100 of the grant is left, and binds.
    assert accepted(bank.send(subsidised("o3", 1))).voucher_reserved == 100
    assert bank.cash("b1") == 10_000 - 700 - 2_400 - 900
    assert (g.remaining, g.reserved, g.committed) == (0, 0, 1_000)

    # The grant is used up: the order is accepted, gross, with no voucher.
    assert accepted(bank.send(subsidised("o4", 1))).voucher_reserved == 0
    assert bank.cash("b1") == 10_000 - 700 - 2_400 - 900 - 1_000
    assert bank.ledger.ledger[f"escrow:{SYM}"] == 6_000
    assert bank.ledger.trial_balance() == 0
    assert bank.risk.accounts.grants[("hz", "b1")] == g


def test_the_programme_budget_binds_when_grants_are_approved() -> None:
    bank = VoucherBank(FREE)
    bank.send(programme(budget=10_000))
    bank.grant("b1", 1_000)
    bank.grant("b2", 5_000)
    bank.apply("b3", 4_001)
    before = bank.risk.state_hash()

    refused = bank.send(grant("b3", 4_001))[0]

    assert isinstance(refused, RequestRejected)
    assert refused.reason == RejectReason.BUDGET_EXHAUSTED
    assert refused.message == (
        "programme hz has 4000 fen of its 2027 budget left to grant, the grant asks 4001 fen"
    )
    assert bank.risk.state_hash() == before
    bank.send(grant("b3", 4_001).model_copy(update={"limit": 4_000}))
    assert bank.ledger.ledger.get("budget:hz", 0) == 0
    bank.apply("b4", 5_000)
    over_cap = bank.send(grant("b4", 5_000).model_copy(update={"limit": 5_001}))[0]
    assert isinstance(over_cap, RequestRejected)
    # The cap per enterprise binds the application (no more than the cap may be asked for)
    # and an approval grants no more than was asked for.
    assert over_cap.reason == RejectReason.ABOVE_AMOUNT_APPLIED
    assert over_cap.message == "a grant of 5001 fen is above the 5000 fen b4 applied for"


def test_a_related_seller_earns_no_voucher_and_the_reservation_returns() -> None:
    bank = market(related=["p1"])

    order = accepted(bank.send(subsidised("o1", 2)))

    assert order.voucher_reserved == 600
    assert bank.cash("b1") == 10_000 - 2_000
    g = bank.ledger.grants[("hz", "b1")]
    assert (g.remaining, g.reserved, g.committed) == (1_000, 0, 0)


def test_a_net_limit_buys_at_the_gross_price_the_voucher_brings_down_to_it() -> None:
    bank = market()

    order = accepted(bank.send(subsidised("o1", 1, price=700, basis="net")))

    # 1,000 less its 30% voucher is 700; 1,010 less 303 would be 707.
    assert (order.price, order.net_price, order.voucher_reserved) == (1_000, 700, 300)
    assert bank.cash("b1") == 10_000 - 700


def test_cancel_releases_the_reservation_to_the_grant() -> None:
    bank = market()
    bank.send(CancelOrder(order_id="s1", account_id="p1"))
    accepted(bank.send(subsidised("o1", 2)))
    g = bank.ledger.grants[("hz", "b1")]
    assert (g.remaining, g.reserved) == (400, 600)
    assert bank.ledger.cash["b1"] == Balance(available=8_000, held=2_000)

    bank.send(CancelOrder(order_id="o1", account_id="b1"))

    assert (g.remaining, g.reserved, g.committed) == (1_000, 0, 0)
    assert bank.ledger.cash["b1"] == Balance(available=10_000, held=0)


def test_a_delivery_refund_claws_the_voucher_back() -> None:
    bank = market()
    accepted(bank.send(subsidised("o1", 2)))  # 600 of voucher, 1,400 paid
    bank.send(CancelOrder(order_id="s1", account_id="p1"))
    bank.tick(DELIVERY)
    bank.send(
        ReportMetering(report_id="m1", account_id="p1", symbol=SYM, buyer_id="b1", delivered=1)
    )
    bank.tick(DELIVERY + 3 * HOUR + 1)

    # Half was not delivered: 1,000 of escrow comes back, 300 of it the voucher's.
    g = bank.ledger.grants[("hz", "b1")]
    assert (g.remaining, g.committed, g.clawed_back) == (700, 300, 300)
    assert bank.cash("b1") == 10_000 - 1_400 + 1_000 - 300
    assert bank.cash("p1") == 1_000
    assert bank.ledger.trial_balance() == 0


def test_a_voucher_outside_its_programme_is_refused() -> None:
    bank = market()
    bank.send(programme(programme_id="nb", regions=["YRD"]))
    not_granted = bank.send(subsidised("o1", 1).model_copy(update={"voucher": "nb"}))[0]
    assert isinstance(not_granted, OrderRejected)
    assert not_granted.reason == RejectReason.NOT_ELIGIBLE
    assert not_granted.message == "account b1 holds no grant of programme 'nb'"
    expired = bank.send(subsidised("o2", 1), at=DELIVERY + YEAR_MS)[0]
    assert isinstance(expired, OrderRejected)
    assert expired.message == "programme hz is not valid at this time"


ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("buy"), st.integers(1, 6), st.integers(90, 130), st.booleans()),
        st.tuples(st.just("sell"), st.integers(1, 6), st.integers(80, 120), st.booleans()),
        st.tuples(st.just("cancel"), st.integers(0, 40), st.just(0), st.booleans()),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(actions=ACTIONS, delivered=st.lists(st.integers(0, 20), min_size=4, max_size=4))
def test_random_trading_never_oversubscribes_a_programme(
    actions: list[tuple[str, int, int, bool]], delivered: list[int]
) -> None:
    bank = VoucherBank(MarketRules(bond_bps=500))
    bank.send(programme(budget=3_000, cap=200))
    buyers = ["b1", "b2", "b3"]
    for buyer, limit in zip(buyers, (1_500, 1_000, 800), strict=True):
        bank.grant(buyer, limit, related=["p2"] if buyer == "b3" else [])
        bank.send(funds(buyer, 20_000))
    for provider in ("p1", "p2"):
        bank.send(funds(provider, 5_000))
        bank.send(
            DepositCapacity(
                deposit_id=f"c-{provider}", account_id=provider, symbol=SYM, quantity=40
            )
        )
    placed: list[tuple[str, str]] = []
    for n, (kind, quantity, price, flag) in enumerate(actions):
        if kind == "cancel":
            if placed:
                order_id, account = placed[quantity % len(placed)]
                bank.send(CancelOrder(order_id=order_id, account_id=account))
            continue
        account = buyers[n % 3] if kind == "buy" else ("p1", "p2")[n % 2]
        command = PlaceOrder(
            order_id=f"o{n}", account_id=account, symbol=SYM, side=kind, price=price * 10,
            quantity=quantity, voucher="hz" if kind == "buy" and flag else None,
        )  # fmt: skip
        if isinstance(bank.send(command)[0], OrderAccepted):
            placed.append((command.order_id, account))
        _check(bank)
    bank.tick(DELIVERY)
    for buyer, units in zip(buyers, delivered, strict=False):
        for provider in ("p1", "p2"):
            bank.send(
                ReportMetering(
                    report_id=f"m-{provider}-{buyer}",
                    account_id=provider,
                    symbol=SYM,
                    buyer_id=buyer,
                    delivered=units % 4,
                )
            )
    bank.tick(DELIVERY + 3 * HOUR + 1)
    _check(bank)
    assert bank.ledger.ledger.get(f"escrow:{SYM}", 0) == 0


def _check(bank: Bank) -> None:
    ledger = bank.ledger
    assert ledger.trial_balance() == 0
    assert ledger.ledger.get("budget:hz", 0) >= 0
    committed = 0
    for g in ledger.grants.values():
        assert g.remaining >= 0
        assert g.reserved >= 0
        assert 0 <= g.committed <= g.limit
        assert g.remaining + g.reserved + g.committed == g.limit
        assert ledger.ledger.get(f"grant:hz:{g.account_id}", 0) == g.remaining
        assert ledger.ledger.get(f"reserved:hz:{g.account_id}", 0) == g.reserved
        committed += g.committed
    # Every voucher part paid out of a reservation, less what was clawed back, is committed.
    paid = -sum(
        amount
        for entry in ledger.journal or []
        if entry.kind in ("trade_buy",)
        for name, amount in entry.legs
        if name.startswith("reserved:")
    )
    clawed = sum(g.clawed_back for g in ledger.grants.values())
    assert paid - clawed == committed
    for balance in ledger.cash.values():
        assert balance.available >= 0
        assert balance.held >= 0


def test_a_related_fill_does_not_count_toward_a_later_unrelated_fill() -> None:
    bank = market(related=["p1"])
    bank.send(funds("p2", 0 + 1))
    bank.send(DepositCapacity(deposit_id="c2", account_id="p2", symbol=SYM, quantity=1))
    bank.send(CancelOrder(order_id="s1", account_id="p1"))
    bank.send(
        PlaceOrder(order_id="s2", account_id="p1", symbol=SYM, side="sell", price=1_000, quantity=1)
    )
    accepted(bank.send(subsidised("o1", 2)))  # 600 reserved; 1 filled from p1 (related)
    bank.send(
        PlaceOrder(order_id="s3", account_id="p2", symbol=SYM, side="sell", price=1_000, quantity=1)
    )

    g = bank.ledger.grants[("hz", "b1")]
    # Only the unrelated fill's own 30% of 1,000 is paid.
    assert (g.committed, g.remaining) == (300, 700)
    assert bank.cash("b1") == 10_000 - 1_000 - 700


def test_only_the_programme_s_administrator_approves_its_grants() -> None:
    bank = VoucherBank(FREE)
    bank.send(programme())
    bank.apply("b1", 100)
    stranger = grant("b1", 100).model_copy(update={"admin_id": "other-city"})

    refused = bank.send(stranger)[0]

    assert isinstance(refused, RequestRejected)
    assert refused.reason == RejectReason.NOT_PROGRAMME_ADMIN
    assert refused.message == "programme hz is administered by hz-admin"


def test_a_sell_cannot_carry_a_voucher() -> None:
    bank = market()
    bank.send(DepositCapacity(deposit_id="c9", account_id="b1", symbol=SYM, quantity=1))
    sell = subsidised("x1", 1).model_copy(update={"side": "sell"})
    refused = bank.send(sell)[0]
    assert isinstance(refused, OrderRejected)
    assert refused.message == "vouchers and net limits are for buys"


def test_an_unsigned_programme_command_is_refused() -> None:
    bank = VoucherBank(FREE)
    forged = bank.risk.handle(programme(), EventStamp("c", 0, 99, 1))
    assert isinstance(forged, RequestRejected)
    assert forged.reason == RejectReason.NOT_OPERATOR
    assert "hz-admin" in forged.message
    assert bank.risk.accounts.programmes == {}


def _settled(events: list[Event]) -> str:
    """The state hash of a settlement-style fold of `events` in the order given."""
    ledger = Accounts(FREE, journal=True)
    for event in events:
        ledger.apply(event)
    assert ledger.trial_balance() == 0
    hasher = hashlib.sha256()
    ledger.digest(hasher)
    return hasher.hexdigest()


def test_settlement_reading_the_grant_after_the_trades_that_used_it_ends_the_same() -> None:
    # Settlement merges partitions: the grant approval (the programme's partition) may be read
    # after the orders and fills that use it (their contract's). Each order carries the
    # grant's related parties, and uses of a grant are counted before its approval is seen.
    bank = market(related=["p1"])
    bank.send(DepositCapacity(deposit_id="c2", account_id="p2", symbol=SYM, quantity=1))
    bank.send(CancelOrder(order_id="s1", account_id="p1"))
    bank.send(
        PlaceOrder(order_id="s2", account_id="p1", symbol=SYM, side="sell", price=1_000, quantity=1)
    )
    accepted(bank.send(subsidised("o1", 3)))  # 1 filled from p1 (related), 2 rest
    bank.send(
        PlaceOrder(order_id="s3", account_id="p2", symbol=SYM, side="sell", price=1_000, quantity=1)
    )
    bank.send(CancelOrder(order_id="o1", account_id="b1"))  # the rest of the reservation returns
    in_order = bank.events
    approvals = [e for e in in_order if isinstance(e, GrantApproved)]
    assert approvals

    approvals_last = [e for e in in_order if not isinstance(e, GrantApproved)] + approvals

    assert _settled(approvals_last) == _settled(in_order)
    g = bank.ledger.grants[("hz", "b1")]
    assert (g.limit, g.remaining, g.reserved, g.committed) == (1_000, 700, 0, 300)


def test_an_open_voucher_order_keeps_its_related_parties_through_a_snapshot() -> None:
    bank = market(related=["p1"])
    bank.send(CancelOrder(order_id="s1", account_id="p1"))
    accepted(bank.send(subsidised("o1", 2)))  # rests, with the grant's related parties
    snapshot = bank.ledger.snapshot()

    restored = Accounts.restore(snapshot, FREE)

    voucher = restored.open_orders[exchange_order_id("b1", "o1")].voucher
    assert voucher is not None
    assert voucher.related == ("p1",)
    assert restored.snapshot() == snapshot


def test_programme_and_application_ids_are_their_administrators_own() -> None:
    bank = market()
    # Another administrator cannot take the programme's id, nor is it told it did this.
    taken = bank.send(programme(admin_id="nb-admin"))[0]
    assert isinstance(taken, RequestRejected)
    assert (taken.reason, taken.message) == (
        RejectReason.INVALID_PROGRAMME,
        "programme 'hz' exists",
    )
    again = bank.send(programme())[0]
    assert isinstance(again, RequestRejected)
    assert again.reason == RejectReason.DUPLICATE_ID

    bank.send(programme(programme_id="nb", admin_id="nb-admin"))
    bank.apply("b2", 300, "app-1")
    bank.send(
        ApplyForGrant(
            application_id="app-1", account_id="b2", programme_id="nb", amount=300,
            intended_use="inference",
        )
    )  # fmt: skip
    same_application = grant("b2", 300).model_copy(update={"application_id": "app-1"})
    approved = [
        bank.send(same_application)[0],
        bank.send(
            same_application.model_copy(update={"programme_id": "nb", "admin_id": "nb-admin"})
        )[0],
    ]
    assert [(type(e).__name__, getattr(e, "programme_id", None)) for e in approved] == [
        ("GrantApproved", "hz"),
        ("GrantApproved", "nb"),
    ]
    # An administrator of another programme naming this one's application is refused as not
    # its administrator, not told the application exists.
    foreign = bank.send(same_application.model_copy(update={"admin_id": "nb-admin"}))[0]
    assert isinstance(foreign, RequestRejected)
    assert foreign.reason == RejectReason.NOT_PROGRAMME_ADMIN
    repeated = bank.send(same_application)[0]
    assert isinstance(repeated, RequestRejected)
    assert (repeated.reason, repeated.request_id) == (
        RejectReason.APPLICATION_NOT_PENDING,
        "hz/app-1",
    )


def test_each_cst_calendar_year_starts_with_the_whole_budget() -> None:
    # 2028-01-01 00:00 China Standard Time is 2027-12-31 16:00 UTC.
    new_year = 1_830_268_800_000
    bank = VoucherBank(FREE)
    terms = {"cap_per_enterprise": 10_000, "valid_until": new_year + YEAR_MS}
    bank.send(programme(budget=10_000, **terms), at=new_year - 10_000)
    bank.apply("b1", 5_000)
    bank.apply("b2", 4_000)
    bank.apply("b3", 8_000)
    bank.apply("b4", 3_000)
    # The last millisecond of 2027 in Hangzhou still counts against 2027's budget.
    last = bank.send(grant("b1", 5_000), at=new_year - 1)[0]
    assert isinstance(last, GrantApproved)
    assert (last.budget_year, last.renewed) == (2027, 0)
    refused = bank.send(grant("b3", 8_000), at=new_year - 1)[0]
    assert isinstance(refused, RequestRejected)
    assert refused.message == (
        "programme hz has 5000 fen of its 2027 budget left to grant, the grant asks 8000 fen"
    )

    first = bank.send(grant("b3", 8_000), at=new_year)[0]

    # 2027 granted 5,000 and left 5,000 ungranted: the 5,000 granted is pledged again and the
    # 5,000 left lapses, so 2028 starts with 10,000, of which the grant takes 8,000.
    assert isinstance(first, GrantApproved)
    assert (first.budget_year, first.renewed) == (2028, 5_000)
    assert bank.ledger.ledger["budget:hz"] == 2_000
    assert bank.ledger.ledger["pledge:hz"] == -15_000
    assert bank.risk.accounts.programmes["hz"].unallocated == 2_000
    assert bank.ledger.trial_balance() == 0
    over = bank.send(grant("b4", 3_000), at=new_year + 1)[0]
    assert isinstance(over, RequestRejected)
    assert over.message == (
        "programme hz has 2000 fen of its 2028 budget left to grant, the grant asks 3000 fen"
    )
    # A year's grants stay usable after it: b1's 2027 grant is whole.
    assert bank.risk.accounts.grants[("hz", "b1")].remaining == 5_000


def test_unsigned_steps_of_administrators_and_operators_are_refused() -> None:
    bank = VoucherBank(FREE)
    bank.send(programme())
    bank.apply("b1", 100)
    policy = SetVoucherPolicy(
        operator_id="ops", max_rate_bps=9_000, max_cap_per_enterprise=1, kinds=["sme"]
    )
    reject = RejectApplication(
        application_id="app-b1-100", programme_id="hz", admin_id="hz-admin", reason="no"
    )
    for forged in (policy, reject):
        refused = bank.risk.handle(forged, EventStamp("c", 0, 99, bank.ts))
        assert isinstance(refused, RequestRejected)
        assert refused.reason == RejectReason.NOT_OPERATOR
    assert bank.risk.state.voucher_policy is None
    assert bank.risk.state.applications["hz/app-b1-100"].status == "pending"


def test_a_stale_registration_fed_back_never_undoes_a_newer_one_in_the_registry() -> None:
    bank = VoucherBank(FREE)
    first = bank.send(enterprise("b1"))[0]
    moved = enterprise("b1", city="ningbo")
    second = bank.send(moved)[0]
    assert isinstance(first, EnterpriseRegistered)
    assert isinstance(second, EnterpriseRegistered)
    stamp = EventStamp("f", 0, 99, bank.ts)

    # The registry's partition decided both: the first, fed back late, changes nothing there.
    bank.risk.apply_outcome(first, lambda key: key == REGISTRY_KEY, stamp)
    assert bank.risk.state.enterprises["b1"].city == "ningbo"
    # Another partition learns each as it comes, the newer last.
    elsewhere = VoucherBank(FREE)
    for registered in (first, second):
        elsewhere.risk.apply_outcome(registered, lambda key: key != REGISTRY_KEY, stamp)
    assert elsewhere.risk.state.enterprises["b1"].city == "ningbo"


def test_registrations_applications_the_policy_and_budget_years_survive_a_snapshot() -> None:
    bank = market()
    bank.apply("b2", 300)
    bank.send(
        SetVoucherPolicy(
            operator_id="ops", max_rate_bps=3_000, max_cap_per_enterprise=9_000, kinds=["sme"]
        )
    )
    snapshot = json.loads(json.dumps(bank.risk.snapshot()))

    restored = RiskStage.restore(bank.risk.catalogue, snapshot, SEAL)

    assert restored.state_hash() == bank.risk.state_hash()
    assert restored.state.applications == bank.risk.state.applications
    assert restored.state.enterprises == bank.risk.state.enterprises
    assert restored.state.voucher_policy == bank.risk.state.voucher_policy
    assert restored.state.accounts.programmes["hz"].budget_year == 2027


def test_a_programme_or_concession_id_holding_the_ledger_s_separator_is_refused() -> None:
    # `grant:cc:dd:b4` would be programme `cc`'s grant to account `dd:b4` and programme
    # `cc:dd`'s to account `b4` alike: a command straight to the log is refused by risk, as
    # the API refuses the body, and nothing is created.
    bank = market()
    refused = bank.send(programme(programme_id="cc:dd"))[0]
    assert isinstance(refused, RequestRejected)
    assert refused.reason == RejectReason.INVALID_PROGRAMME
    assert "'cc:dd'" in refused.message
    assert "cc:dd" not in bank.risk.state.accounts.programmes
    concession = GrantConcession(
        concession_id="relief:x", operator_id="ops", account_id="b1", discount_bps=5_000,
        budget=10, valid_from=0, valid_until=DELIVERY,
    )  # fmt: skip
    refused = bank.send(concession)[0]
    assert isinstance(refused, RequestRejected)
    assert refused.reason == RejectReason.INVALID_PROGRAMME
    assert not bank.risk.state.accounts.concessions
    assert bank.ledger.trial_balance() == 0
