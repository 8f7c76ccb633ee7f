"""帮我选's estimate formulas (api/web/estimate.js), run in Node.js as the page runs them: the
memory a model needs, its floating-point work, card-hours per card and the cards per hour the
planner would give, each against figures worked out by hand (docs/ESTIMATES.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing

ESTIMATE = Path(__file__).resolve().parents[2] / "api" / "web" / "estimate.js"
H100 = {"code": "H100-80G", "name": "NVIDIA H100 SXM5 80 GB", "dense_tflops": "989.4"}
RTX4090 = {"code": "RTX4090", "name": "NVIDIA GeForce RTX 4090 24 GB", "dense_tflops": "165.2"}
PERFORMANCE = {
    "base": "H100-80G",
    "cards": [{**H100, "factor": "1"}, {**RTX4090, "factor": "0.167"}],
}
FINETUNE_7B = {"kind": "finetune", "paramsBillions": 7, "tokensBillions": 0.1}


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        missing("Node.js is required (make web needs it too)")
    return node


def _run(expression: str) -> Any:
    """Evaluate `expression` with the estimate module as `E` and its defaults as `A`."""
    script = (
        f"const E = require({json.dumps(str(ESTIMATE))}); const A = E.ASSUMPTIONS;"
        f"const P = {json.dumps(PERFORMANCE)};"
        f"process.stdout.write(JSON.stringify({expression}));"
    )
    done = subprocess.run([_node(), "-e", script], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_the_defaults_are_the_cited_ones() -> None:
    assumptions = _run("A")
    assert assumptions["trainingBytesPerParam"] == 16
    assert assumptions["trainingFlopsPerParamToken"] == 6
    assert assumptions["inferenceFlopsPerParamToken"] == 2


def test_fine_tuning_needs_six_n_d_operations_and_sixteen_bytes_a_parameter() -> None:
    work = _run(f"E.work({json.dumps(FINETUNE_7B)}, A)")
    assert work["flops"] == pytest.approx(6 * 7e9 * 0.1e9)
    assert work["memoryGB"] == pytest.approx(16 * 7 * 1.2)
    assert work["utilisation"] == 0.4


def test_serving_needs_two_n_operations_a_token_and_the_weights_in_memory() -> None:
    task = {"kind": "serve", "paramsBillions": 7, "tokensMillionsPerDay": 50, "days": 2}
    work = _run(f"E.work({json.dumps(task)}, A)")
    assert work["flops"] == pytest.approx(2 * 7e9 * 50e6 * 2)
    assert work["memoryGB"] == pytest.approx(2 * 7 * 1.2)
    assert work["utilisation"] == 0.2


def test_card_hours_are_the_work_over_the_cards_useful_throughput() -> None:
    # 4.2e18 operations at 40% of 989.4 TFLOPS: 4.2e18 / (989.4e12 x 0.4 x 3600) hours.
    assert _run("E.cardHours(4.2e18, 989.4, 0.4)") == pytest.approx(2.94790, rel=1e-5)
    assert _run("E.cardMemoryGB({name: 'Huawei Ascend 910B 64 GB'})") == 64


def test_each_card_fits_when_the_planners_cards_hold_the_model() -> None:
    estimate = _run(f"E.estimate({json.dumps(FINETUNE_7B)}, A, P, 2)")
    assert estimate["standardHours"] == 3  # ceil(2.948)
    h100, rtx = estimate["classes"]
    # 134.4 GB over 90% of 80 GB: 2 cards; the planner gives ceil(3 / (1 x 2)) = 2 an hour.
    assert (h100["cardsForMemory"], h100["cardsPerHour"], h100["fits"]) == (2, 2, True)
    # Over 90% of 24 GB: 7 cards; ceil(3 / (0.167 x 2)) = 9 an hour.
    assert (rtx["cardsForMemory"], rtx["cardsPerHour"], rtx["fits"]) == (7, 9, True)
    assert rtx["cardHours"] == pytest.approx(4.2e18 / (165.2e12 * 0.4 * 3600))

    small = {**FINETUNE_7B, "tokensBillions": 0.01}
    estimate = _run(f"E.estimate({json.dumps(small)}, A, P, 2)")
    assert estimate["standardHours"] == 1
    assert [c["fits"] for c in estimate["classes"]] == [False, False], "1 and 3 cards an hour"


def test_an_edited_assumption_changes_the_estimate() -> None:
    edited = _run(
        f"E.estimate({json.dumps(FINETUNE_7B)}, {{...A, trainingUtilisation: 0.2}}, P, 2)"
    )
    assert edited["standardHours"] == 6  # half the utilisation, twice the hours
    with pytest.raises(subprocess.CalledProcessError):
        _run("E.work({kind: 'paint'}, A)")
