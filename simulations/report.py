"""The report folder: `report.md` with the headline figures and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, the same output everywhere

import matplotlib.pyplot as plt
import numpy as np

from exchange.domain.catalogue import CHINA_STANDARD_TIME
from simulations.scenario import EAST, REGIONS, Scenario

PLOTS = {
    "heatmap": "prices_by_region_and_hour.png",
    "convergence": "east_west_prices.png",
    "utilisation": "utilisation.png",
    "buyers": "what_buyers_paid.png",
    "vouchers": "voucher_burn_down.png",
}


def yuan(fen: float | None) -> str:
    """Fen as yuan with two decimals, or a dash."""
    return "-" if fen is None else f"{fen / 100:,.2f}"


def percent(share: float | None) -> str:
    """A share as a percentage, or a dash."""
    return "-" if share is None else f"{100 * share:.1f}%"


def write_report(figures: dict[str, Any], scenario: Scenario, out: Path) -> None:
    """Write every plot and `report.md` into `out`."""
    _heatmap(figures, out / PLOTS["heatmap"])
    _convergence(figures, out / PLOTS["convergence"])
    _utilisation(figures, out / PLOTS["utilisation"])
    _buyers(figures, out / PLOTS["buyers"])
    _vouchers(figures, out / PLOTS["vouchers"])
    (out / "report.md").write_text(markdown(figures, scenario))


def headline(figures: dict[str, Any]) -> dict[str, str]:
    """The figures SIMULATIONS.md records for each scenario, formatted."""
    prices = figures["prices"]
    small = figures["buyers"].get("small", {})
    surplus = figures["surplus"]
    use = figures["utilisation"]["overall"]
    spread = [s for s in prices["spread"] if s is not None]
    return {
        "efficiency": percent(surplus["efficiency"]),
        "efficiency without scheduling (optimum)": percent(
            surplus["without_scheduling_efficiency"]
        ),
        "utilisation of deposits": percent(use["realised"]),
        "utilisation without scheduling (optimum)": percent(use["without_scheduling"]),
        "east-west spread, first/last day (CNY)": (
            f"{yuan(spread[0])} / {yuan(spread[-1])}" if spread else "-"
        ),
        "small firms paid per card-hour (CNY)": yuan(small.get("paid_per_card_hour")),
        "after vouchers (CNY)": yuan(small.get("paid_after_vouchers_per_card_hour")),
        "rental list price (CNY)": yuan(small.get("rental_per_card_hour")),
        "small firms' jobs served": percent(small.get("served_share")),
        "served without scheduling (optimum)": percent(
            figures["served_without_scheduling"].get("small")
        ),
    }


def markdown(figures: dict[str, Any], scenario: Scenario) -> str:
    """The report's text."""
    surplus = figures["surplus"]
    use = figures["utilisation"]["overall"]
    lines = [
        f"# Simulation report: {scenario.name}",
        "",
        scenario.description,
        "",
        f"Seed {figures['seed']}, {figures['days']} day(s) from {scenario.start}; "
        f"{figures['run']['commands']:,} commands through risk, matching and settlement, "
        f"{figures['events']:,} events stored, {figures['trades']:,} trades, "
        f"{figures['volume_card_hours']:,} card-hours traded of "
        f"{figures['deposited_card_hours']:,} deposited. Every figure below is read from the "
        "event store and the ledger's journal after the run; only the agents' private values, "
        "costs and jobs come from `truth.json`. Prices are per standard card-hour (H100-80G).",
        "",
        "## Headline",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in headline(figures).items()),
        "",
        "## Allocative efficiency",
        "",
        f"Realised surplus {yuan(surplus['realised'])} CNY of a maximum "
        f"{yuan(surplus['maximum'])} CNY: **{percent(surplus['efficiency'])}**. The maximum "
        "is an optimal assignment (a linear programme over card-hours) of the deposited "
        "capacity to the jobs from the buyers' true values less latency costs and the "
        "providers' true costs, allowing any hub and hour inside each job's window; it does "
        "not require a job's hours to be consecutive, so it bounds every feasible allocation "
        "from above. Restricted to each buyer's home hub at its preferred hours (the market "
        "without cross-region and cross-hour scheduling), the optimum is "
        f"{yuan(surplus['without_scheduling_optimum'])} CNY "
        f"({percent(surplus['without_scheduling_efficiency'])} of the maximum).",
        "",
        "## Prices",
        "",
        f"![prices by region and hour]({PLOTS['heatmap']})",
        "",
        f"![east and west]({PLOTS['convergence']})",
        "",
        "| region | volume-weighted price (CNY per card-hour) |",
        "|---|---|",
        *(f"| {r} | {yuan(figures['prices']['by_region'][r])} |" for r in REGIONS),
        "",
        f"In the eastern hubs, where providers deposit recallable capacity, firm capacity "
        f"traded at {yuan(figures['prices']['east_firm'])} CNY on average and recallable "
        f"(`-INT`) at {yuan(figures['prices']['east_interruptible'])} CNY. Between east and "
        "west the price gap stays near what eastern buyers lose by computing far away (their "
        "latency costs, 1.5 to 8 CNY a card-hour in the baseline): buyers who accept the "
        "distance move west until the gap no longer pays for it.",
        "",
        "## Utilisation of deposited idle capacity",
        "",
        f"![utilisation]({PLOTS['utilisation']})",
        "",
        f"Sold and delivered (from the delivery obligations): {percent(use['realised'])} of "
        f"the deposited card-hours. Without scheduling (the counterfactual: each job only in "
        f"its home hub at its preferred hours, allocated optimally offline over the same "
        f"deposits): {percent(use['without_scheduling'])}. The flexible optimum: "
        f"{percent(use['optimal'])}. The optimum maximises surplus, not volume, so the market "
        "can sell more than it: units a reseller could not resell, or sold to a buyer who "
        "values them below another provider's cost, count as sold here and lower the surplus.",
        "",
        "## What buyers paid",
        "",
        f"![what buyers paid]({PLOTS['buyers']})",
        "",
        "| buyers | jobs | served by deadline | paid | after vouchers | rental list price |",
        "|---|---|---|---|---|---|",
    ]
    for name, b in figures["buyers"].items():
        lines.append(
            f"| {name} | {b['jobs']} | {percent(b['served_share'])} | "
            f"{yuan(b['paid_per_card_hour'])} | {yuan(b['paid_after_vouchers_per_card_hour'])} "
            f"| {yuan(b['rental_per_card_hour'])} |"
        )
    lines += [
        "",
        "Paid: trades less refunds and penalties received, per card-hour delivered. The "
        "rental list price is what the same delivered card-hours cost at the fixed list price "
        "of the buyer's home hub. `small` is SMEs and one-person companies together.",
        "",
        "## Vouchers",
        "",
        f"![voucher burn-down]({PLOTS['vouchers']})",
        "",
        "| programme | budget | granted | grants (refused) | paid out | clawed back |",
        "|---|---|---|---|---|---|",
        *(
            f"| {pid} | {yuan(p['budget'])} | {yuan(p['granted'])} | {p['grants']} "
            f"({p['refused']}) | {yuan(p['used'])} | {yuan(p['clawed_back'])} |"
            for pid, p in figures["vouchers"].items()
        ),
        "",
        "## Delivery",
        "",
        f"{figures['delivery']['obligations']:,} obligations settled, "
        f"{figures['delivery']['short']:,} short by "
        f"{figures['delivery']['undelivered_card_hours']:,} card-hours; "
        f"{yuan(figures['delivery']['refunds'])} CNY refunded and "
        f"{yuan(figures['delivery']['penalties'])} CNY of bonds paid to buyers as penalties.",
        "",
        "## Orders refused and cancelled",
        "",
        "| reason | orders |",
        "|---|---|",
        *(f"| rejected: {k} | {v:,} |" for k, v in figures["rejections"].items()),
        *(f"| cancelled: {k} | {v:,} |" for k, v in figures["cancellations"].items()),
        "",
    ]
    return "\n".join(lines)


COMPARISON_PLOT = "comparison.png"


def comparison_rows(runs: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """The figures a comparison sets side by side, formatted, one column per run."""
    rows: dict[str, list[str]] = {}
    for figures in runs.values():
        holders = figures["buyers"].get("small/voucher", {})
        others = figures["buyers"].get("small/no-voucher", {})
        limits = figures["limits"]
        auction = figures["day_ahead"]
        for name, value in {
            **headline(figures),
            "small firms' jobs served: grant holders / others": (
                f"{percent(holders.get('served_share'))} / {percent(others.get('served_share'))}"
            ),
            "grant holders paid, before / after vouchers (CNY)": (
                f"{yuan(holders.get('paid_per_card_hour'))} / "
                f"{yuan(holders.get('paid_after_vouchers_per_card_hour'))}"
            ),
            "large buyers' jobs served": percent(
                figures["buyers"].get("large", {}).get("served_share")
            ),
            "card-hours traded in auctions / in all": (
                f"{auction['card_hours']:,} / {figures['volume_card_hours']:,}"
            ),
            "needs sent to auctions / filled there": (
                f"{auction['groups']:,} / {auction['groups_filled']:,}"
            ),
            "fills beyond a price limit (buys / sells / blocks)": (
                f"{limits['buys_above_limit']} / {limits['sells_below_limit']} / "
                f"{limits['blocks_above_limit']}"
            ),
            "jobs paying above their value / provider trades below cost": (
                f"{limits['jobs_paid_above_value']} / {limits['provider_trades_below_cost']}"
            ),
            "wall time of the run (s)": f"{figures['run']['seconds']:.1f}",
        }.items():
            rows.setdefault(name, []).append(value)
    return rows


def write_comparison(runs: dict[str, dict[str, Any]], scenario: Scenario, out: Path) -> None:
    """Write `comparison.md` and its plot: the same seed in every market (`MODES`), side by
    side."""
    _comparison_plot(runs, out / COMPARISON_PLOT)
    first = next(iter(runs.values()))
    modes = list(runs)
    lines = [
        f"# Auctions against continuous trading only: {scenario.name}",
        "",
        f"Seed {first['seed']}, {first['days']} day(s) from {scenario.start}, the same agents "
        "and jobs in every run. `continuous`: every contract trades continuously from its "
        "listing. `day-ahead`: a day's contracts collect orders until 12:00 CST the day "
        "before, when one auction clears the whole day at a uniform price per contract-hour "
        "(providers offer their idle hours at cost, jobs that fit the day go in as needs with "
        "their cheapest alternatives, each at the job's value less its latency cost); then "
        "they trade continuously. `intraday`: the same, and every hour an intraday auction "
        "clears the hours trading continuously with the needs of the jobs that came since "
        "(the books' resting orders take part). Each run's full report is in "
        f"{', '.join(f'`{m}/`' for m in modes)}.",
        "",
        f"![comparison]({COMPARISON_PLOT})",
        "",
        f"| figure | {' | '.join(modes)} |",
        f"|---|{'---|' * len(modes)}",
        *(f"| {k} | {' | '.join(v)} |" for k, v in comparison_rows(runs).items()),
        "",
    ]
    (out / "comparison.md").write_text("\n".join(lines))


def _comparison_plot(runs: dict[str, dict[str, Any]], path: Path) -> None:
    panels: list[tuple[str, Callable[[dict[str, Any]], float]]] = [
        ("efficiency (% of the LP optimum)", lambda f: 100 * (f["surplus"]["efficiency"] or 0)),
        (
            "utilisation (% of deposits sold)",
            lambda f: 100 * (f["utilisation"]["overall"]["realised"] or 0),
        ),
        (
            "small firms' jobs served (%)",
            lambda f: 100 * (f["buyers"].get("small", {}).get("served_share") or 0),
        ),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8))
    modes = list(runs)
    x = np.arange(len(modes))
    for ax, (title, value) in zip(axes, panels, strict=False):
        heights = [value(runs[m]) for m in modes]
        bars = ax.bar(x, heights, color=["tab:gray", "tab:blue", "tab:green"][: len(modes)])
        ax.bar_label(bars, fmt="%.1f")
        ax.set_xticks(x, modes)
        ax.set_ylim(0, 105)
        ax.set_title(title, fontsize=10)
    paid = axes[-1]
    for offset, key, label in (
        (-0.2, "paid_per_card_hour", "paid"),
        (0.2, "paid_after_vouchers_per_card_hour", "after vouchers"),
    ):
        heights = [(runs[m]["buyers"].get("small", {}).get(key) or 0) / 100 for m in modes]
        bars = paid.bar(x + offset, heights, width=0.4, label=label)
        paid.bar_label(bars, fmt="%.2f", fontsize=8)
    paid.set_xticks(x, modes)
    paid.set_ylabel("CNY per standard card-hour")
    paid.set_title("what small firms paid", fontsize=10)
    paid.legend(fontsize=8)
    fig.suptitle("Continuous trading only against the day-ahead and intraday auctions (same seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _heatmap(figures: dict[str, Any], path: Path) -> None:
    grid = np.array(
        [
            [np.nan if v is None else v / 100 for v in figures["prices"]["heatmap"][r]]
            for r in REGIONS
        ]
    )
    fig, ax = plt.subplots(figsize=(10, 3.8))
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="viridis")
    ax.set_yticks(
        range(len(REGIONS)), [f"{r} ({'east' if r in EAST else 'west'})" for r in REGIONS]
    )
    ax.set_xticks(range(0, 24, 2), [f"{h:02d}" for h in range(0, 24, 2)])
    ax.set_xlabel("delivery hour of day (China Standard Time)")
    ax.set_title("Price per standard card-hour, firm capacity (CNY, volume-weighted)")
    fig.colorbar(image, ax=ax, label="CNY")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _convergence(figures: dict[str, Any], path: Path) -> None:
    daily = figures["prices"]["daily"]
    days = np.arange(1, len(daily["east"]) + 1)

    def series(values: list[float | None]) -> np.ndarray:
        return np.array([np.nan if v is None else v / 100 for v in values])

    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.plot(days, series(daily["east"]), marker="o", label="east hubs (YRD, JJJ, GBA)")
    ax.plot(days, series(daily["west"]), marker="o", label="west hubs (GZ, NMG, GS, NX)")
    ax.plot(days, series(figures["prices"]["spread"]), linestyle="--", label="east - west")
    ax.set_xlabel("delivery day")
    ax.set_ylabel("CNY per standard card-hour")
    ax.set_title("East and west prices by delivery day (firm capacity)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _utilisation(figures: dict[str, Any], path: Path) -> None:
    use = figures["utilisation"]
    fig, grid = plt.subplots(2, 4, figsize=(13, 6), sharey=True)
    axes = grid.flatten()
    for ax, region in zip(axes, REGIONS, strict=False):
        for key, style, label in (
            ("realised", "-", "with scheduling (realised)"),
            ("without_scheduling", "--", "without (home hub, preferred hours; optimum)"),
        ):
            values = [np.nan if v is None else 100 * v for v in use[key][region]]
            ax.plot(range(1, len(values) + 1), values, style, marker=".", label=label)
        ax.set_title(f"{region} ({'east' if region in EAST else 'west'})")
        ax.set_xlabel("delivery day")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    for ax in grid[:, 0]:
        ax.set_ylabel("% of deposited card-hours sold")
    handles, labels = axes[0].get_legend_handles_labels()
    axes[-1].axis("off")
    axes[-1].legend(handles, labels, loc="center", fontsize=9)
    fig.suptitle("Utilisation of deposited idle capacity by region and delivery day")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _buyers(figures: dict[str, Any], path: Path) -> None:
    groups = [
        g
        for g in ("sme", "opc", "large", "small/voucher", "small/no-voucher")
        if g in figures["buyers"]
    ]
    buyers = figures["buyers"]

    def values(key: str) -> list[float]:
        return [np.nan if buyers[g][key] is None else buyers[g][key] / 100 for g in groups]

    x = np.arange(len(groups))
    fig, (prices, served) = plt.subplots(1, 2, figsize=(12, 3.8))
    for offset, key, label in (
        (-0.27, "rental_per_card_hour", "fixed-price rental (list price)"),
        (0.0, "paid_per_card_hour", "paid on the exchange"),
        (0.27, "paid_after_vouchers_per_card_hour", "paid after vouchers"),
    ):
        prices.bar(x + offset, values(key), width=0.27, label=label)
    prices.set_xticks(x, groups, fontsize=8)
    prices.set_ylabel("CNY per standard card-hour")
    prices.set_title("What buyers paid")
    prices.legend(fontsize=8)
    with_share = [100 * (buyers[g]["served_share"] or 0) for g in groups]
    without = figures["served_without_scheduling"]
    without_share = [100 * (without.get(g.split("/")[0]) or 0) for g in groups]
    served.bar(x - 0.2, with_share, width=0.4, label="with scheduling (realised)")
    served.bar(x + 0.2, without_share, width=0.4, label="without (optimum, home hub only)")
    served.set_xticks(x, groups, fontsize=8)
    served.set_ylim(0, 100)
    served.set_ylabel("% of jobs served by their deadline")
    served.set_title("Jobs served")
    served.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _vouchers(figures: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for programme_id, p in figures["vouchers"].items():
        times = np.array([_local(ts) for ts, _ in p["burn"]])
        left = [100 * v / p["budget"] for _, v in p["burn"]]
        (line,) = ax.step(times, left, where="post", label=f"{programme_id}: not yet paid out")
        granting = np.array([_local(ts) for ts, _ in p["grantable"]])
        ax.step(
            granting,
            [100 * v / p["budget"] for _, v in p["grantable"]],
            where="post",
            linestyle="--",
            color=line.get_color(),
            label=f"{programme_id}: not yet granted ({yuan(p['budget'])} CNY budget)",
        )
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of the programme's budget")
    ax.set_xlabel("log time (China Standard Time)")
    ax.set_title("Voucher budget burn-down")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _local(ts: int) -> datetime:
    """A log time as a naive China Standard Time datetime (matplotlib would show UTC)."""
    return datetime.fromtimestamp(ts / 1000, CHINA_STANDARD_TIME).replace(tzinfo=None)
