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
from simulations.report import write_report
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
) -> dict[str, Any]:
    """Run scenario `name` for `days` days with `seed` through the exchange `open_exchange`
    assembles; write the report into `out`; return the figures."""
    chosen = scenarios.load(name)
    world = build(chosen, seed, days)
    jobs = sum(len(b.jobs) for b in world.buyers)
    progress(
        f"scenario {chosen.name}, seed {seed}, {world.days} day(s): {len(world.providers)} "
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


async def figures_of(result: RunResult, truth: dict[str, Any]) -> dict[str, Any]:
    """The report's figures, read back from the run's event store."""
    store = open_event_store(result.database_url)
    try:
        stored = await read_store(store, result.topic_prefix)
    finally:
        await store.close()
    return analyse(stored, truth)
