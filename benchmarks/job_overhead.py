"""What `kitebench job` costs on top of docker itself.

Three timings, median of N runs each, on the same image and the same trivial payload:

  bare       docker run --rm --entrypoint true IMAGE           (container lifecycle only)
  runner     docker run --rm -e SUBMISSION_PAYLOAD=... IMAGE   (the runner, no wrapper)
  job        kitebench job (host validation, isolation, stale-container check, wait, inspect,
             result.json check, remove) with publishing switched off

    python benchmarks/job_overhead.py [--image kitebench-runner:test] [--runs 5]

Prints the medians and the wrapper's overhead (job - runner) and job - bare. Needs a Docker
engine; builds the offline test image when --image is not given.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _time(cmd: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... exited {proc.returncode}: {proc.stderr[-500:]}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=None)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    from contract import codec

    if args.image is None:
        from tests.docker_support import ensure_test_image

        args.image = ensure_test_image()
    payload = codec.encode({
        "lang": "py", "mode": "test", "main": "main.py", "tests": [{"size": 1}],
        "sources": {"main.py": "import os\nos.write(int(os.environ['POPCORN_FD']), b'check: pass\\n')\n"},
    })
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KITEBENCH_", "BUILDKITE_"))}
    env.update(SUBMISSION_PAYLOAD=payload, KITEBENCH_IMAGE=args.image, KITEBENCH_MEMORY="1g",
               KITEBENCH_PIDS_LIMIT="256", PYTHONPATH=str(REPO))

    bare = ["docker", "run", "--rm", "--network", "none", "--entrypoint", "true", args.image]
    runner = ["docker", "run", "--rm", "--network", "none",
              "-e", "SUBMISSION_PAYLOAD", args.image]
    job = [sys.executable, "-m", "kitebench", "job", "--no-publish"]

    _time(bare)  # warm the page cache and the engine
    times: dict[str, list[float]] = {"bare": [], "runner": [], "job": []}
    with tempfile.TemporaryDirectory(prefix="kitebench-bench-") as cwd:
        for _ in range(args.runs):  # interleaved, so drift hits all three alike
            times["bare"].append(_time(bare))
            times["runner"].append(_time(runner, env=env))
            times["job"].append(_time(job, env=env, cwd=cwd))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"image: {args.image}   runs: {args.runs} each (median, min..max)")
    for k, v in times.items():
        print(f"  {k:<7} {med[k]:7.3f} s   ({min(v):.3f}..{max(v):.3f})")
    print(f"wrapper overhead (job - runner): {med['job'] - med['runner']:+.3f} s")
    print(f"job vs `docker run IMAGE true`:  {med['job'] - med['bare']:+.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
