"""The whole-system model: a Hypothesis state machine that trades on a running exchange.

Every rule is something a participant, an operator or a programme administrator does through
the public HTTP API; the log clock moves through gate closures, delivery hours and delivery
windows. The machine keeps a model of what the exchange must hold, built only from the
answers it got (every 201, the cash and capacity paid in and out, every named request), and
after every step checks the invariants the issue names (`ExchangeMachine.system_holds`):

(a) every answer is a status documented for its operation, errors are problem+json, no 5xx
    (checked as each answer arrives, `tests/system/api.py`);
(b) the pipeline settles within a timeout and `/v1/health` answers ok;
(c) every 201 the model remembers is in the store (orders in `GET /v1/orders`, deposits,
    withdrawals, programmes, registrations, applications, grants and the rest as stored
    events, needs in `GET /v1/needs`);
(d) cash and capacity are conserved to the fen against the model: the ledger's `external`
    account is exactly what the model paid in net of what it took out, every ledger account
    (participants' cash through `GET /v1/accounts`) sums to zero, and per contract the
    capacity deposited net of withdrawals is what providers hold, buyers hold and deliveries
    settled;
(e) `settlement.audit.audit` and `audit_ledger` find no discrepancy;
(f) a replay of the event store has the live settlement projection's state hash;
(g) no balance of any kind is below zero, settled (through the API) or in settlement's and
    each risk partition's accounts (cash and holds, capacity, positions, resale holds, bundle
    draw-downs, bonds, escrow, vouchers), and what a holder may resell is within what it
    bought (or received in a cascade) less what it resold (`_check_balances`).

Strips (a week and the nights of a week of the rolled family) are contracts like the others,
so every rule on a contract combines with them; an operator's delist cascades one at once (its
scheduled cascade falls after the clock stops), and the model carries its deposited capacity
into its hours and checks its holders' positions moved there (`_cascade`, `_check_cascades`).

Rules that act on something (an open obligation to meter or dispute, a dispute to resolve, an
interruptible sale to recall) are available only when the model knows of one from the events
stored, so Hypothesis's uniform choice among the available rules gives them weight within CI's
budget; `tests/system/test_model.py` asserts what the fixed examples reach.

At the end of each example the exchange stops cleanly, and the risk and matching stages must
equal a replay of their input topics (`assert_stages_match_replay`), and the real `cx audit`
and `cx audit ledger` must exit 0 on the store.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from websockets.sync.client import ClientConnection, connect

from api.keys import Role, create_key
from cx.runtime import ExchangeRuntime
from cx.settings import Settings
from cx.ticker import TICKER_ID, tick_symbols
from exchange.domain.catalogue import CHINA_STANDARD_TIME, parse_symbol, to_utc_ms
from exchange.domain.messages import ControlMarket
from exchange.domain.uscc import CHARACTERS
from exchange.pipeline import MatchingRunner, RiskRunner
from settlement import projections as tables
from settlement.audit import audit, audit_ledger
from settlement.replay import replay
from settlement.service import SettlementRunner
from tests.e2e.grants import uscc_of
from tests.e2e.harness import assert_stages_match_replay, free_port, quiescent
from tests.system.api import Answer, Documented, Participant
from tests.system.live import LiveExchange, Prepare

T = TypeVar("T")
MINUTE = 60_000
HOUR = 60 * MINUTE
MIDNIGHT = to_utc_ms(datetime(2027, 12, 1, tzinfo=CHINA_STANDARD_TIME))
START = MIDNIGHT - 90 * MINUTE
"""The log clock starts half an hour before the first gate closure (23:00 China Standard
Time), an hour and a half before the first static delivery hour: a step or two reaches them."""
END = MIDNIGHT + 4 * HOUR
"""... and never passes this: every static hour has been delivered and settled by then."""

GZ0, GZ1 = "H100-80G.GZ.20271201T00", "H100-80G.GZ.20271201T01"
YRD0 = "H100-80G.YRD.20271201T00"
CPU0 = "CPU.GZ.20271201T00"
INT0, INT1 = "H100-80G-INT.GZ.20271201T00", "H100-80G-INT.GZ.20271201T01"
INT2 = "H100-80G-INT.GZ.20271201T02"
"""A rolled hour outside the model's contracts: a block over it may be bought until midnight."""
WEEK, NIGHTS = "H100-80G-INT.GZ.W20271206", "H100-80G-INT.GZ.N20271206"
"""Strips of the rolled family (docs/DESIGN.md, "Strips and the cascade"), listed with
`CX_TERM_DAYS`: the week from Monday 6 December and its nights, priced per card-hour, a unit
being a card in each of their 168 (56) hours. Their cascade falls on 5 December, after the
model's clock stops, so one cascades only when an operator delists it (`delist`), at once."""
CASCADED = "H100-80G-INT.GZ.M202712"
"""December's month strip: it cascaded when 1 December's hours listed, before the clock starts,
so an order or deposit for it is refused `contract_closed`."""
STRIPS = (WEEK, NIGHTS)
BUNDLE = "TOK-QWEN.YRD.D20271130"
"""A token bundle for 30 November (docs/DESIGN.md, "Token bundles"): in its period when the
clock starts, it trades until 23:00 (its last hour's gate), every trade owed at once; its
provider draws it down by metering tokens until midnight, and half an hour later (the delivery
window) what was not used is refunded."""
PRICES = {
    GZ0: (1_700, 1_750, 1_800, 1_850, 1_900),
    GZ1: (1_700, 1_750, 1_800, 1_850, 1_900),
    YRD0: (1_750, 1_800, 1_850),
    CPU0: (10, 11, 12, 13),
    INT0: (1_200, 1_250, 1_300),
    INT1: (1_200, 1_250, 1_300),
    WEEK: (20, 30, 40, 50, 60),
    NIGHTS: (20, 30, 40, 50, 60),
    BUNDLE: (150, 160, 170, 180),
}
SYMBOLS = tuple(PRICES)
"""Every contract the rules trade, the strips among them: each rule on a contract combines with
them too (deposits, withdrawals, orders of every kind, auctions, halts, delisting, resale)."""
BLOCKS = ((GZ0, GZ1), (INT0, INT1), (INT1, INT2))
BLOCK_PROGRAMME = "block-fund"
"""The programme whose grants holders spend on blocks (`buy_block_with_voucher`)."""

PROVIDERS = ("p1", "p2")
BUYERS = ("b1", "b2")
TRADERS = PROVIDERS + BUYERS
OPERATOR = "ops"
ADMIN = "city"
ROLES = {
    **dict.fromkeys(PROVIDERS, Role.PROVIDER),
    **dict.fromkeys(BUYERS, Role.BUYER),
    OPERATOR: Role.OPERATOR,
    ADMIN: Role.PROGRAMME_ADMIN,
}
NAMES = ("a", "b", "c")
"""Every id a participant chooses is drawn from these, shared by all accounts, so they collide."""

SETTINGS = {
    "CX_LISTINGS": "H100-80G-INT.GZ,TOK-QWEN.YRD",
    "CX_LISTING_DAYS": 1,
    "CX_TERM_DAYS": 7,
    "CX_FEES": "H100-80G:-2:10,H100-80G-INT:0:10,CPU:0:5",
    "CX_BOND_BPS": 1_000,
    "CX_DELIVERY_WINDOW_MINUTES": 30,
    "CX_RECALL_NOTICE_MINUTES": 60,
    "CX_HALT_SECONDS": 600,
    "CX_TICK_SECONDS": 86_400,
    # The clock moves only when a rule moves it: no background tick, so examples replay.
}
"""The market rules of every example: rolling listings of an interruptible family (recalls)
and its week and nights strips, and of Qwen tokens with their day bundles, fees with a maker
rebate, delivery bonds, a short delivery window and recall notice, reopening auctions ten
minutes after a band halt. `CX_PRE_OPEN` is drawn per example."""

AUCTIONS = {"day_ahead_gate": "12:00", "intraday_auction_hours": 1}
"""The settings of an example with auctions: the day-ahead gate of the model's day passed
before the clock starts, and an intraday auction falls due every hour it moves past."""

SETTLE_TIMEOUT_S = float(os.environ.get("CX_MODEL_SETTLE_SECONDS", "30"))
EXCHANGE_REASONS_WITH_IDS = ("order_id", "deposit_id", "request_id", "need_id")

names = st.sampled_from(NAMES)
maybe_name = st.none() | names
traders = st.sampled_from(TRADERS)
providers = st.sampled_from(PROVIDERS)
buyers = st.sampled_from(BUYERS)
symbols = st.sampled_from(SYMBOLS)
quantities = st.integers(1, 6)
crossings = st.lists(
    st.tuples(
        st.sampled_from((*PROVIDERS, *PROVIDERS, *BUYERS)),
        traders,
        symbols,
        st.integers(0, 4),
        st.integers(0, 4),
        quantities,
    ),
    min_size=1,
    max_size=3,
)
"""(seller, buyer, contract, ask and bid price index, quantity): mostly providers sell."""


class LogClock:
    """The log's clock: stands still until a rule moves it."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@dataclass
class Named:
    """A request sent under a name (client order id, Idempotency-Key, need id): a retry with
    the same body must get the first answer back, a different body `idempotency-key-reused`."""

    account: str
    method: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    first: Answer


@dataclass
class Model:
    """What the exchange must hold, from the answers it gave."""

    cash_in: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Cash deposited net of withdrawn, per account (201 answers)."""
    capacity_in: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Capacity deposited net of withdrawn, per contract."""
    orders: dict[str, str] = field(default_factory=dict)
    """Accepted orders and blocks (201) and their account."""
    needs: dict[str, str] = field(default_factory=dict)
    """Needs placed (201) and their account."""
    standing: set[str] = field(default_factory=set)
    """Needs answered standing (201) and not withdrawn since: they may still stand."""
    stored: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(event type, id field, id, account) of every other 201: it must be in the store."""
    pending: list[tuple[str, str, str, str, str, int]] = field(default_factory=list)
    """Deposits and withdrawals answered pending: (event type, id field, id, account,
    symbol or "", amount), counted once the store shows them."""
    scheduled: set[tuple[str, str, str]] = field(default_factory=set)
    """(account, schedule's deposit id, contract) deposited by a capacity schedule."""
    named: dict[tuple[str, str], Named] = field(default_factory=dict)
    """Named requests by (account, name kind and name)."""
    stalls: dict[tuple[str, str], bool] = field(default_factory=dict)
    """(provider, stall id) -> set up."""
    keys: dict[str, list[tuple[str, str, bool]]] = field(default_factory=dict)
    """Per account its keys: (key id, key, live)."""


class ExchangeMachine(RuleBasedStateMachine):
    """Drives one running exchange per example; see the module docstring."""

    base_settings: ClassVar[Settings | None] = None
    """Set by the test: the backend (embedded, or Kafka and PostgreSQL) and a data folder."""
    prepare: ClassVar[Prepare | None] = None
    """What each example's exchange needs made first (a fresh database)."""
    examples_run: ClassVar[int] = 0
    steps_run: ClassVar[int] = 0
    statuses: ClassVar[Counter[int]] = Counter()
    events_seen: ClassVar[Counter[str]] = Counter()
    """Stored events by type over the run: what the examples reached."""
    edge_seen: ClassVar[Counter[str]] = Counter()
    """What the examples reached at the API edge, which keeps no events: needs, stalls."""
    documented: ClassVar[Documented | None] = None
    with_auctions: ClassVar[bool] = True
    """Whether examples may run the auctions (drawn per example)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: LiveExchange | None = None
        self.clock = LogClock(START)
        self.model = Model()
        self.http: Participant | None = None
        self.seen_position = 0
        self.events: set[tuple[str, str, str, str]] = set()
        """(type, id field, id, account) of every stored event the model may look for."""
        self.recalled: Counter[str] = Counter()
        """Units recalled per contract: `GET /v1/deliveries` does not show them."""
        self.interruptible_sales: Counter[tuple[str, str]] = Counter()
        """Interruptible units sold by (provider, contract): the provider may recall them."""
        self.deliveries: dict[tuple[str, str, str], int] = {}
        """(contract, provider, holder) of the obligations stored and not yet settled, and the
        end of their window."""
        self.disputed: set[tuple[str, str, str]] = set()
        """The open obligations a holder disputed: an operator may resolve them."""
        self.programmes: set[str] = set()
        """The voucher programmes created: enterprises apply to them."""
        self.registered: set[str] = set()
        """The buyers whose registration the exchange took."""
        self.applications: list[tuple[str, str, str]] = []
        """(programme, application, applicant) of the applications taken: the administrator
        decides them."""
        self.granted: set[tuple[str, str]] = set()
        """(programme, account) of the grants approved: their holders buy blocks with them."""
        self.auctions = False
        """Whether the example's exchange runs the day-ahead and intraday auctions."""
        self.states: dict[str, tuple[str, str]] = {}
        """Each contract's last stored state and why it entered it."""
        self.cascades: list[dict[str, Any]] = []
        """The strips' cascades stored since the last step, to check their holders by."""
        self.cascaded: set[str] = set()
        """Every strip that cascaded."""
        self.control_refusals: set[tuple[str, str, str]] = set()
        """(contract, action, reason) of the operators' commands matching refused."""
        self.resales: set[str] = set()
        """The orders accepted as resales: sells backed by what their seller bought."""
        self.bought: Counter[tuple[str, str]] = Counter()
        """Units of a contract each account bought (or received in its hours as a strip
        cascaded), by (account, contract), from the events stored."""
        self.resold: Counter[tuple[str, str]] = Counter()
        """Units of a contract each account resold, by (account, contract)."""

    # -- the exchange's life -------------------------------------------------------------

    @initialize(pre_open=st.booleans(), data=st.data())
    def start(
        self, pre_open: bool, data: st.DataObject | None = None, auctions: bool | None = None
    ) -> None:
        """Start a fresh exchange, make the accounts' keys, fund them, give the providers
        capacity to sell, every contract a book and a first trade: every contract then has
        something to deliver, and the interruptible ones sales to recall. With `auctions`
        (drawn when the run has them, `with_auctions`), it runs the day-ahead auction (whose
        gate for the model's day has passed) and an intraday auction every hour, which needs
        placed meanwhile wait for."""
        if auctions is None:
            auctions = self.with_auctions and data is not None and data.draw(st.booleans())
        assert self.base_settings is not None, "the test sets ExchangeMachine.base_settings"
        type(self).examples_run += 1
        settings = self.base_settings.model_copy(
            update={
                "pre_open": pre_open,
                "api_port": free_port(),
                "topic_prefix": f"m{os.getpid()}x{time.monotonic_ns()}",
                "data_dir": self.base_settings.data_dir / f"example-{time.monotonic_ns()}",
                **(AUCTIONS if auctions else {}),
            }
        )
        self.pre_open = pre_open
        self.auctions = auctions
        self.live = LiveExchange(settings, self.clock, type(self).prepare, _after_stop).start()
        if type(self).documented is None:
            document = httpx.get(f"{self.live.base_url}/openapi.json", timeout=30).json()
            type(self).documented = Documented(document)
        assert self.documented is not None
        self.http = Participant(self.live.base_url, self.documented, self.statuses)
        runtime = self.live.exchange.runtime
        ops = self.live.run(create_key(runtime.store.engine, OPERATOR, Role.OPERATOR, "model"))
        self.model.keys[OPERATOR] = [(ops.info.key_id, ops.key, True)]
        for account, role in ROLES.items():
            if account != OPERATOR:
                self._create_key(account, role.value)
        for account in TRADERS:
            self._deposit_cash(account, 200_000, None, None)
        for account in PROVIDERS:
            # Sellable capacity in every contract, so that sells can trade from the start.
            for symbol in SYMBOLS:
                body = {"kind": "capacity", "symbol": symbol, "quantity": 10}
                self._deposit(account, body, None, "CapacityDeposited", symbol, 10)
        for index, symbol in enumerate(SYMBOLS):
            # A book on every contract: asks a buy can take, bids a sell can hit.
            provider, buyer, prices = PROVIDERS[index % 2], BUYERS[index % 2], PRICES[symbol]
            self._place(provider, {"symbol": symbol, "side": "sell", "price": prices[2],
                                   "quantity": 5}, {})  # fmt: skip
            self._place(buyer, {"symbol": symbol, "side": "buy", "price": prices[0],
                                "quantity": 5}, {})  # fmt: skip
        if pre_open:
            for symbol in SYMBOLS:
                self._control(symbol, "resume", None, None)
        for index, symbol in enumerate(SYMBOLS):
            # The other buyer takes a unit of the ask.
            body = {"symbol": symbol, "side": "buy", "price": PRICES[symbol][2], "quantity": 1}
            self._place(BUYERS[(index + 1) % 2], body, {})

    def teardown(self) -> None:
        """Stop the exchange; unless a step already failed, run the end-of-example checks."""
        if self.http is not None:
            self.http.close()
        if self.live is None:
            return
        failing = sys.exc_info()[1] is not None
        self.live.check_after_stop = not failing
        self.live.stop()

    # -- sending requests ----------------------------------------------------------------

    def _key(self, account: str) -> tuple[str, bool]:
        """The account's newest live key (and True), or its last revoked one (and False)."""
        keys = self.model.keys[account]
        live = [key for _, key, alive in keys if alive]
        return (live[-1], True) if live else (keys[-1][1], False)

    def _send(
        self,
        account: str | None,
        method: str,
        path: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer | None:
        """Send as the account; None (after checking the 401) if its keys are all revoked."""
        assert self.http is not None
        key, alive = (None, True) if account is None else self._key(account)
        answer = self.http.request(method, path, key, json=json, params=params, headers=headers)
        if not alive:
            assert answer.status == 401, (account, method, path, answer)
            return None
        assert answer.status != 401, (account, method, path, answer)
        return answer

    def _operator(self, method: str, path: str, **kwargs: Any) -> Answer:
        answer = self._send(OPERATOR, method, path, **kwargs)
        assert answer is not None
        return answer

    def _named(self, account: str, kind: str, name: str, answer: Answer, **request: Any) -> None:
        """Remember a named request whose first answer was kept (decided or pending)."""
        if (account, f"{kind}:{name}") in self.model.named:
            return
        decided = answer.status in (200, 201, 202) or (
            answer.status == 422 and any(k in answer.body for k in EXCHANGE_REASONS_WITH_IDS)
        )
        if decided:
            self.model.named[(account, f"{kind}:{name}")] = Named(account, first=answer, **request)

    def _retry_expected(self, account: str, kind: str, name: str | None, body: dict[str, Any],
                        answer: Answer) -> bool:  # fmt: skip
        """Check an answer to a request under a name used before; True if it was one."""
        if name is None or (account, f"{kind}:{name}") not in self.model.named:
            return False
        first = self.model.named[(account, f"{kind}:{name}")]
        if first.body != body:
            assert (answer.status, answer.problem) == (422, "idempotency-key-reused"), (
                f"{kind} {name!r} of {account} reused with another body: {answer}, first "
                f"{first.body} -> {first.first}"
            )
        elif kind == "need" and first.first.status in (200, 201):
            # A need is given back as it stands now, not as it first stood.
            assert answer.status == 200, f"a retry of need {name!r} of {account}: {answer}"
            assert answer.body["need_id"] == first.first.body["need_id"], (answer, first.first)
            assert answer.replayed, f"a retry's answer is not marked replayed: {answer}"
        elif first.first.status != 202 and first.first.body.get("status") != "pending":
            assert (answer.status, answer.body) == (first.first.status, first.first.body), (
                f"a retry of {kind} {name!r} of {account} got {answer}, first {first.first}"
            )
            assert answer.replayed, f"a retry's answer is not marked replayed: {answer}"
        return True

    # -- keys ----------------------------------------------------------------------------

    def _create_key(self, account: str, role: str) -> Answer:
        answer = self._operator(
            "POST", "/v1/admin/keys", json={"account_id": account, "role": role, "label": "m"}
        )
        own_role = ROLES[account].value
        live = [k for k in self.model.keys.get(account, []) if k[2]]
        if role != own_role and live:
            assert (answer.status, answer.problem) == (409, "role-conflict"), answer
        if answer.status == 201:
            assert role == own_role or not live, answer
            self.model.keys.setdefault(account, []).append(
                (answer.body["key_id"], answer.body["key"], True)
            )
        return answer

    @rule(account=st.sampled_from((*TRADERS, ADMIN)), own_role=st.booleans())
    def create_key(self, account: str, own_role: bool) -> None:
        """An operator makes a key; of another role than the account's live keys: 409."""
        live = any(alive for _, _, alive in self.model.keys[account])
        if not own_role and not live:
            return  # the account would change role; the model keeps roles fixed
        role = ROLES[account].value if own_role else Role.OPERATOR.value
        self._create_key(account, role)

    @rule(account=st.sampled_from((*TRADERS, ADMIN)), newest=st.booleans())
    def revoke_key(self, account: str, newest: bool) -> None:
        """An operator revokes one of the account's live keys; it stops working at once, and
        its open WebSocket loses its private channels."""
        keys = self.model.keys[account]
        live = [i for i, (_, _, alive) in enumerate(keys) if alive]
        if not live:
            return
        index = live[-1] if newest else live[0]
        key_id, key, _ = keys[index]
        assert self.live is not None
        url = self.live.base_url.replace("http://", "ws://") + "/v1/stream"
        with connect(url, open_timeout=10, close_timeout=5) as stream:
            # The key's private stream, open when it is revoked, must be told and closed.
            stream.send(json.dumps({"op": "auth", "key": key}))
            _next_message(stream, "authenticated")
            stream.send(json.dumps({"op": "subscribe", "channels": ["balances"]}))
            _next_message(stream, "subscribed")
            answer = self._operator("DELETE", f"/v1/admin/keys/{key_id}")
            assert answer.status == 200, answer
            told = _next_message(stream, "error")
            assert told.get("code") == "unauthorized", told
            stream.send(json.dumps({"op": "subscribe", "channels": ["balances"]}))
            again = _next_message(stream, "error", "subscribed")
            assert again["type"] == "error" or not again.get("private"), again
        keys[index] = (key_id, key, False)
        assert self.http is not None
        me = self.http.request("GET", "/v1/me", key)
        assert me.status == 401, f"a revoked key still works: {me}"

    # -- cash and capacity ----------------------------------------------------------------

    def _deposit_cash(
        self, account: str, amount: int, deposit_id: str | None, key: str | None
    ) -> None:
        body: dict[str, Any] = {"kind": "cash", "amount": amount}
        if deposit_id is not None:
            body["deposit_id"] = deposit_id
        self._deposit(account, body, key, "FundsDeposited", "", amount)

    def _deposit(
        self,
        account: str,
        body: dict[str, Any],
        key: str | None,
        stored_as: str,
        symbol: str,
        amount: int,
    ) -> None:
        headers = {} if key is None else {"Idempotency-Key": key}
        path = f"/v1/accounts/{account}/deposits"
        answer = self._send(account, "POST", path, json=body, headers=headers)
        if answer is None:
            return
        if body["kind"] == "capacity" and ROLES[account] is not Role.PROVIDER:
            assert (answer.status, answer.problem) == (403, "forbidden"), answer
            return
        # A deposit id in the body names the request as an Idempotency-Key does.
        deposit_id = body.get("deposit_id")
        names = [(kind, name) for kind, name in (("deposit-id", deposit_id), ("deposit", key))
                 if name is not None]  # fmt: skip
        if any(self._retry_expected(account, kind, name, body, answer) for kind, name in names):
            return
        if answer.status == 422:
            assert answer.problem != "duplicate_deposit_id", (
                f"{account}'s first deposit {deposit_id!r} refused as a duplicate: {answer}"
            )
        for kind, name in names:
            self._named(account, kind, name, answer, method="POST", path=path, body=body,
                        headers=headers)  # fmt: skip
        if answer.status not in (201, 202):
            return
        stored_id = answer.body["deposit_id"]
        if answer.status == 202:
            self.model.pending.append((stored_as, "deposit_id", stored_id, account, symbol, amount))
            return
        self._count(stored_as, symbol, account, amount)
        self.model.stored.append((stored_as, "deposit_id", stored_id, account))

    def _count(self, stored_as: str, symbol: str, account: str, amount: int) -> None:
        """Add a deposit or withdrawal the exchange made to the model's totals."""
        sign = -1 if "Withdrawn" in stored_as else 1
        if stored_as.startswith("Funds"):
            self.model.cash_in[account] += sign * amount
        else:
            self.model.capacity_in[symbol] += sign * amount

    @rule(
        account=traders,
        amount=st.sampled_from((500, 20_000, 100_000)),
        deposit_id=maybe_name,
        key=maybe_name,
    )
    def deposit_cash(
        self, account: str, amount: int, deposit_id: str | None, key: str | None
    ) -> None:
        """Deposit cash, optionally naming the deposit and/or under an Idempotency-Key."""
        self._deposit_cash(account, amount, deposit_id, key)

    @rule(
        account=traders,
        symbol=symbols,
        quantity=quantities,
        deposit_id=maybe_name,
        key=maybe_name,
    )
    def deposit_capacity(
        self, account: str, symbol: str, quantity: int, deposit_id: str | None, key: str | None
    ) -> None:
        """Deposit capacity of one contract (a buyer's is refused 403)."""
        body: dict[str, Any] = {"kind": "capacity", "symbol": symbol, "quantity": quantity}
        if deposit_id is not None:
            body["deposit_id"] = deposit_id
        self._deposit(account, body, key, "CapacityDeposited", symbol, quantity)

    @rule(
        account=providers,
        family=st.sampled_from((("H100-80G", "GZ"), ("H100-80G", "YRD"), ("CPU", "GZ"))),
        hours=st.sampled_from(((0, 1), (0, 2), (1, 2), (23, 2), (0, 3))),
        quantity=quantities,
        recallable=st.booleans(),
        reserve=st.none() | st.sampled_from((1_250, 1_800, 12)),
        deposit_id=maybe_name,
    )
    def schedule_capacity(
        self,
        account: str,
        family: tuple[str, str],
        hours: tuple[int, int],
        quantity: int,
        recallable: bool,
        reserve: int | None,
        deposit_id: str | None,
    ) -> None:
        """Deposit capacity on a schedule, recallable or firm, with or without standing asks."""
        resource_class, region = family
        body: dict[str, Any] = {
            "resource_class": resource_class,
            "region": region,
            "quantity": quantity,
            "first_day": "2027-12-01" if hours[0] < 23 else "2027-11-30",
            "from_hour": hours[0],
            "to_hour": hours[1],
            "recallable": recallable,
        }
        if reserve is not None:
            body["reserve_price"] = reserve
        if deposit_id is not None:
            body["deposit_id"] = deposit_id
        answer = self._send(account, "POST", f"/v1/accounts/{account}/capacity-deposits", body)
        # 202: not decided within the wait; its deposits are in the log all the same.
        if answer is None or answer.status not in (201, 202):
            return
        schedule = answer.body["deposit_id"]
        if deposit_id is not None:
            assert schedule == deposit_id, answer
        for symbol in answer.body["contracts"]:
            if (account, schedule, symbol) not in self.model.scheduled:
                self.model.scheduled.add((account, schedule, symbol))
                self.model.capacity_in[symbol] += quantity
        for order_id in answer.body["asks"] + answer.body["pending_asks"]:
            self.model.orders.setdefault(order_id, account)

    @rule(
        account=traders,
        amount=st.sampled_from((100, 5_000, 50_000)),
        withdrawal_id=maybe_name,
    )
    def withdraw_cash(self, account: str, amount: int, withdrawal_id: str | None) -> None:
        """Withdraw available cash."""
        body: dict[str, Any] = {"kind": "cash", "amount": amount}
        self._withdraw(account, body, withdrawal_id, "FundsWithdrawn", "", amount)

    @rule(account=providers, symbol=symbols, quantity=quantities, withdrawal_id=maybe_name)
    def withdraw_capacity(
        self, account: str, symbol: str, quantity: int, withdrawal_id: str | None
    ) -> None:
        """Withdraw unsold capacity (until its gate closes)."""
        body: dict[str, Any] = {"kind": "capacity", "symbol": symbol, "quantity": quantity}
        self._withdraw(account, body, withdrawal_id, "CapacityWithdrawn", symbol, quantity)

    def _withdraw(
        self,
        account: str,
        body: dict[str, Any],
        withdrawal_id: str | None,
        stored_as: str,
        symbol: str,
        amount: int,
    ) -> None:
        if withdrawal_id is not None:
            body["withdrawal_id"] = withdrawal_id
        path = f"/v1/accounts/{account}/withdrawals"
        answer = self._send(account, "POST", path, body)
        if answer is None:
            return
        # A withdrawal id names one withdrawal, of cash or capacity: a retry gets the first
        # answer, another withdrawal under it is refused as a reuse.
        if self._retry_expected(account, "withdrawal", withdrawal_id, body, answer):
            return
        if answer.status == 422:
            assert answer.problem != "duplicate_id", (
                f"{account}'s first withdrawal {withdrawal_id!r} refused as a duplicate: {answer}"
            )
        if withdrawal_id is not None:
            self._named(account, "withdrawal", withdrawal_id, answer, method="POST", path=path,
                        body=body, headers={})  # fmt: skip
        if answer.status != 201:
            return
        stored_id = answer.body["id"]
        if answer.body["status"] == "pending":
            self.model.pending.append(
                (stored_as, "withdrawal_id", stored_id, account, symbol, amount)
            )
            return
        self._count(stored_as, symbol, account, amount)
        self.model.stored.append((stored_as, "withdrawal_id", stored_id, account))

    # -- orders --------------------------------------------------------------------------

    @rule(
        account=traders,
        symbol=symbols,
        buy=st.booleans(),
        price=st.integers(0, 4),
        quantity=quantities,
        options=st.fixed_dictionaries(
            {},
            optional={
                "time_in_force": st.sampled_from(("GTC", "GTD", "DAY", "IOC", "FOK")),
                "order_type": st.just("market"),
                "min_quantity": st.integers(1, 3),
                "all_or_none": st.just(True),
                "post_only": st.just(True),
                "stp_mode": st.sampled_from(
                    ("cancel_resting", "cancel_incoming", "cancel_both", "decrement")
                ),
                "stp_group": st.just("desk"),
                "voucher": names,
                "limit_basis": st.just("net"),
            },
        ),
        client_order_id=maybe_name,
        key=maybe_name,
    )
    def place_order(
        self,
        account: str,
        symbol: str,
        buy: bool,
        price: int,
        quantity: int,
        options: dict[str, Any],
        client_order_id: str | None,
        key: str | None,
    ) -> None:
        """Place an order of any type and time in force (a buyer's sell is a resale)."""
        prices = PRICES[symbol]
        body: dict[str, Any] = {
            "symbol": symbol,
            "side": "buy" if buy else "sell",
            "price": prices[price % len(prices)],
            "quantity": quantity,
            **options,
        }
        if options.get("time_in_force") == "GTD":
            body["expire_at"] = self.clock.now_ms + 30 * MINUTE
        if client_order_id is not None:
            body["client_order_id"] = client_order_id
        headers = {} if key is None else {"Idempotency-Key": key}
        self._place(account, body, headers)

    @rule(pairs=crossings)
    def cross(self, pairs: list[tuple[str, str, str, int, int, int]]) -> None:
        """Sells, each followed by a buy near it: plain limit orders that often trade (a
        buyer's sell is a resale of what it bought)."""
        for seller, buyer, symbol, ask, bid, quantity in pairs:
            prices = PRICES[symbol]
            for account, side, price in ((seller, "sell", ask), (buyer, "buy", bid)):
                body = {
                    "symbol": symbol,
                    "side": side,
                    "price": prices[price % len(prices)],
                    "quantity": quantity,
                }
                self._place(account, body, {})

    @precondition(lambda self: bool(self._gates_open()))
    @rule(pairs=crossings)
    def cross_again(self, pairs: list[tuple[str, str, str, int, int, int]]) -> None:
        """The same as `cross`: trading is most of what an exchange does, so more often (while
        the model's contracts trade; `cross` alone tries them after their gates close)."""
        self.cross(pairs)

    @precondition(lambda self: bool(self._gates_open()))
    @rule(pairs=crossings)
    def cross_more(self, pairs: list[tuple[str, str, str, int, int, int]]) -> None:
        """The same as `cross` (Hypothesis turns a random set of rules off in each example)."""
        self.cross(pairs)

    @rule(
        symbol=symbols,
        orders=st.lists(
            st.tuples(traders, st.booleans(), st.integers(0, 4), quantities), min_size=2, max_size=4
        ),
        whole_market=st.booleans(),
    )
    def call_auction(self, symbol: str, orders: list[tuple[str, bool, int, int]],
                     whole_market: bool) -> None:  # fmt: skip
        """An operator halts a contract (or the market), orders rest crossed, and the resume
        clears them in a call auction."""
        scope = "market" if whole_market else "contract"
        if whole_market:
            self._operator("POST", "/v1/admin/market/halt", json={"reason": "auction"})
        else:
            self._control(symbol, "halt", None, None)
        prices = PRICES[symbol]
        for account, buy, price, quantity in orders:
            body = {
                "symbol": symbol,
                "side": "buy" if buy else "sell",
                "price": prices[price % len(prices)],
                "quantity": quantity,
            }
            self._place(account, body, {})
        if scope == "market":
            self._operator("POST", "/v1/admin/market/resume", json={"reason": "auction"})
        else:
            self._control(symbol, "resume", None, None)

    @rule(account=traders, data=st.data(), less=st.integers(1, 3))
    def amend_down(self, account: str, data: st.DataObject, less: int) -> None:
        """Reduce an open order's quantity at its price (the account's, or if it has none to
        reduce another's, as its owner): it keeps its time priority."""
        reducible = []
        for owner in (account, *(a for a in TRADERS if a != account)):
            # The account's own open orders first; if none can be reduced, another's.
            rows = self._operator("GET", "/v1/orders", params={"account_id": owner,
                                                               "status": "open"})  # fmt: skip
            assert rows.status == 200, rows
            reducible = [row for row in rows.body if row["quantity"] - row["filled"] > 1]
            if reducible:
                break
        row = _pick(reducible or [None], data)
        if row is None:
            return
        remaining = row["quantity"] - row["filled"]
        self._send(row["account_id"], "PATCH", f"/v1/orders/{row['order_id']}",
                   json={"quantity": remaining - min(less, remaining - 1)})  # fmt: skip

    @precondition(lambda self: bool(self._gates_open()))
    @rule(
        account=providers,
        data=st.data(),
        resting=quantities,
        incoming=quantities,
        stp_mode=st.sampled_from(
            (None, "cancel_resting", "cancel_incoming", "cancel_both", *("decrement",) * 4)
        ),
    )
    def self_cross(self, account: str, data: st.DataObject, resting: int, incoming: int,
                   stp_mode: str | None) -> None:  # fmt: skip
        """A provider bids in a contract still trading, between the opening bids and asks, and
        its own sell at that price meets the bid: self-trade prevention acts in the sell's mode
        (`decrement` takes the smaller quantity off both, without a trade)."""
        symbol = _pick(self._gates_open(), data)
        at = PRICES[symbol][1]
        bid = {"symbol": symbol, "side": "buy", "price": at, "quantity": resting}
        self._place(account, bid, {})
        sell: dict[str, Any] = {"symbol": symbol, "side": "sell", "price": at, "quantity": incoming}
        if stp_mode is not None:
            sell["stp_mode"] = stp_mode
        self._place(account, sell, {})

    @precondition(lambda self: bool(self._resellable()))
    @rule(
        holder=buyers,
        provider=providers,
        data=st.data(),
        bought=st.integers(2, 5),
        offer=st.integers(2, 5),
        shrink=st.sampled_from(("amend", "decrement", "decrement_incoming", "amend_and_decrement")),
        less=st.integers(1, 3),
        desk=st.booleans(),
        key=maybe_name,
        withdraw=st.booleans(),
    )
    def shrink_a_resale(self, holder: str, provider: str, data: st.DataObject, bought: int,
                        offer: int, shrink: str, less: int, desk: bool, key: str | None,
                        withdraw: bool) -> None:  # fmt: skip
        """A holder buys units of a contract still trading (an hour, or a strip), offers some
        of them again between the opening bids and asks (a resale, backed by what it bought;
        perhaps under an Idempotency-Key, which `retry` may send again), and the resale is made
        smaller: amended down, and/or self-trade prevention (`decrement`) takes units off it
        where it meets the holder's own bid (perhaps as one desk's, `stp_group`), the resale
        resting or incoming; then perhaps the rest is cancelled. What comes off a resale
        returns to what the holder may resell, never to deposited capacity (once it did:
        tests/test_resale_shrunk.py), which `system_holds` checks: no balance below zero, and
        what a holder may resell within what it bought less what it resold.

        (Its arguments are the most of any rule and its name sorts last among theirs: Hypothesis
        orders rules so, and a rule placed last leaves the fixed examples' choices of the
        others as they were, and with them what `test_model.py` asserts they reach.)"""
        symbol = _pick(self._resellable(), data)
        prices = PRICES[symbol]
        self._place(provider, {"symbol": symbol, "side": "sell", "price": prices[2],
                               "quantity": bought}, {})  # fmt: skip
        self._place(holder, {"symbol": symbol, "side": "buy", "price": prices[2],
                             "quantity": bought, "time_in_force": "IOC"}, {})  # fmt: skip
        offered = min(offer, self._settled_position(holder, symbol))
        if offered < 2:
            return
        group = {"stp_group": "desk"} if desk else {}
        own_bid: dict[str, Any] = {"symbol": symbol, "side": "buy", "price": prices[1],
                                   "quantity": less, **group}  # fmt: skip
        resale: dict[str, Any] = {"symbol": symbol, "side": "sell", "price": prices[1],
                                  "quantity": offered, **group}  # fmt: skip
        if shrink == "decrement_incoming":
            # The holder's bid rests first; the resale meets it and is decremented.
            self._place(holder, own_bid, {})
            resale["stp_mode"] = "decrement"
        answer = self._place(holder, resale, {} if key is None else {"Idempotency-Key": key})
        if answer is None or answer.status != 201:
            return
        path = f"/v1/orders/{answer.body['order_id']}"
        if shrink in ("amend", "amend_and_decrement"):
            self._send(holder, "PATCH", path, json={"quantity": max(1, offered - less)})
        if shrink in ("decrement", "amend_and_decrement"):
            own_bid |= {"stp_mode": "decrement", "time_in_force": "IOC"}
            self._place(holder, own_bid, {})
        if withdraw:
            self._send(holder, "DELETE", path)

    def _resellable(self) -> list[str]:
        """The contracts still trading, the strips among them (they trade all day, so a
        resale can be tried after the hours' gates have closed)."""
        return self._gates_open() + self._strips_trading()

    def _settled_position(self, account: str, symbol: str) -> int:
        """Units of a contract the account holds once everything sent has settled."""
        assert self.live is not None
        self.live.run(_settled(self.live.exchange.runtime), SETTLE_TIMEOUT_S + 30)
        answer = self._operator("GET", f"/v1/accounts/{account}")
        if answer.status != 200:
            return 0
        return sum(row["quantity"] for row in answer.body["positions"] if row["symbol"] == symbol)

    def _place(self, account: str, body: dict[str, Any], headers: dict[str, str]) -> Answer | None:
        """Place an order, checking a named one's retry; the answer (None: the account's keys
        are all revoked)."""
        answer = self._send(account, "POST", "/v1/orders", json=body, headers=headers)
        if answer is None:
            return None
        coid, key = body.get("client_order_id"), headers.get("Idempotency-Key")
        kind, name = ("coid", coid) if coid is not None else ("key", key)
        retried = self._retry_expected(account, kind, name, body, answer)
        if name is not None and not retried:
            self._named(account, kind, name, answer, method="POST", path="/v1/orders",
                        body=body, headers=headers)  # fmt: skip
        if answer.status == 201:
            order_id = answer.body["order_id"]
            owner = self.model.orders.setdefault(order_id, account)
            assert owner == account, f"{account} was answered with {owner}'s order: {answer}"
        return answer

    @precondition(lambda self: bool(self.model.named))
    @rule(data=st.data(), change=st.booleans())
    def retry(self, data: st.DataObject, change: bool) -> None:
        """Send a named request again, with the same body or with another one."""
        named = _pick(list(self.model.named.values()), data)
        body = dict(named.body)
        if change:
            for field_name in ("quantity", "amount", "max_total"):
                if field_name in body:
                    body[field_name] += 1
                    break
        if named.path == "/v1/orders":
            self._place(named.account, body, named.headers)
        elif named.path == "/v1/needs":
            self._need(named.account, body, named.headers)
        elif named.path.endswith("/withdrawals"):
            stored_as, symbol, amount = (
                ("FundsWithdrawn", "", body["amount"])
                if body["kind"] == "cash"
                else ("CapacityWithdrawn", body["symbol"], body["quantity"])
            )
            withdrawal_id = body.pop("withdrawal_id")
            self._withdraw(named.account, body, withdrawal_id, stored_as, symbol, amount)
        else:
            key = named.headers.get("Idempotency-Key")
            stored_as, symbol, amount = (
                ("FundsDeposited", "", body["amount"])
                if body["kind"] == "cash"
                else ("CapacityDeposited", body["symbol"], body["quantity"])
            )
            self._deposit(named.account, body, key, stored_as, symbol, amount)

    def _order_of(self, account: str, data: st.DataObject) -> str:
        """One of the account's accepted orders, another's, or a name it may never have used."""
        own = [o for o, a in self.model.orders.items() if a == account]
        others = [o for o, a in self.model.orders.items() if a != account]
        whose = data.draw(st.sampled_from(("own", "own", "other", "name")))
        choices = {"own": own, "other": others}.get(whose) or list(NAMES)
        return _pick(choices, data)

    @rule(
        account=traders,
        data=st.data(),
        price=st.none() | st.integers(0, 4),
        quantity=st.none() | quantities,
    )
    def amend(self, account: str, data: st.DataObject, price: int | None,
              quantity: int | None) -> None:  # fmt: skip
        """Amend an order's price and/or open quantity."""
        order_id = self._order_of(account, data)
        body: dict[str, Any] = {}
        if price is not None:
            body["price"] = PRICES[GZ0][price]
        if quantity is not None:
            body["quantity"] = quantity
        self._send(account, "PATCH", f"/v1/orders/{order_id}", json=body)

    @rule(account=traders, data=st.data())
    def cancel(self, account: str, data: st.DataObject) -> None:
        """Cancel an order: its own open order is cancelled, an ended one is 409, else 404."""
        order_id = self._order_of(account, data)
        settled = self._operator("GET", f"/v1/orders/{order_id}")
        answer = self._send(account, "DELETE", f"/v1/orders/{order_id}")
        if answer is None:
            return
        if settled.status != 200 or settled.body["account_id"] != account:
            assert answer.status == 404, (order_id, settled, answer)
        elif settled.body["status"] in ("filled", "cancelled"):
            assert (answer.status, answer.problem) == (409, "order_not_open"), (settled, answer)

    @rule(account=traders)
    def cancel_all(self, account: str) -> None:
        """The kill switch."""
        self._send(account, "DELETE", "/v1/orders")

    @rule(
        account=traders,
        block=st.sampled_from(BLOCKS),
        buy=st.booleans(),
        price=st.integers(0, 2),
        quantity=st.integers(1, 3),
        data=st.data(),
        trading=st.sampled_from((True, True, True, False)),
        voucher=st.sampled_from((None, None, "created", "any")),
    )
    def place_block(self, account: str, block: tuple[str, str], buy: bool, price: int,
                    quantity: int, data: st.DataObject, trading: bool,
                    voucher: str | None) -> None:  # fmt: skip
        """A block order over two consecutive hours: mostly hours still trading, if any; some
        name a voucher programme (mostly one created; a seller's is refused), and a provider's
        sell block posts a delivery bond."""
        open_blocks = [b for b in BLOCKS if b[0] in self._gates_open()]
        still = _pick(open_blocks or [None], data)
        if trading and still is not None:
            block = still
        body: dict[str, Any] = {
            "symbols": list(block),
            "side": "buy" if buy else "sell",
            "price": PRICES[block[0]][price],
            "quantity": quantity,
        }
        if voucher is not None:
            body["voucher"] = self._programme_named(voucher, data)
        answer = self._send(account, "POST", "/v1/block-orders", json=body)
        if answer is not None and answer.status == 201 and answer.body["status"] == "accepted":
            self.model.orders.setdefault(answer.body["order_id"], account)
            if voucher is not None:
                self.edge_seen["block with a voucher"] += 1

    @precondition(lambda self: self.auctions)
    @rule(
        account=buyers,
        alternatives=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=3),
        price=st.integers(0, 2),
        own_prices=st.booleans(),
        quantity=st.integers(1, 3),
        name=maybe_name,
    )
    def place_group(self, account: str, alternatives: list[tuple[str, str]], price: int,
                    own_prices: bool, quantity: int, name: str | None) -> None:  # fmt: skip
        """A need as an exclusive group over blocks trading continuously: it waits for the
        next intraday auction (refused when that comes too late for its hours)."""
        top = max(PRICES[block[0]][price] for block in alternatives)
        body: dict[str, Any] = {
            "alternatives": [list(block) for block in alternatives],
            "price": top,
            "quantity": quantity,
        }
        if own_prices:
            body["prices"] = [PRICES[block[0]][price] for block in alternatives]
        if name is not None:
            body["client_order_id"] = name
        answer = self._send(account, "POST", "/v1/exclusive-groups", json=body)
        if answer is not None and answer.status == 201 and answer.body["status"] == "accepted":
            for alternative in answer.body["alternatives"]:
                self.model.orders.setdefault(alternative["order_id"], account)
            self.edge_seen["exclusive group"] += 1

    # -- strips --------------------------------------------------------------------------

    @rule(
        provider=providers,
        buyer=buyers,
        other=traders,
        strip=st.sampled_from((*STRIPS, *STRIPS, CASCADED)),
        ask=st.integers(0, 4),
        bid=st.integers(0, 4),
        quantity=st.integers(1, 3),
        deposit=st.booleans(),
        resell=st.integers(0, 2),
    )
    def trade_strip(self, provider: str, buyer: str, other: str, strip: str, ask: int, bid: int,
                    quantity: int, deposit: bool, resell: int) -> None:  # fmt: skip
        """A provider deposits capacity for a strip (cards in each of its hours) and sells it,
        a buyer bids near the ask, and may resell a part to another trader before the cascade
        (an entitlement-backed sell of the strip); December's month strip, cascaded before the
        clock starts, refuses the deposit and the order `contract_closed`."""
        if strip == CASCADED:
            path = f"/v1/accounts/{provider}/deposits"
            body = {"kind": "capacity", "symbol": strip, "quantity": quantity}
            for account, method, where, sent in (
                (provider, "POST", path, body),
                (buyer, "POST", "/v1/orders", {"symbol": strip, "side": "buy", "price": 40,
                                               "quantity": quantity}),
            ):  # fmt: skip
                _refused_as_cascaded(self._send(account, method, where, json=sent))
            return
        if deposit:
            body = {"kind": "capacity", "symbol": strip, "quantity": quantity}
            self._deposit(provider, body, None, "CapacityDeposited", strip, quantity)
        prices = PRICES[strip]
        for account, side, price, units in (
            (provider, "sell", prices[ask], quantity),
            (buyer, "buy", prices[bid], quantity),
            (buyer, "sell", prices[ask], resell),
            (other, "buy", prices[ask], resell),
        ):
            if units:
                body = {"symbol": strip, "side": side, "price": price, "quantity": units}
                self._place(account, body, {})

    @precondition(lambda self: bool(self._strips_trading()))
    @rule(data=st.data(), account=traders, relist=st.booleans())
    def cascade_strip(self, data: st.DataObject, account: str, relist: bool) -> None:
        """An operator delists a strip before its cascade: it cascades at once into its hours
        (its holders' positions, its providers' sales and unsold capacity); an order for it is
        then refused `contract_delisted`, listing it again `contract_closed`."""
        strip = _pick(self._strips_trading(), data)
        answer = self._control(strip, "delist", None, None)
        assert answer.status == 200, answer
        assert self.live is not None
        self.live.run(_settled(self.live.exchange.runtime), SETTLE_TIMEOUT_S + 30)
        self._read_events()
        assert strip in self.cascaded, f"{strip} was delisted but did not cascade"
        body = {"symbol": strip, "side": "buy", "price": PRICES[strip][1], "quantity": 1}
        late = self._send(account, "POST", "/v1/orders", json=body)
        if late is not None:
            # Refused as delisted: why it is closed, which a later cascade would not say.
            assert late.problem == "contract_delisted", late
        if relist:
            again = self._control(strip, "list", None, None)
            # Matching's refusal is the answer.
            assert (again.status, again.problem) == (422, "contract_closed"), again
            self.live.run(_settled(self.live.exchange.runtime), SETTLE_TIMEOUT_S + 30)
            self._read_events()
            assert (strip, "list", "contract_closed") in self.control_refusals, (
                f"listing {strip} again after its cascade was not refused: {again}"
            )

    def _strips_trading(self) -> list[str]:
        """The model's strips not yet cascaded."""
        return [strip for strip in STRIPS if strip not in self.cascaded]

    @rule(
        account=buyers,
        name=maybe_name,
        quantity=st.integers(1, 2),
        hours=st.sampled_from((24, 30, 50)),
        nights=st.booleans(),
        stand=st.booleans(),
        max_total=st.sampled_from((5_000, 40_000)),
    )
    def state_strip_need(self, account: str, name: str | None, quantity: int, hours: int,
                         nights: bool, stand: bool, max_total: int) -> None:  # fmt: skip
        """State a need in the strips' week: no hour of it is listed yet, so only the week (or,
        for a need accepting night hours, its nights) can serve it, bought fill-or-kill."""
        week_start = _delivery_start(WEEK)
        body: dict[str, Any] = {
            "unit": "cards",
            "quantity": quantity,
            "hours": hours,
            "earliest_start": week_start,
            "deadline": week_start + 168 * HOUR,
            "regions": [{"region": "GZ"}],
            "max_total": max_total,
            "stand": stand,
            # The strips are of the interruptible class, which a need takes only when it names it.
            "classes": ["H100-80G-INT"],
        }
        if nights:
            body["nights"] = True
        if name is not None:
            body["client_need_id"] = name
        self._need(account, body, {})

    # -- needs ---------------------------------------------------------------------------

    @rule(
        account=buyers,
        name=maybe_name,
        key=maybe_name,
        quantity=st.integers(1, 3),
        hours=st.integers(1, 2),
        stand=st.booleans(),
        max_total=st.sampled_from((2_000, 20_000, 20_000)),
        voucher=st.sampled_from((None, None, "created", "any")),
        interruptible=st.booleans(),
        data=st.data(),
    )
    def state_need(self, account: str, name: str | None, key: str | None, quantity: int,
                   hours: int, stand: bool, max_total: int, voucher: str | None,
                   interruptible: bool, data: st.DataObject) -> None:  # fmt: skip
        """State a need, some with a voucher, some accepting the interruptible class too; the
        exchange plans and places the cheapest block after the voucher."""
        body: dict[str, Any] = {
            "unit": "cards",
            "quantity": quantity,
            "hours": hours,
            "earliest_start": MIDNIGHT,
            "deadline": MIDNIGHT + 2 * HOUR,
            "regions": [{"region": "GZ"}, {"region": "YRD", "adder": 50}],
            "max_total": max_total,
            "stand": stand,
        }
        if name is not None:
            body["client_need_id"] = name
        if voucher is not None:
            body["voucher"] = self._programme_named(voucher, data)
        if interruptible:
            body["classes"] = ["H100-80G", "H100-80G-INT"]
        self._need(account, body, {} if key is None else {"Idempotency-Key": key})

    def _programme_named(self, which: str, data: st.DataObject) -> str:
        """A programme to name as a voucher: one created if `which` says so and there is one,
        else any name (perhaps of no programme, or of one the account holds no grant of)."""
        created = _pick(sorted(self.programmes) or [None], data)
        if which == "created" and created is not None:
            return created
        return _pick(list(NAMES), data)

    def _need(self, account: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        answer = self._send(account, "POST", "/v1/needs", json=body, headers=headers)
        if answer is None:
            return
        # A client need id names the need; else the header does, in a namespace of its own.
        coid, key = body.get("client_need_id"), headers.get("Idempotency-Key")
        name = coid if coid is not None else None if key is None else f"key:{key}"
        retried = self._retry_expected(account, "need", name, body, answer)
        if name is not None and not retried:
            self._named(account, "need", name, answer, method="POST", path="/v1/needs",
                        body=body, headers=headers)  # fmt: skip
        if answer.status == 201:
            self.model.needs.setdefault(answer.body["need_id"], account)
            if answer.body["status"] == "standing":
                self.model.standing.add(answer.body["need_id"])
            self.edge_seen["need standing" if answer.body["status"] == "standing"
                           else "need placed"] += 1  # fmt: skip
            order = answer.body.get("order") or {}
            if order.get("kind") == "strip":
                self.edge_seen["need bought a strip"] += 1

    @rule(
        account=buyers,
        data=st.data(),
        aim=st.sampled_from(("standing", "standing", "standing", "own", "name")),
    )
    def withdraw_need(self, account: str, data: st.DataObject, aim: str) -> None:
        """Withdraw a need (only a standing one may be withdrawn): mostly one that stood when
        placed, at times another of the account's or a name it may never have used."""
        standing = _pick(sorted(self.model.standing) or [None], data)
        own = [n for n, a in self.model.needs.items() if a == account]
        need_id = _pick(own or list(NAMES), data)
        if aim == "standing" and standing is not None:
            need_id, account = standing, self.model.needs[standing]
        answer = self._send(account, "DELETE", f"/v1/needs/{need_id}")
        if answer is not None and answer.status == 200:
            self.edge_seen["need withdrawn"] += 1
            self.model.standing.discard(need_id)

    # -- operators -------------------------------------------------------------------------

    def _control(self, symbol: str, action: str, band: int | None, at: int | None) -> Answer:
        body: dict[str, Any] = {"reason": f"model {action}"}
        if band is not None:
            body["band"] = band
        if at is not None:
            body["at"] = at
            body["symbols"] = [symbol]
        return self._operator("POST", f"/v1/admin/contracts/{symbol}/{action}", json=body)

    @rule(
        symbol=st.sampled_from((*SYMBOLS, "H100-80G.GZ")),
        action=st.sampled_from(
            ("halt", "resume", "delist", "list", "set_band", "schedule_auction")
        ),
        band=st.sampled_from((0, 50, 100)),
        delay=st.sampled_from((MINUTE, 20 * MINUTE)),
    )
    def control_contract(self, symbol: str, action: str, band: int, delay: int) -> None:
        """Halt, resume, delist, list, band a contract (or a family), or schedule an auction."""
        self._control(
            symbol,
            action,
            band if action == "set_band" else None,
            self.clock.now_ms + delay if action == "schedule_auction" else None,
        )

    @precondition(lambda self: bool(self._gates_open()))
    @rule(data=st.data(), account=traders, buy=st.booleans(), relist=st.booleans())
    def delist(self, data: st.DataObject, account: str, buy: bool, relist: bool) -> None:
        """An operator delists a contract still trading (its resting orders are cancelled), a
        participant tries an order for it, and the operator may list it again."""
        symbol = _pick(self._gates_open(), data)
        self._control(symbol, "delist", None, None)
        assert self.live is not None
        self.live.run(_settled(self.live.exchange.runtime), SETTLE_TIMEOUT_S + 30)
        body = {"symbol": symbol, "side": "buy" if buy else "sell", "price": PRICES[symbol][1],
                "quantity": 1}  # fmt: skip
        self._place(account, body, {})
        if relist:
            self._control(symbol, "list", None, None)

    @rule(action=st.sampled_from(("halt", "resume")))
    def control_market(self, action: str) -> None:
        """Halt or resume the whole market."""
        self._operator("POST", f"/v1/admin/market/{action}", json={"reason": "model"})

    @rule(
        account=traders,
        quantity=st.none() | st.sampled_from((0, 5, 50)),
        notional=st.none() | st.sampled_from((0, 10_000, 1_000_000)),
    )
    def set_limits(self, account: str, quantity: int | None, notional: int | None) -> None:
        """Limit an account's open orders (both None lifts the limits)."""
        body = {"max_open_quantity": quantity, "max_open_notional": notional, "reason": "model"}
        self._operator("PUT", f"/v1/admin/accounts/{account}/limits", json=body)

    @rule(
        accounts=st.lists(traders, min_size=1, max_size=2, unique=True),
        concession_id=names,
        discount=st.sampled_from((5_000, 10_000)),
        budget=st.sampled_from((3, 1_000)),
        data=st.data(),
    )
    def grant_concession(self, accounts: list[str], concession_id: str, discount: int,
                         budget: int, data: st.DataObject) -> None:  # fmt: skip
        """Fee concessions for a class of participants; the first then takes a unit of an ask
        while the model's contracts trade, as a concession invites (its fee is conceded)."""
        body = {
            "concession_id": concession_id,
            "account_ids": accounts,
            "discount_bps": discount,
            "budget_per_account": budget,
            "valid_from": START,
            "valid_until": END,
            "reason": "model",
        }
        self._operator("POST", "/v1/admin/concessions", json=body)
        symbol = _pick(self._gates_open() or [None], data)
        if symbol is not None:
            order = {"symbol": symbol, "side": "buy", "price": PRICES[symbol][-1], "quantity": 1}
            self._place(accounts[0], order, {})

    # -- vouchers --------------------------------------------------------------------------

    @rule(
        programme_id=names,
        budget=st.sampled_from((1_000, 100_000)),
        region=st.sampled_from(((), ("GZ",), ("YRD",))),
        applicant=st.none() | buyers,
        then=st.sampled_from((None, "approve", "approve", "ask", "reject")),
    )
    def create_programme(self, programme_id: str, budget: int, region: tuple[str, ...],
                         applicant: str | None = None,
                         then: str | None = None) -> None:  # fmt: skip
        """A programme administrator creates a voucher programme; an enterprise (registered
        first if it was not) may apply to it at once, and the administrator decide."""
        body = {
            "programme_id": programme_id,
            "issuer": "model city",
            "budget": budget,
            "rate_bps": 3_000,
            "cap_per_contract": 600,
            "cap_per_enterprise": budget,
            "regions": list(region),
            "cities": ["hangzhou"],
            "valid_from": START,
            "valid_until": END,
        }
        answer = self._send(ADMIN, "POST", "/v1/programmes", json=body)
        if answer is not None and answer.status == 201 and answer.body["status"] == "done":
            self.model.stored.append(("ProgrammeCreated", "programme_id", programme_id, ""))
            self.programmes.add(programme_id)
        if applicant is not None and programme_id in self.programmes:
            if applicant not in self.registered:
                self.register_enterprise(applicant, "own", "hangzhou", "sme")
            self._apply(programme_id, applicant, min(budget, 1_000), None, then)

    @rule(
        account=buyers,
        code=st.sampled_from(("own", "own", "taken", "bad")),
        city=st.sampled_from(("hangzhou", "ningbo")),
        kind=st.sampled_from(("sme", "opc", "large")),
    )
    def register_enterprise(self, account: str, code: str, city: str, kind: str) -> None:
        """A buyer registers its enterprise: its own code, another buyer's (refused once that
        one holds it) or one with a wrong check character (refused)."""
        own = uscc_of(account)
        wrong_check = CHARACTERS[(CHARACTERS.index(own[17]) + 1) % len(CHARACTERS)]
        other = next(b for b in BUYERS if b != account)
        uscc = {"own": own, "taken": uscc_of(other), "bad": own[:17] + wrong_check}[code]
        body = {"name": f"{account} 科技", "uscc": uscc, "kind": kind, "city": city}
        answer = self._send(account, "POST", f"/v1/accounts/{account}/enterprise", json=body)
        if answer is None:
            return
        if code == "bad":
            assert answer.problem == "invalid_uscc", answer
        if answer.status == 201 and answer.body["status"] == "done":
            self.model.stored.append(("EnterpriseRegistered", "uscc", uscc, account))
            self.registered.add(account)

    @rule(
        programme_id=names,
        account=buyers,
        amount=st.sampled_from((100, 1_000, 50_000)),
        application_id=maybe_name,
        data=st.data(),
        known=st.sampled_from((True, True, False)),
        register_first=st.sampled_from((True, True, False)),
        then=st.sampled_from((None, "approve", "approve", "ask", "reject")),
    )
    def apply_for_grant(self, programme_id: str, account: str, amount: int,
                        application_id: str | None, data: st.DataObject, known: bool,
                        register_first: bool, then: str | None) -> None:  # fmt: skip
        """An enterprise applies for a grant: to a programme created (its city's, created first
        if none is), or to one that may not exist; registered (as an SME of Hangzhou, if it had
        not) or not, eligible or not."""
        if register_first and account not in self.registered:
            self.register_enterprise(account, "own", "hangzhou", "sme")
        if known and not self.programmes:
            self.create_programme(programme_id, 100_000, ())
        created = _pick(sorted(self.programmes) or [None], data)
        if known and created is not None:
            programme_id = created
        self._apply(programme_id, account, amount, application_id, then)

    def _apply(self, programme_id: str, account: str, amount: int,
               application_id: str | None, then: str | None) -> None:  # fmt: skip
        """Send the application; then, if it was taken, the administrator's `then` step."""
        body: dict[str, Any] = {"amount": amount, "intended_use": "model"}
        if application_id is not None:
            body["application_id"] = application_id
        path = f"/v1/programmes/{programme_id}/applications"
        answer = self._send(account, "POST", path, json=body)
        if answer is not None and answer.status == 201 and answer.body["status"] == "done":
            sent_as = _unscoped(answer.body["id"])
            self.model.stored.append(("GrantApplied", "application_id", sent_as, account))
            self.applications.append((programme_id, sent_as, account))
            if then is not None:
                self._decide((programme_id, sent_as, account), then, amount, related=False)

    @precondition(lambda self: bool(self.applications))
    @rule(
        data=st.data(),
        step=st.sampled_from(("approve", "approve", "ask", "answer", "reject")),
        limit=st.sampled_from((100, 1_000, 50_000)),
        related=st.booleans(),
    )
    def decide_application(self, data: st.DataObject, step: str, limit: int,
                           related: bool) -> None:  # fmt: skip
        """The administrator approves, asks about or rejects an application, or its applicant
        answers: in whatever state the application is (a step out of turn is refused)."""
        self._decide(_pick(self.applications, data), step, limit, related)

    def _decide(
        self, application: tuple[str, str, str], step: str, limit: int, related: bool
    ) -> None:
        programme_id, application_id, account = application
        base = f"/v1/programmes/{programme_id}"
        if step == "approve":
            body: dict[str, Any] = {
                "application_id": application_id,
                "limit": limit,
                "related_accounts": ["p1"] if related else [],
            }
            answer = self._send(ADMIN, "POST", f"{base}/grants", json=body)
            if answer is not None and answer.status == 201 and answer.body["status"] == "done":
                self.model.stored.append(("GrantApproved", "application_id", application_id, ""))
                self.granted.add((programme_id, account))
            return
        path = {"ask": "info-requests", "answer": "supplements", "reject": "rejection"}[step]
        field_of = {"ask": "question", "answer": "answer", "reject": "reason"}[step]
        sender = account if step == "answer" else ADMIN
        answer = self._send(
            sender, "POST", f"{base}/applications/{application_id}/{path}", json={field_of: "m"}
        )
        if answer is not None and answer.status == 422:
            assert answer.problem in {
                "application_not_pending", "unknown_application", "not_programme_admin",
            }, answer  # fmt: skip

    @rule(
        rate=st.sampled_from((3_000, 5_000)),
        cities=st.sampled_from(((), ("hangzhou", "ningbo"), ("ningbo",))),
    )
    def set_voucher_policy(self, rate: int, cities: tuple[str, ...]) -> None:
        """The operator sets the platform's voucher ceilings: programmes created after must
        keep within them, applications after must be of an enterprise they cover."""
        body = {
            "max_rate_bps": rate,
            "max_cap_per_enterprise": 1_000_000,
            "kinds": ["sme", "opc"],
            "cities": list(cities),
            "reason": "model",
        }
        answer = self._operator("POST", "/v1/admin/voucher-policy", json=body)
        assert answer.status == 201, answer

    @rule(
        programme_id=names,
        pool_id=names,
        discount=st.sampled_from((500, 1_000, 8_000)),
        budget=st.sampled_from((10, 10_000)),
        data=st.data(),
    )
    def fund_discount_pool(self, programme_id: str, pool_id: str, discount: int, budget: int,
                           data: st.DataObject) -> None:  # fmt: skip
        """The operator funds a programme's discount pool (a rate past the voucher's 70% left
        is refused): grants approved afterwards carry a part of it."""
        programme_id = _pick(sorted(self.programmes) or [programme_id], data)
        body = {"pool_id": pool_id, "discount_bps": discount, "budget": budget}
        answer = self._operator("POST", f"/v1/programmes/{programme_id}/discount-pools", json=body)
        if answer.status == 201 and answer.body["status"] == "done":
            self.model.stored.append(("DiscountPoolFunded", "pool_id", pool_id, ""))

    @rule(
        account=buyers,
        data=st.data(),
        price=st.integers(0, 2),
        quantity=st.integers(1, 3),
        seller=providers,
        related=st.booleans(),
        sell_first=st.booleans(),
    )
    def buy_block_with_voucher(self, account: str, data: st.DataObject, price: int,
                               quantity: int, seller: str, related: bool,
                               sell_first: bool) -> None:  # fmt: skip
        """A grant holder buys a block with its voucher, mostly in hours still trading: the
        administrator creates the programme and approves the grant (related to p1, perhaps)
        first if need be; then, perhaps, a provider offers the block's quantity in each hour
        at its price, so that it fills."""
        programme_id = BLOCK_PROGRAMME
        if programme_id not in self.programmes:
            self.create_programme(programme_id, 100_000, ())
        if (programme_id, account) not in self.granted:
            if account not in self.registered:
                self.register_enterprise(account, "own", "hangzhou", "sme")
            application = (programme_id, f"block-{account}", account)
            self._apply(programme_id, account, 50_000, application[1], None)
            self._decide(application, "approve", 50_000, related)
        open_blocks = [b for b in BLOCKS if b[0] in self._gates_open()]
        block = _pick(open_blocks or list(BLOCKS), data)
        limit = PRICES[block[0]][price]
        if sell_first:
            for symbol in block:
                ask = {"symbol": symbol, "side": "sell", "price": limit, "quantity": quantity}
                self._place(seller, ask, {})
        body = {"symbols": list(block), "side": "buy", "price": limit, "quantity": quantity,
                "voucher": programme_id}  # fmt: skip
        answer = self._send(account, "POST", "/v1/block-orders", json=body)
        if answer is not None and answer.status == 201 and answer.body["status"] == "accepted":
            self.model.orders.setdefault(answer.body["order_id"], account)
            self.edge_seen["block with a voucher"] += 1

    @rule(
        provider=providers,
        buyer=buyers,
        data=st.data(),
        price=st.integers(0, 2),
        quantity=st.integers(1, 3),
        bid_first=st.booleans(),
    )
    def sell_block_bonded(self, provider: str, buyer: str, data: st.DataObject, price: int,
                          quantity: int, bid_first: bool) -> None:  # fmt: skip
        """A provider sells a block of deposited capacity, which posts its delivery bond,
        mostly in hours still trading; first, perhaps, a buyer bids for it in each hour."""
        open_blocks = [b for b in BLOCKS if b[0] in self._gates_open()]
        block = _pick(open_blocks or list(BLOCKS), data)
        limit = PRICES[block[0]][price]
        if bid_first:
            for symbol in block:
                bid = {"symbol": symbol, "side": "buy", "price": limit, "quantity": quantity}
                self._place(buyer, bid, {})
        body = {"symbols": list(block), "side": "sell", "price": limit, "quantity": quantity}
        answer = self._send(provider, "POST", "/v1/block-orders", json=body)
        if answer is not None and answer.status == 201 and answer.body["status"] == "accepted":
            self.model.orders.setdefault(answer.body["order_id"], provider)
            self.edge_seen["sell block bonded"] += 1

    # -- delivery --------------------------------------------------------------------------

    @precondition(lambda self: bool(self._gates_open()))
    @rule(
        provider=providers,
        buyer=buyers,
        data=st.data(),
        price=st.integers(0, 4),
        quantity=st.integers(1, 3),
        to_delivery=st.sampled_from((False, False, True)),
    )
    def sell_for_delivery(self, provider: str, buyer: str, data: st.DataObject, price: int,
                          quantity: int, to_delivery: bool) -> None:  # fmt: skip
        """A provider sells capacity of a contract still trading and a buyer buys it at that
        price; then (or later) the clock moves to the contract's delivery hour."""
        symbol = _pick(self._gates_open(), data)
        prices = PRICES[symbol]
        for account, side in ((provider, "sell"), (buyer, "buy")):
            body = {
                "symbol": symbol,
                "side": side,
                "price": prices[price % len(prices)],
                "quantity": quantity,
            }
            self._place(account, body, {})
        if to_delivery:
            self._move_clock(min(_delivery_start(symbol) + 1, END))

    def _gates_open(self) -> list[str]:
        """The model's hourly contracts whose gate has not closed: they still trade. (The
        strips trade until they cascade, `_strips_trading`: counted here, they would keep the
        rules that aim at open hours, and at deliveries, drawing them all day.)"""
        # The default gate closure: an hour before delivery (of a bundle's last hour).
        closes = {s: _delivery_end(s) - HOUR - HOUR for s in SYMBOLS if s not in STRIPS}
        return [s for s, at in closes.items() if self.clock.now_ms < at]

    @precondition(lambda self: self.clock.now_ms >= MIDNIGHT)
    @rule(
        provider=providers,
        symbol=symbols,
        buyer=traders,
        delivered=st.integers(0, 4),
        report_id=maybe_name,
        data=st.data(),
        known=st.sampled_from((True, True, True, False)),
    )
    def report_metering(self, provider: str, symbol: str, buyer: str, delivered: int,
                        report_id: str | None, data: st.DataObject,
                        known: bool) -> None:  # fmt: skip
        """A provider reports what it delivered to a holder: one it owes now, or any pair
        (from the first delivery hour on: before it nobody owes anything)."""
        owed = _pick(self._metering_open() or [None], data)
        if known and owed is not None:
            symbol, provider, buyer = owed
        body = _metering(symbol, buyer, delivered)
        if report_id is not None:
            body["report_id"] = report_id
        self._send(provider, "POST", "/v1/deliveries/metering", json=body)

    @precondition(lambda self: self.clock.now_ms >= MIDNIGHT)
    @rule(
        buyer=buyers,
        symbol=symbols,
        provider=providers,
        dispute_id=maybe_name,
        data=st.data(),
        known=st.sampled_from((True, True, True, False)),
    )
    def dispute(self, buyer: str, symbol: str, provider: str, dispute_id: str | None,
                data: st.DataObject, known: bool) -> None:  # fmt: skip
        """A holder disputes a provider's metering: an obligation it is owed now, or any pair
        (from the first delivery hour on)."""
        owed = [key for key in self._metering_open() if ROLES[key[2]] is Role.BUYER]
        chosen = _pick(owed or [None], data)
        if known and chosen is not None:
            symbol, provider, buyer = chosen
        body: dict[str, Any] = {"symbol": symbol, "provider_id": provider, "reason": "no job"}
        if dispute_id is not None:
            body["dispute_id"] = dispute_id
        self._send(buyer, "POST", "/v1/deliveries/disputes", json=body)

    @precondition(lambda self: bool(self._metering_open()))
    @rule(
        data=st.data(),
        delivered=st.integers(0, 4),
        act=st.sampled_from(("meter", "meter", "dispute")),
        report_id=maybe_name,
    )
    def deliver(self, data: st.DataObject, delivered: int, act: str,
                report_id: str | None) -> None:  # fmt: skip
        """Meter, or dispute, an obligation stored and open now, which the exchange must list
        (the rules above also try pairs that owe nothing)."""
        symbol, provider, buyer = _pick(self._metering_open(), data)
        listed = self._operator("GET", "/v1/deliveries", params={"account_id": provider})
        assert listed.status == 200, listed
        assert any(
            (row["symbol"], row["provider_id"], row["buyer_id"]) == (symbol, provider, buyer)
            for row in listed.body
        ), f"the obligation of {provider} to {buyer} in {symbol} is not listed: {listed}"
        if act == "dispute" and ROLES[buyer] is Role.BUYER:
            body: dict[str, Any] = {"symbol": symbol, "provider_id": provider, "reason": "late"}
            self._send(buyer, "POST", "/v1/deliveries/disputes", json=body)
            return
        body = _metering(symbol, buyer, delivered)
        if report_id is not None:
            body["report_id"] = report_id
        self._send(provider, "POST", "/v1/deliveries/metering", json=body)

    @precondition(lambda self: self.clock.now_ms >= MIDNIGHT)
    @rule(
        symbol=symbols,
        provider=providers,
        buyer=traders,
        delivered=st.integers(0, 3),
        data=st.data(),
        known=st.booleans(),
    )
    def resolve(self, symbol: str, provider: str, buyer: str, delivered: int,
                data: st.DataObject, known: bool) -> None:  # fmt: skip
        """An operator settles a disputed delivery, or tries one that may not be disputed."""
        disputed = _pick(sorted(self.disputed) or [None], data)
        if known and disputed is not None:
            symbol, provider, buyer = disputed
        body = {
            "symbol": symbol,
            "provider_id": provider,
            "buyer_id": buyer,
            "delivered": delivered,
            "reason": "node logs",
        }
        self._operator("POST", "/v1/admin/deliveries/resolve", json=body)

    @precondition(lambda self: bool(self._recallable()))
    @rule(
        provider=providers,
        symbol=st.sampled_from((INT0, INT1, GZ0)),
        quantity=st.integers(1, 3),
        recall_id=maybe_name,
        data=st.data(),
        known=st.sampled_from((True, True, False)),
    )
    def recall(self, provider: str, symbol: str, quantity: int, recall_id: str | None,
               data: st.DataObject, known: bool) -> None:  # fmt: skip
        """A provider recalls sold units of a recallable deposit: mostly a sale it made, at
        times another provider's or firm capacity (refused). Available while a sale the
        model knows of may still be recalled."""
        sale = _pick(self._recallable(), data)
        if known:
            provider, symbol = sale
            quantity = min(quantity, self.interruptible_sales[sale])
        body: dict[str, Any] = {"symbol": symbol, "quantity": quantity, "reason": "maintenance"}
        if recall_id is not None:
            body["recall_id"] = recall_id
        self._send(provider, "POST", "/v1/deliveries/recalls", json=body)

    def _recallable(self) -> list[tuple[str, str]]:
        """(provider, contract) of interruptible sales still before their recall notice."""
        notice = SETTINGS["CX_RECALL_NOTICE_MINUTES"] * MINUTE
        now = self.clock.now_ms
        return sorted(sale for sale in self.interruptible_sales
                      if now <= _delivery_start(sale[1]) - notice)  # fmt: skip

    # -- stalls ------------------------------------------------------------------------------

    @rule(account=providers, stall_id=names, hours=st.sampled_from(((0, 1), (0, 1, 2, 3))))
    def put_stall(self, account: str, stall_id: str, hours: tuple[int, ...]) -> None:
        """Set up or change a stall; stall ids are the provider's own."""
        body = {
            "resource_class": "H100-80G-INT",
            "region": "GZ",
            "hours": list(hours),
            "sla_tier": "standard",
            "max_interruptions": 1,
            "network": "roce",
            "description": "model stall",
        }
        answer = self._send(account, "PUT", f"/v1/stalls/{stall_id}", json=body)
        if answer is None:
            return
        existed = self.model.stalls.get((account, stall_id), False)
        assert answer.status == (200 if existed else 201), (account, stall_id, answer)
        self.model.stalls[(account, stall_id)] = True
        self.edge_seen["stall set up"] += 1

    @rule(account=providers, stall_id=names, data=st.data(), known=st.booleans())
    def delete_stall(self, account: str, stall_id: str, data: st.DataObject, known: bool) -> None:
        """Take a stall down: one set up (if any) or any provider's name for one."""
        up = _pick(sorted(k for k, set_up in self.model.stalls.items() if set_up) or [None], data)
        if known and up is not None:
            account, stall_id = up
        answer = self._send(account, "DELETE", f"/v1/stalls/{stall_id}")
        if answer is None:
            return
        existed = self.model.stalls.get((account, stall_id), False)
        assert answer.status == (204 if existed else 404), (account, stall_id, answer)
        self.model.stalls[(account, stall_id)] = False
        if existed:
            self.edge_seen["stall taken down"] += 1

    # -- reading -----------------------------------------------------------------------------

    @rule(
        account=st.sampled_from((*TRADERS, ADMIN)),
        what=st.sampled_from(
            (
                "/v1/contracts",
                "/v1/contracts/{symbol}",
                "/v1/contracts/{symbol}/book",
                "/v1/contracts/{symbol}/trades",
                "/v1/contracts/{symbol}/candles",
                "/v1/contracts/{symbol}/stats",
                "/v1/fills",
                "/v1/obligations",
                "/v1/deliveries",
                "/v1/accounts/{account}/invoices",
                "/v1/programmes/{name}/report",
                "/v1/stalls",
                "/v1/me",
            )
        ),
        symbol=symbols,
        name=names,
    )
    def browse(self, account: str, what: str, symbol: str, name: str) -> None:
        """Read a view (every answer must be documented)."""
        self._send(account, "GET", what.format(symbol=symbol, account=account, name=name))

    # -- the clock ---------------------------------------------------------------------------

    @precondition(lambda self: self.clock.now_ms < END)
    @rule(step=st.sampled_from((MINUTE, 10 * MINUTE, 30 * MINUTE, HOUR)))
    def advance_clock(self, step: int) -> None:
        """Move the log clock: expiries, gate closures, deliveries and windows fall due."""
        self._move_clock(min(self.clock.now_ms + step, END))

    @precondition(lambda self: self.clock.now_ms < END)
    @rule(data=st.data())
    def advance_to_milestone(self, data: st.DataObject) -> None:
        """Jump to just past the next gate closure, delivery hour or end of a window."""
        window = SETTINGS["CX_DELIVERY_WINDOW_MINUTES"] * MINUTE
        milestones = sorted(
            m + 1
            for hour in (MIDNIGHT, MIDNIGHT + HOUR)
            for m in (hour - HOUR, hour, hour + HOUR + window)
            if m >= self.clock.now_ms
        )
        if milestones:
            self._move_clock(_pick(milestones[:2], data))

    def _move_clock(self, to_ms: int) -> None:
        if to_ms <= self.clock.now_ms:
            return
        self.clock.now_ms = to_ms
        assert self.live is not None
        self.live.run(tick_at(self.live.exchange.runtime, to_ms))

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    @precondition(lambda self: self.http is not None)
    def system_holds(self) -> None:
        """(b)-(g) of the module docstring, after every step."""
        assert self.live is not None
        type(self).steps_run += 1
        runtime = self.live.exchange.runtime
        self.live.run(_settled(runtime), SETTLE_TIMEOUT_S + 30)
        health = self._send(None, "GET", "/v1/health")
        assert health is not None
        assert health.status == 200, health
        assert health.body["status"] == "ok", health
        self._read_events()
        self._resolve_pending()
        self._check_stored()
        self._check_cascades()
        self._check_conservation()
        self._check_balances()
        found = self.live.run(_audits(runtime))
        assert not found, "\n".join(found)
        # Settled means every auction's result is in: none holds a book out of trading.
        stuck = [s for s, state in self.states.items() if state == ("pre_open", "intraday_auction")]
        assert not stuck, f"books still in an intraday auction once everything settled: {stuck}"

    def _read_events(self) -> None:
        assert self.live is not None
        fresh = self.live.run(_events_after(self.live.exchange.runtime, self.seen_position))
        for position, kind, data in fresh:
            self.seen_position = position
            self.events_seen[kind] += 1
            if kind == "CapacityRecalled":
                self.recalled[data["symbol"]] += data["quantity"]
            if kind == "ContractStateChanged":
                self.states[data["symbol"]] = (data["state"], data["reason"])
            if kind == "StripCascaded":
                self._cascade(data)
            if kind == "MarketControlRejected":
                self.control_refusals.add((data["symbol"], data["action"], data["reason"]))
            self._follow_resales(kind, data)
            self._follow_deliveries(kind, data)
            account = str(data.get("account_id", ""))
            for id_field in (
                "deposit_id",
                "withdrawal_id",
                "programme_id",
                "application_id",
                "pool_id",
                "uscc",
            ):
                if id_field in data:
                    # Ids are scoped by the exchange (`SCOPE/ID`): index them by what was sent.
                    stored_id = _unscoped(str(data[id_field]))
                    self.events.add((kind, id_field, stored_id, account))
                    self.events.add((kind, id_field, stored_id, ""))

    def _cascade(self, data: dict[str, Any]) -> None:
        """A strip became positions in its hours: what was deposited of it is now deposited
        in every hour (as the audit carries it), and its holders' positions must have moved."""
        moved = self.model.capacity_in.pop(data["symbol"], 0)
        for hour in data["hours"]:
            self.model.capacity_in[hour] += moved
            for holder in data["holders"]:
                self.bought[(holder["account_id"], hour)] += holder["units"]
        self.cascades.append(data)
        self.cascaded.add(data["symbol"])
        if data["holders"]:
            self.edge_seen["strip cascaded with holders"] += 1

    def _follow_resales(self, kind: str, data: dict[str, Any]) -> None:
        """Note what each account bought and resold, and the resales made smaller."""
        if kind == "OrderAccepted" and data.get("backing") == "entitlement":
            self.resales.add(data["order_id"])
        elif kind in ("OrderAmended", "OrderReduced") and data["order_id"] in self.resales:
            self.events_seen[f"{kind} of a resale"] += 1
        elif kind == "TradeExecuted":
            self.bought[(data["buyer_id"], data["symbol"])] += data["quantity"]
            if data["sell_order_id"] in self.resales:
                self.resold[(data["seller_id"], data["symbol"])] += data["quantity"]

    def _check_cascades(self) -> None:
        """Each holder of a strip that cascaded since the last step holds nothing of the strip
        and at least its units in its first and last hour (the nights and the week share
        hours, so a second cascade may add to them)."""
        for data in self.cascades:
            strip, hours = data["symbol"], data["hours"]
            for holder in data["holders"]:
                answer = self._operator("GET", f"/v1/accounts/{holder['account_id']}")
                assert answer.status == 200, answer
                held = {row["symbol"]: row["quantity"] for row in answer.body["positions"]}
                assert held.get(strip, 0) == 0, f"{strip} still held after its cascade: {held}"
                for hour in (hours[0], hours[-1]):
                    assert held.get(hour, 0) >= holder["units"], (
                        f"{holder} of {strip} did not move into {hour}: {held}"
                    )
        self.cascades.clear()

    def _follow_deliveries(self, kind: str, data: dict[str, Any]) -> None:
        """Note the sales, obligations and disputes the delivery rules can act on."""
        if kind == "TradeExecuted" and data["symbol"] in (INT0, INT1):
            if data["seller_id"] in PROVIDERS:
                self.interruptible_sales[(data["seller_id"], data["symbol"])] += data["quantity"]
            return
        if kind not in ("DeliveryObligation", "DeliveryDisputed", "DeliverySettled"):
            return
        key = (data["symbol"], data["provider_id"], data["buyer_id"])
        if kind == "DeliveryObligation":
            self.deliveries[key] = data["window_ends"]
        elif kind == "DeliveryDisputed":
            self.disputed.add(key)
        elif data.get("recall_id") is None:
            self.deliveries.pop(key, None)
            self.disputed.discard(key)

    def _metering_open(self) -> list[tuple[str, str, str]]:
        """The open obligations that may still be metered or disputed now."""
        now = self.clock.now_ms
        return sorted(k for k, ends in self.deliveries.items()
                      if now <= ends and k not in self.disputed)  # fmt: skip

    def _resolve_pending(self) -> None:
        still = []
        for stored_as, id_field, stored_id, account, symbol, amount in self.model.pending:
            if (stored_as, id_field, stored_id, account) in self.events:
                self._count(stored_as, symbol, account, amount)
            else:
                still.append((stored_as, id_field, stored_id, account, symbol, amount))
        self.model.pending = still

    def _check_stored(self) -> None:
        for kind, id_field, stored_id, account in self.model.stored:
            entry = (kind, id_field, _unscoped(stored_id), account)
            assert entry in self.events, f"a 201 that is not in the store: {entry}"
        for account in TRADERS:
            rows = self._operator("GET", "/v1/orders", params={"account_id": account,
                                                               "limit": 1000})  # fmt: skip
            assert rows.status == 200, rows
            listed = {row["order_id"]: row for row in rows.body}
            for order_id, owner in self.model.orders.items():
                if owner != account:
                    continue
                row = listed.get(order_id)
                assert row is not None, f"{account}'s accepted order {order_id} is not stored"
                assert row["status"] != "rejected", f"an accepted order is stored rejected: {row}"
        for need_id, account in self.model.needs.items():
            answer = self._send(account, "GET", f"/v1/needs/{need_id}")
            assert answer is None or answer.status == 200, (need_id, answer)

    def _check_conservation(self) -> None:
        """Cash and capacity to the fen, through the API, against the model."""
        assert self.live is not None
        ledger = self.live.run(_ledger_balances(self.live.exchange.runtime))
        cash = 0
        capacity: Counter[str] = Counter()
        for account in TRADERS:
            answer = self._operator("GET", f"/v1/accounts/{account}")
            if answer.status == 404:
                continue
            assert answer.status == 200, answer
            settled = [("cash", answer.body["cash"]), *(("capacity", row) for row in
                       answer.body["capacity"]), *(("position", row) for row in
                       answer.body["positions"])]  # fmt: skip
            below = [(what, row) for what, row in settled
                     if min(v for v in row.values() if isinstance(v, int)) < 0]  # fmt: skip
            assert not below, f"{account} shows balances below zero: {below}"
            cash += answer.body["cash"]["available"] + answer.body["cash"]["held"]
            for row in answer.body["capacity"]:
                capacity[row["symbol"]] += row["available"] + row["held"]
            for row in answer.body["positions"]:
                capacity[row["symbol"]] += row["quantity"]
        paid_in = sum(self.model.cash_in.values()) + sum(
            amount for kind, *_, amount in self.model.pending if kind == "FundsDeposited"
        )
        if not any(p[0].startswith("Funds") for p in self.model.pending):
            assert -ledger.get("external", 0) == paid_in, (
                f"the exchange holds {-ledger.get('external', 0)} fen from outside, the model "
                f"paid in {paid_in} net"
            )
        assert cash + sum(ledger.values()) == 0, (
            f"participants' cash {cash} and the exchange's accounts {ledger} do not balance"
        )
        if any(not p[0].startswith("Funds") for p in self.model.pending):
            return
        for provider in PROVIDERS:
            answer = self._operator("GET", "/v1/deliveries", params={"account_id": provider})
            for row in answer.body:
                if row["provider_id"] == provider and row["status"] == "settled":
                    capacity[row["symbol"]] += row["quantity"]
        capacity.update(self.recalled)
        expected = Counter({s: q for s, q in self.model.capacity_in.items() if q})
        assert +capacity == expected, (
            f"capacity held, bought and delivered {dict(capacity)} != deposited net of "
            f"withdrawn {dict(expected)}"
        )

    def _check_balances(self) -> None:
        """No balance of any kind below zero, and what a holder may resell within what it
        bought less what it resold: in settlement's accounts (the ledger) and in each risk
        partition's (which decide what may be sold, bought and withdrawn)."""
        assert self.live is not None
        runtime = self.live.exchange.runtime
        found = self.live.run(_balances_amiss(runtime, self.bought, self.resold))
        assert not found, "\n".join(found)


def _next_message(stream: ClientConnection, *kinds: str, timeout_s: float = 10.0) -> Any:
    """The next message of one of these types on a WebSocket (others are skipped)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {kinds} message within {timeout_s}s"
        message = json.loads(stream.recv(timeout=left))
        if message.get("type") in kinds:
            return message


def _refused_as_cascaded(answer: Answer | None) -> None:
    """An order or deposit for a cascaded strip: refused, saying it cascaded into its hours
    (the API edge knows the contract is retired, `unknown_contract`; the risk stage,
    `contract_closed`)."""
    if answer is None:
        return
    assert answer.problem in ("unknown_contract", "contract_closed"), answer
    assert "cascaded" in answer.body["detail"], answer


def _delivery_start(symbol: str) -> int:
    """When a contract's delivery hour starts (log time, ms)."""
    return to_utc_ms(parse_symbol(symbol).delivery_start)


def _delivery_end(symbol: str) -> int:
    """When a contract's (last) delivery hour ends (log time, ms)."""
    return to_utc_ms(parse_symbol(symbol).delivery_end)


def _metering(symbol: str, buyer: str, delivered: int) -> dict[str, Any]:
    """A metering report's body: an hour's units delivered, or a bundle's tokens used (0.7
    million a unit drawn: some reports go beyond what the holder bought)."""
    if symbol == BUNDLE:
        return {"symbol": symbol, "buyer_id": buyer, "tokens": delivered * 700_000}
    return {"symbol": symbol, "buyer_id": buyer, "delivered": delivered}


def _unscoped(identifier: str) -> str:
    """An id as its sender chose it, without the scope the exchange may put before it."""
    return identifier.rsplit("/", 1)[-1]


def _pick(choices: list[T], data: st.DataObject) -> T:
    """One of `choices` (not empty), drawn the same way whatever they are: what the model
    knows comes from the exchange's answers, so a draw must not depend on it (Hypothesis
    replays a choice sequence and needs the same draws)."""
    return choices[data.draw(st.integers(0, 1_000)) % len(choices)]


async def tick_at(runtime: ExchangeRuntime, at_ms: int) -> None:
    """Let every market partition see the log clock's new time."""
    for symbol in tick_symbols(runtime, at_ms):
        await runtime.submit(ControlMarket(operator_id=TICKER_ID, action="tick", symbol=symbol))


async def _settled(runtime: ExchangeRuntime) -> None:
    """Wait until the pipeline has consumed everything (twice, for work in flight)."""
    deadline = asyncio.get_running_loop().time() + SETTLE_TIMEOUT_S
    calm = 0
    while calm < 2:
        if await quiescent(runtime):
            calm += 1
        else:
            calm = 0
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the pipeline did not settle within {SETTLE_TIMEOUT_S}s")
        await asyncio.sleep(0.05)


async def _events_after(runtime: ExchangeRuntime, position: int) -> list[tuple[int, str, Any]]:
    found = []
    while batch := await runtime.store.read_all(position, 1000):
        found += [(e.position, e.type, e.data) for e in batch]
        position = batch[-1].position
    return found


NEVER_BELOW_ZERO = ("bond:", "escrow:", "reserved:", "grant:")
"""The ledger's accounts of what is put aside (sellers' delivery bonds, buyers' payments until
delivery, vouchers reserved and granted), which never fall below zero; the others stand for
where money came from or went (`external`, programmes' pledges, rebates paid), below zero by
design, or are participants' cash and holds, checked as balances."""


async def _balances_amiss(
    runtime: ExchangeRuntime, bought: Counter[tuple[str, str]], resold: Counter[tuple[str, str]]
) -> list[str]:
    """Balances below zero, and entitlements resellable beyond what was bought less resold
    (`bought` counts units received in a cascade too), in settlement's and risk's accounts."""
    settlement = runtime.running["settlement"]
    assert isinstance(settlement, SettlementRunner)
    kept = [("settlement", settlement.projection.state.accounts)]
    risk = runtime.running.get("risk")
    if isinstance(risk, RiskRunner):
        kept += [(f"risk partition {p}", partition.stage.accounts)
                 for p, partition in sorted(risk.instances.items())]  # fmt: skip
    found = []
    for where, accounts in kept:
        below = [
            f"cash of {a}: {b}"
            for a, b in sorted(accounts.cash.items())
            if min(b.available, b.held) < 0
        ]
        below += [
            f"capacity of {a} in {s}: {b}"
            for (a, s), b in sorted(accounts.capacity.items())
            if min(b.available, b.held) < 0
        ]
        for name, units in (
            ("position", accounts.positions),
            ("held for resale", accounts.resale_held),
            ("drawn down of a bundle", accounts.bundle_drawn_units),
        ):
            below += [f"{name} of {a} in {s}: {q}" for (a, s), q in sorted(units.items()) if q < 0]
        below += [
            f"ledger account {name}: {amount}"
            for name, amount in sorted(accounts.ledger.items())
            if name.startswith(NEVER_BELOW_ZERO) and amount < 0
        ]
        below += [
            f"{a} may resell {may} units of {s}, having bought {bought[(a, s)]} and resold "
            f"{resold[(a, s)]}"
            for a, s in sorted(accounts.positions)
            if (may := accounts.available_entitlement(a, s)) > bought[(a, s)] - resold[(a, s)]
        ]
        found += [f"{where}: {line}" for line in below]
    return found


async def _ledger_balances(runtime: ExchangeRuntime) -> dict[str, int]:
    async with runtime.store.engine.connect() as connection:
        rows = await connection.execute(tables.ledger_balances.select())
        return {row.account: row.balance for row in rows}


async def _audits(runtime: ExchangeRuntime) -> list[str]:
    """What `audit`, `audit_ledger` and a replay against the live projection find."""
    catalogue = runtime.catalogue
    partitions = runtime.topics.market_partitions
    found = [str(d) for d in (await audit(runtime.store, catalogue, partitions)).discrepancies]
    ledger = await audit_ledger(runtime.store, catalogue, partitions)
    found += [f"ledger: {d}" for d in ledger.discrepancies]
    settlement = runtime.running["settlement"]
    assert isinstance(settlement, SettlementRunner)
    live = settlement.projection.state
    replayed = (
        await replay(runtime.store, catalogue, until_position=live.position, partitions=partitions)
    ).state
    if replayed.state_hash() != live.state_hash():
        found.append(
            f"replay to position {live.position} gives state hash {replayed.state_hash()[:16]}, "
            f"the live settlement projection {live.state_hash()[:16]}"
        )
    # Settled, the replica's delivery desk of each partition is live matching's.
    matching = runtime.running.get("matching")
    if isinstance(matching, MatchingRunner):
        for partition, instance in sorted(matching.instances.items()):
            desk = instance.stage.delivery.snapshot()
            if replayed.markets[partition].delivery.snapshot() != desk:
                found.append(f"the replayed delivery desk of partition {partition} is not live's")
    return found


async def _after_stop(settings: Settings, clock_ms: Callable[[], int]) -> None:
    """At the end of an example: the stages equal a replay of their topics, and the real
    `cx audit` and `cx audit ledger` find nothing."""
    # On the exchange's clock: Kafka topics of a log with a clock keep the producer's time.
    runtime = await ExchangeRuntime.open(settings, clock_ms=clock_ms)
    try:
        await assert_stages_match_replay(runtime, settings.command_partitions)
    finally:
        await runtime.close()
    outside = {
        k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")
    }
    environment = {**outside, **_environment(settings)}
    for command in (["audit"], ["audit", "ledger"]):
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "cx"),
            *command,
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        assert process.returncode == 0, f"cx {' '.join(command)}: {output.decode()[-3000:]}"


def _environment(settings: Settings) -> dict[str, str]:
    """The settings as the CLI reads them from the environment."""
    values = {
        "CX_DATA_DIR": str(settings.data_dir),
        "CX_TOPIC_PREFIX": settings.topic_prefix,
        "CX_COMMAND_PARTITIONS": str(settings.command_partitions),
        "CX_MARKET_PARTITIONS": str(settings.market_partitions),
        "CX_PRE_OPEN": "true" if settings.pre_open else "false",
        "CX_DAY_AHEAD_GATE": settings.day_ahead_gate,
        "CX_INTRADAY_AUCTION_HOURS": str(settings.intraday_auction_hours),
        **{name: str(value) for name, value in SETTINGS.items()},
    }
    if settings.database_url:
        values["DATABASE_URL"] = settings.database_url
    if settings.kafka_bootstrap_servers:
        values["KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    return values
