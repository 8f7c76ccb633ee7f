"""The benchmark runs end to end on a small flow and prints the agreed keys."""

from __future__ import annotations

import json
import time

import matching
from matching.bench import CANCEL, SUBMIT, make_flow, run


def test_the_benchmark_prints_one_json_line_with_its_figures() -> None:
    line = run(time.perf_counter_ns, commands=5_000, seed=3)

    figures = json.loads(line)
    assert "\n" not in line
    assert figures["bench"] == "matching"
    assert figures["commands"] == 5_000
    for key in ("commands_per_s", "p50_us", "p99_us", "p999_us", "peak_rss_mb",
                "reference_commands_per_s", "ratio"):  # fmt: skip
        assert figures[key] > 0, key
    assert figures["p50_us"] <= figures["p99_us"] <= figures["p999_us"] <= figures["max_us"]
    assert figures["compiled"] is matching.COMPILED


def test_the_flow_has_the_agreed_mix() -> None:
    flow = make_flow(50_000, seed=1)
    passive = cancels = aggressive = other = 0
    for op, args in flow:
        if op == CANCEL:
            cancels += 1
        elif op == SUBMIT and len(args) == 7:
            passive += 1
        elif op == SUBMIT and len(args) == 8 and args[7] in ("GTC", "IOC"):
            aggressive += 1
        else:
            other += 1
    shares = [round(n / len(flow), 2) for n in (passive, cancels, aggressive, other)]
    assert shares == [0.58, 0.24, 0.13, 0.05]
