"""The simulated workload both Buildkite waiter benchmarks use (launcher_api.py,
waiter_webhooks.py): the same payloads and the same queue and run times for a seed.

Imports are made inside the functions: waiter_webhooks.py may put another tree (a baseline
checkout) first on ``sys.path`` before they run.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from typing import Any


def payload(i: int) -> dict[str, Any]:
    return {"lang": "py", "mode": "test", "main": "eval.py",
            "sources": {"eval.py": "print('x')", "submission.py": f"# submission {i}\n"},
            "tests": [{"size": 1, "seed": i}]}


def planner_for(seed: int) -> Callable[[dict[str, Any]], Any]:
    """Build i waits 5-60 s for an agent and runs 1-10 min (simulated seconds)."""
    from contract import codec
    from tests.bk_standin import BuildPlan

    rnd = random.Random(seed)
    times = [(rnd.uniform(5, 60), rnd.uniform(60, 600)) for _ in range(10_000)]

    def planner(body: dict[str, Any]) -> Any:
        i = codec.decode(body["env"]["SUBMISSION_PAYLOAD"]).tests[0]["seed"]
        q, r = times[i]
        return BuildPlan(queue_s=q, run_s=r, agent=f"gpu-host-{i % 8}-{i % 4}")

    return planner


def add_workload_args(ap: argparse.ArgumentParser) -> None:
    """The options both benchmarks take: how many builds, how fast, which seed."""
    ap.add_argument("--builds", type=int, default=100)
    ap.add_argument("--scale", type=float, default=20.0,
                    help="simulated seconds per real second (default 20)")
    ap.add_argument("--seed", type=int, default=7)
