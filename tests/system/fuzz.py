"""`make fuzz`: the whole-system model at random, for as long as asked.

FUZZ_SECONDS (default 600) or FUZZ_EXAMPLES bounds the run; FUZZ_STEPS (default 100) the
steps of each example. With KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL set (FUZZ_BACKEND=real)
the exchange runs on them, each example on a fresh database; otherwise embedded. A failure
is shrunk to its smallest reproduction, printed, and kept in .hypothesis/ so the next run
(and `pytest tests/system` by hand) tries it first.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from tests.system.run import base_settings, fresh_postgres, run_model

BATCH = 5
"""Examples per Hypothesis run: a new random seed each batch, and a progress line."""


def main() -> int:
    """Run batches until the time or the examples are spent; 1 on the first failure."""
    seconds = float(os.environ.get("FUZZ_SECONDS", "600"))
    examples = int(os.environ["FUZZ_EXAMPLES"]) if os.environ.get("FUZZ_EXAMPLES") else None
    steps = int(os.environ.get("FUZZ_STEPS", "100"))
    real = os.environ.get("FUZZ_BACKEND", "embedded") == "real"
    deadline = time.monotonic() + seconds
    done_examples = done_steps = 0
    backend = "Kafka + PostgreSQL" if real else "the embedded default"
    bound = f"{examples} examples" if examples is not None else f"{seconds:.0f}s"
    print(f"fuzz: the whole-system model on {backend}, {steps} steps an example, for {bound}")
    with tempfile.TemporaryDirectory(prefix="cx-fuzz-") as folder:
        while (examples is None and time.monotonic() < deadline) or (
            examples is not None and done_examples < examples
        ):
            batch = BATCH if examples is None else min(BATCH, examples - done_examples)
            data = Path(folder) / f"batch-{done_examples}"
            try:
                if real:
                    base = base_settings(data, kafka=os.environ["KAFKA_BOOTSTRAP_SERVERS"])
                    prepare = fresh_postgres(os.environ["DATABASE_URL"])
                    ran = run_model(base, batch, steps, prepare=prepare, derandomize=False)
                else:
                    ran = run_model(base_settings(data), batch, steps, derandomize=False)
            except Exception as failure:
                print("fuzz: FAILED; the shrunk reproduction follows", file=sys.stderr)
                traceback.print_exception(failure)
                return 1
            done_examples += ran.examples
            done_steps += ran.steps
            print(f"fuzz: {done_examples} examples, {done_steps} steps so far; last {ran}")
    print(f"fuzz: {done_examples} examples, {done_steps} steps, no failure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
