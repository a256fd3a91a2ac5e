"""100 concurrent builds on one API token: kitebench's batched waiter vs a naive poller.

Both run against the stand-in Buildkite API (tests/bk_standin.py: real HTTP on 127.0.0.1, the
real 50 requests/minute per-token limit, RateLimit-* headers and 429s), one after the other, each
on a fresh server with the same 100 simulated builds (same queue and run times):

* batched: ``BuildkiteLauncher.submit_many`` -- one list request per poll for the whole batch
  (meta_data filter, per_page=100), creates and downloads paced by the RateLimit headers;
* naive: one thread per build, one GET per build every 10 s (kernelbot's design), 429s handled
  by waiting the reset and trying again.

Simulated time runs ``--scale`` times faster than real time (latencies and the rate-limit window
are in simulated seconds), so the whole comparison takes a couple of minutes.

    python benchmarks/launcher_api.py [--builds 100] [--scale 20] [--seed 7]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bk_workload import add_workload_args, payload, planner_for  # noqa: E402  (this script's own folder)

from contract import codec  # noqa: E402
from launcher.buildkite import BuildkiteLauncher  # noqa: E402
from launcher.client import BuildkiteClient, is_terminal  # noqa: E402
from tests.bk_standin import StandIn  # noqa: E402

NAIVE_INTERVAL_S = 10.0


def client_for(bk: StandIn, **kw: Any) -> BuildkiteClient:
    session = requests.Session()
    adapter = HTTPAdapter(pool_maxsize=128, max_retries=0)
    session.mount("http://", adapter)
    return BuildkiteClient(env=bk.env(), session=session, clock=bk.clock.now,
                           sleep=bk.clock.sleep, timeout=(10, 60), **kw)


def run_batched(bk: StandIn, n: int) -> dict[str, Any]:
    client = client_for(bk)
    launcher = BuildkiteLauncher(client, queue="h100", gpu="H100", arch="90a")
    detections: dict[int, float] = {}

    def on_status(ev: Any) -> None:
        # The first terminal status event of a build is when the waiter detected it.
        if ev.state in ("passed", "failed", "canceled") and ev.build_number not in detections:
            detections[ev.build_number] = client.clock()

    results = launcher.submit_many([payload(i) for i in range(n)], on_status=on_status,
                                   timeout_s=7200)
    return {"results": results, "detections": detections, "gate_wait": client.gate.waited_s}


def run_naive(bk: StandIn, n: int) -> dict[str, Any]:
    # Reactive only: no pacing from the RateLimit headers, wait the reset after each 429.
    client = client_for(bk, rate_gate=False, max_rate_waits=10_000)
    fetcher = BuildkiteLauncher(client)
    detections: dict[int, float] = {}
    results: list[Any] = [None] * n

    def one(i: int) -> None:
        build = client.create_build(
            message=f"naive {i}", meta_data={"kitebench_id": f"naive-{i}"},
            env={"SUBMISSION_PAYLOAD": codec.encode(payload(i)), "GPU_QUEUE": "h100"})
        while not is_terminal(build):
            client.sleep(NAIVE_INTERVAL_S)
            build = client.get_build(build["number"])
        detections[build["number"]] = client.clock()
        results[i] = fetcher.result_for(build)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"results": results, "detections": detections, "gate_wait": 0.0}


def measure(name: str, fn: Callable[[StandIn, int], dict[str, Any]], n: int, scale: float,
            seed: int) -> dict[str, Any]:
    with StandIn(time_scale=scale, planner=planner_for(seed)) as bk:
        t0 = time.monotonic()
        out = fn(bk, n)
        wall = time.monotonic() - t0
        lat = sorted(out["detections"][num] - bk.finished_at(num) for num in out["detections"]
                     if bk.finished_at(num) is not None)
        per_window: dict[int, int] = {}
        for e in bk.log:
            if e.status not in (429, 401):
                per_window[int(e.t // bk.window_s)] = per_window.get(int(e.t // bk.window_s),
                                                                     0) + 1
        return {
            "name": name,
            "requests": len(bk.log),
            "429s": bk.count(status=429),
            "builds": len(bk.builds),
            "passed": sum(1 for r in out["results"] if r is not None and r.passed),
            "p50": statistics.median(lat) if lat else float("nan"),
            "p95": lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))] if lat else
            float("nan"),
            "max_window": max(per_window.values(), default=0),
            "sim_minutes": bk.clock.now() / 60,
            "wall_s": wall,
            "limit": bk.user_limit,
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_args(ap)
    args = ap.parse_args()
    logging.getLogger("urllib3").setLevel(logging.ERROR)

    print(f"{args.builds} builds per client, one API token each, stand-in Buildkite API on "
          f"127.0.0.1 (50 req/min per token).")
    print(f"TIME SCALE: 1 real second = {args.scale:g} simulated seconds; latencies, minutes and "
          "rate-limit windows below are simulated time.")
    print("Builds queue 5-60 s and run 1-10 min (same plan for both clients).\n")
    rows = []
    for name, fn in (("batched (kitebench)", run_batched),
                     ("naive GET/build/10s", run_naive)):
        print(f"running {name} ...", flush=True)
        rows.append(measure(name, fn, args.builds, args.scale, args.seed))

    def fmt(key: str, spec: str) -> list[str]:
        return [format(r[key], spec) for r in rows]

    table = [
        ("", [r["name"] for r in rows]),
        ("API requests sent", fmt("requests", "d")),
        ("429 answers", fmt("429s", "d")),
        ("builds created", fmt("builds", "d")),
        ("results passed", fmt("passed", "d")),
        ("detection latency p50 (s)", fmt("p50", ".1f")),
        ("detection latency p95 (s)", fmt("p95", ".1f")),
        ("max served per 60-s window", [f"{r['max_window']} / {r['limit']}" for r in rows]),
        ("simulated duration (min)", fmt("sim_minutes", ".1f")),
        ("real duration (s)", fmt("wall_s", ".1f")),
    ]
    w0 = max(len(k) for k, _ in table)
    w = max(len(v) for _, vals in table for v in vals)
    print()
    for k, vals in table:
        print(f"{k:<{w0}}  " + "  ".join(f"{v:>{w}}" for v in vals))
    print("\ndetection latency = when the client saw the terminal state - when the build "
          "finished on the server (simulated seconds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
