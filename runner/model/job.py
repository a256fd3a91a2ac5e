"""One model job: archive → install → server → perplexity gate → benchmark(s) → result.

Runs per mode (the field's table): ``test`` = the gate; ``benchmark`` = the gate, then the
benchmark (a throughput only counts for a fork that keeps the model's quality); ``leaderboard`` /
``private`` = ``test`` (gate), ``benchmark``, ``leaderboard``, each only if the previous passed.
One server serves all runs of a job. Every phase is timed into ``kitebench.phases`` and followed
by a checkpoint; every failure names its stage.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from contract.payload import ModelPayload, runs_for_mode
from contract.result import EvalResult, FullResult, KitebenchInfo, Phase, RunnerExit
from runner.context import RunContext
from runner.kernels.process import (
    become_subreaper,
    children_now,
    hide_from_same_user,
    kill_descendants,
)
from runner.model import archive as arch
from runner.model import bench
from runner.model import cache as start_cache
from runner.model.audit_job import Audited, run_audit
from runner.model.install import (
    Installed,
    base_env,
    fork_dirs,
    import_check,
    install,
    torch_version,
)
from runner.model.job_cache import StartCacheSteps
from runner.model.job_runs import RunSteps
from runner.model.server import Server, ServerSpec, resolve_model
from runner.model.util import PhaseCtx, StageError, copy_log_tails, now
from runner.sandbox import Sandbox, from_env
from runner.system import collect_system

DEFAULT_MODELS_DIR = "/models"


class ModelJob(StartCacheSteps, RunSteps):
    def __init__(self, payload: ModelPayload, ctx: RunContext) -> None:
        self.p = payload
        self.cfg = payload.model_cfg
        self.ctx = ctx
        self.env = dict(ctx.env)
        self.python = self.env.get("KITEBENCH_VLLM_PYTHON") or sys.executable
        self.system = collect_system()
        self.phases: list[Phase] = []
        self.runs: dict[str, EvalResult] = {}
        self.details: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.score: float | None = None
        self.server: Server | None = None
        self.installed: Installed | None = None
        self.to_audit: list[Audited] = []
        self.logs_dir = ctx.output_dir / "model-logs"
        self.work = Path(
            tempfile.mkdtemp(
                prefix="kitebench-model-", dir=self.env.get("KITEBENCH_WORK_DIR") or None
            )
        )
        # The fork runs in the sandbox (its own uid and/or namespaces); the runner, the bench
        # client, the stock reference and their files stay out of its reach. ``sub`` is the only
        # dir it may write; the client writes under ``bench``, which the fork cannot enter.
        store = self.env.get("KITEBENCH_REFERENCE_DIR")
        shared = self.env.get(start_cache.ENV_ROOT)
        self.sb: Sandbox = from_env(self.env, hidden=[p for p in (store, shared) if p])
        #: the agent's start-up cache (runner.model.cache): None when unset or sandbox none
        try:
            self.start_root = start_cache.usable(shared, self.sb.hardened)
        except OSError as e:  # a root it cannot make costs cold starts, not the job
            self.start_root = None
            self.warnings.append(f"{start_cache.ENV_ROOT} is not usable: {e}")
        self.start_key: str | None = None
        self.start_facts: dict[str, Any] = {}
        self.sub = self.work / "sub"
        for d in (self.sub, self.sub / "cache"):
            d.mkdir()
            self.sb.give(d)  # each: the runner cannot create anything inside once given
        (self.work / "bench").mkdir(mode=0o700)
        (self.work / "client").mkdir(mode=0o700)
        if self.sb.separate_uid:
            os.chmod(self.work, 0o711)  # its uid may reach fork/, shadow/, sub/, not list them
        self.child_env = self._child_env(self.sub / "cache", home=self.sub)
        #: the trusted processes' env: caches the fork cannot plant anything in
        self.client_env = self._child_env(self.work / "client" / "cache")
        #: the stock reference server's: a cache of its own, which may be published for later
        #: jobs (the bench client, which reads the fork's answers, never writes it)
        self.reference_env = self._child_env(self.work / "reference-cache")

    # -- environment ---------------------------------------------------------------------------

    def _child_env(self, cache: Path, home: Path | None = None) -> dict[str, str]:
        """Private caches per job: nothing one fork compiles or caches reaches the next job.
        ``home``: the fork's HOME/TMPDIR (its sandbox dir), no user site dir."""
        env = base_env(self.env)
        if home is not None:
            env.update(self.sb.home_env(home))
        env.update(
            {
                "XDG_CACHE_HOME": str(cache),
                "VLLM_CACHE_ROOT": str(cache / "vllm"),
                "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
                "TRITON_CACHE_DIR": str(cache / "triton"),
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    # -- result assembly ----------------------------------------------------------------------

    def _info(self, **kw: Any) -> KitebenchInfo:
        return KitebenchInfo(
            phases=list(self.phases),
            details=dict(self.details),
            warnings=list(self.warnings),
            score=self.score,
            score_info=None if self.score is None else bench.score_info(self.cfg.ranking_metric),
            **kw,
        )

    def _partial(self) -> FullResult:
        return FullResult(
            success=True, system=self.system, runs=dict(self.runs), kitebench=self._info()
        )

    def _checkpoint(self, after: str) -> None:
        self.ctx.checkpoint(self._partial(), after)

    def _phase(self, name: str, detail: str = "") -> PhaseCtx:
        return PhaseCtx(self.phases, name, detail)

    # -- the job --------------------------------------------------------------------------------

    def run(self) -> FullResult:
        try:
            self._sandbox_facts()
            self._install()
            self._start_server()
            passed = self._runs()
            if self.to_audit:
                if self.server is not None:  # the stock reference may need the accelerator
                    self.server.stop()
                self._seed_reference_cache()
                try:
                    run_audit(self, self.to_audit)
                finally:
                    self._publish_start_cache()
            return self._finish(passed)
        except StageError as e:
            return self._failed(e)
        except Exception as e:  # a runner bug: still a result, with the phases that finished
            return self._failed(
                StageError("internal", f"internal error: {type(e).__name__}: {e}", internal=True)
            )
        finally:
            if self.server is not None:
                self.server.stop()
            self.sb.kill_all()  # nothing of the fork's uid outlives the job
            copy_log_tails(self.work, self.logs_dir)
            if self.env.get("KITEBENCH_KEEP_WORK") != "1":
                self.sb.remove_tree(self.work)  # sub/ is the fork's, it may have locked it

    def _sandbox_facts(self) -> None:
        self.details["sandbox"] = self.sb.describe()
        if not self.sb.hardened:
            self.warnings.append(
                "sandbox none: the fork's server ran under the runner's uid, so the benchmark "
                "client, its results and the audit's reference store were not out of its reach"
            )

    def _install(self) -> None:
        limits = arch.Limits(
            self.cfg.max_archive_bytes, self.cfg.max_extract_files, self.cfg.max_extract_bytes
        )
        with self._phase("install") as ph:
            path = self.work / "archive"
            try:
                if self.p.submission_archive:
                    source = "inline"
                    arch.write_inline(self.p.submission_archive, path, limits)
                elif self.p.archive_url:
                    source = "url"
                    arch.download(self.p.archive_url, path, self.p.archive_sha256 or "", limits)
                else:
                    source = "path"
                    path = Path(self.p.archive_path or "")
                    if not path.is_file():
                        raise arch.ArchiveError(
                            f"archive_path {path} is not a file on this machine"
                        )
                    if path.stat().st_size > limits.max_archive_bytes:
                        raise arch.ArchiveError(f"archive_path {path} is over the size limit")
                size = path.stat().st_size
                digest = arch.verify_sha256(path, self.p.archive_sha256)
                fork = arch.extract(path, self.work / "fork", limits)
            except arch.ArchiveError as e:
                raise StageError("install", f"archive rejected: {e}") from None
            self.details["archive"] = {
                "source": source,
                "bytes": size,
                "sha256": digest,
                "fork_dir": fork.name,
            }
            self.installed = install(
                fork,
                self.work,
                self.python,
                self.child_env,
                self.cfg.install_timeout,
                sb=self.sb,
                run_dir=self.sub,
            )
            inst = self.installed
            self.details["install"] = {
                "method": inst.method,
                "python": inst.python,
                "vllm_version": inst.version,
                "installed_vllm": str(inst.installed_dir),
                "fork_files": inst.fork_files[:200],
                "fork_file_count": len(inst.fork_files),
            }
            ph.detail = f"{inst.method}: {len(inst.fork_files)} fork files, vLLM {inst.version}"
            self.system.torch = (
                torch_version(self.python, self.client_env, self.work) or self.system.torch
            )
        self._checkpoint("install")

    def _start_server(self) -> None:
        assert self.installed is not None
        inst = self.installed
        model = resolve_model(
            self.cfg.model_name, self.env.get("KITEBENCH_MODELS_DIR", DEFAULT_MODELS_DIR)
        )
        env = dict(self.child_env)
        writable = list(fork_dirs(self.work))
        seeded = self._seed_start_cache(inst, model)
        if seeded is not None:
            env.update(start_cache.env_for(seeded))
            writable.append(seeded)
        env.update(self.cfg.server_env)
        env.update(inst.env)  # last: the task's env cannot hide the fork from its server
        spec = ServerSpec(
            python=inst.python,
            model=model,
            served_model_name=self.cfg.model_name,
            log=self.work / "server.log",
            cwd=self.sub,
            env=env,
            sandbox=self.sb,
            writable=writable,
            tensor_parallel=self.cfg.tensor_parallel,
            extra_args=list(self.cfg.vllm_args),
            command=self.cfg.server_command,
        )
        try:
            with self._phase("server_start") as ph:
                self.server = Server(spec)
                self.details["server"] = {
                    "command": self.server.argv,
                    "model": model,
                    "base_url": self.server.base_url,
                }
                took = self.server.start(self.cfg.server_startup_timeout)
                self.details["server"]["startup_s"] = round(took, 3)
                ph.detail = f"healthy after {took:.1f} s on {self.server.base_url}"
        except StageError:
            if self.server is not None:
                self.server.stop()
            self._import_check(env)  # a fork that breaks `import vllm`: stage install
            raise
        self._checkpoint("server_start")

    def _import_check(self, env: dict[str, str]) -> None:
        """The overlay's install skips ``import vllm`` (the server's start is that import); when
        the server does not come up, this names a fork that breaks it (raises stage install)."""
        inst = self.installed
        if inst is not None and inst.method == "overlay":
            import_check(inst.python, env, inst.package_dir, self.sub, 300.0,
                         self.work / "install.log", self.sb, fork_dirs(self.work))

    def _runs(self) -> bool:
        """The mode's runs, in order; a failing one raises StageError (later runs do not start)."""
        for name in runs_for_mode(self.p.mode):
            start = now()
            gate_keys: dict[str, str] = {}
            if name == "test" or self.p.mode == "benchmark":
                gate = self._gate(name, start)
                self._checkpoint("perplexity")
                if name == "test":
                    self.runs[name] = gate
                    self._checkpoint(f"run {name}")
                    continue
                gate_keys = gate.run.result if gate.run else {}
            self.runs[name] = self._benchmark(name, start, gate_keys)
            self._checkpoint(f"run {name}")
        return True

    def _finish(self, passed: bool) -> FullResult:
        with self._phase("collect"):
            if self.server is not None:
                self.server.stop()
        return FullResult(
            success=True,
            system=self.system,
            runs=dict(self.runs),
            kitebench=self._info(
                passed=passed, exit_code=int(RunnerExit.PASSED if passed else RunnerExit.FAILED)
            ),
        )

    def _failed(self, e: StageError) -> FullResult:
        code = RunnerExit.INTERNAL if e.internal else RunnerExit.FAILED
        return FullResult(
            success=False,
            error=e.message,
            system=self.system,
            runs=dict(self.runs),
            kitebench=self._info(stage=e.stage, exit_code=int(code), passed=False),
        )


def run_model(payload: ModelPayload, ctx: RunContext) -> FullResult:
    # The fork's code runs in the job's sandbox (ModelJob.sb); as a fallback for mode ``none``
    # (same uid) we are non-dumpable, so it can neither ptrace the runner nor read its environ;
    # as subreaper, whatever it daemonises out of the server's process group (setsid) is
    # re-parented to us and killed when the job ends.
    become_subreaper()
    hide_from_same_user()
    keep = children_now()
    try:
        return ModelJob(payload, ctx).run()
    finally:
        kill_descendants(keep=keep)
