"""Cash, capacity, entitlements, holds, bonds, escrow, fees and vouchers: the money rules.

The risk stage uses these rules to decide what may trade; settlement applies the same rules to
the same events to keep its ledger, and the API to keep private balance streams, so none of
them can disagree on arithmetic. Every cash movement is one balanced journal entry over named
ledger accounts (see docs/MONEY.md):

    cash:A        what account A may use now        held:A     held for A's open orders
    bond:A        A's delivery bond behind sold, undelivered capacity
    escrow:S      buyers' payments for contract S, waiting for delivery
    fees          platform fee income                rebates    maker rebates paid out
    external      money outside the exchange (deposits come from it, withdrawals go to it)
    pledge:P      the issuer's pledge of programme P's budget (negative)
    budget:P      programme P's budget not yet granted
    grant:P:A     what P granted A and A has not reserved
    reserved:P:A  voucher funds reserved for A's open orders
    platform      what the platform set aside for fee concessions (negative)
    concession:C:A  what is left of concession C's budget for A

All amounts are integer fen; quantities integer units. Rules:
- A buy holds limit price x quantity plus the most its fee could be; a trade of q at p pays
  p x q into the contract's escrow and the buyer's fee to the platform, and returns the rest of
  what it held for q. A buy with a voucher also reserves the voucher part from its grant at
  acceptance; each fill pays from the reservation the least of the programme's rate of the
  amount filled so far (less what earlier fills used) and what is still reserved, unless the
  seller is a related party, and that much returns to the buyer. The rest of a reservation
  returns to the grant when the order ends.
- A sell is backed by deposited capacity (a provider) or by an entitlement bought earlier
  (resale), and holds that. A provider's sell also holds a delivery bond from its cash; a trade
  moves the bond behind the units sold, and the payment stays in escrow until delivery. A
  resale is paid at once out of escrow, less the seller's fee, and gives back the voucher part
  of the entitlement it sold (clawback).
- Delivery settles each obligation: the provider receives the delivered share of the escrow
  less its fee and its bond back less the penalty; the buyer receives the undelivered share of
  the escrow and the penalty, less the voucher part of what was refunded (clawed back to the
  grant). Positions fall by what was owed.
- An amend that needs more holds the difference up front (`extra`); when matching amends the
  order its hold becomes exactly the new one and the extra is settled; a refused amend returns
  its extra. Self-trade prevention's decrement releases what it took off.
- A block holds average price x quantity x hours of cash (buy) or quantity of capacity in each
  of its hours (sell); its trades settle per hour like any order's. A buy block's voucher is
  reserved for the whole block and its fills use it as a single buy's fills do; a sell block
  holds a provider's delivery bond like a provider's sell.

A fee concession pays a participant back `discount_bps` of each positive fee it is charged
(at its trade, or for a provider at delivery) from the concession's budget, while valid. The
risk stage decides each discount as it charges the fee (`decides_concessions`, then
`concessions_due`) and records it as a `FeeConceded` event; settlement applies only those events,
so the budget is spent as risk spent it whatever order settlement reads partitions in.

Each risk partition owns some accounts (and programmes): `owns` says which, and an instance
applies only the legs of entries it owns. Settlement owns everything and keeps the journal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mypy_extensions import mypyc_attr

from exchange.domain.catalogue import MarketRules, family_of, parse_symbol, strip_hours, to_utc_ms
from exchange.domain.messages import (
    AmendRejected,
    AmendRequested,
    BlockAccepted,
    BundleDrawn,
    CapacityDeposited,
    CapacityWithdrawn,
    ConcessionGranted,
    DeliverySettled,
    DiscountPoolFunded,
    Event,
    FeeConceded,
    FundsDeposited,
    FundsWithdrawn,
    GrantApproved,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderReduced,
    PlatformDiscounted,
    ProgrammeCreated,
    Side,
    StripCascaded,
    TradeExecuted,
    split_over_hours,
)

Owns = Callable[[str], bool]
"""Whether this instance keeps the balances of an account (or `programme:ID`)."""

BPS = 10_000
TOKENS_PER_UNIT = 1_000_000
"""A token contract's unit is a million tokens; a bundle's metering counts tokens."""

CEILING = 10**18
"""The most an amount on the exchange may come to, in fen or units: all the money inside it
together, the capacity one account holds in one contract, one order's price x quantity. Every
balance, position and journal leg then stays far below 2^63 - 1 (about 9.2 x 10^18), a
BIGINT's largest value; the risk stage refuses what would cross it (docs/MONEY.md,
"Ceilings")."""

SYSTEM_ACCOUNTS = frozenset(("external", "fees", "rebates", "platform"))
"""The ledger accounts of the exchange itself, named bare (no `kind:` prefix, see the table
above). No participant may be called by one: `platform`'s registered enterprise is the seller
on every invoice, and a participant named after any of them would read as the exchange in
statements, audits and support."""


# An exception: mypyc compiles no native class derived from a built-in one.
@mypyc_attr(native_class=False)
class UnbalancedEntryError(RuntimeError):
    """A journal entry whose legs do not sum to zero: a defect in the exchange, never input."""

    def __init__(self, entry_id: str, kind: str, legs: list[tuple[str, int]]) -> None:
        total = sum(amount for _, amount in legs)
        super().__init__(f"journal entry {entry_id} ({kind}) is off by {total}: {legs}")
        self.entry_id = entry_id
        self.kind = kind
        self.legs = legs


def _everyone(_: str) -> bool:
    return True


class Hasher(Protocol):
    """What a digest needs of a hashlib object."""

    def update(self, data: bytes, /) -> None:
        """Feed bytes."""


@dataclass(slots=True)
class Balance:
    """What an account may use now and what is held for its open orders."""

    available: int = 0
    held: int = 0


@dataclass(slots=True)
class VoucherUse:
    """A buy order's voucher: what is still reserved for it and what its fills used."""

    programme_id: str
    rate_bps: int
    reserved: int
    used: int = 0
    filled: int = 0
    """Gross amount (fen) filled so far by sellers that are not related parties: the rate
    applies to it cumulatively, so rounding never gives more than the rate of the total."""
    related: tuple[str, ...] = ()
    """The grant's related parties when the order was accepted (`OrderAccepted`)."""


@dataclass(slots=True)
class OpenOrder:
    """An accepted order that is not finished, with what is still held for it."""

    order_id: str
    account_id: str
    symbol: str
    side: Side
    price: int
    remaining: int
    extra: int = 0
    """Held on top of the order's own hold for amends not yet decided by matching."""
    hours: tuple[str, ...] = ()
    """A block order's contracts (its `symbol` is then the family, `remaining` the total)."""
    backing: str = "capacity"
    bond_per_unit: int = 0
    voucher: VoucherUse | None = None


@dataclass(slots=True)
class Programme:
    """A compute-voucher programme, kept by the partition that owns `programme:ID`."""

    programme_id: str
    issuer: str
    budget: int
    rate_bps: int
    cap_per_contract: int
    cap_per_enterprise: int
    classes: list[str]
    regions: list[str]
    kinds: list[str]
    cities: list[str]
    valid_from: int
    valid_until: int
    unallocated: int
    granted: dict[str, int] = field(default_factory=dict)
    admin_id: str = ""
    """Who administers it: the only one who may approve its grants."""
    pool_bps: int = 0
    """The platform's discount on purchases paid with the voucher (0: no discount pool)."""
    pool_unallocated: int = 0
    """What is left of the platform's discount pool to carve into grants."""

    def pool_part(self, limit: int) -> int:
        """The platform's part of the pool for a grant of `limit`: in the proportion of the
        platform's discount to the voucher rate, while the pool lasts."""
        if not self.pool_bps:
            return 0
        return min(limit * self.pool_bps // self.rate_bps, self.pool_unallocated)

    budget_year: int = 0
    """The calendar year (China Standard Time) `unallocated` is of: that of the latest grant
    (0: none yet)."""


@dataclass(slots=True)
class Grant:
    """What a programme granted one enterprise, with the programme's rules."""

    programme_id: str
    account_id: str
    limit: int
    remaining: int
    """Granted and not reserved."""
    rate_bps: int
    cap_per_contract: int
    classes: list[str]
    regions: list[str]
    valid_from: int
    valid_until: int
    related: list[str]
    reserved: int = 0
    committed: int = 0
    clawed_back: int = 0
    discount_bps: int = 0
    """The platform's discount on each purchase paid with this grant's voucher."""
    discount_remaining: int = 0
    """The holder's part of the programme's discount pool not yet given."""

    @classmethod
    def awaiting_approval(cls, programme_id: str, account_id: str) -> Grant:
        """A grant whose use is seen before its approval: settlement reads the programme's
        partition and the order's partition at their own pace. It has no rules and is never
        eligible; the approval adds the limit and the rules, keeping what was used."""
        return cls(programme_id, account_id, 0, 0, 0, 0, [], [], 0, 0, [])

    @property
    def approved(self) -> bool:
        """False while the grant is `awaiting_approval` (an approved one has a validity)."""
        return self.valid_until > 0

    def voucher_for(self, amount: int, contracts: int = 1) -> int:
        """The voucher part of a purchase of `amount` fen now over `contracts` hourly contracts
        (a block's hours; a single order buys one): the least of the rate of it, the
        per-contract cap once per contract, and what is left of the grant."""
        cap = self.cap_per_contract * contracts
        return min(amount * self.rate_bps // BPS, cap, self.remaining)

    def eligible(self, symbol: str, ts: int) -> str:
        """Why an order in `symbol` at log time `ts` cannot use this grant ("" if it can)."""
        resource_class, region = family_of(symbol).split(".", 1)
        if not self.valid_from <= ts < self.valid_until:
            return f"programme {self.programme_id} is not valid at this time"
        if self.classes and resource_class not in self.classes:
            return f"programme {self.programme_id} does not cover {resource_class}"
        if self.regions and region not in self.regions:
            return f"programme {self.programme_id} does not cover region {region}"
        return ""


@dataclass(slots=True)
class Concession:
    """A participant's fee concession: its share of fees paid back, and budget left."""

    account_id: str
    discount_bps: int
    remaining: int
    valid_from: int
    valid_until: int


@dataclass(frozen=True, slots=True)
class ConcessionDue:
    """A discount the risk stage owes an account on a fee it just charged it."""

    concession_id: str
    account_id: str
    fee: int
    discount: int
    charged_in: str
    trade_id: str | None


@dataclass(frozen=True, slots=True)
class DiscountDue:
    """A platform discount the risk stage owes a grant holder on a purchase it just settled."""

    programme_id: str
    account_id: str
    amount: int
    discount: int
    trade_id: str


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One balanced movement of money: legs of (ledger account, amount) summing to zero."""

    entry_id: str
    kind: str
    ts: int
    legs: tuple[tuple[str, int], ...]


def _owner(ledger_account: str) -> str | None:
    """The account (or `programme:ID`) a ledger account belongs to; None for the exchange's."""
    kind, _, rest = ledger_account.partition(":")
    if kind in ("cash", "held", "bond"):
        return rest
    if kind in ("grant", "reserved", "concession", "discount"):
        return rest.split(":", 1)[1]
    if kind in ("pledge", "budget", "pool"):
        return f"programme:{rest}"
    return None


class Fees:
    """Maker and taker fees per resource class, in basis points (negative: a rebate)."""

    def __init__(self, rules: MarketRules) -> None:
        self._rates = {
            resource_class: (maker, taker) for resource_class, maker, taker in rules.fees
        }
        self._by_symbol: dict[str, tuple[int, int, int]] = {}
        """symbol -> (maker, taker, the higher of them or 0): every order and trade asks, and
        a contract's class never changes."""

    def _of(self, symbol: str) -> tuple[int, int, int]:
        """(maker, taker, the most a buy holds) basis points of the contract's class."""
        rates = self._by_symbol.get(symbol)
        if rates is None:
            maker, taker = self._rates.get(symbol.split(".", 1)[0], (0, 0))
            rates = self._by_symbol[symbol] = (maker, taker, max(0, maker, taker))
        return rates

    def fee(self, symbol: str, amount: int, aggressor: str | None, side: str) -> int:
        """The fee of one side of a trade on its amount, rounded toward zero (a rebate when
        negative): the taker's rate for the side that arrived (the aggressor), the maker's for
        the other. A call auction's trade has no aggressor: both sides pay the maker's rate,
        but no rebate, which only a taker's fee pays for."""
        maker, taker, _ = self._of(symbol)
        if aggressor is not None:
            bps = taker if aggressor == side else maker
        elif maker > 0:
            bps = maker
        else:
            return 0
        return amount * bps // BPS if bps >= 0 else -(amount * -bps // BPS)

    def most(self, symbol: str, amount: int) -> int:
        """The most the fees on `amount` can come to (rounded up): what a buy holds for them."""
        return -(-amount * self._of(symbol)[2] // BPS)


class Accounts:
    """Every balance the money rules keep, and (when `journal` is on) the journal entries."""

    def __init__(
        self,
        rules: MarketRules | None = None,
        *,
        journal: bool = False,
        decides_concessions: bool = False,
    ) -> None:
        self.rules = rules or MarketRules()
        self.cash: dict[str, Balance] = {}
        self.capacity: dict[tuple[str, str], Balance] = {}
        self.positions: dict[tuple[str, str], int] = {}
        """Entitlements: units of a contract an account bought and still holds."""
        self.resale_held: dict[tuple[str, str], int] = {}
        """Entitlements held for open resale orders."""
        self.bundle_used: dict[tuple[str, str, str], int] = {}
        """(holder, bundle, provider) -> tokens drawn down so far, until it settles."""
        self.bundle_drawn_units: dict[tuple[str, str], int] = {}
        """(holder, bundle) -> whole units drawn into (each provider's tokens rounded up):
        entitlement that can no longer be resold."""
        self.settled_in_period: dict[tuple[str, str], int] = {}
        """(holder, bundle) -> units of its obligations that settled while the bundle still
        traded (a dispute resolved in its period): refunded, so a resale of them is refused
        saying so (`obligation_settled`)."""
        self.ledger: dict[str, int] = {}
        """Every ledger account other than cash and held."""
        self.open_orders: dict[str, OpenOrder] = {}
        self.programmes: dict[str, Programme] = {}
        self.grants: dict[tuple[str, str], Grant] = {}
        self.concessions: dict[tuple[str, str], Concession] = {}
        """(concession id, account) -> the concession."""
        self.subsidised: dict[tuple[str, str, str], list[int]] = {}
        """(account, symbol, programme) -> [units, voucher fen] of entitlements bought with a
        voucher, for clawing the voucher part back when they are refunded or resold."""
        self.journal: list[JournalEntry] | None = [] if journal else None
        self.concessions_due: list[ConcessionDue] | None = [] if decides_concessions else None
        """Discounts decided and not yet applied as `FeeConceded` (None: this instance does
        not decide them, it applies the events)."""
        self.discounts_due: list[DiscountDue] | None = [] if decides_concessions else None
        """Platform discounts decided and not yet applied as `PlatformDiscounted`."""
        self.fees = Fees(self.rules)
        self.cascaded_strips: set[str] = set()
        """The strips whose `StripCascaded` was folded: a second one changes nothing."""
        self._order_lines: dict[str, tuple[OpenOrder, int, int, str]] = {}
        """Each plain open order's `digest` line as last rendered, with the order and the price
        and open quantity it had then: its other fields are never changed in place."""

    # Balances -------------------------------------------------------------------------------

    def cash_of(self, account_id: str) -> Balance:
        """The account's cash balance (created empty on first use)."""
        balance = self.cash.get(account_id)
        if balance is None:
            balance = self.cash[account_id] = Balance()
        return balance

    def capacity_of(self, account_id: str, symbol: str) -> Balance:
        """The account's sellable capacity in one contract (created empty on first use)."""
        key = (account_id, symbol)
        balance = self.capacity.get(key)
        if balance is None:
            balance = self.capacity[key] = Balance()
        return balance

    def available_cash(self, account_id: str) -> int:
        """Cash the account may use now (0 if unseen), without creating a balance."""
        balance = self.cash.get(account_id)
        return 0 if balance is None else balance.available

    def available_capacity(self, account_id: str, symbol: str) -> int:
        """Capacity the account may sell now (0 if unseen), without creating a balance."""
        balance = self.capacity.get((account_id, symbol))
        return 0 if balance is None else balance.available

    def available_entitlement(self, account_id: str, symbol: str) -> int:
        """Entitlement the account may resell now."""
        key = (account_id, symbol)
        drawn = self.bundle_drawn_units.get(key, 0) if self.bundle_drawn_units else 0
        return self.positions.get(key, 0) - self.resale_held.get(key, 0) - drawn

    # Bonds and holds -------------------------------------------------------------------------

    def bond_per_unit(self, price: int) -> int:
        """The delivery bond behind one unit a provider sells at `price` (rounded up)."""
        return -(-price * self.rules.bond_bps // BPS)

    def buy_hold(self, symbol: str, price: int, quantity: int) -> int:
        """What a buy of `quantity` at `price` holds: the amount (of every hour, for a strip)
        and the most its fee can be."""
        amount = price * quantity * strip_hours(symbol)
        return amount + self.fees.most(symbol, amount)

    def shortfall(self, account_id: str, symbol: str, side: Side, price: int, quantity: int) -> int:
        """How much cash (buy) or capacity (sell) the order lacks; 0 if it can be held."""
        if side == "buy":
            return max(0, self.buy_hold(symbol, price, quantity) - self.available_cash(account_id))
        return max(0, quantity - self.available_capacity(account_id, symbol))

    def own_hold(self, order: OpenOrder, price: int, quantity: int) -> int:
        """What an order's open quantity holds at `price`: cash (buy) or capacity units (sell)."""
        if order.side == "buy":
            return self.buy_hold(order.symbol, price, quantity)
        return quantity

    # The journal ----------------------------------------------------------------------------

    def _post(
        self, entry_id: str, kind: str, ts: int, legs: list[tuple[str, int]], owns: Owns | None
    ) -> None:
        """Apply a balanced entry's legs that this instance owns, and journal it."""
        # A real check, not an assert: an unbalanced entry is a bug that must stop the stage
        # before it reaches the ledger, with `python -O` too.
        if sum([amount for _, amount in legs]) != 0:
            raise UnbalancedEntryError(entry_id, kind, legs)
        # Every order and trade posts here (a replay folds hundreds of thousands): the cash
        # balance is looked up in place, not through `cash_of`.
        cash, ledger = self.cash, self.ledger
        for name, amount in legs:
            if not amount:
                continue
            if owns is not None:
                owner = _owner(name)
                if owner is None or not owns(owner):
                    continue
            kind_of, _, rest = name.partition(":")
            if kind_of == "cash" or kind_of == "held":
                balance = cash.get(rest)
                if balance is None:
                    balance = cash[rest] = Balance()
                if kind_of == "cash":
                    balance.available += amount
                else:
                    balance.held += amount
            else:
                ledger[name] = ledger.get(name, 0) + amount
        if self.journal is not None:
            kept = tuple((name, amount) for name, amount in legs if amount)
            if kept:
                self.journal.append(JournalEntry(entry_id, kind, ts, kept))

    def _hold_cash(
        self, account_id: str, amount: int, entry_id: str, kind: str, ts: int, owns: Owns | None
    ) -> None:
        """Post the entry that moves `amount` of the account's cash to held: the same as
        `_post` of its two legs, in place when no journal is kept and every account is owned
        (a replay's fold, for every accepted order)."""
        if self.journal is not None or owns is not None:
            legs = [(f"cash:{account_id}", -amount), (f"held:{account_id}", amount)]
            self._post(entry_id, kind, ts, legs, owns)
        elif amount:
            balance = self.cash_of(account_id)
            balance.available -= amount
            balance.held += amount

    def _post_bond(
        self, account_id: str, amount: int, entry_id: str, ts: int, owns: Owns | None
    ) -> None:
        """Post the entry that moves `amount` of a seller's held cash to its delivery bond as
        it sells: `_post` of its two legs, in place as `_hold_cash` does."""
        if self.journal is not None or owns is not None:
            legs = [(f"held:{account_id}", -amount), (f"bond:{account_id}", amount)]
            self._post(entry_id, "bond_post", ts, legs, owns)
        elif amount:
            self.cash_of(account_id).held -= amount
            name = f"bond:{account_id}"
            self.ledger[name] = self.ledger.get(name, 0) + amount

    def _post_buy_fill(
        self, buyer: str, released: int, amount: int, fee: int, escrow: str, trade_event_id: str
    ) -> None:
        """Post the entry of a fill of a buy without a voucher (the buy's hold released, the
        amount and fee paid from cash, the amount to the contract's escrow, the fee to its
        ledger account): the same as `_post` of its legs, and checked for balance the same,
        in place when no journal is kept and every account is owned (a replay's fold, for
        nearly every trade)."""
        fee_legs = _fee_legs(fee)
        # The buyer's and the escrow's legs balance but for the fee: the entry does when
        # the fee's legs add up to it.
        if sum([value for _, value in fee_legs]) != fee:
            legs = [
                (f"held:{buyer}", -released),
                (f"cash:{buyer}", released - amount - fee),
                (escrow, amount),
                *fee_legs,
            ]
            raise UnbalancedEntryError(f"{trade_event_id}/buy", "trade_buy", legs)
        paid = released - amount - fee
        if released or paid:
            balance = self.cash_of(buyer)
            balance.held -= released
            balance.available += paid
        ledger = self.ledger
        if amount:
            ledger[escrow] = ledger.get(escrow, 0) + amount
        for name, value in fee_legs:
            if value:
                ledger[name] = ledger.get(name, 0) + value

    def trial_balance(self) -> int:
        """The sum of every ledger account: zero when every entry balanced."""
        participants = sum(b.available + b.held for b in self.cash.values())
        return participants + sum(self.ledger.values())

    # Applying events ------------------------------------------------------------------------

    def apply(self, event: Event, owns: Owns | None = None) -> None:
        """Fold any event that moves money, capacity or entitlements (others are ignored)."""
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event, owns)

    def _deposited(self, event: FundsDeposited | CapacityDeposited, owns: Owns | None) -> None:
        if isinstance(event, FundsDeposited):
            self._post(
                event.event_id,
                "deposit",
                event.ts,
                [("external", -event.amount), (f"cash:{event.account_id}", event.amount)],
                owns,
            )
        elif owns is None or owns(event.account_id):
            self._add_capacity(event.account_id, event.symbol, event.quantity)

    def _add_capacity(self, account_id: str, symbol: str, units: int) -> None:
        """Make units of capacity sellable (take them back, when negative). A strip's that
        cascaded meanwhile go to (come from) each of its hours, where the cascade moved the
        rest of its capacity: risk may accept a deposit, or a sell that held them, before it
        folds the cascade matching reported, and matching records risk's deposits and
        withdrawals on the events topic where it reads them, possibly after the cascade. Left
        in the strip, deposited units could be neither sold nor withdrawn, and a withdrawal
        stored after the cascade left the strip negative and its hours too high."""
        for balance in self._capacities(account_id, symbol):
            balance.available += units

    def _capacities(self, account_id: str, symbol: str) -> list[Balance]:
        """The capacity balances that stand for `symbol`'s: its own, or once a strip
        cascaded, those of each of its hours."""
        if symbol in self.cascaded_strips:
            return [self.capacity_of(account_id, h.symbol) for h in parse_symbol(symbol).hours()]
        return [self.capacity_of(account_id, symbol)]

    def _withdrawn(self, event: FundsWithdrawn | CapacityWithdrawn, owns: Owns | None) -> None:
        if isinstance(event, FundsWithdrawn):
            self._post(
                event.event_id,
                "withdrawal",
                event.ts,
                [(f"cash:{event.account_id}", -event.amount), ("external", event.amount)],
                owns,
            )
        elif owns is None or owns(event.account_id):
            self._add_capacity(event.account_id, event.symbol, -event.quantity)

    def _accepted(self, order: OrderAccepted, owns: Owns | None) -> None:
        account = order.account_id
        if owns is not None and not owns(account):
            return
        voucher = None
        if order.side == "buy":
            hold = self.buy_hold(order.symbol, order.price, order.quantity)
            if order.voucher is None:
                self._hold_cash(account, hold, order.event_id, "order_hold", order.ts, owns)
            else:
                legs = [(f"cash:{account}", -hold), (f"held:{account}", hold)]
                voucher = self._reserve(order, legs)
                self._post(order.event_id, "order_hold", order.ts, legs, owns)
        elif order.backing == "entitlement":
            key = (account, order.symbol)
            self.resale_held[key] = self.resale_held.get(key, 0) + order.quantity
        else:
            self._hold_capacity(account, order.symbol, order.quantity)
            bond = order.bond_per_unit * order.quantity
            self._hold_cash(account, bond, order.event_id, "bond_hold", order.ts, owns)
        self.open_orders[order.order_id] = OpenOrder(
            order.order_id, account, order.symbol, order.side, order.price, order.quantity,
            0, (), order.backing, order.bond_per_unit, voucher,
        )  # fmt: skip

    def _block_accepted(self, block: BlockAccepted, owns: Owns | None) -> None:
        account = block.account_id
        if owns is not None and not owns(account):
            return
        total = block.quantity * len(block.symbols)
        voucher = None
        if block.side == "buy":
            hold = self.buy_hold(block.symbols[0], block.price, total)
            legs = [(f"cash:{account}", -hold), (f"held:{account}", hold)]
            voucher = self._reserve(block, legs)
            self._post(block.event_id, "order_hold", block.ts, legs, owns)
        else:
            for symbol in block.symbols:
                balance = self.capacity_of(account, symbol)
                balance.available -= block.quantity
                balance.held += block.quantity
            bond = block.bond_per_unit * total
            self._post(
                block.event_id,
                "bond_hold",
                block.ts,
                [(f"cash:{account}", -bond), (f"held:{account}", bond)],
                owns,
            )
        self.open_orders[block.order_id] = OpenOrder(
            block.order_id, account, block.family, block.side, block.price, total, 0,
            tuple(block.symbols), bond_per_unit=block.bond_per_unit, voucher=voucher,
        )  # fmt: skip

    def _reserve(
        self, order: OrderAccepted | BlockAccepted, legs: list[tuple[str, int]]
    ) -> VoucherUse | None:
        """Reserve an accepted buy's voucher part from its grant (adding the legs that move
        it to `legs`): the voucher use its fills draw on, or None without a voucher."""
        if order.voucher is None:
            return None
        account, reserved = order.account_id, order.voucher_reserved
        legs += [
            (f"grant:{order.voucher}:{account}", -reserved),
            (f"reserved:{order.voucher}:{account}", reserved),
        ]
        grant = self._grant_of(order.voucher, account)
        grant.remaining -= reserved
        grant.reserved += reserved
        return VoucherUse(
            order.voucher, order.voucher_rate_bps, reserved, related=tuple(order.voucher_related)
        )

    def _traded(self, trade: TradeExecuted, owns: Owns | None) -> None:
        """Settle the sides of a trade whose orders this instance tracks and whose account it
        owns (a risk stage reads the trade once in each partition of the two accounts)."""
        # A strip's price is per card-hour: a unit of it is every one of its hours.
        amount = trade.price * trade.quantity * strip_hours(trade.symbol)
        escrow = f"escrow:{trade.symbol}"
        buy = self.open_orders.get(trade.buy_order_id)
        if buy is not None and (owns is None or owns(buy.account_id)):
            buyer = buy.account_id
            # A block's hold was taken at its first hour's fee rate (all hours share a class).
            symbol = buy.hours[0] if buy.hours else buy.symbol
            released = self.buy_hold(buy.symbol, buy.price, buy.remaining) - self.buy_hold(
                buy.symbol, buy.price, buy.remaining - trade.quantity
            )
            fee = self.fees.fee(symbol, amount, trade.aggressor, "buy")
            use = buy.voucher
            voucher = 0 if use is None else self._voucher_part(use, trade, amount)
            if self.concessions_due is not None:
                self._concede(buyer, fee, f"{trade.event_id}/buy", trade.trade_id, trade.ts)
            if use is None and self.journal is None and owns is None:
                self._post_buy_fill(buyer, released, amount, fee, escrow, trade.event_id)
            else:
                legs = [
                    (f"held:{buyer}", -released),
                    (f"cash:{buyer}", released - amount - fee + voucher),
                    (escrow, amount),
                    *_fee_legs(fee),
                ]
                if use is not None and voucher:
                    programme = use.programme_id
                    legs.append((f"reserved:{programme}:{buyer}", -voucher))
                    grant = self._grant_of(programme, buyer)
                    grant.reserved -= voucher
                    grant.committed += voucher
                    subsidised = self.subsidised.setdefault(
                        (buyer, trade.symbol, programme), [0, 0]
                    )
                    subsidised[0] += trade.quantity
                    subsidised[1] += voucher
                if use is not None and trade.seller_id not in use.related:
                    self._discount(buyer, use.programme_id, amount, trade.trade_id)
                self._post(f"{trade.event_id}/buy", "trade_buy", trade.ts, legs, owns)
            position = (buyer, trade.symbol)
            self.positions[position] = self.positions.get(position, 0) + trade.quantity
            self._reduce(buy, trade.quantity, trade.event_id, trade.ts, owns)
        sell = self.open_orders.get(trade.sell_order_id)
        if sell is not None and (owns is None or owns(sell.account_id)):
            seller = sell.account_id
            if sell.backing == "entitlement":
                held_key = (seller, trade.symbol)
                fee = self.fees.fee(trade.symbol, amount, trade.aggressor, "sell")
                clawback = self._claw_back(
                    seller, trade.symbol, trade.quantity, trade.quantity, amount - fee
                )
                self.resale_held[held_key] -= trade.quantity
                self.positions[held_key] -= trade.quantity
                legs = [
                    (escrow, -amount),
                    (f"cash:{seller}", amount - fee),
                    *_fee_legs(fee),
                ]
                if self.concessions_due is not None:
                    self._concede(seller, fee, f"{trade.event_id}/sell", trade.trade_id, trade.ts)
                legs += [(f"cash:{seller}", -c) for _, c in clawback]
                legs += [(f"grant:{p}:{seller}", c) for p, c in clawback]
                self._post(f"{trade.event_id}/sell", "resale", trade.ts, legs, owns)
            else:
                self.capacity_of(seller, trade.symbol).held -= trade.quantity
                bond = sell.bond_per_unit * trade.quantity
                self._post_bond(seller, bond, f"{trade.event_id}/sell", trade.ts, owns)
            self._reduce(sell, trade.quantity, trade.event_id, trade.ts, owns)

    def _concede(
        self, account_id: str, fee: int, charged_in: str, trade_id: str | None, ts: int
    ) -> None:
        """Note the discount on a fee just charged to `account_id` that its concession owes
        it, if one is in force and this instance decides concessions."""
        due = self.concessions_due
        if due is None or fee <= 0:
            return
        for (concession_id, holder), c in sorted(self.concessions.items()):
            if holder != account_id or not c.valid_from <= ts < c.valid_until:
                continue
            pending = sum(
                d.discount
                for d in due
                if d.concession_id == concession_id and d.account_id == account_id
            )
            left = c.remaining - pending
            if left:
                discount = min(fee * c.discount_bps // BPS, left)
                due.append(
                    ConcessionDue(concession_id, account_id, fee, discount, charged_in, trade_id)
                )
                return

    def _discount(self, account_id: str, programme_id: str, amount: int, trade_id: str) -> None:
        """Note the platform's discount a purchase paid with the voucher earns from the holder's
        part of the programme's pool, if this instance decides discounts."""
        due = self.discounts_due
        grant = self.grants.get((programme_id, account_id))
        if due is None or grant is None or not grant.discount_bps:
            return
        pending = sum(
            d.discount for d in due if d.programme_id == programme_id and d.account_id == account_id
        )
        discount = min(amount * grant.discount_bps // BPS, grant.discount_remaining - pending)
        if discount > 0:
            due.append(DiscountDue(programme_id, account_id, amount, discount, trade_id))

    def _platform_discounted(self, discounted: PlatformDiscounted, owns: Owns | None) -> None:
        programme_id, account = discounted.programme_id, discounted.account_id
        if owns is None or owns(account):
            self._grant_of(programme_id, account).discount_remaining -= discounted.discount
        self._post(
            discounted.event_id,
            "platform_discount",
            discounted.ts,
            [
                (f"discount:{programme_id}:{account}", -discounted.discount),
                (f"cash:{account}", discounted.discount),
            ],
            owns,
        )

    def _pool_funded(self, funded: DiscountPoolFunded, owns: Owns | None) -> None:
        programme = self.programmes.get(funded.programme_id)
        if programme is not None and (owns is None or owns(f"programme:{funded.programme_id}")):
            programme.pool_bps = funded.discount_bps
            programme.pool_unallocated += funded.budget
        self._post(
            funded.event_id,
            "discount_pool",
            funded.ts,
            [("platform", -funded.budget), (f"pool:{funded.programme_id}", funded.budget)],
            owns,
        )

    def _fee_conceded(self, conceded: FeeConceded, owns: Owns | None) -> None:
        account = conceded.account_id
        concession = self.concessions.get((conceded.concession_id, account))
        if concession is not None and (owns is None or owns(account)):
            concession.remaining -= conceded.discount
        self._post(
            conceded.event_id,
            "fee_concession",
            conceded.ts,
            [
                (f"concession:{conceded.concession_id}:{account}", -conceded.discount),
                (f"cash:{account}", conceded.discount),
            ],
            owns,
        )

    def _concession_granted(self, granted: ConcessionGranted, owns: Owns | None) -> None:
        account = granted.account_id
        if owns is None or owns(account):
            self.concessions[(granted.concession_id, account)] = Concession(
                account, granted.discount_bps, granted.budget, granted.valid_from,
                granted.valid_until,
            )  # fmt: skip
        self._post(
            granted.event_id,
            "concession_budget",
            granted.ts,
            [
                ("platform", -granted.budget),
                (f"concession:{granted.concession_id}:{account}", granted.budget),
            ],
            owns,
        )

    def _grant_of(self, programme_id: str, account_id: str) -> Grant:
        """The account's grant of the programme, to count a use of it against."""
        key = (programme_id, account_id)
        grant = self.grants.get(key)
        if grant is None:
            grant = self.grants[key] = Grant.awaiting_approval(programme_id, account_id)
        return grant

    def _voucher_part(self, use: VoucherUse, trade: TradeExecuted, amount: int) -> int:
        """What a buy's voucher pays of this fill (0 when a related party sells)."""
        if trade.seller_id in use.related:
            # Not subsidised, and not counted: a later fill earns the rate of its own amount.
            return 0
        use.filled += amount
        part = min(use.filled * use.rate_bps // BPS - use.used, use.reserved)
        part = max(0, part)
        use.used += part
        use.reserved -= part
        return part

    def _claw_back(
        self,
        account_id: str,
        symbol: str,
        leaving: int,
        refunded: int,
        limit: int,
        parts_per_unit: int = 1,
    ) -> list[tuple[str, int]]:
        """Voucher parts to return, per programme, as `leaving` units of `account_id`'s
        entitlement in `symbol` go (resold, or delivered and settled), of which `refunded` were
        paid back: the voucher follows the units pro rata, the refunded units' part returns to
        the grant, at most `limit` in all. `refunded` counts `parts_per_unit` parts of a unit
        (a token bundle's unused tokens, a million to the unit). Call before the position
        falls."""
        clawed: list[tuple[str, int]] = []
        held = self.positions.get((account_id, symbol), 0)
        for (account, held_symbol, programme), entry in sorted(self.subsidised.items()):
            if account != account_id or held_symbol != symbol or not held:
                continue
            part = min(entry[1] * refunded // (held * parts_per_unit), limit)
            entry[0] -= entry[0] * leaving // held
            entry[1] -= entry[1] * leaving // held
            limit -= part
            if part:
                clawed.append((programme, part))
                grant = self._grant_of(programme, account_id)
                grant.committed -= part
                grant.clawed_back += part
                grant.remaining += part
        return clawed

    def _reduce(
        self, order: OpenOrder, quantity: int, ref: str, ts: int, owns: Owns | None
    ) -> None:
        order.remaining -= quantity
        if not order.remaining:
            del self.open_orders[order.order_id]
            # Most orders end with no amend extra or voucher to release (`_finish`).
            if order.extra or order.voucher is not None:
                self._finish(order, f"{ref}/done", ts, owns)

    def _finish(self, order: OpenOrder, ref: str, ts: int, owns: Owns | None) -> None:
        """Release an ended order's amend extra and the rest of its voucher reservation."""
        legs: list[tuple[str, int]] = []
        if order.extra and order.side == "buy":
            legs += [
                (f"held:{order.account_id}", -order.extra),
                (f"cash:{order.account_id}", order.extra),
            ]
        elif order.extra:
            self._hold_capacity(order.account_id, order.symbol, -order.extra)
        order.extra = 0
        use = order.voucher
        if use is not None and use.reserved:
            programme, account = use.programme_id, order.account_id
            legs += [
                (f"reserved:{programme}:{account}", -use.reserved),
                (f"grant:{programme}:{account}", use.reserved),
            ]
            grant = self._grant_of(programme, account)
            grant.reserved -= use.reserved
            grant.remaining += use.reserved
            use.reserved = 0
        if legs:
            self._post(ref, "order_release", ts, legs, owns)

    def _move(self, order: OpenOrder, amount: int, ref: str, ts: int, owns: Owns | None) -> None:
        """Hold `amount` more for an order (release it when negative): cash for a buy, the
        entitlement offered for a resale, deposited capacity for a provider's sell."""
        if not amount:
            return
        account = order.account_id
        if order.side == "buy":
            self._post(
                ref,
                "order_hold",
                ts,
                [(f"cash:{account}", -amount), (f"held:{account}", amount)],
                owns,
            )
        elif order.backing == "entitlement":
            # A resale holds what the seller bought, never deposited capacity: released to
            # capacity, its units would become the seller's to deposit-sell or withdraw.
            key = (account, order.symbol)
            self.resale_held[key] = self.resale_held.get(key, 0) + amount
        else:
            self._hold_capacity(account, order.symbol, amount)

    def _amend_requested(self, amend: AmendRequested, owns: Owns | None) -> None:
        order = self.open_orders.get(amend.order_id)
        if order is not None and amend.extra_hold:
            self._move(order, amend.extra_hold, amend.event_id, amend.ts, owns)
            order.extra += amend.extra_hold

    def _amended(self, amended: OrderAmended, owns: Owns | None) -> None:
        """An order's new price and open quantity: its hold becomes theirs, the extra returns."""
        order = self.open_orders.get(amended.order_id)
        if order is None:
            return
        extra = min(amended.extra_hold, order.extra)
        before = self.own_hold(order, order.price, order.remaining) + extra
        after = self.own_hold(order, amended.price, amended.remaining)
        bond_before = order.bond_per_unit * order.remaining
        order.extra -= extra
        order.price = amended.price
        order.remaining = amended.remaining
        self._move(order, after - before, amended.event_id, amended.ts, owns)
        self._release_bond(
            order, bond_before - order.bond_per_unit * order.remaining, amended, owns
        )
        if not order.remaining:
            del self.open_orders[order.order_id]
            self._finish(order, f"{amended.event_id}/done", amended.ts, owns)

    def _release_bond(self, order: OpenOrder, bond: int, event: Event, owns: Owns | None) -> None:
        if bond:
            account = order.account_id
            self._post(
                f"{event.event_id}/bond",
                "bond_release",
                event.ts,
                [(f"held:{account}", -bond), (f"cash:{account}", bond)],
                owns,
            )

    def _amend_rejected(self, rejected: AmendRejected, owns: Owns | None) -> None:
        """Return the extra hold of an amend that matching refused."""
        order = self.open_orders.get(rejected.order_id)
        if order is not None and rejected.extra_hold:
            extra = min(rejected.extra_hold, order.extra)
            order.extra -= extra
            self._move(order, -extra, rejected.event_id, rejected.ts, owns)

    def _reduced(self, reduced: OrderReduced, owns: Owns | None) -> None:
        """Release what self-trade prevention took off an order without a trade."""
        order = self.open_orders.get(reduced.order_id)
        if order is None:
            return
        release = self.own_hold(order, order.price, order.remaining) - self.own_hold(
            order, order.price, order.remaining - reduced.quantity
        )
        self._move(order, -release, reduced.event_id, reduced.ts, owns)
        self._release_bond(order, order.bond_per_unit * reduced.quantity, reduced, owns)
        self._reduce(order, reduced.quantity, reduced.event_id, reduced.ts, owns)

    def _cancelled(self, cancelled: OrderCancelled, owns: Owns | None) -> None:
        """Release the hold of a cancelled order's remainder, if this instance tracks it."""
        order = self.open_orders.pop(cancelled.order_id, None)
        if order is None:
            return
        account = order.account_id
        if order.side == "sell" and order.hours:
            # A block trades in every hour or none: what remains is the same in each hour.
            each = order.remaining // len(order.hours)
            for symbol in order.hours:
                balance = self.capacity_of(account, symbol)
                balance.held -= each
                balance.available += each
            self._release_bond(order, order.bond_per_unit * order.remaining, cancelled, owns)
        elif order.side == "buy":
            amount = self.own_hold(order, order.price, order.remaining)
            self._post(
                cancelled.event_id,
                "order_release",
                cancelled.ts,
                [(f"held:{account}", -amount), (f"cash:{account}", amount)],
                owns,
            )
        elif order.backing == "entitlement":
            self.resale_held[(account, order.symbol)] -= order.remaining
        else:
            self._hold_capacity(account, order.symbol, -order.remaining)
            self._release_bond(order, order.bond_per_unit * order.remaining, cancelled, owns)
        self._finish(order, f"{cancelled.event_id}/done", cancelled.ts, owns)

    def _hold_capacity(self, account_id: str, symbol: str, units: int) -> None:
        """Hold units of capacity for a sell (release them, when negative): of a strip that
        cascaded, in each of its hours, as `_add_capacity`. A sell risk accepted before it
        folded the cascade is cancelled by matching after it; the store may hold its
        acceptance after the cascade too."""
        if symbol in self.cascaded_strips:
            for balance in self._capacities(account_id, symbol):
                balance.available -= units
                balance.held += units
            return
        balance = self.capacity_of(account_id, symbol)
        balance.available -= units
        balance.held += units

    def _drawn(self, drawn: BundleDrawn, owns: Owns | None) -> None:
        """Pay a token bundle's provider for the tokens a metering report drew down, out of
        the escrow, less its fee's share; the holder's entitlement stays until it settles."""
        provider = drawn.provider_id
        legs = [
            (f"escrow:{drawn.symbol}", -drawn.paid),
            (f"cash:{provider}", drawn.paid - drawn.fee),
            *_fee_legs(drawn.fee),
        ]
        if owns is None or owns(provider):
            self._concede(provider, drawn.fee, drawn.event_id, None, drawn.ts)
        if owns is None or owns(drawn.buyer_id):
            self._note_bundle_use(drawn.buyer_id, drawn.symbol, provider, drawn.used)
        self._post(drawn.event_id, "bundle_draw", drawn.ts, legs, owns)

    def _note_bundle_use(self, holder: str, symbol: str, provider: str, used: int | None) -> None:
        """Keep the units of a holder's bundle drawn into (None: its obligation settled)."""
        key = (holder, symbol, provider)
        before = -(-self.bundle_used.pop(key, 0) // TOKENS_PER_UNIT)
        after = 0 if used is None else -(-used // TOKENS_PER_UNIT)
        if used:
            self.bundle_used[key] = used
        units = self.bundle_drawn_units.get((holder, symbol), 0) + after - before
        if units:
            self.bundle_drawn_units[(holder, symbol)] = units
        else:
            self.bundle_drawn_units.pop((holder, symbol), None)

    def _delivered(self, settled: DeliverySettled, owns: Owns | None) -> None:
        provider, buyer, symbol = settled.provider_id, settled.buyer_id, settled.symbol
        legs = [
            (f"escrow:{symbol}", -settled.paid - settled.refund),
            (f"cash:{provider}", settled.paid - settled.fee + settled.bond - settled.penalty),
            *_fee_legs(settled.fee),
            (f"bond:{provider}", -settled.bond),
            (f"cash:{buyer}", settled.refund + settled.penalty),
        ]
        if owns is None or owns(provider):
            self._concede(provider, settled.fee, settled.event_id, None, settled.ts)
        if owns is None or owns(buyer):
            key = (buyer, symbol)
            if settled.used is None:
                clawback = self._claw_back(
                    buyer,
                    symbol,
                    settled.quantity,
                    settled.quantity - settled.delivered,
                    settled.refund + settled.penalty,
                )
            else:
                # A token bundle: the voucher's share of the unused tokens returns, as an
                # hour's undelivered units' does.
                unused = settled.quantity * TOKENS_PER_UNIT - settled.used
                clawback = self._claw_back(
                    buyer, symbol, settled.quantity, unused, settled.refund, TOKENS_PER_UNIT
                )
                self._note_bundle_use(buyer, symbol, provider, None)
                if settled.quantity and settled.ts < to_utc_ms(parse_symbol(symbol).delivery_end):
                    self.settled_in_period[key] = (
                        self.settled_in_period.get(key, 0) + settled.quantity
                    )
            legs += [(f"cash:{buyer}", -c) for _, c in clawback]
            legs += [(f"grant:{p}:{buyer}", c) for p, c in clawback]
            self.positions[key] = self.positions.get(key, 0) - settled.quantity
        self._post(settled.event_id, "delivery", settled.ts, legs, owns)

    def _strip_cascaded(self, cascaded: StripCascaded, owns: Owns | None) -> None:
        """A strip became positions in its hours: the escrow moves to the hours' escrows,
        each holder's entitlement (and the voucher part behind it) to every hour, and deposited
        capacity still unsold to every hour (its sells expired just before, at the close; what
        is still held is for sells on their way to matching, which will cancel them)."""
        strip, hours = cascaded.symbol, cascaded.hours
        if strip in self.cascaded_strips:
            return
        self.cascaded_strips.add(strip)
        legs = [(f"escrow:{strip}", -sum(cascaded.escrow))]
        legs += [(f"escrow:{h}", part) for h, part in zip(hours, cascaded.escrow, strict=True)]
        self._post(cascaded.event_id, "strip_cascade", cascaded.ts, legs, owns)
        for holder in cascaded.holders:
            account = holder.account_id
            if owns is not None and not owns(account):
                continue
            # Left at 0, as a delivered position is: the settled projection shows it so.
            self.positions[(account, strip)] = (
                self.positions.get((account, strip), 0) - holder.units
            )
            for hour in hours:
                key = (account, hour)
                self.positions[key] = self.positions.get(key, 0) + holder.units
            for programme_key in [k for k in sorted(self.subsidised) if k[:2] == (account, strip)]:
                units, voucher = self.subsidised.pop(programme_key)
                for hour, part in zip(hours, split_over_hours(voucher, len(hours)), strict=True):
                    entry = self.subsidised.setdefault((account, hour, programme_key[2]), [0, 0])
                    entry[0] += units
                    entry[1] += part
        for account, symbol in sorted(self.capacity):
            if symbol != strip or (owns is not None and not owns(account)):
                continue
            balance = self.capacity[(account, symbol)]
            # Held: for sells risk accepted that matching will cancel, having closed the book.
            for hour in hours:
                in_hour = self.capacity_of(account, hour)
                in_hour.available += balance.available
                in_hour.held += balance.held
            balance.available = balance.held = 0

    def _programme_created(self, created: ProgrammeCreated, owns: Owns | None) -> None:
        key = f"programme:{created.programme_id}"
        if owns is not None and not owns(key):
            return
        self.programmes[created.programme_id] = Programme(
            created.programme_id, created.issuer, created.budget, created.rate_bps,
            created.cap_per_contract, created.cap_per_enterprise, list(created.classes),
            list(created.regions), list(created.kinds), list(created.cities),
            created.valid_from, created.valid_until, created.budget, {}, created.admin_id,
        )  # fmt: skip
        self._post(
            created.event_id,
            "programme_budget",
            created.ts,
            [
                (f"pledge:{created.programme_id}", -created.budget),
                (f"budget:{created.programme_id}", created.budget),
            ],
            owns,
        )

    def _grant_approved(self, approved: GrantApproved, owns: Owns | None) -> None:
        programme_id, account = approved.programme_id, approved.account_id
        programme = self.programmes.get(programme_id)
        if programme is not None and (owns is None or owns(f"programme:{programme_id}")):
            programme.unallocated += approved.renewed - approved.limit
            programme.budget_year = approved.budget_year or programme.budget_year
            programme.granted[account] = programme.granted.get(account, 0) + approved.limit
            programme.pool_unallocated -= approved.discount_limit
        if owns is None or owns(account):
            grant = self.grants.get((programme_id, account))
            if grant is None or not grant.approved:
                used = grant or Grant.awaiting_approval(programme_id, account)
                self.grants[(programme_id, account)] = Grant(
                    programme_id, account, approved.limit, approved.limit + used.remaining,
                    approved.rate_bps, approved.cap_per_contract, list(approved.classes),
                    list(approved.regions), approved.valid_from, approved.valid_until,
                    list(approved.related_accounts), used.reserved, used.committed,
                    used.clawed_back, approved.discount_bps,
                    approved.discount_limit + used.discount_remaining,
                )  # fmt: skip
            else:
                grant.limit += approved.limit
                grant.remaining += approved.limit
                grant.related = sorted(set(grant.related) | set(approved.related_accounts))
                grant.discount_bps = approved.discount_bps or grant.discount_bps
                grant.discount_remaining += approved.discount_limit
        legs = [
            *([(f"pledge:{programme_id}", -approved.renewed)] if approved.renewed else []),
            (f"budget:{programme_id}", approved.renewed - approved.limit),
            (f"grant:{programme_id}:{account}", approved.limit),
        ]
        if approved.discount_limit:
            legs += [
                (f"pool:{programme_id}", -approved.discount_limit),
                (f"discount:{programme_id}:{account}", approved.discount_limit),
            ]
        self._post(approved.event_id, "grant", approved.ts, legs, owns)

    # Hashing and snapshots ------------------------------------------------------------------

    def digest(self, hasher: Hasher, *, participants_only: bool = False) -> None:
        """Feed a canonical rendering of every balance, position and open order to `hasher`;
        `participants_only` leaves out the exchange's own ledger accounts (escrow, fees,
        external), which risk partitions do not keep."""
        # One line each, fed as one text: the bytes hashed are those of a line at a time.
        lines: list[str] = []
        add = lines.append
        cash = self.cash
        for account_id in sorted(cash):
            b = cash[account_id]
            add(f"c|{account_id}|{b.available}|{b.held}\n")
        capacity = self.capacity
        for key in sorted(capacity):
            b = capacity[key]
            add(f"k|{key[0]}|{key[1]}|{b.available}|{b.held}\n")
        positions = self.positions
        resale_held = self.resale_held
        for key in sorted(positions):
            held = resale_held.get(key, 0)
            resale = f"|r{held}" if held else ""
            add(f"p|{key[0]}|{key[1]}|{positions[key]}{resale}\n")
        for name in sorted(self.ledger):
            if self.ledger[name] and not (participants_only and _owner(name) is None):
                add(f"l|{name}|{self.ledger[name]}\n")
        open_orders = self.open_orders
        # A plain order's line is rendered again only once its price or open quantity moved
        # (most resting orders do not between two of settlement's checkpoint hashes).
        rendered = self._order_lines
        current: dict[str, tuple[OpenOrder, int, int, str]] = {}
        for order_id in sorted(open_orders):
            o = open_orders[order_id]
            if _plain(o):
                known = rendered.get(order_id)
                if (
                    known is None
                    or known[0] is not o
                    or known[1] != o.price
                    or known[2] != o.remaining
                ):
                    # `_order_entry`'s six fields, without its list (most orders have no more).
                    line = f"o|{o.order_id}|{o.account_id}|{o.symbol}|{o.side}|{o.price}|"
                    known = (o, o.price, o.remaining, f"{line}{o.remaining}\n")
                current[order_id] = known
                add(known[3])
            else:
                add(f"o|{'|'.join(map(str, _order_entry(o)))}\n")
        self._order_lines = current
        for programme_id in sorted(self.programmes):
            p = self.programmes[programme_id]
            # The year only once grants count against one, the pool only once funded, so
            # older states hash as before.
            year = f"|y{p.budget_year}" if p.budget_year else ""
            pool = f"|d{p.pool_bps}|{p.pool_unallocated}" if p.pool_bps else ""
            add(f"g|{programme_id}|{p.unallocated}|{sorted(p.granted.items())}{year}{pool}\n")
        for (programme_id, account_id), g in sorted(self.grants.items()):
            discount = f"|d{g.discount_bps}|{g.discount_remaining}" if g.discount_bps else ""
            add(
                f"a|{programme_id}|{account_id}|{g.limit}|{g.remaining}|{g.reserved}|"
                f"{g.committed}|{g.clawed_back}{discount}\n"
            )
        for (concession_id, account_id), c in sorted(self.concessions.items()):
            add(f"n|{concession_id}|{account_id}|{c.remaining}\n")
        for (account_id, symbol, programme_id), (units, amount) in sorted(self.subsidised.items()):
            add(f"s|{account_id}|{symbol}|{programme_id}|{units}|{amount}\n")
        for strip in sorted(self.cascaded_strips):
            add(f"x|{strip}\n")
        for (holder, symbol, provider), used in sorted(self.bundle_used.items()):
            add(f"u|{holder}|{symbol}|{provider}|{used}\n")
        # Not `settled_in_period`: it only names the reason of a refusal the positions already
        # decide, and left out, the hashes of histories with a bundle's dispute resolved in its
        # period stay what the live system recorded (the snapshot keeps it for a restart).
        hasher.update("".join(lines).encode())

    def snapshot(self) -> dict[str, Any]:
        """Everything, as JSON-ready lists in a canonical order."""
        return {
            "cash": [[a, b.available, b.held] for a, b in sorted(self.cash.items())],
            "capacity": [
                [a, s, b.available, b.held] for (a, s), b in sorted(self.capacity.items())
            ],
            "positions": [[a, s, q] for (a, s), q in sorted(self.positions.items())],
            "resale_held": [[a, s, q] for (a, s), q in sorted(self.resale_held.items()) if q],
            "ledger": sorted([n, v] for n, v in self.ledger.items() if v),
            "open_orders": [_order_entry(o) for _, o in sorted(self.open_orders.items())],
            "programmes": [_programme_entry(p) for _, p in sorted(self.programmes.items())],
            "grants": [_grant_entry(g) for _, g in sorted(self.grants.items())],
            "subsidised": [[*key, *value] for key, value in sorted(self.subsidised.items())],
            # Only once a bundle is drawn down, so older snapshots read as before.
            **(
                {"bundle_used": [[*k, u] for k, u in sorted(self.bundle_used.items())]}
                if self.bundle_used
                else {}
            ),
            "concessions": [
                [cid, c.account_id, c.discount_bps, c.remaining, c.valid_from, c.valid_until]
                for (cid, _), c in sorted(self.concessions.items())
            ],
            # Only once a strip cascaded: older snapshots keep their bytes.
            **({"cascaded_strips": sorted(self.cascaded_strips)} if self.cascaded_strips else {}),
            # Only once a bundle's obligation settled in its period, likewise.
            **(
                {"settled_in_period": [[*k, u] for k, u in sorted(self.settled_in_period.items())]}
                if self.settled_in_period
                else {}
            ),
        }

    @classmethod
    def restore(
        cls,
        data: dict[str, Any],
        rules: MarketRules | None = None,
        *,
        journal: bool = False,
        decides_concessions: bool = False,
    ) -> Accounts:
        """The accounts a snapshot describes."""
        accounts = cls(rules, journal=journal, decides_concessions=decides_concessions)
        accounts.cash = {a: Balance(available, held) for a, available, held in data["cash"]}
        accounts.capacity = {
            (a, s): Balance(available, held) for a, s, available, held in data["capacity"]
        }
        accounts.positions = {(a, s): q for a, s, q in data["positions"]}
        accounts.resale_held = {(a, s): q for a, s, q in data.get("resale_held", [])}
        accounts.ledger = dict(data.get("ledger", []))
        accounts.open_orders = {entry[0]: _order_from(entry) for entry in data["open_orders"]}
        accounts.programmes = {e[0]: _programme_from(e) for e in data.get("programmes", [])}
        accounts.grants = {(e[0], e[1]): Grant(*e) for e in data.get("grants", [])}
        accounts.subsidised = {(a, s, p): [u, v] for a, s, p, u, v in data.get("subsidised", [])}
        for holder, symbol, provider, used in data.get("bundle_used", []):
            accounts._note_bundle_use(holder, symbol, provider, used)
        accounts.concessions = {
            (e[0], e[1]): Concession(*e[1:]) for e in data.get("concessions", [])
        }
        accounts.cascaded_strips = set(data.get("cascaded_strips", []))
        accounts.settled_in_period = {
            (holder, symbol): units for holder, symbol, units in data.get("settled_in_period", [])
        }
        return accounts


def money_brought_in(event: Event) -> int:
    """Fen an event brings into the exchange from outside (negative: takes out of it): cash
    deposits and withdrawals, voucher programmes' budgets (and their yearly renewals) and fee
    concessions' budgets. Every other movement only moves money already inside."""
    # By the event's type: risk asks for every decision, and isinstance through pydantic's
    # metaclass costs about 55 ns a class the event is not.
    brought_in = _MONEY_BROUGHT_IN.get(type(event))
    return 0 if brought_in is None else brought_in(event)


_MONEY_BROUGHT_IN: dict[type[Event], Callable[[Any], int]] = {
    FundsDeposited: lambda event: event.amount,
    FundsWithdrawn: lambda event: -event.amount,
    ProgrammeCreated: lambda event: event.budget,
    ConcessionGranted: lambda event: event.budget,
    DiscountPoolFunded: lambda event: event.budget,
    GrantApproved: lambda event: event.renewed,
}


def _fee_legs(fee: int) -> list[tuple[str, int]]:
    """Where a fee goes: platform fee income, or a rebate paid out of the rebates account."""
    if fee >= 0:
        return [("fees", fee)]
    return [("rebates", fee)]


def _plain(o: OpenOrder) -> bool:
    """Whether `_order_entry` gives the order its six fields alone (no options)."""
    return (
        not o.extra
        and not o.hours
        and o.backing == "capacity"
        and not o.bond_per_unit
        and o.voucher is None
    )


def _order_entry(o: OpenOrder) -> list[Any]:
    entry: list[Any] = [o.order_id, o.account_id, o.symbol, o.side, o.price, o.remaining]
    options: dict[str, Any] = {}
    if o.extra:
        options["extra"] = o.extra
    if o.hours:
        options["hours"] = list(o.hours)
    if o.backing != "capacity":
        options["backing"] = o.backing
    if o.bond_per_unit:
        options["bond_per_unit"] = o.bond_per_unit
    if o.voucher is not None:
        v = o.voucher
        options["voucher"] = [v.programme_id, v.rate_bps, v.reserved, v.used, v.filled]
        if v.related:
            options["voucher"].append(list(v.related))
    if options:
        entry.append(options)
    return entry


def _order_from(entry: list[Any]) -> OpenOrder:
    order = OpenOrder(*entry[:6])
    if len(entry) > 6:
        options = entry[6]
        if not isinstance(options, dict):
            # A snapshot from before options were named: [extra, hours?].
            options = {"extra": options, **({"hours": entry[7]} if len(entry) > 7 else {})}
        order.extra = options.get("extra", 0)
        order.hours = tuple(options.get("hours", ()))
        order.backing = options.get("backing", "capacity")
        order.bond_per_unit = options.get("bond_per_unit", 0)
        if "voucher" in options:
            voucher = options["voucher"]
            # The sixth item, the related parties, is left out when there are none.
            related = tuple(voucher[5]) if len(voucher) > 5 else ()
            programme_id, rate_bps, reserved, used, filled = voucher[:5]
            order.voucher = VoucherUse(programme_id, rate_bps, reserved, used, filled, related)
    return order


def _programme_entry(p: Programme) -> list[Any]:
    entry = [
        p.programme_id, p.issuer, p.budget, p.rate_bps, p.cap_per_contract, p.cap_per_enterprise,
        p.classes, p.regions, p.kinds, p.cities, p.valid_from, p.valid_until, p.unallocated,
        sorted(p.granted.items()), p.admin_id, p.budget_year,
    ]  # fmt: skip
    # A programme without a discount pool keeps the entry it had before pools existed.
    return [*entry, p.pool_bps, p.pool_unallocated] if p.pool_bps else entry


def _programme_from(entry: list[Any]) -> Programme:
    programme = Programme(*entry[:13])
    programme.granted = dict(entry[13])
    programme.admin_id = entry[14]
    programme.budget_year = entry[15] if len(entry) > 15 else 0
    if len(entry) > 16:
        programme.pool_bps, programme.pool_unallocated = entry[16:18]
    return programme


def _grant_entry(g: Grant) -> list[Any]:
    entry = [
        g.programme_id, g.account_id, g.limit, g.remaining, g.rate_bps, g.cap_per_contract,
        g.classes, g.regions, g.valid_from, g.valid_until, g.related, g.reserved, g.committed,
        g.clawed_back,
    ]  # fmt: skip
    return [*entry, g.discount_bps, g.discount_remaining] if g.discount_bps else entry


_HANDLERS: dict[type, Callable[[Accounts, Any, Owns | None], None]] = {
    FundsDeposited: Accounts._deposited,
    CapacityDeposited: Accounts._deposited,
    FundsWithdrawn: Accounts._withdrawn,
    CapacityWithdrawn: Accounts._withdrawn,
    OrderAccepted: Accounts._accepted,
    BlockAccepted: Accounts._block_accepted,
    TradeExecuted: Accounts._traded,
    AmendRequested: Accounts._amend_requested,
    OrderAmended: Accounts._amended,
    AmendRejected: Accounts._amend_rejected,
    OrderReduced: Accounts._reduced,
    OrderCancelled: Accounts._cancelled,
    DeliverySettled: Accounts._delivered,
    BundleDrawn: Accounts._drawn,
    ProgrammeCreated: Accounts._programme_created,
    GrantApproved: Accounts._grant_approved,
    ConcessionGranted: Accounts._concession_granted,
    FeeConceded: Accounts._fee_conceded,
    DiscountPoolFunded: Accounts._pool_funded,
    PlatformDiscounted: Accounts._platform_discounted,
    StripCascaded: Accounts._strip_cascaded,
}
"""Which rule folds each kind of event."""

FOLDED: tuple[type[Event], ...] = tuple(_HANDLERS)
"""The events that move money, capacity or entitlements: `Accounts.apply` ignores the rest."""
