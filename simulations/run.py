"""`cx simulate`: run a scenario through the exchange and write its report folder.

The folder holds `report.md` and its plots, `figures.json` (every figure of the report),
`truth.json` (what only the agents knew: jobs, values, costs) and `data/` (the SQLite event
store of the run, unless DATABASE_URL named PostgreSQL), so the figures can be checked
against the events at any time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from settlement.sql_store import open_event_store
from simulations import scenario as scenarios
from simulations.analysis import analyse, read_store
from simulations.engine import OpenExchange, Progress, RunResult, Simulation
from simulations.report import write_comparison, write_report
from simulations.world import build


def prepare(out: Path) -> None:
    """Create the report folder (before the event loop starts: it blocks)."""
    out.mkdir(parents=True, exist_ok=True)


async def simulate(
    name: str,
    days: int | None,
    seed: int,
    out: Path,
    open_exchange: OpenExchange,
    progress: Progress = print,
    day_ahead: bool = False,
    intraday: bool = False,
) -> dict[str, Any]:
    """Run scenario `name` for `days` days with `seed` through the exchange `open_exchange`
    assembles (with `day_ahead`, one running a day-ahead auction; with `intraday`, hourly
    intraday auctions too); write the report into `out`; return the figures."""
    chosen = scenarios.load(name)
    world = build(chosen, seed, days, day_ahead, intraday)
    jobs = sum(len(b.jobs) for b in world.buyers)
    mode = (
        "day-ahead and intraday auctions and continuous trading"
        if intraday
        else "day-ahead auction and continuous trading"
        if day_ahead
        else "continuous trading"
    )
    progress(
        f"scenario {chosen.name} ({mode}), seed {seed}, {world.days} day(s): "
        f"{len(world.providers)} "
        f"providers, {len(world.buyers)} buyers with {jobs} jobs, {len(world.resellers)} "
        f"resellers, {len(world.administrators)} voucher programmes"
    )
    result = await Simulation(world, out / "data", open_exchange, progress).run()
    truth = world.truth()
    (out / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True))
    figures = await figures_of(result, truth)
    figures["run"] = {"commands": result.commands, "seconds": round(result.seconds, 1)}
    (out / "figures.json").write_text(json.dumps(figures, indent=1, sort_keys=True))
    write_report(figures, chosen, out)
    progress(f"report written to {out / 'report.md'}")
    return figures


MODES = {"continuous": (False, False), "day-ahead": (True, False), "intraday": (True, True)}
"""The markets a comparison runs (day-ahead auction, intraday auctions), by the subfolder
each writes its report into."""


async def compare(
    name: str,
    days: int | None,
    seed: int,
    out: Path,
    open_exchange: OpenExchange,
    progress: Progress = print,
) -> dict[str, dict[str, Any]]:
    """Run scenario `name` with `seed` in each of `MODES`: continuous trading only, with the
    day-ahead auction besides, and with hourly intraday auctions too, each report in its
    subfolder of `out`; write the comparison (`comparison.md`, `comparison.png`,
    `comparison.json`) into `out`; return every run's figures by mode."""
    runs: dict[str, dict[str, Any]] = {}
    for mode, (day_ahead, intraday) in MODES.items():
        folder = out / mode
        prepare(folder)
        runs[mode] = await simulate(
            name, days, seed, folder, open_exchange, progress, day_ahead, intraday
        )
    (out / "comparison.json").write_text(json.dumps(runs, indent=1, sort_keys=True))
    write_comparison(runs, scenarios.load(name), out)
    progress(f"comparison written to {out / 'comparison.md'}")
    return runs


async def figures_of(result: RunResult, truth: dict[str, Any]) -> dict[str, Any]:
    """The report's figures, read back from the run's event store."""
    store = open_event_store(result.database_url)
    try:
        stored = await read_store(store, result.topic_prefix)
    finally:
        await store.close()
    return analyse(stored, truth)
