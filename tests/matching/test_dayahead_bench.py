"""`cx bench auction` runs end to end at a small size and prints one JSON line of figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from matching.dayahead_bench import HOURS, HUBS, make_day, ticks

ROOT = Path(__file__).resolve().parent.parent.parent


def test_the_auction_bench_prints_one_json_line_with_its_figures() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cx.cli", "bench", "auction", "--orders", "800", "--seed", "2"],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    figures = json.loads(line)
    assert figures["bench"] == "auction"
    assert figures["orders"] == 800
    assert figures["hourly"] + figures["blocks"] + figures["group_members"] == 800
    assert (figures["blocks"], figures["groups"]) == (160, 80)
    assert 300 < figures["symbols"] <= 336
    assert figures["valid"] is True
    assert figures["status"] in ("optimal", "limit_reached")
    assert 0 < figures["welfare"] <= figures["bound"] <= figures["lp_bound"]
    assert figures["gap_ppm"] == (figures["bound"] - figures["welfare"]) * 10**6 // figures["bound"]
    assert figures["ratio"] == round(figures["welfare"] / figures["lp_bound"], 6)
    for key in ("solve_s", "lp_s"):
        assert isinstance(figures[key], float), key


def test_the_day_has_the_agreed_shape() -> None:
    day = make_day(10_000, seed=1)
    blocks = [o for o in day if len(o.symbols) > 1 and o.group is None]
    members = [o for o in day if o.group is not None]
    groups = {o.group for o in members}
    assert len(day) == 10_000
    assert (len(blocks), len(groups)) == (2_000, 1_000)
    assert all(2 <= len(o.symbols) <= 8 for o in blocks + members)
    assert all(o.side == "buy" for o in members)
    sizes = {g: sum(1 for o in members if o.group == g) for g in groups}
    assert set(sizes.values()) == {2, 3, 4, 5}
    assert len({s for o in day for s in o.symbols}) == len(ticks()) == 7 * 2 * HOURS
    assert len(HUBS) == 7
    assert make_day(10_000, seed=1) == day != make_day(10_000, seed=2)
