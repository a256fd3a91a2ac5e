"""The kernel runner's added wall time on a trivial payload, versus ``python -c pass``.

The trivial payload's eval.py only writes ``check: pass`` to POPCORN_FD, so its own process
costs about one ``python -c pass``; everything above that is the runner: interpreter start-up and
imports, payload decoding and validation, the system probe, the work dir, process-tree
bookkeeping and writing result.json.

    python benchmarks/runner_overhead.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from contract import codec  # noqa: E402

EVAL = 'import os\nos.write(int(os.environ["POPCORN_FD"]), b"check: pass\\n")\n'


def _time(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    payload = codec.encode(
        {"lang": "py", "main": "eval.py", "sources": {"eval.py": EVAL}, "tests": [{"n": 1}]}
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KITEBENCH_", "SUBMISSION_"))}
    env["PYTHONPATH"] = str(REPO)
    bare, runner, child = [], [], []
    with tempfile.TemporaryDirectory() as out:
        renv = {**env, "SUBMISSION_PAYLOAD": payload, "KITEBENCH_OUTPUT_DIR": out}
        _time([sys.executable, "-m", "runner"], renv)  # warm the page cache once
        for _ in range(args.repeat):
            bare.append(_time([sys.executable, "-c", "pass"], env))
            runner.append(_time([sys.executable, "-m", "runner"], renv))
            doc = json.loads((Path(out) / "result.json").read_text())
            assert doc["kitebench"]["passed"], doc["error"]
            child.append(doc["runs"]["test"]["run"]["duration"])
    b, r, c = (statistics.median(x) for x in (bare, runner, child))
    print(f"python -c pass                    median {b * 1e3:8.1f} ms  ({args.repeat} runs)")
    print(f"python -m runner, trivial payload median {r * 1e3:8.1f} ms")
    print(f"  of which the submission process  median {c * 1e3:8.1f} ms")
    print(f"runner added wall time (runner - python -c pass): {(r - b) * 1e3:.1f} ms")
    print(f"runner's own work (runner - submission process):  {(r - c) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
