"""A fixed tour of the whole-system model: every command family once, in an order that lets
each reach its outcome, with the model's invariants checked after every step.

The random examples (`run.run_model`) mix the rules; which families they reach depends on the
exchange's answers and on timing, so they cannot promise to reach them all. The tour can: each
step is a rule of `ExchangeMachine` called with arguments chosen to succeed (an order that
crosses, a programme in the region traded, an obligation open to meter), and the tour fails
naming any family it did not reach. Draws the rules make (which open order, which obligation)
are the simplest each strategy gives (the first open order, the first obligation), the same
every run. The tour's exchange runs the day-ahead and hourly intraday auctions: the steps trade
continuously before the first intraday auction, a need waits for it, and the clock's last steps
run it and those after.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from hypothesis import HealthCheck, find, settings
from hypothesis import strategies as st

from cx.settings import Settings
from tests.system.live import Prepare
from tests.system.machine import (
    BUNDLE,
    CASCADED,
    CPU0,
    END,
    GZ0,
    GZ1,
    INT0,
    INT1,
    INT2,
    WEEK,
    YRD0,
    ExchangeMachine,
)
from tests.system.run import REACHED, REACHED_AT_EDGE, Ran


def tour(base: Settings, prepare: Prepare | None = None) -> Ran:
    """Run the tour on a fresh exchange of `base`; what it reached (it fails if not all)."""
    ExchangeMachine.base_settings = base
    ExchangeMachine.prepare = prepare
    ExchangeMachine.examples_run = 0
    ExchangeMachine.steps_run = 0
    ExchangeMachine.statuses.clear()
    ExchangeMachine.events_seen.clear()
    ExchangeMachine.edge_seen.clear()

    started = time.monotonic()
    machine = ExchangeMachine()
    try:
        machine.start(pre_open=False, auctions=True)
        for step in _steps(machine, cast(st.DataObject, Simplest())):
            step()
            machine.system_holds()
    finally:
        machine.teardown()
    ran = Ran(
        ExchangeMachine.examples_run,
        ExchangeMachine.steps_run,
        time.monotonic() - started,
        dict(ExchangeMachine.statuses),
        dict(ExchangeMachine.events_seen),
        dict(ExchangeMachine.edge_seen),
    )
    missing = ran.never_reached(REACHED, REACHED_AT_EDGE)
    assert not missing, f"the tour never reached {', '.join(missing)}: {ran}"
    return ran


class Simplest:
    """Stands in for the rules' `st.DataObject`: each draw is the strategy's simplest value."""

    def draw(self, strategy: st.SearchStrategy[Any]) -> Any:
        return find(
            strategy,
            lambda _: True,
            settings=settings(database=None, derandomize=True,
                              suppress_health_check=list(HealthCheck)),
        )  # fmt: skip


def _steps(m: ExchangeMachine, data: st.DataObject) -> list[Callable[[], None]]:
    """The tour: trading while the first hours' gates are open, then the clock through their
    delivery hours and windows to the end."""

    def when(ready: Callable[[], bool], step: Callable[[], None], what: str) -> Callable[[], None]:
        def run() -> None:
            assert ready(), f"the tour could not {what}: the model knows of nothing to act on"
            step()

        return run

    return [
        lambda: m.cross([("p1", "b1", GZ0, 2, 2, 2), ("p2", "b2", YRD0, 1, 1, 2)]),
        # A day's token bundle bought in its period is owed at once and drawn down by metering
        # (the only obligation before midnight); its unused rest is refunded at 00:30.
        lambda: m.cross([("p1", "b1", BUNDLE, 1, 1, 3)]),
        when(
            lambda: bool(m._metering_open()),
            lambda: m.deliver(data, 2, "meter", None),
            "draw a bundle down",
        ),
        lambda: m.call_auction(GZ1, [("p2", False, 0, 2), ("b2", True, 4, 2)], False),
        lambda: m.place_order("b1", YRD0, True, 0, 3, {}, None, None),
        lambda: m.amend_down("b1", data, 1),
        lambda: m.amend("b1", data, None, 2),
        lambda: m.self_cross("p1", data, 2, 3, "decrement"),
        # Resales made smaller: amended down, then reduced by the holder's own bid (its
        # rest resold in the next step); reduced as the incoming order, then cancelled.
        lambda: m.shrink_a_resale(
            "b1", "p1", data, 3, 3, "amend_and_decrement", 1, False, None, False
        ),
        lambda: m.shrink_a_resale(
            "b2", "p2", data, 3, 3, "decrement_incoming", 1, True, None, True
        ),
        lambda: m.place_block("b1", (GZ0, GZ1), True, 2, 1, data, True, None),
        # A need for the hours after midnight waits for the 23:00 intraday auction.
        lambda: m.place_group("b2", [(INT1, INT2)], 2, True, 1, "a"),
        lambda: m.state_need("b2", None, None, 1, 1, True, 20_000, None, True, data),
        lambda: m.state_need("b1", None, None, 3, 2, True, 2_000, None, True, data),
        lambda: m.withdraw_need("b2", data, "standing"),
        lambda: m.withdraw_cash("b2", 100, None),
        lambda: m.withdraw_capacity("p2", CPU0, 1, None),
        lambda: m.set_limits("b2", 50, None),
        lambda: m.set_limits("b2", None, None),
        lambda: m.grant_concession(["b1"], "a", 5_000, 1_000, data),
        lambda: m.set_voucher_policy(3_000, ()),
        lambda: m.create_programme("a", 100_000, ("GZ",)),
        lambda: m.fund_discount_pool("a", "a", 1_000, 10_000, data),
        lambda: m.register_enterprise("b1", "own", "hangzhou", "sme"),
        lambda: m.apply_for_grant("a", "b1", 50_000, "a", data, True, True, "ask"),
        when(
            lambda: bool(m.applications),
            lambda: m._decide(m.applications[0], "answer", 0, False),
            "answer the administrator's question",
        ),
        lambda: m._decide(m.applications[0], "approve", 50_000, False),
        lambda: m.register_enterprise("b2", "own", "hangzhou", "sme"),
        lambda: m.apply_for_grant("a", "b2", 1_000, "b", data, True, True, "reject"),
        lambda: m.place_order("b1", GZ0, True, 4, 1, {"voucher": "a"}, None, None),
        lambda: m.buy_block_with_voucher("b1", data, 2, 1, "p2", False, True),
        lambda: m.state_need("b1", None, None, 1, 1, False, 20_000, "a", True, data),
        lambda: m.sell_block_bonded("p2", "b2", data, 1, 1, True),
        lambda: m.put_stall("p1", "a", (0, 1)),
        lambda: m.delete_stall("p1", "a", data, True),
        # A week of cards deposited, sold, bought and partly resold; December's cascaded month
        # refused; a need only the week serves; then the week delisted, so it cascades.
        lambda: m.trade_strip("p1", "b1", "b2", WEEK, 2, 2, 2, True, 1),
        lambda: m.trade_strip("p2", "b2", "p1", CASCADED, 0, 0, 1, True, 0),
        lambda: m.state_strip_need("b2", None, 1, 30, False, False, 40_000),
        lambda: m.cascade_strip(data, "b1", True),
        lambda: m.delist(data, "b1", True, True),
        when(
            lambda: bool(m._recallable()),
            lambda: m.recall("p1", INT0, 1, None, data, True),
            "recall a sale",
        ),
        lambda: m.sell_for_delivery("p1", "b1", data, 2, 2, True),
        when(
            lambda: bool(m._metering_open()),
            lambda: m.deliver(data, 1, "meter", None),
            "meter a delivery",
        ),
        when(
            lambda: bool(m._metering_open()),
            lambda: m.deliver(data, 0, "dispute", None),
            "dispute a delivery",
        ),
        when(
            lambda: bool(m.disputed),
            lambda: m.resolve(GZ0, "p1", "b1", 0, data, True),
            "resolve a dispute",
        ),
        *[lambda: m.advance_clock(60 * 60_000) for _ in range(5)],
        lambda: m._move_clock(END),
    ]
