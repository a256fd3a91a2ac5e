"""Where a model job's start-up goes: the fork install, and the vLLM server's start, cold vs warm.

    python benchmarks/model_startup.py [--before-ref main] [--rounds 2] [--no-servers]

1. **Install** of examples/vllm_tiny's baseline fork (the shadow overlay): this tree's
   ``runner.model.install.install`` against the one of ``--before-ref`` (read with ``git show``),
   alternating ``--rounds`` times in this run, each in the job's sandbox.
2. **Server start** of the example's model, each line of the server's output stamped as it
   arrives, cut into phases at the log lines that open them (imports, config, engine core and
   worker processes, model load, compile warm-up, KV cache, HTTP routes, ``/health``):
     stock cold     a trusted stock server, empty cache; its cache becomes the agent's entry
                    (runner.model.cache.publish), as the audit's reference server's does
     baseline cold  the baseline fork (files identical to stock), empty cache
     baseline warm  the baseline fork, its cache a copy of the entry of its key (stock's)
     changed        the example's perturbed fork (changes model code): its key has no entry,
                    so it starts cold, by design
Timings are wall-clock on whatever else the machine runs: compare the ratios of one run.

Needs KITEBENCH_VLLM_PYTHON and KITEBENCH_MODELS_DIR holding tiny-llama (runner/model/tinymodel.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runner.model import cache as start_cache  # noqa: E402
from runner.model import install as current  # noqa: E402

#: (phase that ENDS at the first line containing the marker, marker); in the order they occur.
MARKERS = [
    ("python + torch/vllm imports (API server)", "(APIServer pid="),
    ("engine args, model/HF config", "Resolved architecture"),
    ("engine core process: spawn + imports", "Initializing a V1 LLM engine"),
    ("worker process: spawn + imports", "Starting to load model"),
    ("model load (weights)", "Warming up model for the compilation"),
    ("compile warm-up (dynamo + inductor kernels)", "Warming up done"),
    ("KV cache, engine init", "init engine"),
    ("tokenizer, chat template, HTTP routes", "Starting vLLM server on"),
]
READY = "HTTP ready (/health 200)"


def _load_before(ref: str) -> ModuleType | None:
    try:
        text = subprocess.run(["git", "show", f"{ref}:runner/model/install.py"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_loader("kb_install_before", loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    exec(compile(text, f"{ref}:runner/model/install.py", "exec"), mod.__dict__)  # noqa: S102
    return mod


def _fork(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tf:
        tf.extractall(into, filter="data")
    return into / "vllm-fork"


def _job_dirs(root: Path) -> tuple[Path, Path]:
    work = Path(tempfile.mkdtemp(prefix="job-", dir=root))
    sub = work / "sub"
    sub.mkdir()
    return work, sub


def measure_install(py: str, forks: Path, root: Path, before: ModuleType | None,
                    rounds: int) -> None:
    from runner.sandbox import from_env

    sb = from_env(os.environ)
    env = current.base_env(dict(os.environ))
    impls = [("after", current)] + ([("before", before)] if before is not None else [])
    took: dict[str, list[float]] = {name: [] for name, _ in impls}
    for _ in range(rounds):
        for name, mod in impls:
            work, sub = _job_dirs(root)
            fork = _fork(forks / "baseline.tar.gz", work / "fork")
            t0 = time.monotonic()
            mod.install(fork, work, py, env, 600, sb=sb, run_dir=sub)
            took[name].append(time.monotonic() - t0)
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n== install of the baseline fork (sandbox {sb.mode}), seconds per round ==")
    for name, values in took.items():
        print(f"  {name:<7} " + "  ".join(f"{v:6.2f}" for v in values)
              + f"   best {min(values):6.2f}")
    if "before" in took:
        print(f"  after/before (best): {min(took['after']) / min(took['before']):.2f}")


class Stamped:
    """A server whose output lines are stamped (seconds since its start) as they arrive."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.lines: list[tuple[float, str]] = []
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.log = log
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log, "wb") as f:
            for raw in self.proc.stdout:
                f.write(raw)
                self.lines.append((time.monotonic() - self.t0, raw.decode("utf-8", "replace")))

    def wait_healthy(self, url: str, timeout: float) -> float:
        while time.monotonic() - self.t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited ({self.proc.returncode}); see {self.log}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return time.monotonic() - self.t0
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"server not healthy in {timeout} s; see {self.log}")

    def stop(self) -> None:
        import signal

        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass

    def breakdown(self, ready: float) -> list[tuple[str, float]]:
        out, last = [], 0.0
        for name, marker in MARKERS:
            at = next((t for t, line in self.lines if marker in line), None)
            if at is not None and at >= last:
                out.append((name, at - last))
                last = at
        out.append((READY, ready - last))
        return out


def serve(py: str, model: Path, cfg, env: dict[str, str], cwd: Path, log: Path,  # type: ignore[no-untyped-def]
          sb=None, writable: tuple[Path, ...] = ()) -> tuple[float, list[tuple[str, float]]]:  # type: ignore[no-untyped-def]
    from runner.model.server import ServerSpec, free_port

    spec = ServerSpec(python=py, model=str(model), served_model_name=cfg.model_name, log=log,
                      cwd=cwd, env=env, extra_args=list(cfg.vllm_args), port=free_port())
    argv = spec.argv()
    if sb is not None:
        argv = sb.command(argv, cwd=cwd, writable=list(writable), share_net=True)
    srv = Stamped(argv, env, cwd, log)
    try:
        ready = srv.wait_healthy(f"http://127.0.0.1:{spec.port}", cfg.server_startup_timeout)
    finally:
        srv.stop()
    return ready, srv.breakdown(ready)


def measure_servers(py: str, forks: Path, root: Path) -> None:
    from launcher.model_task import build_model_payload
    from runner.model.audit import model_digest
    from runner.model.audit_job import stock_version
    from runner.sandbox import from_env

    models = Path(os.environ.get("KITEBENCH_MODELS_DIR", ""))
    payload = build_model_payload(REPO / "examples" / "vllm_tiny", forks / "baseline.tar.gz")
    cfg = payload.model_cfg
    model = models / cfg.model_name
    if not model.is_dir():
        raise SystemExit(f"no {model}: build it with runner/model/tinymodel.py")
    sb = from_env(os.environ)
    base = current.base_env(dict(os.environ))
    base.update(cfg.server_env, VLLM_NO_USAGE_STATS="1", PYTHONUNBUFFERED="1")
    installed = current.installed_vllm_dir(py, base, root)
    shared = root / "agent-cache"
    shared.mkdir(mode=0o700)

    def facts(delta: list[list[str]]) -> dict:
        return start_cache.about(
            installed=installed, version=stock_version(installed), python=py,
            torch=current.torch_version(py, base, root), model_digest=model_digest(str(model)),
            config={"model": str(model), "vllm_args": list(cfg.vllm_args),
                    "server_env": dict(cfg.server_env)},
            delta=delta, device="bench")

    def caches(work: Path, name: str) -> dict[str, str]:
        c = work / name
        c.mkdir()
        return {"XDG_CACHE_HOME": str(c), **start_cache.env_for(c)}

    rows: list[tuple[str, float, list[tuple[str, float]], str]] = []
    # stock cold: the trusted warm-up (runner's uid, stock code, a cache of its own)
    work, sub = _job_dirs(root)
    env = dict(base, **caches(work, "cache"))
    ready, parts = serve(py, model, cfg, env, sub, work / "stock.log")
    stock_key = start_cache.key(facts([]))
    published = start_cache.publish(shared, stock_key, work / "cache", facts([]))
    rows.append(("stock cold", ready, parts, f"published entry: {published}"))

    for label, archive in (("baseline cold", "baseline"), ("baseline warm", "baseline"),
                           ("changed", "perturbed")):
        work, sub = _job_dirs(root)
        fork = _fork(forks / f"{archive}.tar.gz", work / "fork")
        inst = current.install(fork, work, py, base, 600, sb=sb, run_dir=sub)
        delta = start_cache.code_delta(installed, inst.package_dir, inst.fork_files)
        k = start_cache.key(facts(delta))
        env = dict(base, **caches(work, "cache"))
        note = f"{len(delta)} changed file(s), entry for its key: "
        if label != "baseline cold":
            seeded = work / "seeded"
            seeded.mkdir()
            hit = start_cache.seed(shared, k, seeded)
            note += "hit" if hit else "none (cold)"
            if hit:
                env.update(start_cache.env_for(seeded))
        else:
            note += "not looked up"
        env.update(inst.env)
        writable = (*current.fork_dirs(work), work / "cache", work / "seeded")
        ready, parts = serve(py, model, cfg, env, sub, work / f"{archive}.log", sb,
                             tuple(p for p in writable if p.is_dir()))
        rows.append((label, ready, parts, note))

    print(f"\n== vLLM server start of {cfg.model_name} (fork servers in sandbox {sb.mode}) ==")
    names = [n for n, _ in MARKERS] + [READY]
    head = "  phase".ljust(48) + "".join(f"{r[0]:>15}" for r in rows)
    print(head)
    for n in names:
        cells = [dict(r[2]).get(n) for r in rows]
        print(f"  {n:<46}" + "".join(f"{'' if c is None else f'{c:.1f}':>15}" for c in cells))
    print("  " + "total to /health 200".ljust(46) + "".join(f"{r[1]:>15.1f}" for r in rows))
    for label, _, _, note in rows:
        print(f"  {label}: {note}")
    by = {r[0]: r[1] for r in rows}
    print(f"  baseline warm/cold: {by['baseline warm'] / by['baseline cold']:.2f}; "
          f"changed/baseline cold: {by['changed'] / by['baseline cold']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before-ref", default="main", help="git ref of the install to compare")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-servers", action="store_true", help="the install figures only")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # figures as they come
    py = os.environ.get("KITEBENCH_VLLM_PYTHON")
    if not py:
        raise SystemExit("set KITEBENCH_VLLM_PYTHON")
    root = Path(tempfile.mkdtemp(prefix="kitebench-startup-"))
    try:
        forks = root / "forks"
        subprocess.run([py, str(REPO / "examples/vllm_tiny/make_forks.py"), str(forks)],
                       check=True, capture_output=True)
        measure_install(py, forks, root, _load_before(args.before_ref), args.rounds)
        if not args.no_servers:
            measure_servers(py, forks, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
