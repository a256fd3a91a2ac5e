"""100 concurrent builds, one API token: the waiter polling vs the waiter fed by webhooks.

Each scenario runs on a fresh stand-in Buildkite API (tests/bk_standin.py: real HTTP on 127.0.0.1,
the real 50 requests/minute per-token limit, RateLimit-* headers, 429s) with the same 100 simulated
builds (queue 5-60 s, run 1-10 min), all through ``BuildkiteLauncher.submit_many``:

* ``polling (REF)``: the tree as committed at REF (default ``main``; launcher and stand-in),
  extracted with ``git archive`` and run in a child process: today's figures, in this same run;
* ``polling``: this tree, no webhooks (must not regress against the line above);
* ``webhooks``: this tree, a signature-mode receiver on 127.0.0.1 that the stand-in sends
  ``build.finished`` / ``job.finished`` to, polling only as the safety net.

Requests per build count every API request (create, polls, artifact list, the artifact download's
302); the storage GET behind the 302 is not an API request. Detection latency is when the waiter
reported the terminal state minus when the build finished on the server.

Simulated time runs ``--scale`` times faster than real time (latencies, minutes and the rate-limit
window are simulated), so the three scenarios take two or three minutes.

    python benchmarks/waiter_webhooks.py [--builds 100] [--scale 20] [--seed 7] [--ref main]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SECRET = "bench-webhook-secret"


def _setup_path(code: str | None) -> None:
    # --code (the baseline's extracted tree) replaces this tree, its own stand-in included: the
    # stand-in imports the contract, whose package may have moved between the two.
    sys.path.insert(0, str(Path(code) if code else REPO))


def scenario(kind: str, n: int, scale: float, seed: int) -> dict[str, Any]:
    """One scenario on a fresh stand-in; the figures as a dict."""
    import requests
    from bk_workload import payload, planner_for  # this script's own folder
    from requests.adapters import HTTPAdapter

    from launcher.buildkite import BuildkiteLauncher
    from launcher.client import BuildkiteClient
    from tests.bk_standin import StandIn

    with StandIn(time_scale=scale, planner=planner_for(seed)) as bk:
        session = requests.Session()
        session.mount("http://", HTTPAdapter(pool_maxsize=128, max_retries=0))
        client = BuildkiteClient(env=bk.env(), session=session, clock=bk.clock.now,
                                 sleep=bk.clock.sleep, timeout=(10, 60))
        kw: dict[str, Any] = {}
        receiver = None
        if kind == "webhooks":
            from launcher.events import BuildEvents
            from launcher.webhook import WebhookAuth, WebhookServer, WebhookSettings

            events = BuildEvents(time_scale=scale)
            receiver = WebhookServer(WebhookSettings(port=0, auth=WebhookAuth(secret=SECRET)),
                                     events).start()
            bk.add_webhook(receiver.url, secret=SECRET)
            kw["events"] = events
        launcher = BuildkiteLauncher(client, queue="h100", gpu="H100", arch="90a", **kw)
        detected: dict[int, float] = {}

        def on_status(ev: Any) -> None:
            if ev.state in ("passed", "failed", "canceled") and ev.build_number not in detected:
                detected[ev.build_number] = bk.clock.now()

        t0 = time.monotonic()
        try:
            results = launcher.submit_many([payload(i) for i in range(n)], on_status=on_status,
                                           timeout_s=7200)
        finally:
            if receiver is not None:
                receiver.stop()
        wall = time.monotonic() - t0
        lat = sorted(t - bk.finished_at(num) for num, t in detected.items()
                     if bk.finished_at(num) is not None)
        polls = sum(1 for e in bk.log if e.method == "GET" and "/artifacts" not in e.path)
        return {
            "requests": len(bk.log), "polls": polls, "429s": bk.count(status=429),
            "builds": len(bk.builds), "passed": sum(1 for r in results if r.passed),
            "p50": statistics.median(lat) if lat else float("nan"),
            "p95": lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))] if lat else float("nan"),
            "webhooks": sum(1 for d in getattr(bk, "deliveries", []) if d.status == 200),
            "sim_minutes": bk.clock.now() / 60, "wall_s": wall,
        }


def baseline(ref: str, n: int, scale: float, seed: int) -> dict[str, Any]:
    """The polling scenario with the launcher and runner of ``ref``, in a child process."""
    with tempfile.TemporaryDirectory(prefix="kitebench-baseline-") as tmp:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref],
                                 check=True, capture_output=True).stdout
        tar = Path(tmp) / "code.tar"
        tar.write_bytes(archive)
        with tarfile.open(tar) as tf:
            # Our own archive; the "data" filter where this Python has it (3.11.4+).
            if hasattr(tarfile, "data_filter"):
                tf.extractall(tmp, filter="data")
            else:
                tf.extractall(tmp)
        out = subprocess.run(
            [sys.executable, __file__, "--scenario", "polling", "--code", tmp,
             "--builds", str(n), "--scale", str(scale), "--seed", str(seed)],
            check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    from bk_workload import add_workload_args  # this script's own folder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_args(ap)
    ap.add_argument("--ref", default="main", help="git ref of the baseline (default main)")
    ap.add_argument("--scenario", choices=["polling", "webhooks"], help=argparse.SUPPRESS)
    ap.add_argument("--code", help=argparse.SUPPRESS)
    args = ap.parse_args()
    _setup_path(args.code)
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    if args.scenario:  # child mode: one scenario, figures as one JSON line
        print(json.dumps(scenario(args.scenario, args.builds, args.scale, args.seed)))
        return 0

    print(f"{args.builds} builds, one API token (50 req/min), stand-in Buildkite API on "
          "127.0.0.1.")
    print(f"TIME SCALE: 1 real second = {args.scale:g} simulated seconds; latencies, minutes and "
          "rate-limit windows below are simulated time. The machine may be shared: real "
          "durations are noisy, the simulated figures much less so.\n")
    rows: list[tuple[str, dict[str, Any]]] = []
    for name, run in ((f"polling ({args.ref})", lambda: baseline(args.ref, args.builds,
                                                                  args.scale, args.seed)),
                      ("polling", lambda: scenario("polling", args.builds, args.scale,
                                                   args.seed)),
                      ("webhooks", lambda: scenario("webhooks", args.builds, args.scale,
                                                    args.seed))):
        print(f"running {name} ...", flush=True)
        rows.append((name, run()))

    n = args.builds
    table = [
        ("", [name for name, _ in rows]),
        ("API requests sent", [str(r["requests"]) for _, r in rows]),
        ("requests per build (goal <= 3.1)", [f"{r['requests'] / n:.2f}" for _, r in rows]),
        ("  of which polls", [str(r["polls"]) for _, r in rows]),
        ("429 answers", [str(r["429s"]) for _, r in rows]),
        ("results passed", [f"{r['passed']} / {r['builds']}" for _, r in rows]),
        ("webhook deliveries accepted", [str(r["webhooks"]) for _, r in rows]),
        ("detection latency p50 (s)", [f"{r['p50']:.1f}" for _, r in rows]),
        ("detection latency p95 (s, goal <= 2)", [f"{r['p95']:.1f}" for _, r in rows]),
        ("simulated duration (min)", [f"{r['sim_minutes']:.1f}" for _, r in rows]),
        ("real duration (s)", [f"{r['wall_s']:.1f}" for _, r in rows]),
    ]
    w0 = max(len(k) for k, _ in table)
    w = max(len(v) for _, vals in table for v in vals)
    for k, vals in table:
        print(f"{k:<{w0}}  " + "  ".join(f"{v:>{w}}" for v in vals))
    base, poll, hook = (r for _, r in rows)
    print(f"\npolling vs {args.ref}: requests x{poll['requests'] / base['requests']:.2f}, "
          f"p95 x{poll['p95'] / base['p95']:.2f}")
    print(f"webhooks vs polling ({args.ref}): requests x{hook['requests'] / base['requests']:.2f}, "
          f"p95 x{hook['p95'] / base['p95']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
