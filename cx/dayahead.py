"""`cx day-ahead show DATE` and `cx day-ahead results DATE`: a day's day-ahead auction and what
the key's account (or, for an operator, `--account`) got in it, as tables through the API.
Chinese first, English second; prices in 元, units in 卡时 (card-hours) or 核时 (core-hours),
times China Standard Time."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from cx_client import ExchangeClient, ProblemError
from cx_client.models import DayAheadAuction, DayAheadResults

from cx.settings import Settings
from exchange.domain.catalogue import UNIT_CORE_HOUR, SymbolError, parse_symbol
from settlement import statements

STATUS = {
    "collecting": "收集申报 collecting",
    "clearing": "出清中 clearing",
    "cleared": "已出清 cleared",
    "not_held": "未举行 not held",
}
ORDER_STATUS = {
    "pending": "待出清 pending",
    "accepted": "中标 accepted",
    "rejected": "未中标 rejected",
    "resting": "未成交, 继续挂单 unfilled, resting in the book",
}
REASONS = {
    "out_of_the_money": "价格未达 out of the money",
    "at_the_money": "边际未分到 at the money",
    "paradoxically_rejected": "悖论拒绝 paradoxically rejected",
    "alternative_accepted": "同组他选中标 alternative accepted",
    "no_counterparty": "无对手方 no counterparty",
    "no_clearing_price": "无出清价 no clearing price",
}


def add_parser(commands: Any) -> None:
    """The `day-ahead` command and its subcommands."""
    day_ahead = commands.add_parser(
        "day-ahead", help="日前市场: a day's day-ahead auction and your results in it (API)"
    )
    day_ahead.add_argument("--url", help="the API (default: this node's CX_API_HOST:PORT)")
    day_ahead.add_argument("--key", help="an API key (default: $CX_API_KEY)")
    day_ahead.add_argument("--json", action="store_true", help="print the API's JSON instead")
    steps = day_ahead.add_subparsers(dest="day_ahead_command", required=True)
    show = steps.add_parser("show", help="出清价格 status, gate and clearing prices of a day")
    show.add_argument("date", help="the delivery day, YYYY-MM-DD (CST)")
    results = steps.add_parser("results", help="中标结果 what your orders got in a day's auction")
    results.add_argument("date", help="the delivery day, YYYY-MM-DD (CST)")
    results.add_argument("--account", help="an account (operators only)")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Read the auction (or the account's results) and print it; a refusal goes to stderr."""
    url = args.url or f"http://{settings.api_host}:{settings.api_port}"
    async with ExchangeClient(url, args.key or os.environ.get("CX_API_KEY")) as client:
        try:
            if args.day_ahead_command == "show":
                answer: DayAheadAuction | DayAheadResults = await client.day_ahead_auction(
                    args.date
                )
            else:
                answer = await client.day_ahead_results(args.date, args.account)
        except ProblemError as problem:
            print(f"cx day-ahead: {problem.code}: {problem.detail}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(answer.model_dump(mode="json"), ensure_ascii=False, indent=2))
    elif isinstance(answer, DayAheadAuction):
        print_auction(answer)
    else:
        print_results(answer)
    return 0


def yuan(fen: int | None) -> str:
    """Fen as 元 with two decimals ("-" for none)."""
    return "-" if fen is None else statements.yuan(fen)


def unit_of(symbol: str) -> str:
    """The unit a contract trades in: 卡时 (card-hours) or 核时 (core-hours)."""
    try:
        spec = parse_symbol(symbol)
    except SymbolError:
        return "单位 units"
    return "核时" if spec.resource_class.unit == UNIT_CORE_HOUR else "卡时"


def title(name: str) -> str:
    """An auction as a person names it: a day's (`YYYY-MM-DD`) is the day-ahead auction, one
    at a time of day (`YYYY-MM-DDTHH:MM`, CST) an intraday auction."""
    if "T" in name:
        return f"日内集合竞价 intraday auction {name} (CST)"
    return f"日前市场 day-ahead auction {name}"


def hours_of(symbols: list[str]) -> str:
    """The delivery date and hours of an order's contracts, e.g. `12-06 02:00-04:00`."""
    first, last = symbols[0].rsplit(".", 1)[1], symbols[-1].rsplit(".", 1)[1]
    return f"{first[4:6]}-{first[6:8]} {first[-2:]}:00-{int(last[-2:]) + 1:02d}:00"


def print_auction(auction: DayAheadAuction) -> None:
    """A day's auction: status and gate, the solver's summary, then one row per region, hour
    and class with the clearing price (元 per unit) and volume."""
    print(f"{title(auction.date)}: {STATUS[auction.status]}")
    print(f"申报截止 gate: {auction.gate} (CST)")
    result = auction.result
    if result is None:
        print("尚无出清结果 no result yet")
        return
    print(
        f"社会福利 welfare {yuan(result.welfare)} 元, 上界 bound {yuan(result.bound)} 元, "
        f"差距 gap {result.gap_ppm} ppm ({result.solver_status}); "
        f"申报 orders {result.orders}, 中标 accepted {result.accepted}, "
        f"求解 solved in {result.solve_ms} ms at {result.cleared_at}"
    )
    print(
        f"{'区域 region':<12} {'时段 hour':<10} {'品种 class':<12} {'出清价 元':>12} {'成交量':>10}"
    )
    for region in auction.regions:
        for hour in region.hours:
            for contract in hour.contracts:
                volume = f"{contract.volume} {unit_of(contract.symbol)}"
                print(
                    f"{region.region:<12} {hour.hour:<10} {contract.resource_class:<12} "
                    f"{yuan(contract.price):>12} {volume:>10}"
                )


def print_results(results: DayAheadResults) -> None:
    """An account's orders in a day's auction: one row each, its fills below it."""
    print(f"{title(results.date)}, 账户 account {results.account_id}: {STATUS[results.status]}")
    if not results.orders:
        if results.status == "collecting":
            # Bids are gathered from every partition at the gate; until then they are orders.
            print("申报截止后显示各单结果 each order's result shows after the gate")
        else:
            print("没有申报 no orders in this auction")
        return
    print(
        f"{'订单 order':<44} {'方向 side':<8} {'时段 hours':<20} {'限价 元':>10} "
        f"{'数量/时':>8} {'中标/时':>8} {'金额 元':>12}  结果 result"
    )
    for order in results.orders:
        hours = hours_of(order.symbols)
        outcome = ORDER_STATUS[order.status]
        if order.reason is not None:
            outcome += f" ({REASONS.get(order.reason, order.reason)})"
        if order.group is not None:
            outcome += f" [组 group {order.group}]"
        side = "买 buy" if order.side == "buy" else "卖 sell"
        print(
            f"{order.order_id:<44} {side:<8} {hours:<20} {yuan(order.price):>10} "
            f"{order.quantity:>8} {order.accepted:>8} {yuan(order.amount):>12}  {outcome}"
        )
        for fill in order.fills:
            print(
                f"{'':<44}   {fill.symbol}: {fill.quantity} {unit_of(fill.symbol)} x "
                f"{yuan(fill.price)} 元"
            )
