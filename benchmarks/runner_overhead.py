"""The kernel runner's added wall time on a trivial payload, versus ``python -c pass``.

The trivial payload's eval.py only writes ``check: pass`` to POPCORN_FD, so its own process
costs about one ``python -c pass`` (plus the sandbox's start where bubblewrap works); everything
above that is the runner: interpreter start-up and imports, payload decoding and validation, the
system probe, the sandbox probe, the work dir, process-tree bookkeeping and writing result.json.

Every variant runs in each round, in turn, so a machine that gets busier mid-run slows them all:

- ``python -c pass``, the baseline;
- ``python -c "import ..."`` of what a kernel job imports (the import share of the overhead);
- ``import pydantic``, and the contract used once (a payload decoded, a result serialised): the
  share of the overhead that is pydantic's import and the building of the contract's models;
- ``python -m runner`` with the payload in ``SUBMISSION_PAYLOAD`` (unsigned: the issue's figure);
- ``python -m runner`` signed, as the hosts run it: ``KITEBENCH_RESULT_KEY`` and the payload in
  the environment (the container host) and ``KITEBENCH_INPUT=stdin`` (the local backend).

Bytecode: the runner image compiles the runner at build time (``compileall``) and the
interpreter's own modules ship compiled, so by default the measured checkout's ``runner`` is
compiled first (into its ``__pycache__`` dirs, which git ignores) even where the environment says
``PYTHONDONTWRITEBYTECODE=1``; ``--no-compile`` leaves it as it is. (A private
``PYTHONPYCACHEPREFIX`` would not do: the sandboxed submission has a fresh /tmp and would
recompile the standard library on every start.)

    python benchmarks/runner_overhead.py [--repeat N] [--no-compile] [--repo DIR] [--against DIR]

``--repo DIR`` measures the runner of another checkout with this script; ``--against DIR`` adds
that checkout's runner (unsigned) to every round, for before/after figures under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
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
#: What a kernel job imports (the runner's own modules; the executors pull in the rest), the way
#: ``python -m runner`` imports them (the contract through ``_import_contract`` where the
#: measured checkout has it).
IMPORTS = ("import runner.entry as e; getattr(e, '_import_contract', lambda: None)(); "
           "import contract.codec, contract.resultio, runner.kernels")
#: The contract's share: pydantic's import alone, then the contract imported with a payload
#: decoded (its model built and validated) and a result serialised (the result models built), what
#: every job does with it. ``runner - this`` is what a runner without pydantic would start from.
PYDANTIC = "import pydantic"
CONTRACT = ("import sys; from contract import codec; from contract.result import FullResult, "
            "RunnerExit; codec.decode(sys.argv[1]); "
            "FullResult.failure('x', 'run', RunnerExit.FAILED).to_json()")
GOAL_MS = 150.0


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _time(cmd: list[str], env: dict[str, str], stdin: bytes | None = None,
          cwd: str | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; CPU counts the whole tree the command waited for."""
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, input=stdin, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=cwd)
    return time.perf_counter() - t0, _children_cpu() - cpu0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--no-compile", action="store_true",
                    help="do not compile the runner's bytecode first")
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout whose runner to run")
    ap.add_argument("--against", type=Path, help="another checkout whose runner runs each round")
    args = ap.parse_args()
    payload = codec.encode(
        {"lang": "py", "main": "eval.py", "sources": {"eval.py": EVAL}, "tests": [{"n": 1}]}
    )
    key = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KITEBENCH_", "SUBMISSION_"))}
    env["PYTHONPATH"] = str(args.repo.resolve())
    py = sys.executable
    if not args.no_compile:
        for repo in filter(None, (args.repo, args.against)):
            subprocess.run([py, "-m", "compileall", "-q", str(repo / "runner")], check=True,
                           env={k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"})
    with tempfile.TemporaryDirectory() as out:
        renv = {**env, "SUBMISSION_PAYLOAD": payload, "KITEBENCH_OUTPUT_DIR": out}
        variants: dict[str, tuple[list[str], dict[str, str], bytes | None]] = {
            "python -c pass": ([py, "-c", "pass"], env, None),
            "imports of a kernel job": ([py, "-c", IMPORTS], env, None),
            "import pydantic": ([py, "-c", PYDANTIC], env, None),
            "the contract, used once": ([py, "-c", CONTRACT, payload], env, None),
            "python -m runner (unsigned)": ([py, "-m", "runner"], renv, None),
            "python -m runner, key in env": (
                [py, "-m", "runner"], {**renv, "KITEBENCH_RESULT_KEY": key}, None),
            "python -m runner, stdin (local)": (
                [py, "-m", "runner"],
                {**env, "KITEBENCH_INPUT": "stdin", "KITEBENCH_OUTPUT_DIR": out},
                (key + "\n" + payload).encode()),
        }
        if args.against:
            variants[f"runner of {args.against.name} (unsigned)"] = (
                [py, "-m", "runner"], {**renv, "PYTHONPATH": str(args.against.resolve())}, None)
        # cwd: the output dir, never a checkout: ``-c`` and ``-m`` put the cwd first on sys.path,
        # where it would shadow PYTHONPATH (run from a checkout, --against measured that one)
        for cmd, venv, stdin in variants.values():  # warm the page and bytecode caches
            _time(cmd, venv, stdin, out)
        wall: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        child: list[float] = []
        for _ in range(args.repeat):
            for name, (cmd, venv, stdin) in variants.items():
                w, c = _time(cmd, venv, stdin, out)
                wall[name].append(w)
                cpu[name].append(c)
                if name == "python -m runner (unsigned)":
                    doc = json.loads((Path(out) / "result.json").read_text())
                    assert doc["kitebench"]["passed"], doc["error"]
                    child.append(doc["runs"]["test"]["run"]["duration"])
    med = {name: statistics.median(v) * 1e3 for name, v in wall.items()}
    low = {name: min(v) * 1e3 for name, v in wall.items()}
    cmed = {name: statistics.median(v) * 1e3 for name, v in cpu.items()}
    base, cbase = med["python -c pass"], cmed["python -c pass"]
    print(f"runner of {args.repo}; {args.repeat} rounds; bytecode: "
          f"{'as the checkout has it' if args.no_compile else 'compiled first'}; {os.cpu_count()} CPUs")
    print(f"{'':34s} {'wall median':>11s} {'min':>8s} {'over baseline':>13s} {'ratio':>6s}"
          f" {'CPU median':>10s} {'over':>7s}")
    for name in variants:
        print(f"{name:34s} {med[name]:8.1f} ms {low[name]:5.1f} ms {med[name] - base:10.1f} ms"
              f" {med[name] / base:5.2f}x {cmed[name]:7.1f} ms {cmed[name] - cbase:7.1f}")
    c = statistics.median(child) * 1e3
    added = med["python -m runner (unsigned)"] - base
    print(f"the submission process inside the runner: median {c:.1f} ms (sandbox start included)")
    print(f"runner added wall time (runner - python -c pass): {added:.1f} ms "
          f"(goal <= {GOAL_MS:.0f} ms: {'met' if added <= GOAL_MS else 'not met'})")
    print(f"runner's own work (runner - submission process):  "
          f"{med['python -m runner (unsigned)'] - c:.1f} ms")
    share = med["the contract, used once"] - base
    print(f"of the added time, the contract (pydantic + its models) takes {share:.1f} ms; "
          f"without it the runner would add about {added - share:.1f} ms")


if __name__ == "__main__":
    main()
